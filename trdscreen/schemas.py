"""Input contract: column types, value checks and cross-row checks.

Validation happens in three layers, all collecting every problem:

1. a dtype pre-check converts each canonical column from its raw form (CSV
   text or a Parquet type) to its working type with vectorized Arrow kernels,
   recording each cell that cannot be converted (`convert.coerce`);
2. pandera schemas check values (ranges, vocabularies, required values) lazily
   (`check_values`, here, with the column specs both layers read);
3. cross-row checks (duplicates, date order, reference dates, subjects
   missing from the subjects table; `validate`).

Each problem becomes one row of the issues table: severity, file, line,
column, check, subject_id and a message saying what was expected. No other
patient value ever enters an issue.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pandera.pandas as pa

from trdscreen.doses import DOSE_UNITS
from trdscreen.io import SourceTable
from trdscreen.issues import IssueLog
from trdscreen.printable import printable
from trdscreen.ruleset import MODALITIES, ROLES, STOP_REASONS
from trdscreen.vocabulary import EPISODE_SOURCES


@dataclass(frozen=True)
class ColumnSpec:
    kind: str  # string | float | int | date | bool | category
    required: bool = False  # the column must exist
    nullable: bool = True  # cells may be empty
    low: float | None = None
    high: float | None = None
    vocabulary: tuple[str | int, ...] = ()
    expected: str = ""  # human wording for messages
    plausible_low: float | None = None  # below: a warning (`implausible_value`), kept


DOSE_CEILING_MG = 10_000.0
"""No antidepressant or add-on is given at 10 g a day: a dose above is an error
(`out_of_range`), so a typo of 99,999,999 mg can never make a course adequate.
Doses far above a drug's usual maximum get a warning (`validate.PLAUSIBLE_DOSE_MULTIPLE`)."""

HAMD_MAXIMUM = {17: 52, 21: 64, 24: 75}
"""The highest total of each HAM-D version (trd-reference D.1 [V]); a row's `hamd_version`
(17 when empty or absent) says which version its HAM-D totals are."""
HAMD_TOTAL = "a HAM-D total from 0 to 52 (HAM-D17; 64 for HAM-D21, 75 for HAM-D24)"
HAMD_VERSION = ColumnSpec("int", vocabulary=tuple(HAMD_MAXIMUM), expected="17, 21 or 24")
HAMD_COLUMNS = ("hamd_start", "hamd_end", "hamd_lowest", "hamd_screening")
"""HAM-D totals, read with the row's `hamd_version`."""

TREATMENT_COLUMNS: dict[str, ColumnSpec] = {
    "subject_id": ColumnSpec("string", True, False, expected="a subject key"),
    "drug": ColumnSpec("string", True, False, expected="a drug name"),
    "daily_dose_mg": ColumnSpec(
        "float",
        True,
        True,
        low=0,
        high=DOSE_CEILING_MG,
        expected="a dose in mg/day >= 0",
    ),
    "start_date": ColumnSpec("date", True, False, expected="an ISO date YYYY-MM-DD"),
    "end_date": ColumnSpec("date", False, True, expected="an ISO date YYYY-MM-DD or empty"),
    "adherence": ColumnSpec("float", low=0, high=1, expected="a fraction from 0 to 1"),
    "hamd_start": ColumnSpec("int", low=0, high=75, expected=HAMD_TOTAL),
    "hamd_end": ColumnSpec("int", low=0, high=75, expected=HAMD_TOTAL),
    "hamd_lowest": ColumnSpec("int", low=0, high=75, expected=HAMD_TOTAL),
    "hamd_version": HAMD_VERSION,
    "madrs_start": ColumnSpec("int", low=0, high=60, expected="a MADRS total from 0 to 60"),
    "madrs_end": ColumnSpec("int", low=0, high=60, expected="a MADRS total from 0 to 60"),
    "madrs_lowest": ColumnSpec("int", low=0, high=60, expected="a MADRS total from 0 to 60"),
    "improvement": ColumnSpec(
        "float", high=1, expected="a fraction of improvement <= 1", plausible_low=-1.0
    ),
    "sessions": ColumnSpec("int", low=0, high=1000, expected="a session count from 0 to 1000"),
    "dose_unit": ColumnSpec("category", vocabulary=tuple(DOSE_UNITS)),
    "dose_every_days": ColumnSpec(
        "float", low=1, high=31, expected="the days from one dose to the next, 1 to 31"
    ),
    "lithium_level": ColumnSpec(
        "float", low=0, high=5, expected="a serum lithium level in mmol/L from 0 to 5"
    ),
    "atc_code": ColumnSpec("string", expected="a WHO ATC code such as N06AB06"),
    "duration_assumed": ColumnSpec("bool", expected="true or false"),
    "stop_reason": ColumnSpec("category", vocabulary=STOP_REASONS),
    "role": ColumnSpec("category", vocabulary=ROLES),
    "modality": ColumnSpec("category", vocabulary=MODALITIES),
}

SUBJECT_COLUMNS: dict[str, ColumnSpec] = {
    "subject_id": ColumnSpec("string", True, False, expected="a subject key"),
    "birth_date": ColumnSpec("date", expected="an ISO date YYYY-MM-DD"),
    "age": ColumnSpec("float", low=0, high=130, expected="an age in years from 0 to 130"),
    "sex": ColumnSpec("string"),
    "diagnosis": ColumnSpec("string"),
    "diagnoses": ColumnSpec("string"),
    "episode_start": ColumnSpec("date", expected="an ISO date YYYY-MM-DD"),
    "screening_date": ColumnSpec("date", expected="an ISO date YYYY-MM-DD"),
    "episode_source": ColumnSpec("category", vocabulary=EPISODE_SOURCES),
    "left_censored": ColumnSpec("bool", expected="true or false"),
    "hamd_screening": ColumnSpec("int", low=0, high=75, expected=HAMD_TOTAL),
    "hamd_version": HAMD_VERSION,
    "madrs_screening": ColumnSpec("int", low=0, high=60, expected="a MADRS total from 0 to 60"),
    "bipolar": ColumnSpec("bool", expected="true or false"),
    "psychotic_features": ColumnSpec("bool", expected="true or false"),
    "substance_use_disorder": ColumnSpec("bool", expected="true or false"),
    "prior_ketamine_nonresponse": ColumnSpec("bool", expected="true or false"),
    "ect_current_episode": ColumnSpec("bool", expected="true or false"),
}

# --------------------------------------------------------------------------- pandera checks


def _pandera_schema(specs: dict[str, ColumnSpec], frame: pd.DataFrame) -> pa.DataFrameSchema:
    present = tuple((name, spec) for name, spec in specs.items() if name in frame.columns)
    return _schema_of(present)


@functools.lru_cache(maxsize=64)
def _schema_of(present: tuple[tuple[str, ColumnSpec], ...]) -> pa.DataFrameSchema:
    """The pandera schema of these columns, built once (a streamed run checks every
    chunk with it; building one costs more than checking a small chunk)."""
    columns = {}
    for name, spec in present:
        checks = []
        if spec.low is not None:
            checks.append(pa.Check.ge(spec.low, error="out_of_range"))
        if spec.high is not None:
            checks.append(pa.Check.le(spec.high, error="out_of_range"))
        if spec.vocabulary:
            checks.append(pa.Check.isin(list(spec.vocabulary), error="not_in_vocabulary"))
        columns[name] = pa.Column(nullable=spec.nullable, checks=checks, coerce=False)
    return pa.DataFrameSchema(columns, strict=False, coerce=False)


def _value_message(spec: ColumnSpec, check: str, name: str) -> str:
    if check == "not_nullable":
        return f"`{name}` is required in every row; the cell is empty"
    if check == "not_in_vocabulary":
        return f"expected one of: {', '.join(str(v) for v in spec.vocabulary)}"
    expected = spec.expected or "a value in range"
    if check == "out_of_range" and spec.high is not None and f"{spec.high:g}" not in expected:
        expected += f" and at most {spec.high:g}"
    return f"expected {expected}"


_PANDERA = threading.Lock()
_FAST_CHECKS: dict[str, Callable[[pd.Series, dict], pd.Series]] = {
    "greater_than_or_equal_to": lambda v, stats: v >= stats["min_value"],
    "less_than_or_equal_to": lambda v, stats: v <= stats["max_value"],
    "isin": lambda v, stats: v.isin(stats["allowed_values"]),
}
"""The pandera checks the schemas declare, each as one vectorized test (what pandera
checks of the non-null values: nulls are the `nullable` test's business)."""


def _all_pass(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> bool:
    """Whether every cell passes the schema: its declared checks, read back from the
    schema and run as vectorized tests (`_FAST_CHECKS`), empty cells left to the
    `nullable` test. False as soon as one fails, or when the schema holds a check this
    does not know: pandera then decides and names the cells. Most chunks pass, and
    pandera's own run costs several times as much."""
    for name, column in schema.columns.items():
        series = frame[name]
        null = series.isna().to_numpy()
        if not column.nullable and null.any():
            return False
        for check in column.checks:
            test = _FAST_CHECKS.get(check.name)
            if test is None:
                return False
            passed = test(series, check.statistics).to_numpy(dtype=bool, na_value=True)
            if not (passed | null).all():
                return False
    return True


def check_values(
    source: SourceTable, frame: pd.DataFrame, specs: dict[str, ColumnSpec], log: IssueLog
) -> None:
    """Run the pandera value checks lazily and log each failing cell (pandera runs only
    on a frame where the vectorized pre-check `_all_pass` finds a failure)."""
    schema = _pandera_schema(specs, frame)
    if _all_pass(schema, frame):
        return
    try:
        with _PANDERA:  # chunks are validated in threads: one pandera run at a time
            schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as exc:
        cases = exc.failure_cases  # holds patient values in `failure_case`: never kept
        cases = cases[cases["index"].notna()][["column", "check", "index"]]
        ids = frame["subject_id"] if "subject_id" in frame.columns else None
        for (column, raw_check), group in cases.groupby(["column", "check"], sort=True):
            check = "not_nullable" if raw_check == "not_nullable" else str(raw_check)
            rows = group["index"].astype("int64").to_numpy()
            if check == "not_nullable":  # an unconvertible cell is empty now: reported once
                rows = np.setdiff1d(rows, log.unconverted.get((source.name, column), []))
            message: str | np.ndarray = _value_message(specs[column], check, column)
            if check == "not_in_vocabulary":
                message = message + unmapped_values(frame[column].iloc[rows], column)
            if column == "adherence" and check == "out_of_range":  # per row, as above
                values = frame["adherence"].to_numpy()[rows]
                percent = (values > 1) & (values <= 100)
                hint = " (values look like percentages 0-100: divide by 100)"
                message = np.where(percent, message + hint, message).astype(object)
            code = "required_value_missing" if check == "not_nullable" else check
            log.add(source, rows, column, code, message, ids)


def unmapped_values(cells: pd.Series, column: str) -> np.ndarray:
    """Per cell of a coded column that is not in its vocabulary, the end of its issue's
    message naming the value (cut to 40 characters), which a site maps under `values:`
    (coded columns only; free text is never listed). Each row names its own value, so
    the message does not depend on which rows were read together (a chunk or the whole
    file); rows of one value share a message and are counted as one issue."""
    codes, distinct = pd.factorize(cells.astype(object), use_na_sentinel=False)
    texts = np.array(
        [
            f"; value found: {printable(str(v)[:40])!r} (translate it under "
            f"`values: {column}:` in the column map)"
            for v in distinct
        ],
        dtype=object,
    )
    return texts[codes]
