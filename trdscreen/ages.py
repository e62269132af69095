"""Ages in whole years completed, from a birth date or as given, and when the two disagree.

A subject's age on the reference date comes from `birth_date` where the export has
one (exact to the day), else from a given `age`. Where both are given and they differ
by more than a year (the given age may have been taken on another day, so one year
apart is the birth date's to settle), the export contradicts itself: the age is
unknown, so an age criterion needs review instead of following whichever column
was read first, and validation says so at the row (`age_disagrees_with_birth_date`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

AGE_DISAGREES = "age_disagrees_with_birth_date"
"""The validation check, and the subjects frame's column `to_resolve` reads, of such rows."""
AGE_TOLERANCE_YEARS = 1
"""A given age this many years from the birth date's is the birth date's to settle."""


def age_at(birth: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Whole years completed at the reference date (NaN where either is unknown, and
    where the birth is after the reference date: no age then, so an age criterion is
    undecided rather than met by a negative age under a rule like `age <= 65`).

    Also NaN for a birth on 29 February on 28 February of a common year: whether the
    birthday has passed that day differs by jurisdiction (some count it on 1 March,
    others on 28 February; sources disagree even on which country does which), so the
    age is one of two and a bound between them (`age <= 65` for someone turning 66)
    cannot be decided. One day in four years."""
    b = pd.DatetimeIndex(birth)
    r = pd.DatetimeIndex(reference)
    before_birthday = (r.month < b.month) | ((r.month == b.month) & (r.day < b.day))
    years = np.asarray(r.year - b.year, dtype=np.float64) - before_birthday.astype(np.float64)
    years[np.isnat(birth) | np.isnat(reference) | (years < 0)] = np.nan
    years[leap_birthday_eve(b, r)] = np.nan
    return years


def leap_birthday_eve(birth: pd.DatetimeIndex, reference: pd.DatetimeIndex) -> np.ndarray:
    """A birth on 29 February, on 28 February of a common year (`age_at`)."""
    return np.asarray(
        (birth.month == 2) & (birth.day == 29) & (reference.month == 2) & (reference.day == 28)
        & ~reference.is_leap_year,
        dtype=bool,
    )  # fmt: skip


def _given(people: pd.DataFrame) -> np.ndarray:
    """The given `age` in whole years completed, as a computed one (NaN where none)."""
    if "age" not in people.columns:
        return np.full(len(people), np.nan)
    return np.floor(people["age"].to_numpy(dtype=np.float64, na_value=np.nan))


def _born(people: pd.DataFrame) -> np.ndarray:
    return people["birth_date"].to_numpy(dtype="datetime64[s]")


def ages_disagree(people: pd.DataFrame, reference_column: str) -> np.ndarray:
    """Subject rows whose given `age` and `birth_date` (its age on the row's own
    reference date, `reference_column`) are more than AGE_TOLERANCE_YEARS apart."""
    if not {"age", "birth_date", reference_column} <= set(people.columns):
        return np.zeros(len(people), dtype=bool)
    computed = age_at(_born(people), people[reference_column].to_numpy(dtype="datetime64[s]"))
    with np.errstate(invalid="ignore"):
        return np.abs(_given(people) - computed) > AGE_TOLERANCE_YEARS  # NaN compares False


def subject_ages(
    people: pd.DataFrame, reference: np.ndarray, reference_column: str
) -> tuple[np.ndarray, np.ndarray]:
    """(each subject's age on `reference`, the rows whose given age and birth date
    disagree): from the birth date, else the given age; unknown where they disagree."""
    given = _given(people)
    age = given if "birth_date" not in people.columns else age_at(_born(people), reference)
    age = np.where(np.isnan(age), given, age)  # a given age where birth_date is empty
    disagree = ages_disagree(people, reference_column)
    age[disagree] = np.nan
    return age, disagree
