"""Exclusion facts read from the treatment history as well as from a subject flag.

Protocols exclude a prior nonresponse to esketamine or ketamine, and ECT in the
current episode (esketamine phase 3, trd-reference C.3). A site records these as
subject flags, but the treatments table may show them too: a failed esketamine
course, an ECT course in the episode. Each derived column is the flag OR-ed with
the courses (Kleene OR, so a flag that is empty stays unknown unless a course
shows the fact):

- `esketamine_or_ketamine_nonresponse`: flag `prior_ketamine_nonresponse`, or an
  esketamine or ketamine course (any episode, counted or not) whose outcome is
  nonresponse or a partial response, or that failed; an outcome that is unknown
  makes the course evidence unknown (it may have been a nonresponse);
- `ect_in_current_episode`: flag `ect_current_episode`, or an ECT course in the
  current episode (unknown where the episode check is unknown).

Courses hidden by `--as-of` say nothing. Vectorized: one bincount per fact.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trdscreen.coded import coded
from trdscreen.tristate import or_flag

HISTORY_FLAGS = {
    "esketamine_or_ketamine_nonresponse": "prior_ketamine_nonresponse",
    "ect_in_current_episode": "ect_current_episode",
}
"""Derived column -> the subjects flag it is OR-ed with (required in the subjects table)."""
KETAMINES = ("esketamine", "ketamine")


def _any(codes: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(codes[rows], minlength=n) > 0


def history_columns(
    codes: np.ndarray, table: pd.DataFrame, seen: np.ndarray, subjects: pd.DataFrame
) -> pd.DataFrame:
    """The derived columns per subject (rows aligned with `subjects`), nullable booleans, from
    the courses table (`courses.CourseAssessment.table`, input order; `codes` its subject
    codes, `seen` the rows not hidden by --as-of)."""
    n = len(subjects)

    def among(column: str, values: tuple[str, ...]) -> np.ndarray:
        """Per row: is the column's text one of `values`? (compared once per distinct text)"""
        return coded(table, column, "").isin(values)

    ketamine = seen & (among("drug_generic", KETAMINES) | among("modality", ("esketamine",)))
    failed = among("failed", ("met", "inferred"))
    ect = seen & among("modality", ("ect",))
    evidence = {
        "esketamine_or_ketamine_nonresponse": (
            ketamine & (among("outcome", ("nonresponse", "partial_response")) | failed),
            ketamine & among("outcome", ("unknown",)) & ~failed,
        ),
        "ect_in_current_episode": (
            ect & among("episode_check", ("met",)),
            ect & among("episode_check", ("unknown",)),
        ),
    }
    columns = {}
    for name, (yes, maybe) in evidence.items():
        flag = subjects.get(HISTORY_FLAGS[name])
        columns[name] = or_flag(_any(codes, yes, n), _any(codes, maybe, n), flag)
    return pd.DataFrame(columns)
