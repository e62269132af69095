"""Validation of the read inputs against the contract and the rule set.

Pure: takes the tables as read (`SourceTable`) and returns typed frames plus
the issues table. Raises nothing for data problems; callers decide what an
error-level issue means for the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from trdscreen.ages import AGE_DISAGREES, ages_disagree
from trdscreen.asof import (
    AFTER,
    CENSORED,
    born_later,
    course_masks,
    subject_masks,
    undated_ages,
)
from trdscreen.coded import coded
from trdscreen.columns import hamd_versions, repeated_text
from trdscreen.convert import coerce
from trdscreen.diagnoses import DERIVED_COLUMNS as DIAGNOSIS_COLUMNS
from trdscreen.diagnoses import SOURCE_COLUMNS as DIAGNOSIS_SOURCES
from trdscreen.drugnames import normalize_atc
from trdscreen.drugs import distinct_drugs
from trdscreen.formulary import Formulary
from trdscreen.history import HISTORY_FLAGS
from trdscreen.io import SourceTable
from trdscreen.issues import IssueLog
from trdscreen.keys import SUBJECT_CODE, day_numbers, first_rows, pack, slots, subject_keys
from trdscreen.ruleset import DRUG_MODALITIES, RuleSet
from trdscreen.schemas import (
    HAMD_COLUMNS,
    HAMD_MAXIMUM,
    SUBJECT_COLUMNS,
    TREATMENT_COLUMNS,
    check_values,
)
from trdscreen.subjectcolumns import DERIVED_SUBJECT_COLUMNS, criteria_column_kinds


@dataclass(frozen=True)
class ValidatedInputs:
    treatments: pd.DataFrame  # typed contract columns + source_file, source_line
    subjects: pd.DataFrame  # typed subjects table as given (empty without one)
    issues: pd.DataFrame
    rejections: pd.DataFrame
    """Error-level issues by table ("treatments"/"subjects") and row position (-1: file)."""

    @property
    def n_errors(self) -> int:
        return int(self.issues["rows"][self.issues["severity"] == "error"].sum())


def validate_inputs(
    treatments: SourceTable,
    subjects: SourceTable | None,
    rules: RuleSet,
    formulary: Formulary,
    as_of: date | None,
    reports: tuple[RuleSet, ...] = (),
) -> ValidatedInputs:
    log = IssueLog()
    courses = coerce(treatments, TREATMENT_COLUMNS, log)
    check_values(treatments, courses, TREATMENT_COLUMNS, log)
    check_hamd_versions(treatments, courses, log)

    subjects_usable = subjects is not None
    if subjects is not None:
        people = coerce(
            subjects, SUBJECT_COLUMNS, log, extra=criteria_column_kinds(rules, *reports)
        )
        check_values(subjects, people, SUBJECT_COLUMNS, log)
        check_hamd_versions(subjects, people, log)
        if "subject_id" in people.columns:
            _check_subject_columns(subjects, people, rules, as_of, log)
        else:  # missing_column is logged; keep checking the treatments without noise
            people["subject_id"] = pd.Series(pd.NA, index=people.index, dtype="str")
            subjects_usable = False
    else:
        people = pd.DataFrame({"subject_id": pd.Series([], dtype="str")})
        _check_without_subjects(treatments, rules, as_of, log)

    # Subject codes once; every later per-subject step uses them (trdscreen.keys).
    has_ids = "subject_id" in courses.columns
    keys = subject_keys(
        courses["subject_id"] if has_ids else pd.Series([], dtype="str"), people["subject_id"]
    )
    people[SUBJECT_CODE] = keys.subjects
    if has_ids:
        courses[SUBJECT_CODE] = keys.courses
    if subjects is not None and subjects_usable:
        _check_duplicate_subjects(subjects, people, log)
    if {"subject_id", "start_date"} <= set(courses.columns):
        reference = _reference_dates(courses, people, rules, as_of)
        born = _per_course(courses, people, "birth_date")
        log.add(
            treatments,
            np.flatnonzero(courses["start_date"].to_numpy() < born),
            "start_date",
            "starts_before_birth",
            "the course starts before the subject's birth date, which cannot be; fix the date",
            courses["subject_id"],
        )
        if as_of is None:
            _check_dates_against_reference(treatments, courses, reference, log)
        else:
            _note_as_of(treatments, subjects, courses, people, as_of, log)
        _check_courses(treatments, courses, log)
        if subjects is not None and subjects_usable:
            _check_membership(treatments, subjects, courses, people, log)
    if "drug" in courses.columns:
        _check_drug_names(treatments, courses, formulary, log)

    courses["source_file"] = repeated_text(treatments.file, len(courses))
    courses["source_line"] = treatments.lines
    return ValidatedInputs(courses, people, log.frame(), log.rejections())


def _check_subject_columns(
    source: SourceTable, people: pd.DataFrame, rules: RuleSet, as_of: date | None, log: IssueLog
) -> None:
    present = set(people.columns)
    for criterion, column in ((c, column) for c in rules.criteria for column in c.columns):
        if column == "age":
            if not ({"age", "birth_date"} & present):
                log.add(
                    source,
                    None,
                    "age",
                    "criterion_column_missing",
                    f"criterion {criterion.id} needs `age` or `birth_date` in the subjects table; "
                    "neither was found (map a site header under `columns: subjects:`)",
                )
        elif column in DIAGNOSIS_COLUMNS:
            sources = (*DIAGNOSIS_SOURCES, *(("bipolar",) if column != "mdd" else ()))
            if not set(sources) & present:
                log.add(
                    source,
                    None,
                    column,
                    "criterion_column_missing",
                    f"criterion {criterion.id} reads `{column}`, derived from subjects column "
                    f"{' or '.join(f'`{c}`' for c in sources)}; none was found (map a site "
                    "header under `columns: subjects:`)",
                )
        elif column in HISTORY_FLAGS and HISTORY_FLAGS[column] not in present:
            log.add(
                source,
                None,
                HISTORY_FLAGS[column],
                "criterion_column_missing",
                f"criterion {criterion.id} reads `{column}`: subjects column "
                f"`{HISTORY_FLAGS[column]}` OR-ed with the treatment history; the subjects "
                "table lacks it (map a site header under `columns: subjects:`)",
            )
        elif column not in DERIVED_SUBJECT_COLUMNS and column not in present:
            log.add(
                source,
                None,
                column,
                "criterion_column_missing",
                f"criterion {criterion.id} reads subjects column `{column}`, which the subjects "
                "table lacks (map a site header under `columns: subjects:` or fix the rule)",
            )
    ref_column = rules.reference_date.column
    if as_of is None and ref_column not in present:
        log.add(
            source,
            None,
            ref_column,
            "reference_date_missing",
            f"the reference date comes from subjects column `{ref_column}`, which is missing; "
            "add it or pass --as-of DATE",
        )
    elif as_of is None:
        rows = np.flatnonzero(people[ref_column].isna().to_numpy())
        log.add(
            source,
            rows,
            ref_column,
            "reference_date_missing",
            "reference date is empty: ongoing courses and age cannot be computed and the subject "
            "will need review",
            people["subject_id"],
            severity="warning",
        )
    _check_subject_dates(source, people, ref_column, as_of, log)


def _check_subject_dates(
    source: SourceTable, people: pd.DataFrame, ref_column: str, as_of: date | None, log: IssueLog
) -> None:
    """A birth or a current episode after the subject's own reference date cannot be: the
    subject was screened (or is screened at --as-of) within the current episode, and after
    birth. Without --as-of, an error like a course after the reference date; with it, a
    later birth is expected of an export taken later (`asof.subject_masks` hides a later
    episode): said as info, and the age is unknown (`subjects.age_at`). An episode before
    birth is an error either way."""
    ids = people["subject_id"]
    if {"birth_date", "episode_start"} <= set(people.columns):
        onset, birth = (
            people[c].to_numpy(dtype="datetime64[s]") for c in ("episode_start", "birth_date")
        )
        rows = np.flatnonzero(onset < birth)
        message = "the current episode begins before the subject's birth date; fix the date"
        log.add(source, rows, "episode_start", "episode_before_birth", message, ids)
    if ref_column in people.columns:  # both given, years apart: the age is unknown
        rows = np.flatnonzero(ages_disagree(people, ref_column))
        message = (
            "age and birth_date are more than a year apart on the reference date "
            f"(`{ref_column}`): the age is unknown and an age criterion needs review; fix one"
        )
        log.add(source, rows, "age", AGE_DISAGREES, message, ids, severity="warning")
    if as_of is not None:  # an export taken later holds later births: not an error
        rows = np.flatnonzero(born_later(people, as_of))
        message = f"the subject was born after --as-of {as_of}; its age on that date is unknown"
        log.add(source, rows, "birth_date", "born_after_as_of", message, ids, severity="info")
        return
    if ref_column not in people.columns:
        return
    reference = people[ref_column].to_numpy(dtype="datetime64[s]")
    for column, check, said in (
        ("birth_date", "born_after_reference_date", "the birth date is after"),
        ("episode_start", "episode_after_reference_date", "the current episode begins after"),
    ):
        if column in people.columns:
            rows = np.flatnonzero(people[column].to_numpy(dtype="datetime64[s]") > reference)
            message = (
                f"{said} the subject's reference date (`{ref_column}`), which cannot be: a "
                "subject is screened after birth, within the current episode; fix the date"
            )
            log.add(source, rows, column, check, message, ids)


def _check_without_subjects(
    source: SourceTable, rules: RuleSet, as_of: date | None, log: IssueLog
) -> None:
    # Diagnosis and history columns need subject columns.
    derived = set(DERIVED_SUBJECT_COLUMNS[1:]) - set(DIAGNOSIS_COLUMNS) - set(HISTORY_FLAGS)
    needed = sorted({column for c in rules.criteria for column in c.columns} - derived)
    if needed:
        log.add(
            source,
            None,
            ", ".join(needed),
            "subjects_table_missing",
            f"the rule set's criteria read subject columns ({', '.join(needed)}) but no subjects "
            "table was given; pass --subjects FILE or put subjects.csv beside treatments",
        )
    if as_of is None:
        log.add(
            source,
            None,
            rules.reference_date.column,
            "reference_date_missing",
            "no reference date: pass --as-of DATE or a subjects table with "
            f"`{rules.reference_date.column}`",
        )


def _check_duplicate_subjects(source: SourceTable, people: pd.DataFrame, log: IssueLog) -> None:
    log.add_duplicates(source, people[SUBJECT_CODE].to_numpy(), people["subject_id"])


def _reference_dates(
    courses: pd.DataFrame, people: pd.DataFrame, rules: RuleSet, as_of: date | None
) -> np.ndarray:
    """Reference date per course row (datetime64[s]; NaT where unknown)."""
    if as_of is not None:
        return np.full(len(courses), np.datetime64(as_of, "s"))
    return _per_course(courses, people, rules.reference_date.column)


def _per_course(courses: pd.DataFrame, people: pd.DataFrame, column: str) -> np.ndarray:
    """A subjects date column per course row (datetime64[s]; NaT where unknown)."""
    if column not in people.columns or SUBJECT_CODE not in people.columns:
        return np.full(len(courses), np.datetime64("NaT", "s"))
    codes = people[SUBJECT_CODE].to_numpy()
    course_codes = courses[SUBJECT_CODE].to_numpy()
    # A subject without a subjects row (or a null id) keeps NaT. A duplicated subject
    # row: the first one's date.
    by_code = np.full(slots(codes, course_codes), np.datetime64("NaT", "s"))
    first = first_rows(codes)
    by_code[codes[first]] = people[column].to_numpy(dtype="datetime64[s]")[first]
    return by_code[course_codes]


def _check_dates_against_reference(
    source: SourceTable, courses: pd.DataFrame, reference: np.ndarray, log: IssueLog
) -> None:
    ids = courses["subject_id"]
    start = courses["start_date"].to_numpy()
    if "end_date" in courses.columns:
        rows = np.flatnonzero(courses["end_date"].to_numpy() > reference)
        log.add(
            source,
            rows,
            "end_date",
            "ends_after_reference_date",
            "the course ends after the subject's reference date (screening date or --as-of); "
            "a history must end on or before it",
            ids,
        )
    rows = np.flatnonzero(start > reference)
    log.add(
        source,
        rows,
        "start_date",
        "starts_after_reference_date",
        "the course starts after the subject's reference date (screening date or --as-of)",
        ids,
    )


def _note_as_of(
    treatments: SourceTable,
    subjects: SourceTable | None,
    courses: pd.DataFrame,
    people: pd.DataFrame,
    as_of: date,
    log: IssueLog,
) -> None:
    """With --as-of, later records are expected: say what is hidden (trdscreen.asof)."""
    after, censored = course_masks(courses, as_of)
    ids = courses["subject_id"]
    log.add(
        treatments,
        np.flatnonzero(after),
        "start_date",
        AFTER,
        f"the course starts after --as-of {as_of}; it is left out of this screening",
        ids,
        severity="info",
    )
    log.add(
        treatments,
        np.flatnonzero(censored),
        "end_date",
        CENSORED,
        f"the course was still running on --as-of {as_of}: it is treated as ongoing to that "
        "date, and its end scores, improvement and stop reason are not used",
        ids,
        severity="info",
    )
    if subjects is None:
        return
    screened_later, undated, episode_later = subject_masks(people, as_of)
    log.add(
        subjects,
        np.flatnonzero(screened_later),
        "screening_date",
        "screened_after_as_of",
        f"the subject was screened after --as-of {as_of}; its screening scores are unknown "
        "on that date",
        people["subject_id"],
        severity="info",
    )
    log.add(
        subjects,
        np.flatnonzero(undated),
        "screening_date",
        "screening_undated_at_as_of",
        f"screening_date is empty: the screening scores may have been taken after --as-of "
        f"{as_of}, so they are unknown on that date; give the screening date to use them",
        people["subject_id"],
        severity="info",
    )
    log.add(
        subjects,
        np.flatnonzero(episode_later),
        "episode_start",
        "episode_after_as_of",
        f"the current episode began after --as-of {as_of}; the episode on that date is unknown",
        people["subject_id"],
        severity="info",
    )
    log.add(
        subjects,
        np.flatnonzero(undated_ages(people)),
        "age",
        "age_undated_at_as_of",
        f"age is given without a birth date: it carries no date, so the age on --as-of {as_of} "
        "is unknown (an age criterion needs review); give birth_date to decide it",
        people["subject_id"],
        severity="info",
    )


def check_hamd_versions(source: SourceTable, frame: pd.DataFrame, log: IssueLog) -> None:
    """A HAM-D total above its version's highest total (`schemas.HAMD_MAXIMUM`; version 17
    when `hamd_version` is empty or absent) is an error, like any out-of-range value."""
    version = hamd_versions(frame)
    highest = np.select(
        [version == v for v in HAMD_MAXIMUM], list(HAMD_MAXIMUM.values()), default=np.inf
    )
    ids = frame["subject_id"] if "subject_id" in frame.columns else None
    for column in (c for c in HAMD_COLUMNS if c in frame.columns):
        total = frame[column].to_numpy(dtype=np.float64, na_value=np.nan)
        rows = np.flatnonzero((total > highest) & (total <= max(HAMD_MAXIMUM.values())))
        log.add(
            source, rows, column, "out_of_range",
            "expected a HAM-D total within its version's range: at most 52 for HAM-D17 (the "
            "version when hamd_version is empty), 64 for HAM-D21",
            ids,
        )  # fmt: skip


def _check_courses(source: SourceTable, courses: pd.DataFrame, log: IssueLog) -> None:
    ids = courses["subject_id"]
    end = courses["end_date"].to_numpy() if "end_date" in courses.columns else None
    if end is not None:
        rows = np.flatnonzero(end < courses["start_date"].to_numpy())
        log.add(source, rows, "end_date", "end_before_start", "end_date is before start_date", ids)
    if "drug" in courses.columns:
        # Integer keys: subject code, drug name folded per distinct name, start day.
        names, distinct = pd.factorize(courses["drug"])
        folded = pd.factorize(distinct.str.lower().str.strip())[0]
        drug = np.where(names >= 0, folded[names] if len(folded) else names, -1)
        start = courses["start_date"].to_numpy(dtype="datetime64[s]")
        subject = courses[SUBJECT_CODE].to_numpy()
        keys = (subject, drug, day_numbers(start))
        packed = pack(*keys)
        key = pd.Series(packed) if packed is not None else pd.DataFrame(dict(enumerate(keys)))
        known = (subject >= 0) & (drug >= 0) & ~np.isnat(start)
        dup = key.duplicated(keep=False).to_numpy() & known
        if dup.any():
            first = pd.Series(source.lines).groupby(list(keys)).transform("min").to_numpy()
            message = pd.Series(
                "duplicate course: same subject, drug and start_date as line " + first.astype(str)
            )
            log.add(source, np.flatnonzero(dup), "drug", "duplicate_course", message, ids)
    if "stop_reason" in courses.columns and end is not None:
        stopped = courses["stop_reason"].notna().to_numpy() & (
            courses["stop_reason"] != "ongoing"
        ).to_numpy(dtype=bool, na_value=False)
        rows = np.flatnonzero(np.isnat(end) & stopped)
        rows = np.setdiff1d(rows, log.unconverted.get((source.name, "end_date"), []))
        log.add(
            source,
            rows,
            "end_date",
            "end_date_missing_for_stopped_course",
            "end_date is empty but stop_reason says the course stopped; its duration is unknown "
            "(reason end_date_missing)",
            ids,
            severity="warning",
        )


def _check_membership(
    treatments: SourceTable,
    subjects: SourceTable,
    courses: pd.DataFrame,
    people: pd.DataFrame,
    log: IssueLog,
) -> None:
    course_codes = courses[SUBJECT_CODE].to_numpy()
    subject_codes = people[SUBJECT_CODE].to_numpy()
    size = slots(course_codes, subject_codes)
    known = np.bincount(subject_codes[subject_codes >= 0], minlength=size) > 0
    with_courses = np.bincount(course_codes[course_codes >= 0], minlength=size) > 0
    ids = courses["subject_id"]
    rows = np.flatnonzero((course_codes >= 0) & ~known[course_codes])
    log.add(
        treatments,
        rows,
        "subject_id",
        "subject_not_in_subjects_table",
        "subject has courses but no row in the subjects table; its subject criteria are unknown "
        "and it will need review",
        ids,
        severity="warning",
    )
    rows = np.flatnonzero(~with_courses[subject_codes])
    log.add(
        subjects,
        rows,
        "subject_id",
        "subject_without_courses",
        "subject has no treatment courses; it is screened with zero trials",
        people["subject_id"],
        severity="info",
    )


def _check_drug_names(
    source: SourceTable, courses: pd.DataFrame, formulary: Formulary, log: IssueLog
) -> None:
    codes, uniques = distinct_drugs(courses)
    if len(uniques) == 0:
        return
    drug_modality = coded(courses, "modality", "pharmacotherapy").isin(DRUG_MODALITIES)
    matches = [formulary.resolve(name, atc) for name, atc in uniques]
    messages = []
    for match in matches:
        if match.generic is not None:
            messages.append("")
            continue
        near = formulary.suggest(match.normalized)
        hint = f"closest known: {', '.join(near)}" if near else "no close match"
        messages.append(
            f"drug name not in the formulary ({hint}); the course's adequacy is unknown. "
            "Fix the name or add it to a site formulary"
        )
    _check_plausible_doses(source, courses, formulary, [m.generic for m in matches], codes, log)
    _check_atc_codes(source, courses, log)
    per_name = np.asarray(messages, dtype=object)
    unknown_name = np.append(per_name != "", False)  # the last slot: null names (-1)
    rows = np.flatnonzero(unknown_name[codes] & drug_modality)
    log.add(
        source,
        rows,
        "drug",
        "unknown_drug",
        per_name[codes[rows]],  # one message per flagged row
        courses["subject_id"] if "subject_id" in courses.columns else None,
        severity="warning",
    )


def _check_atc_codes(source: SourceTable, courses: pd.DataFrame, log: IssueLog) -> None:
    """An `atc_code` cell that is not a WHO ATC code (e.g. N06AB06) is an error; the row's
    drug is then known by its name only."""
    if "atc_code" not in courses.columns:
        return
    codes, values = pd.factorize(courses["atc_code"])
    bad = np.array([normalize_atc(v) is None for v in values] + [False], dtype=bool)
    rows = np.flatnonzero(bad[codes])
    log.add(
        source,
        rows,
        "atc_code",
        "not_an_atc_code",
        "expected a WHO ATC code of 4 to 7 characters, such as N06AB06, or empty",
        courses["subject_id"] if "subject_id" in courses.columns else None,
    )


PLAUSIBLE_DOSE_MULTIPLE = 3.0
"""A daily dose above this multiple of the formulary's usual maximum gets a warning
(`implausible_dose`): more likely a unit or typing error than a real dose. A project
heuristic, not a clinical threshold [U]; it never changes a decision by itself."""


def _check_plausible_doses(
    source: SourceTable,
    courses: pd.DataFrame,
    formulary: Formulary,
    generics: list[str | None],
    codes: np.ndarray,
    log: IssueLog,
) -> None:
    """Warn where a dose is far above the drug's usual maximum. `generics` holds the
    generic of each distinct name (`codes` points rows at them), None when unknown."""
    if "daily_dose_mg" not in courses.columns:
        return
    ceiling = np.full(len(generics) + 1, np.inf)  # the last slot: null names (-1)
    names = np.full(len(generics) + 1, "", dtype=object)
    for index, generic in enumerate(generics):
        drug = formulary.drugs.get(generic) if generic is not None else None
        if drug is not None and drug.max_mg_per_day is not None:
            ceiling[index] = PLAUSIBLE_DOSE_MULTIPLE * drug.max_mg_per_day
            names[index] = f"{generic}: {drug.max_mg_per_day:g} mg/day"
    dose = courses["daily_dose_mg"].to_numpy(dtype=np.float64, na_value=np.nan)
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero(dose > ceiling[codes])
    if rows.size:
        messages = np.char.add(
            f"the dose is more than {PLAUSIBLE_DOSE_MULTIPLE:g} times the usual maximum (",
            names[codes[rows]].astype(str),
        )
        messages = np.char.add(messages, "); check the value and its unit (mg per day)")
        log.add(
            source,
            rows,
            "daily_dose_mg",
            "implausible_dose",
            messages.astype(object),
            courses["subject_id"] if "subject_id" in courses.columns else None,
            severity="warning",
        )
