"""A row that gives no role: an add-on agent taken alongside an antidepressant is augmentation.

Exports of trial histories often have no `role` column, and a blank role reads as
monotherapy. For an antidepressant that is the reading a clinician would give. For an
add-on agent (lithium, an antipsychotic, T3: the formulary's `augmentation` category)
it is not: aripiprazole started while sertraline ran is an augmentation trial
(trd-reference F.2: "an add-on ... is augmentation and also starts a new trial";
the Desseilles 2012 worked example counts such a trial as failed). Read as
monotherapy it is not an antidepressant trial at all, so a patient with two failures
was excluded.

So a row of an add-on agent whose role cell is empty (or whose export has no role
column), started on or after the first day of an antidepressant row of the same
subject and taken beside it for at least `counting.augmentation_overlap_days` (30
days, the window `build.combination_window_days` tells an add-on from a switch by
[S]), is read as augmentation, flagged `role_inferred` (each side as the course its rows
are merged into: a drug exported fill by fill is one span); the subject's `assumptions`
name it wherever the course is given in the episode (counted as a trial, or scored
by a staging model: MSM's augmentation used, MGH-S's half point). A role the export gives is never
changed; an add-on given alone, or before the antidepressant that was later added to
it, stays monotherapy (not a trial); a course whose end is unknown overlaps nothing, and
so does a row without an end date whose stop reason does not say ongoing (by the input
contract it runs to the reference date, but an end the export left out reads the same:
a role is read only from an overlap the export states).

An antidepressant row given no role is read the same way: one whose course started more
than `counting.regimen_window_days` after another antidepressant's course (drugs started
together stay one regimen) and ran beside it for those 30 days was added to it: a
combination (trd-reference F.2, "an add-on (second AD, ...) is augmentation and also
starts a new trial"; build's `combination_window_days` rule), flagged `role_inferred`. It
is still a trial wherever combination counts; MGH-S scores it half a point, not a full
trial (a blank role read as monotherapy there could enrol a patient at 3.5), and MSM
scores it as augmentation used. The antidepressant that came first keeps its role.
Vectorized (`segments.added_to`, the rule `build` applies to the courses it makes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from trdscreen.checks import Reasons
from trdscreen.coded import Coded
from trdscreen.drugs import DrugFacts
from trdscreen.reasons import ROLE_INFERRED
from trdscreen.ruleset import RuleSet
from trdscreen.segments import added_to, merge_segments


def _courses(
    keys: tuple[np.ndarray, ...], rows: np.ndarray, first_day: np.ndarray,
    last_day: np.ndarray, gap: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The rows merged into courses as the course step merges them (`merge_segments`):
    (course per row, a row of each course, its first day, its last known day). No sort
    beyond the merge's own: dense course ids, unbuffered minima and maxima."""
    course = merge_segments(keys, rows, first_day, last_day, gap)
    m = int(course.max()) + 1 if len(course) else 0
    row = np.empty(m, dtype=np.int64)
    row[course] = np.arange(len(course))  # any row of a course: its subject and drug
    c_first, c_last = np.full(m, np.nan), np.full(m, np.nan)
    np.fmin.at(c_first, course, first_day)  # NaN is ignored, as by fmin
    np.fmax.at(c_last, course, last_day)
    return course, row, c_first, c_last


def infer_roles(
    courses: pd.DataFrame, role: Coded, lookup: DrugFacts, modality: Coded,
    eligible_rows: np.ndarray, codes: np.ndarray, first_day: np.ndarray, last_day: np.ndarray,
    rules: RuleSet, why: Reasons,
) -> Coded:  # fmt: skip
    """The rows' roles with augmentation and combination read into the blank ones this
    module describes.

    `eligible_rows` are the drug rows in view; `codes` the subject of each row;
    `first_day`/`last_day` day numbers (NaN: unknown). Judged course by course: rows
    of one drug that the course step merges (refills a month apart, dose steps) are
    one span on each side, so aripiprazole exported as monthly fills beside sertraline
    exported the same way is read as the augmentation it is, though no single fill of
    28 days overlaps another for 30."""
    needed = rules.counting.augmentation_overlap_days
    if needed is None or not len(codes):
        return role
    blank = (
        courses["role"].isna().to_numpy()
        if "role" in courses.columns
        else np.ones(len(codes), dtype=bool)
    )
    counts_as = lookup.counts_as
    known = blank & eligible_rows & lookup.known
    antidepressant = counts_as.eq("antidepressant") | (counts_as.eq("policy") & lookup.also)
    addon = np.flatnonzero(known & counts_as.eq("augmentation"))
    second = np.flatnonzero(known & antidepressant)
    if not len(addon) and not len(second):
        return role
    course, one_row, c_first, c_last = _courses(
        (codes, lookup.same_drug, role.codes, modality.codes), eligible_rows, first_day,
        last_day, rules.adequacy.segments.merge_gap_days,
    )  # fmt: skip
    m = len(one_row)

    def of(rows: np.ndarray) -> np.ndarray:
        """The courses of these rows, in order (a mark per course: no sort)."""
        marked = np.zeros(m, dtype=bool)
        marked[course[rows]] = True
        return np.flatnonzero(marked)

    partners = of(eligible_rows & antidepressant)
    subject = codes[one_row]
    inferred = {"augmentation": np.zeros(len(codes), dtype=bool)}
    added = added_to(of(addon), partners, subject, c_first, c_last, needed)
    inferred["augmentation"][addon] = added[course[addon]]
    if len(second):
        # Drugs started within the regimen window of each other stay one regimen.
        together = rules.counting.regimen_window_days or 0
        added = added_to(
            of(second), partners, subject, c_first, c_last, needed, together,
            lookup.same_drug[one_row],
        )  # fmt: skip
        inferred["combination"] = np.zeros(len(codes), dtype=bool)
        inferred["combination"][second] = added[course[second]]
    new, values = role.codes, role.values
    for name, rows in inferred.items():
        if rows.any():
            values = values if name in values else (*values, name)
            new = np.where(rows, values.index(name), new)
            why.flag(rows, ROLE_INFERRED)
    return Coded(np.asarray(new, dtype=np.int64), values)
