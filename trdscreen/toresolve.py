"""`to_resolve`: for each needs_review subject, the fact to look up first.

A subject needs review when a protocol criterion cannot be decided. The fact behind
the first such criterion (in protocol order) is named where it lives in the export:
a subject column ("subjects: episode_start missing") or the first course whose
adequacy or failure is unknown, by line (a Parquet file's row number), drug (its
generic where known) and start
("treatments.csv line 12 (sertraline from 2023-02-01): adherence missing"), with how
many more unknown courses there are. Settling it may decide the subject or move it
to the next fact; it never says what the decision would be.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trdscreen.ages import AGE_DISAGREES, leap_birthday_eve
from trdscreen.asof import WHY
from trdscreen.criteria import CriterionResult
from trdscreen.diagnoses import UNCERTAIN_EXCLUSION
from trdscreen.drugnames import normalize_name
from trdscreen.formulary import Formulary
from trdscreen.history import HISTORY_FLAGS
from trdscreen.io import TEXT_FILE
from trdscreen.tristate import UNKNOWN

COURSE_FACTS = {
    "unknown_drug": "drug {drug!r} unknown{closest}",
    "dose_missing": "daily_dose_mg missing",
    "no_minimum_dose": "no minimum dose of {generic} in the formulary (a site formulary or "
    "adequacy.dose.any_dose_for decides it)",
    "censored_at_as_of": "still running on the --as-of date: its end rating, stop reason "
    "and sessions are not known then",
    "end_date_missing": "end_date missing (the course stopped)",
    "duration_unknown": "end_date missing",
    "sessions_missing": "sessions missing",
    "adherence_missing": "adherence missing",
    "episode_unknown": "",  # a subject fact: see SUBJECT_FACT_OF_COURSE
    "baseline_before_episode": "baseline rating before the current episode: a rating in "
    "this episode",
    "baseline_below_minimum": "baseline rating below the rule set's minimum",
    "segments_disagree": "the ratings of its merged rows disagree",
    "interim_response": "a rating during the course showed a response it lost by the end",
    "outcome_disagrees": "improvement or stop_reason says the course went better than its "
    "ratings show: which is right",
    "hamd_version_not_compared": "HAM-D rated on a version the rule set does not compare "
    "(hamd_version): a comparable rating",
    "outcome_unknown": "hamd_start and hamd_end (or improvement, or a stop reason the rule "
    "set reads) missing",
    "superseded_possibly": "whether a later course of another drug was adequate",
}
"""What to look up for a course whose adequacy or failure is unknown, by its first
reason code in this order."""
SUBJECT_FACT_OF_COURSE = {"episode_unknown": "subjects: episode_start missing"}


DERIVED_FACTS = {
    "mdd": "subjects: diagnosis missing or not resolved to a known diagnosis",
    # Unknown only when no diagnosis says bipolar or schizoaffective and the flag is empty.
    "bipolar_or_schizoaffective": "subjects: bipolar missing",
}
FALLBACK = "see the criteria_ledger and courses for this subject"
NO_ROW = "subjects: no row for this subject in the subjects table"
NO_REFERENCE = "subjects: screening_date missing (the reference date)"
AGE_MISSING = "subjects: birth_date (or age) missing"
MARKED_FACTS = {
    AGE_DISAGREES: (
        AGE_MISSING,
        "subjects: age and birth_date disagree by more than a year on the reference date: "
        "confirm which is right",
    ),
    UNCERTAIN_EXCLUSION: (
        DERIVED_FACTS["bipolar_or_schizoaffective"],
        "subjects: the diagnosis text mentions bipolar or schizoaffective disorder with a "
        "qualifier (ruled out, rule out, possible, no history of, family history): confirm "
        "in the chart whether the patient has it",
    ),
}
"""Derived subject columns that mark why a fact is unknown though given (marker -> (what
`to_resolve` would say, what it says instead))."""


def _subject_facts(
    column: str, has_row: np.ndarray, reference_known: np.ndarray, diagnosis: set[str]
) -> np.ndarray:
    """What to look up for subjects whose `column` is missing (vectorized)."""
    if column == "age":
        own = np.where(reference_known, AGE_MISSING, NO_REFERENCE)
    elif column in DERIVED_FACTS:
        own = np.full(len(has_row), DERIVED_FACTS[column], dtype=object)
    elif column in diagnosis:
        own = np.full(len(has_row), "subjects: diagnosis missing or not resolved to a known "
                      "diagnosis", dtype=object)  # fmt: skip
    else:
        own = np.full(len(has_row), f"subjects: {column} missing", dtype=object)
    return np.where(has_row, own, NO_ROW).astype(object)


def to_resolve(
    decisions: pd.DataFrame,
    results: list[CriterionResult],
    criteria_frame: pd.DataFrame,
    subject_columns: set[str],
    diagnosis_columns: set[str],
    has_row: np.ndarray,
    reference: np.ndarray,
    courses: pd.DataFrame,
    course_subjects: np.ndarray,
    formulary: Formulary,
    staging_inputs: tuple[str, ...] = (),
) -> np.ndarray:
    """The `to_resolve` text per subject (aligned to `decisions`, sorted by id): empty
    unless the decision is needs_review. `subject_columns` are the columns read from the
    subjects table (or derived from it); every other column a criterion reads is
    counted from the courses; `diagnosis_columns` are derived from the diagnosis;
    `staging_inputs` are the subject columns a staging score reads besides the courses
    (the MSM's severity rating and episode onset)."""
    n = len(decisions)
    out = np.full(n, "", dtype=object)
    first = np.full(n, -1, dtype=np.int64)
    review = (decisions["decision"] == "needs_review").to_numpy()  # excluded: nothing to do
    for index, result in enumerate(results):
        first[review & (result.state == UNKNOWN) & (first < 0)] = index
    reference_known = ~np.isnat(reference)
    by_courses = np.zeros(n, dtype=bool)
    for index, result in enumerate(results):
        rows = np.flatnonzero(first == index)
        if not rows.size:
            continue
        known = subject_columns | diagnosis_columns | {"age"}
        columns = result.criterion.columns
        # A history flag is the subject's flag OR evidence in the courses: unknown while
        # the flag is empty (that is the fact), or while a course's evidence is unknown.
        own = [c for c in columns if c in known] + [
            HISTORY_FLAGS[c] for c in columns if c in HISTORY_FLAGS
        ]
        counted = [c for c in columns if c not in known]
        for column in own:
            values = criteria_frame[column] if column in criteria_frame else None
            missing = (
                np.ones(rows.size, dtype=bool)
                if values is None
                else values.iloc[rows].isna().to_numpy()
            )
            empty = rows[missing & (out[rows] == "")]
            out[empty] = _subject_facts(
                column, has_row[empty], reference_known[empty], diagnosis_columns
            )
        left = rows[out[rows] == ""]
        if counted:
            by_courses[left] = True
        elif any(c.startswith("hamd") for c in own):  # given, on a scale it does not compare
            versions = "/".join(str(v) for v in result.criterion.hamd_versions)
            out[left] = (
                f"subjects: {', '.join(own)} given but not comparable by "
                f"{result.criterion.id} (e.g. a HAM-D version other than {versions})"
            )
        elif own:
            out[left] = f"subjects: {', '.join(own)} cannot be judged by {result.criterion.id}"
    if by_courses.any():
        _course_facts(
            out, by_courses, course_subjects, has_row, reference_known, courses, formulary
        )
    for column in staging_inputs:  # a staging score unknown for a subject input, not a course
        rows = np.flatnonzero(by_courses & (out == FALLBACK))
        if rows.size and column in criteria_frame:
            missing = rows[criteria_frame[column].iloc[rows].isna().to_numpy()]
            out[missing] = _subject_facts(
                column, has_row[missing], reference_known[missing], diagnosis_columns
            )
    _hidden_by_as_of(out, criteria_frame)
    _leap_birthdays(out, criteria_frame, reference)
    for marker, (missing, why) in MARKED_FACTS.items():  # unknown for a reason, not missing
        if marker in criteria_frame.columns:
            out[(out == missing) & criteria_frame[marker].to_numpy(dtype=bool)] = why
    return out


LEAP_BIRTHDAY = (
    "subjects: born on 29 February and screened on 28 February of a common year: whether "
    "the birthday has passed differs by jurisdiction (a given age decides)"
)


def _leap_birthdays(out: np.ndarray, criteria_frame: pd.DataFrame, reference: np.ndarray) -> None:
    """An age unknown only because of a 29 February birth (`subjects.age_at`), said so."""
    rows = np.flatnonzero(out == AGE_MISSING)
    if not rows.size or "birth_date" not in criteria_frame.columns:
        return
    birth = criteria_frame["birth_date"].to_numpy(dtype="datetime64[s]")[rows]
    eve = leap_birthday_eve(pd.DatetimeIndex(birth), pd.DatetimeIndex(reference[rows]))
    out[rows[eve]] = LEAP_BIRTHDAY


MISSING_FACTS = {"age": AGE_MISSING, "episode_start": SUBJECT_FACT_OF_COURSE["episode_unknown"]}
"""What `to_resolve` says of a subject column that is empty, where it is not
"subjects: COLUMN missing"."""


def _hidden_by_as_of(out: np.ndarray, criteria_frame: pd.DataFrame) -> None:
    """Where `--as-of` hid a value the input gives, say why instead of "missing"."""
    for name in criteria_frame.columns:
        if not (isinstance(name, str) and name.startswith(WHY)):
            continue
        column = name.removeprefix(WHY)
        said = MISSING_FACTS.get(column, f"subjects: {column} missing")
        why = criteria_frame[name].fillna("").to_numpy(dtype=object)
        rows = (out == said) & (why != "")
        out[rows] = why[rows]


def _course_facts(
    out: np.ndarray,
    wanted: np.ndarray,
    course_subjects: np.ndarray,
    has_row: np.ndarray,
    reference_known: np.ndarray,
    courses: pd.DataFrame,
    formulary: Formulary,
) -> None:
    """The first unknown course of each subject in `wanted`, as a fact with its line.
    `course_subjects` is each course's subject position (the decisions' row)."""
    unknown = (courses["failed"] == "unknown").to_numpy() | (
        courses["adequate"] == "unknown"
    ).to_numpy()
    chosen = np.flatnonzero(unknown & wanted[course_subjects])
    subject = course_subjects[chosen]
    more = np.bincount(subject, minlength=len(wanted))[subject] - 1
    first = np.ones(len(subject), dtype=bool)  # courses are in order per subject
    first[1:] = subject[1:] != subject[:-1]
    facts = _facts(courses[list(FACT_COLUMNS)].iloc[chosen[first]], formulary)
    extra = np.where(np.isin(facts, list(SUBJECT_FACT_OF_COURSE.values())), 0, more[first])
    suffix = np.where(
        extra > 1,
        " (and " + extra.astype(str) + " more unknown courses)",
        np.where(extra == 1, " (and 1 more unknown course)", ""),
    )
    out[subject[first]] = (facts + suffix).astype(object)
    rest = np.flatnonzero(wanted & (out == ""))
    out[rest] = np.where(
        ~reference_known[rest],
        NO_REFERENCE,
        np.where(has_row[rest], FALLBACK, NO_ROW),
    )


FACT_COLUMNS = ("reasons", "drug", "drug_generic", "start_date", "source_line", "source_file")
"""The courses columns a course's fact is made from (`_facts`)."""


def _facts(rows: pd.DataFrame, formulary: Formulary) -> np.ndarray:
    """One fact per course row, by its first reason code in COURSE_FACTS' order; texts
    that name the drug are made once per distinct name."""
    codes = list(COURSE_FACTS)
    # The first listed code of each distinct reasons text (a few hundred), then per row.
    kinds, texts = pd.factorize(rows["reasons"].astype("str"))
    first_code = np.array(
        [
            next((i for i, c in enumerate(codes) if c in set(t.split(";"))), len(codes))
            for t in texts
        ],  # fmt: skip
        dtype=np.int64,
    )
    which = first_code[kinds] if len(kinds) else np.zeros(0, dtype=np.int64)
    text = np.full(len(rows), "adequacy unknown (see courses)", dtype=object)
    for index, code in enumerate(codes):
        at = which == index
        if not at.any() or code in SUBJECT_FACT_OF_COURSE:
            continue
        if code == "unknown_drug":
            drugs = rows["drug"].astype("str").to_numpy()[at]
            named = {d: COURSE_FACTS[code].format(drug=d, closest=_closest(d, formulary))
                     for d in set(drugs)}  # fmt: skip
            text[at] = pd.Series(drugs).map(named).to_numpy()
        elif code == "no_minimum_dose":
            generics = rows["drug_generic"].astype("str").to_numpy()[at]
            named = {g: COURSE_FACTS[code].format(generic=g) for g in set(generics)}
            text[at] = pd.Series(generics).map(named).to_numpy()
        else:
            text[at] = COURSE_FACTS[code]
    lines = rows["source_line"].to_numpy().astype(str)
    files = rows["source_file"].astype("str").to_numpy()
    text_file = pd.Series(files).str.contains(TEXT_FILE, regex=True).to_numpy()
    unit = np.where(text_file, " line ", " row ")  # a Parquet file's rows have no lines
    # The course by drug and start as well as by line: a reviewer reads which course it
    # is, and an adjudication compares the fact across exports whose lines moved. The
    # drug by its generic where the formulary knows it (an export's brand or spelling is
    # the same course), else as exported.
    started = np.datetime_as_string(rows["start_date"].to_numpy(dtype="datetime64[D]"))
    generic = rows["drug_generic"].astype("str").fillna("").to_numpy().astype(str)
    drug = np.where(generic != "", generic, rows["drug"].astype("str").to_numpy().astype(str))
    course = " (" + drug + " from " + started + ")"
    facts = (files.astype(str) + unit + lines + course + ": " + text.astype(str)).astype(object)
    for index, code in enumerate(codes):
        if code in SUBJECT_FACT_OF_COURSE:
            facts[which == index] = SUBJECT_FACT_OF_COURSE[code]
    return facts


def _closest(drug: str, formulary: Formulary) -> str:
    names = formulary.suggest(normalize_name(drug)[0])
    return f" (closest: {', '.join(names)})" if names else " (no close match)"
