"""Per-subject counts and classification, from assessed courses.

Subjects are factorized once into integer codes (sorted by subject_id); every
count is a bincount over codes, distinct counts use unique (subject, key)
pairs. No per-subject Python.

Counts are intervals: the lower bound counts courses whose check is met, the
upper bound also counts courses whose check is unknown. A threshold is then
met when the lower bound reaches it, not met when even the upper bound does
not, and unknown in between.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from trdscreen.ages import AGE_DISAGREES, subject_ages
from trdscreen.courses import CourseAssessment
from trdscreen.keys import SUBJECT_CODE, cohort_codes, first_rows, subject_keys
from trdscreen.reasons import ASSUMPTIONS, ROLE_INFERRED
from trdscreen.ruleset import RuleSet
from trdscreen.tristate import MET, NOT_MET, UNKNOWN

CLASSIFICATIONS = ("TRD", "PRD", "not_resistant", "undetermined")
ASSUMPTION_BITS = "assumption_bits"
"""Internal subjects column: bits of `reasons.ASSUMPTIONS` (the decision turns them into the
`assumptions` text, adding criteria resolved from unknown)."""


@dataclass(frozen=True)
class Cohort:
    """The subjects screened: every id in the subjects table or the treatments table."""

    ids: pd.Index  # sorted subject ids
    course_codes: np.ndarray  # subject code of each course row
    reference: np.ndarray  # datetime64[s] per subject, NaT = unknown
    episode_start: np.ndarray  # datetime64[s] per subject, NaT = unknown
    subjects: pd.DataFrame  # subjects table aligned to `ids` (missing rows empty)
    has_row: np.ndarray  # bool per subject: it has a row in the subjects table


def build_cohort(
    courses: pd.DataFrame, subjects: pd.DataFrame, rules: RuleSet, as_of: date | None
) -> Cohort:
    """The subjects of both tables, sorted by id, from the codes validation gave each row
    (`trdscreen.keys`); frames without them (direct callers) are coded here."""
    if SUBJECT_CODE in courses.columns and SUBJECT_CODE in subjects.columns:
        course_codes = courses[SUBJECT_CODE].to_numpy()
        subject_codes = subjects[SUBJECT_CODE].to_numpy()
    else:
        keys = subject_keys(courses["subject_id"], subjects["subject_id"])
        course_codes, subject_codes = keys.courses, keys.subjects
    ids, course_codes, subject_codes = cohort_codes(
        course_codes, subject_codes, courses["subject_id"], subjects["subject_id"]
    )
    # The subjects table aligned to `ids`: each subject's first row, empty where none.
    row_of = np.full(len(ids), -1, dtype=np.int64)
    first = first_rows(subject_codes)
    row_of[subject_codes[first]] = first
    others = subjects.drop(columns=["subject_id", SUBJECT_CODE], errors="ignore")
    aligned = others.reset_index(drop=True).reindex(row_of).reset_index(drop=True)
    aligned.insert(0, "subject_id", pd.Series(ids.array))
    if as_of is not None:
        reference = np.full(len(ids), np.datetime64(as_of, "s"))
    elif rules.reference_date.column in aligned.columns:
        reference = aligned[rules.reference_date.column].to_numpy(dtype="datetime64[s]")
    else:
        reference = np.full(len(ids), np.datetime64("NaT", "s"))
    if "episode_start" in aligned.columns:
        episode_start = aligned["episode_start"].to_numpy(dtype="datetime64[s]")
    else:
        episode_start = np.full(len(ids), np.datetime64("NaT", "s"))
    return Cohort(
        ids=ids,
        course_codes=course_codes,
        reference=reference,
        episode_start=episode_start,
        subjects=aligned,
        has_row=row_of >= 0,
    )


class DistinctCounter:
    """Distinct keys per subject among the rows a mask selects, for many masks.

    The (subject, key) pairs are hashed once into pair ids; each count is then two
    bincounts: which pairs have a selected row, and how many such pairs each
    subject has.
    """

    def __init__(self, codes: np.ndarray, keys: np.ndarray, n: int) -> None:
        self.n = n
        # Keys from 0 (a caller may mark rows it never selects with -1), so that
        # pair // width gives back the subject.
        keys = keys.astype(np.int64) - (keys.min() if len(keys) else 0)
        width = np.int64(keys.max() + 1) if len(keys) else np.int64(1)
        self.pair, pairs = pd.factorize(codes.astype(np.int64) * width + keys)
        self.subject_of_pair = (np.asarray(pairs) // width).astype(np.int64)

    def count(self, mask: np.ndarray) -> np.ndarray:
        if not mask.any():
            return np.zeros(self.n, dtype=np.int64)
        # Weighted by the mask instead of indexed by it: the same counts (exact in float64
        # far beyond any cohort) without a boolean gather that branches on every row.
        selected = np.bincount(self.pair, weights=mask, minlength=len(self.subject_of_pair)) > 0
        counts = np.bincount(self.subject_of_pair, weights=selected, minlength=self.n)
        return counts.astype(np.int64)


def _threshold(low: np.ndarray, high: np.ndarray, minimum: int) -> np.ndarray:
    return np.select([low >= minimum, high < minimum], [MET, NOT_MET], default=UNKNOWN).astype(
        np.int8
    )


def assess_subjects(cohort: Cohort, courses: CourseAssessment, rules: RuleSet) -> pd.DataFrame:
    """One row per subject (sorted by subject_id) with counts and classification."""
    n = len(cohort.ids)
    codes = cohort.course_codes
    keys = pd.factorize(courses.identity)[0] if len(courses.identity) else np.zeros(0, np.int64)
    counter = DistinctCounter(codes, keys, n)

    def bounds(states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return counter.count(states == MET), counter.count(states != NOT_MET)

    adequate_lo, adequate_hi = bounds(courses.adequate)
    failed_lo, failed_hi = bounds(courses.failed)
    partial_lo, partial_hi = bounds(courses.partial)
    responded_lo, responded_hi = bounds(courses.responded)

    trd = _threshold(failed_lo, failed_hi, rules.resistance.min_failed_trials)
    prd_rule = rules.resistance.prd
    prd = (
        _threshold(partial_lo, partial_hi, prd_rule.min_trials)
        if prd_rule is not None
        else np.full(n, NOT_MET, dtype=np.int8)
    )
    # PRD only when no adequate trial of the episode reached response (or remission).
    prd = np.where(responded_lo > 0, NOT_MET, prd)
    prd = np.where((responded_hi > 0) & (prd == MET), UNKNOWN, prd).astype(np.int8)
    # The assumptions the counted failures rest on (trials counted in the lower bound);
    # an inferred role also wherever the course is given in the episode, counted or not:
    # staging models score augmentation used (MSM) or failed (MGH-S) apart.
    counted_failure = courses.failed == MET
    in_scope = courses.used_any != NOT_MET
    assumption_bits = np.zeros(n, dtype=np.int64)
    for index, name in enumerate(ASSUMPTIONS):
        basis = counted_failure | in_scope if name == ROLE_INFERRED else counted_failure
        rows = basis & ((courses.assumptions >> index) & 1).astype(bool)
        has = np.bincount(codes[rows], minlength=n) > 0
        assumption_bits |= np.where(has, np.int64(1) << index, np.int64(0))
    # Subject-level assumptions: a current episode `trdscreen build` derived from the
    # records, and one that may have begun before them (earlier trials unseen).
    subject_level = (
        _text_is(cohort.subjects, "episode_source", "derived"),
        _flag(cohort.subjects, "left_censored"),
    )
    for offset, rows in enumerate(subject_level, start=len(ASSUMPTIONS) + 1):
        assumption_bits |= np.where(rows, np.int64(1) << offset, np.int64(0))
    classification = np.select(  # codes into CLASSIFICATIONS
        [trd == MET, trd == UNKNOWN, prd == MET, prd == UNKNOWN],
        [CLASSIFICATIONS.index(c) for c in ("TRD", "undetermined", "PRD", "undetermined")],
        default=CLASSIFICATIONS.index("not_resistant"),
    )

    age, disagree = subject_ages(cohort.subjects, cohort.reference, rules.reference_date.column)

    return pd.DataFrame(
        {
            "subject_id": cohort.ids,
            "reference_date": cohort.reference,
            "age": age,
            AGE_DISAGREES: disagree,  # for `to_resolve`; no output table holds it
            "n_courses": np.bincount(codes[courses.in_view], minlength=n),
            "n_adequate_trials": adequate_lo,
            "n_adequate_trials_max": adequate_hi,
            "n_failed_trials": failed_lo,
            "n_failed_trials_max": failed_hi,
            "n_partial_response_trials": partial_lo,
            "n_partial_response_trials_max": partial_hi,
            "classification": pd.Categorical.from_codes(
                classification, categories=list(CLASSIFICATIONS)
            ),
            ASSUMPTION_BITS: assumption_bits,
        }
    )


def _text_is(subjects: pd.DataFrame, column: str, value: str) -> np.ndarray:
    if column not in subjects.columns:
        return np.zeros(len(subjects), dtype=bool)
    return (subjects[column].astype(object) == value).to_numpy(dtype=bool, na_value=False)


def _flag(subjects: pd.DataFrame, column: str) -> np.ndarray:
    if column not in subjects.columns:
        return np.zeros(len(subjects), dtype=bool)
    return subjects[column].astype("boolean").to_numpy(dtype=bool, na_value=False)
