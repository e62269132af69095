"""Step 7 of `trdscreen build`: the ratings that judge each course.

A course's baseline is the rating nearest its first day from
`ratings.start_before_days` before to `ratings.start_after_days` after it (the
earlier wins a tie) [S]; its end rating the one nearest its last day (the
reference date when it is still running) within `ratings.end_within_days`, at
least `ratings.min_days_between` days after the baseline, on the same
instrument [U]. No rating after the reference date is used. HAM-D versions are
never mixed: the first of HAM-D17, HAM-D21, HAM-D24 rated at both ends is
written with its `hamd_version`, else the first rated at the start alone;
MADRS is attached the same way, beside it. Each rating is written with its
date and source line, so a reviewer can find it. A course of several supply
runs has its ratings on its first and last row; every other row end holds its
run's own (`run_ratings`), so the screen sees a remission between two runs; and
its last row the lowest rating between its ends on a day of supply (`_lowest`).
Vectorized: one sorted key per rating and binary searches, no per-course Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.buildcourses import Courses, Runs
from trdscreen.buildrules import RatingWindows
from trdscreen.columns import day_numbers, floats
from trdscreen.records import Table, subject_codes
from trdscreen.segments import subject_day_keys

HAMD_VERSIONS = (("hamd17", 17), ("hamd21", 21), ("hamd24", 24))


def _nearest(
    keys: np.ndarray, subject: np.ndarray, target: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Per target day: the position in sorted `keys` of the rating nearest it within
    [low, high] of the same subject (the earlier on a tie; the first of a day), or -1."""
    n = len(target)
    found = np.full(n, -1, dtype=np.int64)
    ok = ~np.isnan(target) & ~np.isnan(low) & ~np.isnan(high) & (low <= high)
    if not ok.any() or len(keys) == 0:
        return found
    t = subject_day_keys(subject[ok], target[ok])
    lo = subject_day_keys(subject[ok], low[ok])
    hi = subject_day_keys(subject[ok], high[ok])
    right = np.searchsorted(keys, np.maximum(t, lo), "left")
    has_right = right < len(keys)
    right_key = np.where(has_right, keys[np.minimum(right, len(keys) - 1)], hi + 1)
    has_right &= right_key <= hi
    left = np.searchsorted(keys, np.minimum(t, hi + 1), "left") - 1
    has_left = left >= 0
    left_key = np.where(has_left, keys[np.maximum(left, 0)], lo - 1)
    has_left &= (left_key >= lo) & (left_key < t)
    left = np.searchsorted(keys, left_key, "left")  # the first rating of that day
    take_left = has_left & (~has_right | (t - left_key <= right_key - t))
    pick = np.where(take_left, left, np.where(has_right, right, -1))
    found[ok] = pick
    return found


@dataclass(frozen=True)
class _Scale:
    keys: np.ndarray  # sorted (subject, day) keys
    day: np.ndarray
    total: np.ndarray
    line: np.ndarray


Scales = dict[str, _Scale]
"""The usable ratings of each instrument (hamd17, hamd21, hamd24, madrs), keyed by subject
code and day: made once per build (`rating_scales`), read by every lookup."""


def rating_scales(ratings: Table | None, ids: pd.Index) -> Scales:
    """The ratings by instrument, each subject as its position in `ids` (ratings of a
    subject not there, or whose required cells could not be read, left out)."""
    out: Scales = {}
    if ratings is None:
        return out
    frame = ratings.frame
    usable = np.ones(len(frame), dtype=bool)
    usable[ratings.unusable] = False
    code = subject_codes(ratings, ids)
    usable &= code >= 0
    day = day_numbers(frame, "date")
    instrument, found = pd.factorize(frame["instrument"])  # codes: no Python string per row
    names = pd.Index(np.asarray(found, dtype=object))
    total = floats(frame, "total")
    for name in ("hamd17", "hamd21", "hamd24", "madrs"):
        if name not in names:
            continue
        rows = np.flatnonzero(usable & (instrument == names.get_loc(name)))
        if len(rows) == 0:
            continue
        keys = subject_day_keys(code[rows], day[rows])
        order = np.lexsort((ratings.source.lines[rows], keys))
        rows = rows[order]
        out[name] = _Scale(keys[order], day[rows], total[rows], ratings.source.lines[rows])
    return out


def _one_scale(
    scale: _Scale, subject: np.ndarray, first: np.ndarray, last: np.ndarray,
    reference: np.ndarray, windows: RatingWindows,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(position of the baseline, of the end rating; -1 where none) per course."""
    top = np.fmin(first + windows.start_after_days, reference)  # NaN reference: no cap
    start = _nearest(scale.keys, subject, first, first - windows.start_before_days, top)
    start_day = np.where(start >= 0, scale.day[np.maximum(start, 0)], np.nan)
    low = np.maximum(last - windows.end_within_days, start_day + windows.min_days_between)
    high = np.fmin(last + windows.end_within_days, reference)
    end = _nearest(scale.keys, subject, last, low, high)
    return start, end


@dataclass(frozen=True)
class Supplied:
    """The stretches of supply of each course (a drug course's runs): a rating between a
    course's ends counts only when taken on one of them, not in a supply gap (where
    another drug may have been given)."""

    course: np.ndarray  # course of each stretch
    first: np.ndarray  # its first and last day (NaN last: unknown)
    last: np.ndarray


def _lowest(
    scale: _Scale, subject: np.ndarray, start: np.ndarray, end: np.ndarray,
    supplied: Supplied | None,
) -> np.ndarray:  # fmt: skip
    """Per course (positions of its baseline and end rating, -1 none): the position of the
    lowest total rated on a day strictly between them and within a stretch of its supply
    (the earliest of equal ones), or -1. Without `supplied`, the whole span counts. One
    minimum per stretch over its range of the sorted keys (each total coded with its
    position, so the minimum of the codes is the earliest lowest), then per course."""
    m = len(start)
    found = np.full(m, -1, dtype=np.int64)
    both = (start >= 0) & (end >= 0)
    if not both.any():
        return found
    low = np.where(both, scale.day[np.maximum(start, 0)] + 1, np.nan)
    high = np.where(both, scale.day[np.maximum(end, 0)] - 1, np.nan)
    if supplied is None:
        course, first, last = np.arange(m), low, high
    else:
        course = supplied.course
        first = np.fmax(supplied.first, low[course])  # NaN low (no pair): stays NaN below
        last = np.fmin(supplied.last, high[course])
        first[~both[course]] = np.nan
    keep = np.flatnonzero(~np.isnan(first) & ~np.isnan(last) & (first <= last))
    if len(keep) == 0:
        return found
    course, who = course[keep], subject[course[keep]]
    lo = np.searchsorted(scale.keys, subject_day_keys(who, first[keep]), "left")
    hi = np.searchsorted(scale.keys, subject_day_keys(who, last[keep] + 1), "left")
    some = lo < hi
    course, lo, hi = course[some], lo[some], hi[some]
    if len(course) == 0:
        return found
    n = len(scale.keys)
    none = np.iinfo(np.int64).max
    code = np.append(scale.total.astype(np.int64) * (n + 1) + np.arange(n), none)
    least = np.full(m, none)
    np.minimum.at(least, course, np.minimum.reduceat(code, np.column_stack([lo, hi]).ravel())[::2])
    seen = least < none
    found[seen] = least[seen] % (n + 1)
    return found


def _columns(
    scale: _Scale | None, start: np.ndarray, end: np.ndarray, prefix: str,
    lowest: np.ndarray | None = None,
) -> dict:  # fmt: skip
    m = len(start)
    out: dict[str, np.ndarray] = {}
    if lowest is None:
        lowest = np.full(m, -1, dtype=np.int64)
    for when, pos in (("start", start), ("end", end), ("lowest", lowest)):
        found = pos >= 0
        at = np.maximum(pos, 0)
        total = np.full(m, np.nan)
        day = np.full(m, np.nan)
        line = np.full(m, np.nan)
        if scale is not None and len(scale.keys):
            total[found] = scale.total[at[found]]
            day[found] = scale.day[at[found]]
            line[found] = scale.line[at[found]]
        out[f"{prefix}_{when}"] = total
        out[f"{prefix}_{when}_day"] = day
        out[f"{prefix}_{when}_line"] = line
    return out


def attach(
    scales: Scales, subject: np.ndarray, first: np.ndarray, last: np.ndarray,
    reference: np.ndarray, windows: RatingWindows, supplied: Supplied | None = None,
    lowest: bool = True,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Per course (subject code as `scales` has it, first and last day, reference day; NaN
    unknown): hamd_start/_end/_lowest/_version and madrs_start/_end/_lowest, each with
    its day and line (NaN where none). `_lowest` is the lowest total rated strictly
    between the baseline and the end rating, on a day of supply (`supplied`; without
    it, any day between): a remission on the way that the ends hide. Without `lowest`,
    the `_lowest` columns stay NaN (not looked for)."""
    m = len(first)
    empty = np.full(m, -1, dtype=np.int64)
    # HAM-D: the first version rated at both ends, else the first rated at the start.
    picks = {
        name: _one_scale(scales[name], subject, first, last, reference, windows)
        if name in scales else (empty, empty)
        for name, _ in HAMD_VERSIONS
    }  # fmt: skip
    chosen = np.full(m, -1)
    for k, (name, _) in enumerate(HAMD_VERSIONS):
        both = (picks[name][0] >= 0) & (picks[name][1] >= 0)
        chosen[(chosen < 0) & both] = k
    for k, (name, _) in enumerate(HAMD_VERSIONS):
        chosen[(chosen < 0) & (picks[name][0] >= 0)] = k
    out = _columns(None, empty, empty, "hamd")
    version = np.full(m, np.nan)
    for k, (name, number) in enumerate(HAMD_VERSIONS):
        rows = chosen == k
        if not rows.any():
            continue
        start, end = np.where(rows, picks[name][0], -1), np.where(rows, picks[name][1], -1)
        least = _lowest(scales[name], subject, start, end, supplied) if lowest else None
        part = _columns(scales[name], start, end, "hamd", least)
        for column, values in part.items():
            out[column] = np.where(rows, values, out[column])
        version[rows] = number
    out["hamd_version"] = version
    if "madrs" in scales:
        start, end = _one_scale(scales["madrs"], subject, first, last, reference, windows)
        least = _lowest(scales["madrs"], subject, start, end, supplied) if lowest else None
        out.update(_columns(scales["madrs"], start, end, "madrs", least))
    else:
        out.update(_columns(None, empty, empty, "madrs"))
    return out


SCREENING_SCALES = (("hamd17", "hamd_screening"), ("madrs", "madrs_screening"))
"""The scale each screening score of the subjects table is taken from (HAM-D17 only:
`hamd_screening` is a HAM-D17 total)."""


def screening_scores(
    scales: Scales, subject: np.ndarray, screening: np.ndarray, reference: np.ndarray,
    within_days: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:  # fmt: skip
    """Per subject (its code as `scales` has it; its screening and reference day) and
    screening score: (total, source line) of the latest rating of its scale from
    `within_days` before the subject's screening day to that day, never after its
    reference day (`--as-of`); NaN where none, or where the screening day is unknown. Of
    two ratings on one day, the first by line."""
    n = len(subject)
    high = np.fmin(screening, reference)  # NaN reference: the screening day itself
    low = screening - within_days
    out = {}
    for scale, column in SCREENING_SCALES:
        total, line = np.full(n, np.nan), np.full(n, np.nan)
        if scale in scales:
            found = scales[scale]
            at = _nearest(found.keys, subject, high, low, high)
            ok = at >= 0
            total[ok], line[ok] = found.total[at[ok]], found.line[at[ok]]
        out[column] = (total, line)
    return out


def run_ratings(
    scales: Scales, runs: Runs, courses: Courses, reference: np.ndarray, windows: RatingWindows
) -> dict[str, np.ndarray]:
    """Per supply run: its own ratings as `attach` finds a course's, on the run's first and
    last day (`reference`: per subject). Only runs of a course of several runs are
    looked up (the rest stay NaN): a course's first and last row take the course's. The
    lowest rating between ends is the course's alone (`rating_columns`): not looked up."""
    m = len(runs.start)
    several = np.flatnonzero(courses.seg.size[courses.of_run] > 1)
    subject = courses.subject[courses.of_run[several]]
    found = attach(
        scales, subject, runs.start[several], runs.end[several], reference[subject], windows,
        lowest=False,
    )  # fmt: skip
    out = {}
    for name, values in found.items():
        full = np.full(m, np.nan)
        full[several] = values
        out[name] = full
    return out
