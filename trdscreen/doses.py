"""Each row's dose as the formulary's minimum is written: a daily amount in the drug's unit.

An export's `daily_dose_mg` is in mg a day unless the row says otherwise: an optional
`dose_unit` column names another mass unit (g, ug/mcg/µg; liothyronine is dosed in ug),
and an optional `dose_every_days` column says the dose is given once every so many days
(fluoxetine weekly 90 mg: `dose_every_days` 7; a name that says "weekly", such as Prozac
Weekly, is read as every 7 days when the column is empty). The dose compared with the minimum is then
the daily equivalent in the drug's own unit (`formulary.DRUG_UNITS`): 90 mg every 7 days is
12.9 mg a day, below fluoxetine's 20 mg, and the row carries `dose_daily_equivalent`. A drug
dosed per session (esketamine, mg per session) is never turned into a daily amount.

A lithium row whose `lithium_level` (serum, mmol/L) is given is judged by that level when
the rule set sets `adequacy.dose.lithium_min_level`; without a level, by its dose as any
other drug (the presets: no minimum dose, so `when_no_minimum` or `any_dose_for` decides).
Vectorized over the rows; the drug facts come from `drugs.drug_facts`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trdscreen.coded import coded
from trdscreen.columns import floats
from trdscreen.drugs import DrugFacts

DOSE_UNITS = {"mg": 1.0, "g": 1000.0, "ug": 0.001, "mcg": 0.001, "µg": 0.001}
"""Units an export may give in `dose_unit`, as mg per unit (empty = mg)."""
_DRUG_UNIT_MG = {"mg": 1.0, "ug": 0.001, "mg/session": 1.0}


def compared_dose(courses: pd.DataFrame, lookup: DrugFacts) -> tuple[np.ndarray, np.ndarray]:
    """(dose compared with the minimum, rows converted from a non-daily dose) per row: the
    given dose in the drug's unit, divided by `dose_every_days` unless dosed per session."""
    dose = courses["daily_dose_mg"].to_numpy(dtype=np.float64, na_value=np.nan)
    unit = coded(courses, "dose_unit", "mg")
    per_unit = np.array([DOSE_UNITS[v] for v in unit.values], dtype=np.float64)
    drug_unit = lookup.dose_unit
    in_drug_unit = np.array([_DRUG_UNIT_MG[v] for v in drug_unit.values], dtype=np.float64)
    scale = per_unit[unit.codes] / in_drug_unit[drug_unit.codes]
    every = floats(courses, "dose_every_days")
    # A weekly product by name ("Prozac Weekly") is taken once every 7 days unless the row
    # says otherwise; read as a daily dose, its 90 mg would pass any minimum.
    every = np.where(np.isnan(every), np.where(lookup.weekly, 7.0, 1.0), every)
    every[drug_unit.eq("mg/session")] = 1.0
    converted = (every != 1.0) & ~np.isnan(dose)
    return dose * scale / every, converted


def lithium_state(
    courses: pd.DataFrame, lookup: DrugFacts, minimum: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(rows judged by their serum level, level at or above `minimum`) per row."""
    n = len(courses)
    if minimum is None or "lithium_level" not in courses.columns:
        return np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    level = floats(courses, "lithium_level")
    judged = lookup.lithium & ~np.isnan(level)
    with np.errstate(invalid="ignore"):
        return judged, judged & (level >= minimum - 1e-9)
