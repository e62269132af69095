"""What counts as one trial, and how a drug given more than once is judged.

- identity: the key that makes two trials "the same" (drug, moiety or class;
  ECT, rTMS and psychotherapy count as their modality);
- regimens: different drugs started within `counting.regimen_window_days` of
  each other are one regimen, one trial (its identity is the set of its drugs);
- same drug: `counting.same_drug` judges a drug (identity) given in several
  courses at any failure, its best adequate course, or its last course;
- repeats: a later course of a drug already tried is dose optimisation or a
  repeat, never a new drug;
- register evidence: a trial failed when a later adequate trial of another
  identity started (KIM).

Pure and vectorized: sorts, factorized pairs and grouped reductions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.drugs import DrugFacts
from trdscreen.keys import lex_order
from trdscreen.segments import subject_day_keys
from trdscreen.tristate import MET, NOT_MET, UNKNOWN

_SIGNATURE_SEED = 20_261_127


def identity(
    lookup: DrugFacts,
    modality_codes: np.ndarray,
    drug_modality: np.ndarray,
    distinct: str,
) -> np.ndarray:
    """The counting key of each row: its drug, moiety or class (`counting.distinct`).

    Unknown names count as themselves (an upper bound); ECT, rTMS and
    psychotherapy count as their modality (keys after every drug key).
    """
    key = lookup.same(distinct)
    if drug_modality.all():
        return key
    offset = int(key.max()) + 1 if len(key) else 0
    return np.where(drug_modality, key, offset + modality_codes)


@dataclass(frozen=True)
class Regimens:
    """Rows started together: member rows (course starts `start`, float day numbers) are
    sorted per subject, and a regimen goes on while each start is at most `window` days
    after the previous one. Only regimens of two or more rows are kept (the rest are
    single courses, whose key stays as it is)."""

    rows: np.ndarray  # rows of regimens with two or more rows, by subject and start
    regimen: np.ndarray  # the regimen of each of those rows

    @classmethod
    def of(
        cls, codes: np.ndarray, start: np.ndarray, member: np.ndarray, window: int | None
    ) -> Regimens:
        rows = np.flatnonzero(member & ~np.isnan(start))
        if window is None or len(rows) < 2:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.int64))
        day = start[rows].astype(np.int64)
        order = rows[lex_order(codes[rows], day - day.min())]
        gaps = np.diff(start[order])
        same_subject = codes[order][1:] == codes[order][:-1]
        regimen = np.cumsum(np.r_[True, ~(same_subject & (gaps <= window))])
        shared = np.bincount(regimen)[regimen] >= 2
        return cls(order[shared], regimen[shared])

    def keys(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(key per row, rows in a regimen of several keys): a regimen of one key keeps
        it; a regimen of several gets a key for its set of keys (the same set later is
        the same trial), after every other key."""
        together = np.zeros(len(keys), dtype=bool)
        if len(self.rows) == 0:
            return keys, together
        regimen = pd.factorize(self.regimen)[0]
        pair_regimen, pair_key = _distinct_pairs(regimen, keys[self.rows])
        n_keys = np.bincount(pair_regimen, minlength=int(regimen.max()) + 1)
        multi = n_keys[regimen] >= 2
        if not multi.any():
            return keys, together
        weights = np.random.default_rng(_SIGNATURE_SEED).integers(
            1, np.iinfo(np.int64).max, size=int(keys.max()) + 1, dtype=np.int64
        )
        with np.errstate(over="ignore"):
            signature = np.zeros(len(n_keys), dtype=np.uint64)
            np.add.at(signature, pair_regimen, weights[pair_key].astype(np.uint64))
        labels = pd.factorize(signature[regimen[multi]])[0]
        out = keys.copy()
        out[self.rows[multi]] = int(keys.max()) + 1 + labels
        together[self.rows[multi]] = True
        return out, together


def _distinct_pairs(group: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    width = np.int64(keys.max()) + 1
    pairs = pd.unique(group.astype(np.int64) * width + keys)  # hashing: O(n)
    return pairs // width, pairs % width


def judged_per_drug(
    codes: np.ndarray,
    keys: np.ndarray,
    failed: np.ndarray,
    adequate: np.ndarray,
    nonresponse: np.ndarray,
    start: np.ndarray,
    rule: str,
) -> np.ndarray:
    """The failed state of each row's (subject, key): how counting sees the drug.

    - any_failure: failed if any course failed;
    - best_adequate_course: a course certainly adequate without nonresponse clears the
      drug; one possibly adequate and possibly without nonresponse leaves it in doubt;
      otherwise the drug failed if a course failed;
    - last_course: as its last course that was possibly adequate or failed.
    """
    # Only rows that are possibly adequate or possibly failed can decide or be counted.
    out = np.full(len(codes), NOT_MET, dtype=np.int8)
    rows = np.flatnonzero((adequate != NOT_MET) | (failed != NOT_MET))
    if len(rows) == 0:
        return out
    keys = keys[rows] - keys[rows].min()
    pair = pd.factorize(codes[rows].astype(np.int64) * (np.int64(keys.max()) + 1) + keys)[0]
    m = int(pair.max()) + 1
    failed, adequate, nonresponse = failed[rows], adequate[rows], nonresponse[rows]

    def anywhere(mask: np.ndarray) -> np.ndarray:
        return (np.bincount(pair[mask], minlength=m) > 0)[pair]

    if rule == "any_failure":
        conditions = [anywhere(failed == MET), anywhere(failed != NOT_MET)]
        out[rows] = np.select(conditions, [MET, UNKNOWN], default=NOT_MET)
    elif rule == "best_adequate_course":
        cleared = anywhere((adequate == MET) & (nonresponse == NOT_MET))
        doubt = anywhere((adequate != NOT_MET) & (nonresponse != MET))
        sure = anywhere(failed == MET)
        maybe = anywhere(failed != NOT_MET)
        conditions = [cleared, sure & ~doubt, maybe]
        out[rows] = np.select(conditions, [NOT_MET, MET, UNKNOWN], default=NOT_MET)
    else:  # last_course: the candidate with the latest start (then the last row) decides
        day = np.nan_to_num(start[rows], nan=0.0).astype(np.int64)
        order = lex_order(pair, day - day.min())
        final = np.r_[pair[order][1:] != pair[order][:-1], True]
        last = np.zeros(m, dtype=np.int64)
        last[pair[order][final]] = order[final]
        out[rows] = failed[last[pair]]
    return out


def repeats(
    codes: np.ndarray,
    drug: np.ndarray,
    mask: np.ndarray,
    start: np.ndarray,
    dose: np.ndarray,
    course: np.ndarray,
    required: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Later rows of a drug already given to the subject: (dose optimisation, repeat).

    A row above every earlier known dose of the same generic is dose
    optimisation (MGH-S half point), except inside one course while the dose
    had not yet reached the minimum (a titration). A row of a later course that
    is not optimisation is a repeat. Neither is a new trial: distinct counting
    already counts the drug once. Unknown doses never optimise and never hide
    an earlier dose.
    """
    n = len(codes)
    optimised = np.zeros(n, dtype=bool)
    repeat = np.zeros(n, dtype=bool)
    rows = np.flatnonzero(mask & ~np.isnan(start))
    if len(rows) < 2:
        return optimised, repeat
    drug_codes = pd.factorize(drug[rows])[0]
    day = start[rows].astype(np.int64)
    # Rows are in source-line order and the sort is stable: lines break the ties.
    order = lex_order(codes[rows], drug_codes, day - day.min())
    group = codes[rows][order].astype(np.int64) * (drug_codes.max() + 1) + drug_codes[order]
    sorted_dose = dose[rows][order]
    known = np.where(np.isnan(sorted_dose), -np.inf, sorted_dose)
    running = pd.Series(known).groupby(group).cummax().to_numpy()
    same = np.zeros(len(order), dtype=bool)
    same[1:] = group[1:] == group[:-1]
    before = np.full(len(order), -np.inf)
    before[1:] = running[:-1]
    before[~same] = -np.inf
    course_of = course[rows][order]
    same_course = same & np.r_[False, course_of[1:] == course_of[:-1]]
    minimum = required[rows][order]
    reached = np.isnan(minimum) | (before >= minimum)
    higher = same & np.isfinite(before) & (sorted_dose > before) & (~same_course | reached)
    starts = np.flatnonzero(~same)
    first_course = course_of[starts[np.cumsum(~same) - 1]]
    optimised[rows[order]] = higher
    repeat[rows[order]] = same & ~higher & (course_of != first_course)
    return optimised, repeat


def superseded(
    codes: np.ndarray, keys: np.ndarray, start: np.ndarray, adequate: np.ndarray
) -> np.ndarray:
    """Register-style failure: a later adequate trial of another identity started.

    Met when a certainly adequate later trial exists, unknown when only a
    possibly adequate one does, not met otherwise.
    """
    keys = pd.factorize(keys)[0] if len(keys) else np.zeros(0, np.int64)
    day = np.nan_to_num(start, nan=np.iinfo(np.int32).min).astype(np.int64)
    sure = _latest_other_start(codes, keys, day, adequate == MET) > day
    maybe = _latest_other_start(codes, keys, day, adequate != NOT_MET) > day
    return np.select([sure, maybe], [MET, UNKNOWN], default=NOT_MET).astype(np.int8)


def _latest_other_start(
    codes: np.ndarray, keys: np.ndarray, day: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Per row: the latest start among the subject's masked rows of another key.

    Grouped reductions only: the latest start per (subject, key), then per
    subject the latest and the second-latest key; a row of the latest key
    looks at the second.
    """
    out = np.full(len(codes), np.iinfo(np.int64).min)
    if not mask.any():
        return out
    per_key = (
        pd.DataFrame({"s": codes[mask], "k": keys[mask], "d": day[mask]})
        .groupby(["s", "k"], sort=False)["d"]
        .max()
        .reset_index()
        .sort_values(["s", "d", "k"], ascending=[True, False, True], kind="stable")
    )
    rank = per_key.groupby("s", sort=False).cumcount().to_numpy()
    first = per_key[rank == 0].set_index("s")
    second = per_key[rank == 1].set_index("s")["d"]
    n_subjects = int(codes.max()) + 1 if len(codes) else 0
    top_key = np.full(n_subjects, -1, dtype=np.int64)
    top_day = np.full(n_subjects, np.iinfo(np.int64).min, dtype=np.int64)
    next_day = np.full(n_subjects, np.iinfo(np.int64).min, dtype=np.int64)
    top_key[first.index.to_numpy()] = first["k"].to_numpy()
    top_day[first.index.to_numpy()] = first["d"].to_numpy()
    next_day[second.index.to_numpy()] = second.to_numpy()
    return np.where(keys == top_key[codes], next_day[codes], top_day[codes])


def changed_within(
    codes: np.ndarray, drug: np.ndarray, start: np.ndarray, candidate: np.ndarray,
    after: int, within: int,
) -> np.ndarray:  # fmt: skip
    """Per row: did the subject start another drug more than `after` and at most `within`
    days after the row's `start` (float day numbers, NaN: unknown)?

    `candidate` marks the rows whose starts count (each course's first row). Counted by
    binary search over sorted (subject, day) keys: the starts in the window minus those
    of the row's own drug.
    """
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=bool)
    known = ~np.isnan(start)
    day = np.where(known, start, 0)
    drug = drug.astype(np.int64) - int(drug.min())
    pair = pd.factorize(codes.astype(np.int64) * (int(drug.max()) + 1) + drug)[0]
    use = candidate & known
    result = np.zeros(n, dtype=bool)

    def in_window(group: np.ndarray) -> np.ndarray:
        keys = np.sort(subject_day_keys(group[use], day[use]))
        base = subject_day_keys(group, day)
        return np.searchsorted(keys, base + within, "right") - np.searchsorted(
            keys, base + after, "right"
        )

    result[known] = (in_window(codes.astype(np.int64)) - in_window(pair.astype(np.int64)))[
        known
    ] > 0
    return result
