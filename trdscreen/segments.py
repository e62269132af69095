"""Rows of one treatment course: merging an export's segments, and counting its days.

Exports split one course into rows (refills, dose steps, a titration). Rows of
the same subject, drug, role and modality whose gap (start of the next minus
the end of the previous, minus one) is at most `adequacy.segments.merge_gap_days`
are one course. Every later course rule sees courses, and the courses table
still lists every row with its course.

Dates are handled as float day numbers (NaN = unknown), exact far beyond any
real date. Pure and vectorized: sorts and grouped reductions, no per-course
Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.keys import lex_order


def days(dates: np.ndarray) -> np.ndarray:
    """datetime64 values as float day numbers, NaN where unknown."""
    out = dates.astype("datetime64[D]").astype(np.int64).astype(np.float64)
    out[np.isnat(dates)] = np.nan
    return out


def dates(day_numbers: np.ndarray) -> np.ndarray:
    """Float day numbers back to datetime64[s] (NaT where NaN)."""
    known = ~np.isnan(day_numbers)
    if not known.any():  # e.g. a rating date no course has: no conversion at all
        return np.full(len(day_numbers), np.datetime64("NaT", "s"))
    whole = np.where(known, day_numbers, 0).astype(np.int64).astype("datetime64[D]")
    return np.where(known, whole.astype("datetime64[s]"), np.datetime64("NaT", "s"))


def day_key(day_numbers: np.ndarray) -> np.ndarray:
    """Float day numbers as non-negative int64 sort keys (NaN first, as day 0), for
    `keys.lex_order`."""
    day = np.where(np.isnan(day_numbers), 0, day_numbers)
    return (day - (day.min() if len(day) else 0)).astype(np.int64)


DAY_SPAN = 1 << 24
"""Day numbers a subject's key range holds: every date of years 1 to 9999 (and a window
of days added to one) fits in +-DAY_SPAN / 2 of 1970."""


def subject_day_keys(subject: np.ndarray, day: np.ndarray) -> np.ndarray:
    """A (subject code, day number) pair as one sortable integer (whole days within
    +-DAY_SPAN / 2 of 1970), for binary searches and hashing over dated rows of many
    subjects (or of any integer key: subject and drug, a pair's code)."""
    return subject.astype(np.int64) * DAY_SPAN + DAY_SPAN // 2 + day.astype(np.int64)


def rank_within(order: np.ndarray, *groups: np.ndarray) -> np.ndarray:
    """Per row: its 1-based number within its group (rows equal in every `groups` array),
    counted in `order` (a sort of the rows by the groups, then what numbers them)."""
    new = np.ones(len(order), dtype=bool)
    if len(order):
        same = np.ones(len(order) - 1, dtype=bool)
        for group in groups:
            sorted_group = group[order]
            same &= sorted_group[1:] == sorted_group[:-1]
        new[1:] = ~same
    position = np.arange(len(order))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = position - np.maximum.accumulate(np.where(new, position, 0)) + 1
    return rank


def subject_pairs(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (i, j) with `left[i] == right[j]` (subject codes): each left position once per
    right one of its subject, by one binary search over the right side sorted; no Python
    per row."""
    order = np.argsort(right, kind="stable")
    low = np.searchsorted(right[order], left, side="left")
    count = np.searchsorted(right[order], left, side="right") - low
    i = np.repeat(np.arange(len(left)), count)
    within = np.arange(len(i)) - np.repeat(np.cumsum(count) - count, count)
    return i, order[np.repeat(low, count) + within]


def added_to(
    rows: np.ndarray, partners: np.ndarray, subject: np.ndarray, first: np.ndarray,
    last: np.ndarray, needed: int, after: int = -1, drug: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """Per table row (bool): one of `rows` started on or after the first day of a
    `partners` row of its subject (with `after` >= 0: more than `after` days after it)
    and taken beside it for at least `needed` days (an add-on agent added to an
    antidepressant); with `drug`, a partner of another drug only. Day numbers; an
    unknown end (NaN) of either overlaps nothing."""
    out = np.zeros(len(subject), dtype=bool)
    i, j = subject_pairs(subject[rows], subject[partners])
    a, b = rows[i], partners[j]
    with np.errstate(invalid="ignore"):
        beside = np.minimum(last[a], last[b]) - first[a] + 1
        added = (first[a] - first[b] > after) & (beside >= needed)  # NaN compares False
    if drug is not None:
        added &= drug[a] != drug[b]
    out[a[added]] = True
    return out


def merge_segments(
    keys: tuple[np.ndarray, ...],
    mergeable: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    gap: int | None,
) -> np.ndarray:
    """The course of each row (dense ids from 0, in row order of first appearance).

    `keys` (integer arrays: subject, drug, role, modality) say which rows may
    be one course; only `mergeable` rows merge. A row joins the course before
    it when its start is at most `gap` days after the latest end so far; an
    unknown end closes the course (the gap cannot be judged, and two courses
    of one drug still count once).
    """
    n = len(start)
    course = np.arange(n, dtype=np.int64)
    rows = np.flatnonzero(mergeable & ~np.isnan(start))
    if gap is None or len(rows) < 2:
        return course
    day = start[rows].astype(np.int64)
    order = rows[lex_order(*(k[rows] for k in keys), day - day.min())]
    same = np.ones(len(order), dtype=bool)
    for key in keys:
        values = key[order]
        same[1:] &= values[1:] == values[:-1]
    same[0] = False
    group = np.cumsum(~same)
    ends = end[order]
    # The latest known end so far in the group; a row right after one with an unknown
    # end never joins it.
    latest = pd.Series(np.where(np.isnan(ends), -np.inf, ends)).groupby(group).cummax().to_numpy()
    before = np.full(len(order), -np.inf)
    before[1:] = latest[:-1]
    after_unknown = np.zeros(len(order), dtype=bool)
    after_unknown[1:] = np.isnan(ends[:-1])
    joins = same & ~after_unknown & (start[order] - before - 1 <= gap)
    first = order[np.maximum.accumulate(np.where(~joins, np.arange(len(order)), 0))]
    course[order] = first  # the first row of each course; dense ids in row order:
    return (np.cumsum(course == np.arange(n)) - 1)[course]


@dataclass(frozen=True)
class Segments:
    """Rows grouped by course: `order` lists rows by course, then start, then row;
    course c's rows are order[bounds[c]:bounds[c + 1]]."""

    course: np.ndarray  # course id per row
    order: np.ndarray
    bounds: np.ndarray  # len m + 1

    @classmethod
    def of(cls, course: np.ndarray, start: np.ndarray) -> Segments:
        m = int(course.max()) + 1 if len(course) else 0
        day = np.where(np.isnan(start), 0, start).astype(np.int64)
        order = lex_order(course, day - (day.min() if len(day) else 0))
        bounds = np.searchsorted(course[order], np.arange(m + 1))
        return cls(course, order, bounds)

    @property
    def m(self) -> int:
        return len(self.bounds) - 1

    @property
    def first(self) -> np.ndarray:
        """The first row (earliest start) of each course."""
        return self.order[self.bounds[:-1]]

    @property
    def last(self) -> np.ndarray:
        """The last row (latest start, then last line) of each course."""
        return self.order[self.bounds[1:] - 1]

    @property
    def size(self) -> np.ndarray:
        return np.diff(self.bounds)

    def reduce(self, ufunc: np.ufunc, values: np.ndarray) -> np.ndarray:
        """`ufunc` over each course's rows (NaN propagates through maximum/minimum/add)."""
        if self.m == 0:
            return np.zeros(0, dtype=values.dtype)
        return ufunc.reduceat(values[self.order], self.bounds[:-1])

    def any(self, mask: np.ndarray) -> np.ndarray:
        return np.bincount(self.course[mask], minlength=self.m) > 0

    def union_days(self, lows: np.ndarray, end: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Per course: inclusive days covered by the masked rows' [low, end] spans, each
        day once (overlapping rows are not added twice). Rows with an unknown end are
        left out (the caller treats them as unbounded)."""
        rows = self.order[mask[self.order] & ~np.isnan(end[self.order])]
        if len(rows) == 0:
            return np.zeros(self.m)
        course = self.course[rows]
        low, high = lows[rows], end[rows]
        # Spans are sorted by start within a course: each begins after the latest end so far.
        latest = pd.Series(high).groupby(course).cummax().to_numpy()
        before = np.full(len(rows), -np.inf)
        before[1:] = latest[:-1]
        before[np.r_[True, course[1:] != course[:-1]]] = -np.inf
        covered = np.maximum(high - np.maximum(low, before + 1) + 1, 0)
        return np.bincount(course, weights=covered, minlength=self.m)
