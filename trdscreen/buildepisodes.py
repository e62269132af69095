"""The current episode of depression, for `trdscreen build`, when the subjects table does
not give `episode_start`.

From the built courses (drug and session courses alike) and the `diagnoses`
table, per subject:

1. Episodes: courses sorted by start; a gap of more than `episode_gap_days`
   [S] without any course (an ongoing course runs to the reference date, an
   unknown end counts as its start) ends an episode. Each course gets its
   episode number (`episode_id` SUBJECT:eN).
2. The current episode is the last one, if its treatment reaches to within
   `episode_gap_days` of the reference date; its first course start is the
   index date.
3. It is confirmed by a depression diagnosis (the `mdd` category of
   diagnoses.classify) from `diagnosis_before_days` before the index to
   `diagnosis_after_days` after it [U]; the episode starts at the earlier of
   the index and that diagnosis. Without one, the episode start stays unknown
   (`episode_source` no_depression_diagnosis), and the screen says so.
4. `left_censored`: the current episode is the subject's first and fewer than
   `washout_days` [U] of observation (the first observation period's start,
   else the subject's first record) precede its index: it may have begun
   before the records, and courses before them are not seen. That can only
   hide trials (it never adds one), so the derived start is still used.

Without a diagnoses table nothing is derived (`episode_source`
no_diagnoses_table). Vectorized: sorts, grouped running maxima and binary
searches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.buildrules import BuildRules
from trdscreen.columns import day_numbers
from trdscreen.diagnoses import classify
from trdscreen.keys import lex_order
from trdscreen.records import Table, subject_codes
from trdscreen.segments import day_key, subject_day_keys


@dataclass(frozen=True)
class Episodes:
    """Per course its episode number; per subject code the current episode."""

    course_episode: np.ndarray  # 1-based per subject
    start: np.ndarray  # day number, NaN unknown
    source: np.ndarray  # derived | no_depression_diagnosis | no_current_treatment | ...
    left_censored: np.ndarray  # bool


def _first_in(
    keys: np.ndarray, subject: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Per row: the earliest day in sorted `keys` of that subject within [low, high], NaN."""
    out = np.full(len(subject), np.nan)
    ok = ~np.isnan(low) & ~np.isnan(high)
    if len(keys) == 0 or not ok.any():
        return out
    lo, hi = subject_day_keys(subject[ok], low[ok]), subject_day_keys(subject[ok], high[ok])
    pos = np.searchsorted(keys, lo, "left")
    found = keys[np.minimum(pos, len(keys) - 1)]
    hit = (pos < len(keys)) & (found <= hi)
    days = (found - subject_day_keys(subject[ok], np.zeros(ok.sum()))).astype(np.float64)
    out[ok] = np.where(hit, days, np.nan)
    return out


def episodes(
    subject: np.ndarray, start: np.ndarray, end: np.ndarray, n_subjects: int,
    reference: np.ndarray, depression: tuple[np.ndarray, np.ndarray] | None,
    observed_from: np.ndarray, rules: BuildRules,
) -> Episodes:  # fmt: skip
    """`subject`, `start`, `end` per course (end NaN: unknown or ongoing, see
    module doc; ongoing ends are given as the reference date by the caller);
    `depression`: (subject code, day) of depression diagnoses, None without a
    diagnoses table; `reference`, `observed_from` per subject code."""
    m = len(subject)
    last_day = np.where(np.isnan(end), start, end)
    order = lex_order(subject, day_key(start))
    s, first, last = subject[order], start[order], last_day[order]
    latest = pd.Series(last).groupby(s).cummax().to_numpy()
    before = np.full(m, -np.inf)
    before[1:] = latest[:-1]
    new_subject = np.r_[True, s[1:] != s[:-1]] if m else np.zeros(0, dtype=bool)
    new = new_subject | (first - before - 1 > rules.episode_gap_days)
    count = np.cumsum(new)
    number = count - np.maximum.accumulate(np.where(new_subject, count - 1, 0))
    course_episode = np.empty(m, dtype=np.int64)
    course_episode[order] = number
    # The last episode of each subject: its index (first start) and its last day.
    index = np.full(n_subjects, np.nan)
    reach = np.full(n_subjects, np.nan)
    episode_count = np.zeros(n_subjects, dtype=np.int64)
    np.maximum.at(episode_count, s, number)
    in_last = number == episode_count[s]
    starts = np.where(in_last & new, first, np.nan)
    np.fmin.at(index, s, starts)
    np.fmax.at(reach, s, np.where(in_last, latest, np.nan))
    has_courses = episode_count > 0
    current = has_courses & ~(reach + rules.episode_gap_days < reference)
    source = np.full(n_subjects, "no_treatment", dtype=object)
    source[has_courses & ~current] = "no_current_treatment"
    episode_start = np.full(n_subjects, np.nan)
    left_censored = np.zeros(n_subjects, dtype=bool)
    if depression is None:
        source[current] = "no_diagnoses_table"
        return Episodes(course_episode, episode_start, source, left_censored)
    dx_subject, dx_day = depression
    keys = np.sort(subject_day_keys(dx_subject, dx_day))
    codes = np.arange(n_subjects)
    window = _first_in(
        keys, codes, index - rules.diagnosis_before_days,
        np.fmin(index + rules.diagnosis_after_days, np.where(np.isnan(reference), np.inf, reference)),
    )  # fmt: skip
    confirmed = current & ~np.isnan(window)
    source[current & ~confirmed] = "no_depression_diagnosis"
    source[confirmed] = "derived"
    episode_start[confirmed] = np.fmin(index, window)[confirmed]
    left_censored[confirmed] = (episode_count[confirmed] == 1) & (
        ~(index[confirmed] - observed_from[confirmed] >= rules.washout_days)
    )
    return Episodes(course_episode, episode_start, source, left_censored)


@dataclass(frozen=True)
class Diagnoses:
    """The diagnoses table as the build uses it."""

    subject: np.ndarray  # code per row (-1: a subject with no record otherwise)
    day: np.ndarray
    category: np.ndarray  # diagnoses.classify per row (None: unresolved)
    code: np.ndarray  # the entry as written
    usable: np.ndarray  # dated, on or before the reference date


def read_diagnoses(table: Table, ids: pd.Index, reference: np.ndarray) -> Diagnoses:
    frame = table.frame
    subject = subject_codes(table, ids)
    day = day_numbers(frame, "date")
    codes, entries = pd.factorize(frame["code"].astype(object).to_numpy())
    resolved = np.asarray([classify(str(e)) for e in entries] + [None], dtype=object)
    category = resolved[codes]  # one classification per distinct entry, not per row
    usable = np.ones(len(frame), dtype=bool)
    usable[table.unusable] = False
    known = subject >= 0
    usable &= known & ~(day > np.where(known, reference[np.maximum(subject, 0)], np.nan))
    written = np.asarray([*entries, ""], dtype=object)[codes]
    return Diagnoses(subject, day, category, written, usable)


def recorded_diagnoses(dx: Diagnoses, n_subjects: int) -> pd.arrays.ArrowStringArray:
    """Per subject: the distinct psychiatric entries (mdd, bipolar, schizoaffective,
    psychotic disorder; unresolved ones too, which make `mdd` unknown rather than
    false) dated up to the reference date, `;`-joined; empty when none."""
    keep = dx.usable & (dx.category != "other")
    pairs = pd.DataFrame({"s": dx.subject[keep], "c": dx.code[keep]}).drop_duplicates()
    pairs = pairs.sort_values(["s", "c"], kind="stable")
    counts = np.bincount(pairs["s"].to_numpy(), minlength=n_subjects)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int32)
    lists = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(pairs["c"].to_numpy(), pa.string())
    )
    joined = pc.binary_join(lists, ";")
    return pd.arrays.ArrowStringArray(pc.if_else(pc.equal(joined, ""), None, joined))
