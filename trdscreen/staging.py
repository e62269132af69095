"""Staging models of treatment resistance: Thase-Rush, Maudsley (MSM) and MGH-S.

Each model turns a subject's assessed courses (and, for MSM, episode length
and severity) into a stage or score. Like the counts, scores are intervals:
the low value counts only what is certainly there, the high value also what
may be (unknown courses, a missing severity rating). A criterion on a score
is met only when it holds across the whole interval.

Pure and vectorized: per-subject distinct counts over integer codes, no
per-subject Python. The columns each model adds are listed in
`STAGING_COLUMNS`; criteria may name the first column of each pair.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trdscreen.columns import floats, hamd_versions
from trdscreen.courses import CourseAssessment
from trdscreen.ruleset import MGHS, STAGING_COLUMNS, Maudsley, Staging, ThaseRush
from trdscreen.schemas import HAMD_COLUMNS
from trdscreen.subjects import Cohort, DistinctCounter
from trdscreen.tristate import MET, NOT_MET, UNKNOWN, from_bool

INTERVAL_COLUMNS = {cols[0]: cols[1] for cols in STAGING_COLUMNS.values()}
DAYS_PER_MONTH = 365.25 / 12
AUGMENTING = ("augmentation", "combination")


def staging_columns(
    model: Staging, cohort: Cohort, courses: CourseAssessment, subjects: pd.DataFrame
) -> pd.DataFrame:
    """The model's columns, one row per cohort subject (aligned with `cohort.ids`)."""
    if isinstance(model, ThaseRush):
        return _thase_rush(model, cohort, courses)
    if isinstance(model, Maudsley):
        return _maudsley(model, cohort, courses, subjects)
    return _mgh_s(model, cohort, courses)


class _Counter:
    """Distinct counts per subject over both bounds of the course states."""

    def __init__(self, cohort: Cohort, courses: CourseAssessment) -> None:
        table = courses.table
        self.codes = cohort.course_codes
        self.n = len(cohort.ids)
        self.table = table
        self.role = table["role"].to_numpy(dtype=object)
        self.modality = table["modality"].to_numpy(dtype=object)
        self.on_drug = np.isin(self.modality, ("pharmacotherapy", "esketamine"))
        generic = table["drug_generic"].to_numpy(dtype=object, na_value=None)
        drug = table["drug"].to_numpy(dtype=object)
        # One key per distinct drug; an unknown name counts as itself (upper bound only,
        # since its treatment state is unknown).
        keyed = np.where(pd.isna(generic), np.char.add("?", drug.astype(str)), generic)
        drug_key = pd.factorize(keyed)[0] if len(keyed) else np.zeros(0, np.int64)
        self.drugs = DistinctCounter(self.codes, drug_key, self.n)

    def keyed_by(self, keys: np.ndarray) -> DistinctCounter:
        """A counter of distinct `keys` (e.g. drug classes) instead of drugs."""
        return DistinctCounter(self.codes, keys, self.n)

    def bounds(
        self, states: np.ndarray, mask: np.ndarray, counter: DistinctCounter | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Distinct drugs (or `counter`'s keys) among the masked courses, both bounds."""
        counter = self.drugs if counter is None else counter
        return counter.count(mask & (states == MET)), counter.count(mask & (states != NOT_MET))

    def any(self, states: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Whether each subject has any masked course, in both bounds."""

        def has(rows: np.ndarray) -> np.ndarray:
            return np.bincount(self.codes[rows], minlength=self.n) > 0

        return has(mask & (states == MET)), has(mask & (states != NOT_MET))


def _ect_states(model: ThaseRush | MGHS, courses: CourseAssessment) -> np.ndarray:
    return courses.failed_any if model.ect_counts_when == "failed" else courses.used_any


def _thase_rush(model: ThaseRush, cohort: Cohort, courses: CourseAssessment) -> pd.DataFrame:
    count = _Counter(cohort, courses)
    drug_class = count.table["drug_class"].to_numpy(dtype=object, na_value=None)
    majors = list(model.major_classes)
    major = np.full(len(drug_class), -1, dtype=np.int64)
    for index, name in enumerate(majors):
        major[np.isin(drug_class, model.major_classes[name])] = index
    # Thase-Rush ignores augmentation: antidepressant courses of a mapped class only.
    mask = count.on_drug & (count.role != "augmentation") & (major >= 0)
    failed = courses.failed_any
    n_classes = count.bounds(failed, mask, count.keyed_by(major))
    tca = count.any(failed, mask & (major == majors.index("TCA")))
    maoi = count.any(failed, mask & (major == majors.index("MAOI")))
    ect_done = count.any(_ect_states(model, courses), count.modality == "ect")
    extra = 1 if model.sequential else 0  # III/IV need their class besides two others
    stages = []
    for b in (0, 1):  # lower, then upper bound
        stage_1 = n_classes[b] >= 1
        stage_2 = n_classes[b] >= 2
        stage_3 = stage_2 & tca[b] & (n_classes[b] >= 2 + extra)
        stage_4 = stage_3 & maoi[b] & (n_classes[b] >= 2 + 2 * extra)
        stage_5 = stage_4 & ect_done[b]
        stages.append(stage_1.astype(np.int64) + stage_2 + stage_3 + stage_4 + stage_5)
    low, high = stages
    return pd.DataFrame({"thase_rush_stage": low, "thase_rush_stage_max": high})


def _maudsley(
    model: Maudsley, cohort: Cohort, courses: CourseAssessment, subjects: pd.DataFrame
) -> pd.DataFrame:
    count = _Counter(cohort, courses)
    n = count.n
    # Duration of the current episode at the reference date: <= 12 months 1, <= 24 2, else 3.
    days = (cohort.reference - cohort.episode_start) / np.timedelta64(1, "D")
    months = days / DAYS_PER_MONTH
    duration = np.select(
        [months <= model.subacute_after_months, months <= model.chronic_after_months], [1, 2], 3
    ).astype(np.float64)
    unknown = np.isnan(months)
    duration_lo = np.where(unknown, 1, duration)
    duration_hi = np.where(unknown, 3, duration)

    # Severity at baseline from a rating column (bands are a project choice, see the preset).
    rule = model.severity
    rating = floats(subjects, rule.column)
    if rule.column in HAMD_COLUMNS:
        # The bands are HAM-D17 totals: a total of another version is an unknown severity.
        rating = np.where(hamd_versions(subjects) == 17, rating, np.nan)
    severity = np.select(
        [rating < rule.mild_from, rating < rule.moderate_from, rating < rule.severe_from],
        [1, 2, 3],
        4,
    ).astype(np.float64)
    psychosis = _subject_bools(subjects, rule.psychosis_column, n)
    severe = severity == 4
    severity_lo = np.where(severe & (psychosis == MET), 5, severity)
    severity_hi = np.where(severe & (psychosis != NOT_MET), 5, severity)
    severity_lo = np.where(np.isnan(rating), 1, severity_lo)
    severity_hi = np.where(np.isnan(rating), 5, severity_hi)

    # Failed antidepressants (distinct drugs, augmentation agents scored apart).
    drug_class = count.table["drug_class"].to_numpy(dtype=object, na_value=None)
    antidepressant = count.on_drug & (drug_class != "augmentation")
    failed_lo, failed_hi = count.bounds(courses.failed_any, antidepressant)
    steps = np.asarray(model.failed_antidepressant_steps)
    # The treatment dimension scores 1 to 5: never below its published minimum of 1.
    treatment_lo = np.maximum(np.searchsorted(steps, failed_lo, side="right"), 1)
    treatment_hi = np.maximum(np.searchsorted(steps, failed_hi, side="right"), 1)

    augmentation = count.any(courses.used_any, count.on_drug & np.isin(count.role, AUGMENTING))
    ect = count.any(courses.used_any, count.modality == "ect")
    low = duration_lo + severity_lo + treatment_lo + augmentation[0] + ect[0]
    high = duration_hi + severity_hi + treatment_hi + augmentation[1] + ect[1]

    def band(score: np.ndarray) -> np.ndarray:
        return np.select(
            [score >= model.severe_from, score >= model.moderate_from],
            ["severe", "moderate"],
            "mild",
        )

    band_lo, band_hi = band(low), band(high)
    return pd.DataFrame(
        {
            "msm_score": low,
            "msm_score_max": high,
            "msm_band": pd.array(
                np.where(band_lo == band_hi, band_lo, "undetermined"), dtype="str"
            ),
        }
    )


def _mgh_s(model: MGHS, cohort: Cohort, courses: CourseAssessment) -> pd.DataFrame:
    count = _Counter(cohort, courses)
    failed = courses.failed_any
    trials = count.bounds(failed, count.on_drug & (count.role == "monotherapy"))
    optimised = count.bounds(failed, count.on_drug & courses.dose_optimised)
    augmented = count.bounds(failed, count.on_drug & np.isin(count.role, AUGMENTING))
    ect = count.any(_ect_states(model, courses), count.modality == "ect")
    scores = [
        model.points_per_failed_trial * trials[b]
        + model.points_per_dose_optimisation * optimised[b]
        + model.points_per_augmentation_or_combination * augmented[b]
        + model.points_ect * ect[b]
        for b in (0, 1)
    ]
    return pd.DataFrame({"mgh_s_score": scores[0], "mgh_s_score_max": scores[1]})


def _subject_bools(subjects: pd.DataFrame, column: str | None, n: int) -> np.ndarray:
    """Tri-state of a true/false subject column (unknown when absent or empty)."""
    if column is None:
        return np.full(n, NOT_MET, dtype=np.int8)
    if column not in subjects.columns:
        return np.full(n, UNKNOWN, dtype=np.int8)
    series = subjects[column]
    return from_bool(series.to_numpy(dtype=bool, na_value=False), known=series.notna().to_numpy())
