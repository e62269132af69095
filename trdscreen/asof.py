"""The inputs as they stood on an earlier date (`screen --as-of DATE`).

To reproduce a historical decision from a later export, everything recorded
after DATE is hidden, and nothing is deleted:

- a course that starts after DATE is left out of every count (it stays in the
  courses table with reason `after_as_of`);
- a course that ends after DATE was still running on DATE: it is treated as
  ongoing to DATE, and what is only known at its end (`hamd_end`,
  `improvement`, `stop_reason`, and `sessions`, a count of the whole course of
  which only some had been given on DATE) is hidden (reason `censored_at_as_of`);
- a subject screened after DATE has unknown screening scores
  (`hamd_screening`, `madrs_screening`), and a current episode that began
  after DATE is unknown: neither existed on DATE; so are the screening scores
  of a subject whose screening date is unknown (they may have been taken
  after DATE);
- a given `age` is unknown: it carries no date (an export's age is taken at
  its screening or its extraction, not at a DATE chosen later), so an age of 18
  in a later export may have been 16 on DATE. Only a `birth_date` gives the
  age on DATE (`subjects.age_at`; a birth after DATE gives none).

Ages and durations are computed at DATE because DATE is the reference date.
Other subject columns (diagnoses, bipolar, ...) carry no date in the input
contract and are used as given. Why a value the input gives is unknown on DATE
is kept beside it (`WHY` + column), so `to_resolve` tells the coordinator the
score was taken later rather than that it is missing. Pure: frames in, frames
out.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

AFTER = "after_as_of"
CENSORED = "censored_at_as_of"
COURSE_END_COLUMNS = (
    "hamd_end",
    "madrs_end",
    "hamd_lowest",
    "madrs_lowest",
    "improvement",
    "stop_reason",
    "sessions",
)
"""Course results known only when the course ends (sessions: the whole course's count)."""
SCREENING_SCORE_COLUMNS = ("hamd_screening", "madrs_screening")
"""Subject scores taken on the screening date."""
WHY = "_as_of_why_"
"""Prefix of the subject columns (`WHY + column`) saying why a value given in the input
is unknown on DATE; `to_resolve` says so instead of "missing"."""
SCREENED_LATER = "subjects: {column} taken after the --as-of date (screening_date is later)"
SCREENING_UNDATED = "subjects: {column} has no screening_date, so it may postdate the --as-of date"
EPISODE_LATER = "subjects: episode_start is after the --as-of date (the episode began later)"
BORN_LATER = "subjects: birth_date is after the --as-of date (no age on it)"
AGE_UNDATED = (
    "subjects: age given without birth_date; only a birth_date gives the age on the --as-of date"
)


def _dates(frame: pd.DataFrame, column: str) -> np.ndarray:
    if column not in frame.columns:
        return np.full(len(frame), np.datetime64("NaT", "s"))
    return frame[column].to_numpy(dtype="datetime64[s]")


def course_masks(courses: pd.DataFrame, as_of: date) -> tuple[np.ndarray, np.ndarray]:
    """(starts after DATE, running on DATE but ends after it) per course row."""
    cut = np.datetime64(as_of, "s")
    after = _dates(courses, "start_date") > cut
    censored = ~after & (_dates(courses, "end_date") > cut)
    return after, censored


def subject_masks(subjects: pd.DataFrame, as_of: date) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(screened after DATE, screening scores of an unknown date, current episode began
    after DATE) per subject row. The second holds only rows with a screening score."""
    cut = np.datetime64(as_of, "s")
    screening = _dates(subjects, "screening_date")
    scored = np.zeros(len(subjects), dtype=bool)
    for column in (c for c in SCREENING_SCORE_COLUMNS if c in subjects.columns):
        scored |= subjects[column].notna().to_numpy()
    return screening > cut, np.isnat(screening) & scored, _dates(subjects, "episode_start") > cut


def born_later(subjects: pd.DataFrame, as_of: date) -> np.ndarray:
    """Subject rows born after DATE (no age on it: `subjects.age_at`)."""
    return _dates(subjects, "birth_date") > np.datetime64(as_of, "s")


def undated_ages(subjects: pd.DataFrame) -> np.ndarray:
    """Subject rows whose age is given without a birth date (unknown on an --as-of DATE)."""
    if "age" not in subjects.columns:
        return np.zeros(len(subjects), dtype=bool)
    given = subjects["age"].notna().to_numpy()
    return given & np.isnat(_dates(subjects, "birth_date"))


def as_of_view(
    treatments: pd.DataFrame, subjects: pd.DataFrame, as_of: date | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The validated treatments and subjects with everything recorded after `as_of` hidden
    (see module doc).

    Course rows gain boolean columns `after_as_of` and `censored_at_as_of`
    that the course stage turns into reason codes.
    """
    if as_of is None:
        return treatments, subjects
    courses = treatments.copy()
    after, censored = course_masks(courses, as_of)
    for column in ("end_date", *COURSE_END_COLUMNS):
        if column in courses.columns:
            courses[column] = courses[column].mask(censored)
    courses[AFTER] = after
    courses[CENSORED] = censored
    people = subjects.copy()
    screened_later, undated, episode_later = subject_masks(people, as_of)
    why: dict[str, np.ndarray] = {}
    for column in SCREENING_SCORE_COLUMNS:
        if column in people.columns:
            given = people[column].notna().to_numpy()
            why[column] = np.select(
                [given & screened_later, given & undated],
                [SCREENED_LATER.format(column=column), SCREENING_UNDATED.format(column=column)],
                "",
            )
            people[column] = people[column].mask(screened_later | undated)
    if "episode_start" in people.columns:
        why["episode_start"] = np.where(episode_later, EPISODE_LATER, "")
        people["episode_start"] = people["episode_start"].mask(episode_later)
    why["age"] = np.select(
        [born_later(people, as_of), undated_ages(people)], [BORN_LATER, AGE_UNDATED], ""
    )
    if "age" in people.columns:  # the birth date decides; a given age has no date
        people["age"] = people["age"].mask(np.ones(len(people), dtype=bool))
    for column, text in why.items():
        people[WHY + column] = text.astype(object)
    return courses, people
