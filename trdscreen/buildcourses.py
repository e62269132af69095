"""Steps 5 and 6 of `trdscreen build`: supply runs and courses from the kept events.

A supply run is one row of the treatments table: events of one subject and
generic at one daily dose whose supplies touch or overlap (no stockpiling: an
early refill does not push the end past the latest supply end). A run with an
unknown end closes (the next event starts a new run). When the dose changes
while an earlier supply still runs, the earlier run ends the day before the new
dose starts, so the days at each dose are kept.

A course is the runs of one generic whose gaps are at most `build.gap_days`
[S]; per course: its days covered (`pdc`, each day once; days on which another
antidepressant was supplied instead, a switch away and back, are left out of it), whether it is still
running on the reference date (`ongoing`), its role, and what followed it
(`change_type`). Vectorized: sorts, grouped running maxima and cumulative sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.buildrules import BuildRules
from trdscreen.keys import lex_order
from trdscreen.segments import Segments, added_to, day_key, merge_segments, subject_pairs

ROLE_NAMES = ("monotherapy", "augmentation", "combination")
CHANGE_TYPES = ("stop", "switch", "augment", "combine", "unknown", "ongoing")
"""Courses hold their role and change type as int8 codes into these."""


@dataclass(frozen=True)
class Runs:
    """Supply runs (one per treatments row) and, per event, the run it is in."""

    of_event: np.ndarray  # run id per kept event
    seg: Segments  # kept events grouped by run
    start: np.ndarray
    end: np.ndarray  # NaN: unknown (a duration that could not be told)
    key: np.ndarray  # subject × generic code
    dose: np.ndarray


def _dose_codes(dose: np.ndarray) -> np.ndarray:
    """Equal doses share a code; an unknown dose is a code of its own."""
    return pd.factorize(np.where(np.isnan(dose), -1.0, dose))[0].astype(np.int64)


def supply_runs(key: np.ndarray, start: np.ndarray, end: np.ndarray, dose: np.ndarray) -> Runs:
    """Step 5 over the kept events (arrays of equal length)."""
    run = merge_segments((key, _dose_codes(dose)), np.ones(len(key), dtype=bool), start, end, gap=0)
    seg = Segments.of(run, start)
    first = seg.first
    r_start = seg.reduce(np.minimum, start)
    r_end = seg.reduce(np.maximum, end)  # an unknown end (only ever last) stays unknown
    r_key, r_dose = key[first], dose[first]
    # A new dose ends the run of the earlier one when it starts inside it (and lasts
    # at least as long): the remaining tablets are taken at the new dose.
    order = lex_order(r_key, (r_start - np.nanmin(r_start, initial=0)).astype(np.int64))
    following = order[1:]
    here = order[:-1]
    cut = (
        (r_key[following] == r_key[here])
        & (r_start[following] <= r_end[here])
        & ~(r_end[following] < r_end[here])
    )
    r_end = r_end.copy()
    r_end[here[cut]] = r_start[following[cut]] - 1
    return Runs(run, seg, r_start, r_end, r_key, r_dose)


@dataclass(frozen=True)
class Courses:
    """Courses of supply runs: per run its course; per course its facts."""

    of_run: np.ndarray
    seg: Segments  # runs grouped by course
    start: np.ndarray
    end: np.ndarray  # the last supply day (NaN unknown)
    ongoing: np.ndarray  # still supplied on the reference date
    pdc: np.ndarray  # share of the course's days covered by a supply (NaN unknown end)
    subject: np.ndarray
    generic: np.ndarray
    role: np.ndarray
    change_type: np.ndarray
    next_generic: np.ndarray  # generic code of what followed, -1 none
    days_to_next: np.ndarray  # days from the end to the next start (negative: overlap)


def courses_of(
    runs: Runs, n_generics: int, addon: np.ndarray, reference: np.ndarray, rules: BuildRules
) -> Courses:
    """Step 6. `addon[g]`: generic g is an augmentation agent; `reference` per subject
    (day number, NaN unknown)."""
    course = merge_segments(
        (runs.key,), np.ones(len(runs.key), dtype=bool), runs.start, runs.end, rules.gap_days
    )
    seg = Segments.of(course, runs.start)
    start = seg.reduce(np.minimum, runs.start)
    end = seg.reduce(np.maximum, runs.end)
    key = runs.key[seg.first]
    subject, generic = key // n_generics, key % n_generics
    covered = seg.union_days(runs.start, runs.end, np.ones(len(runs.key), dtype=bool))
    is_addon = addon[generic]
    # Days on which another antidepressant was supplied instead (a switch away and back
    # within gap_days) are no missed doses: neither covered nor in the denominator.
    any_supplied = _any_antidepressant_days(runs, n_generics, addon, subject, start, end)
    switched = np.where(is_addon, 0.0, any_supplied - covered)
    with np.errstate(invalid="ignore", divide="ignore"):
        pdc = np.round(covered / (end - start + 1 - np.maximum(switched, 0)), 4)
    ongoing = end >= reference[subject]  # NaN (unknown) compares False
    role = _roles(subject, generic, start, end, is_addon, rules.combination_window_days)
    change, following, gap = _changes(subject, generic, start, end, ongoing, is_addon, rules)
    return Courses(
        course, seg, start, end, ongoing, pdc, subject, generic, role, change, following, gap
    )


def _any_antidepressant_days(
    runs: Runs, n_generics: int, addon: np.ndarray, subject: np.ndarray, start: np.ndarray,
    end: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Per course (subject, first and last day): the days of its span on which some
    antidepressant (its own included) was supplied, each day once: the union of the
    subject's antidepressant runs, intersected with the span. NaN where the span's end
    is unknown."""
    r_subject, r_generic = runs.key // n_generics, runs.key % n_generics
    rows = np.flatnonzero(~addon[r_generic] & ~np.isnan(runs.end))
    out = np.full(len(start), np.nan)
    known = ~np.isnan(end)
    out[known] = 0.0
    if not len(rows):
        return out
    # The union of each subject's antidepressant runs: runs that touch or overlap merge.
    union = merge_segments(
        (r_subject[rows],), np.ones(len(rows), dtype=bool), runs.start[rows], runs.end[rows], 0
    )
    parts = Segments.of(union, runs.start[rows])
    u_start = parts.reduce(np.minimum, runs.start[rows])
    u_end = parts.reduce(np.maximum, runs.end[rows])
    u_subject = r_subject[rows][parts.first]
    courses = np.flatnonzero(known)
    i, u = subject_pairs(subject[courses], u_subject)  # each course x its subject's intervals
    c = courses[i]
    days = np.minimum(u_end[u], end[c]) - np.maximum(u_start[u], start[c]) + 1
    np.add.at(out, c, np.maximum(days, 0))
    return out


def _order(subject: np.ndarray, start: np.ndarray, generic: np.ndarray) -> np.ndarray:
    return lex_order(subject, day_key(start), generic)


def _roles(
    subject: np.ndarray, generic: np.ndarray, start: np.ndarray, end: np.ndarray,
    is_addon: np.ndarray, window: int,
) -> np.ndarray:  # fmt: skip
    """Per course: combination when an antidepressant course starts while another one
    that began earlier (or the same day, earlier in generic order) still runs and they
    overlap by at least `window` days; augmentation for an add-on agent started on or
    after an antidepressant course's first day and taken beside it `window` days; else
    monotherapy."""
    m = len(start)
    role = np.zeros(m, dtype=np.int8)
    known_end = np.where(np.isnan(end), -np.inf, end)
    ad = np.flatnonzero(~is_addon)
    if len(ad):
        order = ad[_order(subject[ad], start[ad], generic[ad])]
        latest = pd.Series(known_end[order]).groupby(subject[order]).cummax().to_numpy()
        before = np.full(len(order), -np.inf)
        before[1:] = latest[:-1]
        before[np.r_[True, subject[order][1:] != subject[order][:-1]]] = -np.inf
        overlap = np.minimum(known_end[order], before) - start[order] + 1
        role[order[overlap >= window]] = ROLE_NAMES.index("combination")
    # Added to the antidepressant: started on or after its first day (the screen reads an
    # empty role so too, `roles`); one the antidepressant was added to is no augmentation
    # trial of its own (the regimen is the antidepressant's trial).
    augmented = added_to(np.flatnonzero(is_addon), ad, subject, start, end, window)
    role[augmented] = ROLE_NAMES.index("augmentation")
    return role


def _changes(
    subject: np.ndarray, generic: np.ndarray, start: np.ndarray, end: np.ndarray,
    ongoing: np.ndarray, is_addon: np.ndarray, rules: BuildRules,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Per course: what followed it (change_type), the generic code of the next course
    of the subject (-1 none) and the days from its end to that start."""
    m = len(start)
    order = _order(subject, start, generic)
    following = np.full(m, -1, dtype=np.int64)
    same = subject[order][1:] == subject[order][:-1]
    following[order[:-1][same]] = order[1:][same]
    has_next = following >= 0
    at = np.maximum(following, 0)
    gap = np.where(has_next, start[at] - end - 1, np.nan)  # NaN end: NaN
    overlap = -gap
    change = np.zeros(m, dtype=np.int8)  # stop
    near = has_next & (gap <= rules.gap_days)
    change[near] = CHANGE_TYPES.index("switch")
    added = near & (overlap >= rules.combination_window_days)
    change[added & is_addon[at]] = CHANGE_TYPES.index("augment")
    change[added & ~is_addon[at]] = CHANGE_TYPES.index("combine")
    change[np.isnan(end)] = CHANGE_TYPES.index("unknown")
    change[ongoing] = CHANGE_TYPES.index("ongoing")
    next_generic = np.where(has_next, generic[at], -1)
    return change, next_generic, gap
