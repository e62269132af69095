"""What the formulary says about each row's drug, looked up once per distinct name.

An export names a few hundred distinct drugs over millions of rows: each name
is matched once (`Formulary.match`) and its facts are broadcast to the rows by
factorized codes, so no Python string is touched per row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trdscreen.coded import Coded, categorical
from trdscreen.formulary import Formulary
from trdscreen.ruleset import RuleSet


def distinct_drugs(courses: pd.DataFrame) -> tuple[np.ndarray, list[tuple[object, object]]]:
    """(code per row, the distinct (name, ATC code) pairs): rows of one pair share a code
    (-1 where the name is null); without an `atc_code` column the code is None."""
    names, name_values = pd.factorize(courses["drug"])
    if "atc_code" not in courses.columns:
        return names, [(name, None) for name in name_values]
    atcs, atc_values = pd.factorize(courses["atc_code"])
    pair = np.where(names < 0, -1, names.astype(np.int64) * (len(atc_values) + 1) + atcs + 1)
    codes, pairs = pd.factorize(pair)
    codes = np.where(pair < 0, -1, codes)
    width = len(atc_values) + 1
    distinct = []
    for value in pairs:
        if value < 0:
            distinct.append((None, None))
            continue
        atc = int(value) % width - 1
        distinct.append((name_values[int(value) // width], atc_values[atc] if atc >= 0 else None))
    return codes, distinct


def drug_facts(courses: pd.DataFrame, rules: RuleSet, formulary: Formulary) -> dict:
    """Formulary facts per row, computed once per distinct exported name (and ATC code,
    when the export has an `atc_code` column: it names the drug where the name does not).

    Numbers and flags per row (known, non-depression product, counted by `also_count`, any
    dose adequate by `adequacy.dose.any_dose_for`, lithium, minimum dose, the integer keys
    of the drug, its moiety and its class), `counts_as` and the drug's dose unit as codes,
    and the output text columns as Categoricals.
    """
    codes, uniques = distinct_drugs(courses)
    rows = []
    for name, atc in uniques:
        match = formulary.resolve(name, atc)
        if match.generic is None:
            rows.append((None, match.normalized, "", "", "", np.nan, "", False, "mg", False))
            continue
        drug = formulary.drug(match.generic)
        minimum, source = formulary.rule_minimum(
            match.generic,
            match.formulation,
            rules.formulary.dose_source,
            rules.formulary.overrides,
        )
        rows.append(
            (
                match.generic,
                match.normalized,
                drug.drug_class,
                drug.moiety or match.generic,
                drug.counts_as,
                np.nan if minimum is None else minimum,
                source,
                match.non_depression_product,
                drug.dose_unit,
                "weekly" in match.formulation.split(),  # "Prozac Weekly": once every 7 days
            )
        )
    keys = (
        "generic", "normalized", "drug_class", "moiety", "counts_as", "min_dose", "min_source",
        "nondep", "dose_unit", "weekly",
    )  # fmt: skip
    table = {k: np.array([r[i] for r in rows], dtype=object) for i, k in enumerate(keys)}
    table["min_dose"] = table["min_dose"].astype(np.float64)
    table["nondep"] = table["nondep"].astype(bool)
    table["weekly"] = table["weekly"].astype(bool)
    table["known"] = np.array([r[0] is not None for r in rows], dtype=bool)
    table["also"] = np.isin(table["generic"].astype(str), rules.formulary.also_count)
    table["any_dose"] = np.isin(table["generic"].astype(str), rules.adequacy.dose.any_dose_for)
    table["lithium"] = table["generic"].astype(str) == "lithium"
    # What makes two names the same trial when counting (trials.identity), as integers
    # per distinct name: the generic, the moiety or the class; an unknown name counts
    # as itself.
    for key, column in (
        ("same_drug", "generic"),
        ("same_moiety", "moiety"),
        ("same_class", "drug_class"),
    ):
        text = np.where(table["known"], table[column], "?" + table["normalized"].astype(str))
        table[key] = pd.factorize(text)[0].astype(np.int64) if len(rows) else np.zeros(0, int)
    # Output text columns: built per distinct name, gathered by Arrow (no Python strings).
    has_min = ~np.isnan(table["min_dose"])
    texts = {
        "drug_generic": table["generic"],
        "drug_class": np.where(table["known"], table["drug_class"], None),
        "min_dose_source": np.where(has_min, table["min_source"], None),
    }
    # Per row: numbers and flags only; text is compared per distinct name (Coded) or
    # gathered by Arrow. A null name reads the first name's facts, as its checks are
    # decided by its modality (a drug course without a name fails validation).
    safe = np.where(codes >= 0, codes, 0)
    numeric = (
        "known", "nondep", "also", "any_dose", "lithium", "weekly", "min_dose", "same_drug",
        "same_moiety", "same_class",
    )  # fmt: skip
    if len(uniques) == 0:
        per_row = {k: np.empty(0, dtype=table[k].dtype) for k in numeric}
    else:
        per_row = {k: table[k][safe] for k in numeric}
    per_row["counts_as"] = Coded(safe, tuple(str(v) for v in table["counts_as"]))
    per_row["dose_unit"] = Coded(safe, tuple(str(v) for v in table["dose_unit"]) or ("mg",))
    for name, values in texts.items():
        per_row[name] = categorical(values, codes)
    return per_row
