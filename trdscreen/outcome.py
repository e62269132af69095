"""The outcome of a course (`outcome`): percent improvement, its category, remission.

Percent improvement from the ratings (`(start - end) / start`, exact at integer
cuts) on the first scale of `outcome.scales` that rated the course (HAM-D of a
version in `outcome.hamd_versions`, else MADRS), else the `improvement` column;
the category by the rule set's nonresponse and response cuts (percent change is
about equal on both scales, Leucht 2018 [V]); an end rating at or below the
scale's remission maximum is remission whatever the percentage, and a baseline
below the scale's minimum leaves the outcome unknown. A HAM-D total of another
version is never compared with thresholds written for HAM-D17. Vectorized over
the arrays given (courses or rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.coded import Coded
from trdscreen.columns import floats, hamd_versions
from trdscreen.reasons import NONRESPONSE, OUTCOME_UNKNOWN, PARTIAL, REMISSION, RESPONSE
from trdscreen.ruleset import RuleSet
from trdscreen.segments import Segments


@dataclass(frozen=True)
class Ratings:
    """Per course: the baseline and end totals an outcome is judged on, and that scale's
    remission maximum and minimum baseline (NaN = not used)."""

    start: np.ndarray
    end: np.ndarray
    remission_max: np.ndarray
    min_baseline: np.ndarray
    madrs: np.ndarray  # bool: judged on MADRS
    other_version: np.ndarray  # bool: HAM-D rated on a version the rule set does not compare


def ratings(courses: pd.DataFrame, first: np.ndarray, last: np.ndarray, rules: RuleSet) -> Ratings:
    """The ratings of courses whose baseline is on row `first` and end on row `last`."""
    rule = rules.outcome
    m = len(first)
    start, end = np.full(m, np.nan), np.full(m, np.nan)
    remission_max, min_baseline = np.full(m, np.nan), np.full(m, np.nan)
    madrs = np.zeros(m, dtype=bool)
    hamd = (
        floats(courses, "hamd_start")[first],
        floats(courses, "hamd_end")[last],
    )
    version = hamd_versions(courses)
    version_first, version_last = version[first], version[last]
    comparable = (version_first == version_last) & np.isin(version_first, rule.hamd_versions)
    scales = {
        "hamd": (hamd, rule.remission_max, rule.min_baseline),
        "madrs": (
            (floats(courses, "madrs_start")[first],
             floats(courses, "madrs_end")[last]),
            rule.madrs_remission_max, rule.madrs_min_baseline,
        ),
    }  # fmt: skip
    hamd_rated = ~np.isnan(hamd[0]) | ~np.isnan(hamd[1])
    # A scale rated at both ends first, in preference order; else one rated at one end
    # (an end rating can still show remission, a baseline a too-low start).
    for both in (True, False):
        for scale in rule.scales:
            (s, e), most, least = scales[scale]
            usable = (~np.isnan(s) & ~np.isnan(e)) if both else (~np.isnan(s) | ~np.isnan(e))
            if scale == "hamd":
                usable &= comparable
            take = usable & np.isnan(start) & np.isnan(end)
            # np.where, not assignment by mask: a mask of mixed rows branches on each row
            start, end = np.where(take, s, start), np.where(take, e, end)
            remission_max = np.where(take, np.nan if most is None else most, remission_max)
            min_baseline = np.where(take, np.nan if least is None else least, min_baseline)
            madrs |= take & (scale == "madrs")
    other_version = hamd_rated & ~comparable & np.isnan(start) & np.isnan(end)
    return Ratings(start, end, remission_max, min_baseline, madrs, other_version)


def course_outcome(
    rated: Ratings, improvement: np.ndarray, stop_reason: Coded, rules: RuleSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per course: percent improvement, outcome category, whether it came from the stop
    reason, and whether a low baseline or remission decided it."""
    hamd_start, hamd_end = rated.start, rated.end
    scored = ~np.isnan(hamd_start) & ~np.isnan(hamd_end) & (hamd_start > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        from_scores = (hamd_start - hamd_end) * 100.0 / hamd_start  # exact at integer cuts
    pct = np.where(scored, from_scores, np.round(improvement * 100.0, 9))
    rule = rules.outcome
    m = len(pct)
    with np.errstate(invalid="ignore"):
        remission = hamd_end <= rated.remission_max  # NaN (not used) compares False
        low_base = hamd_start < rated.min_baseline
    if rule.nonresponse is None:  # register evidence: no score threshold; improvement shown
        nothing = np.zeros(m, dtype=bool)
        return pct, np.full(m, OUTCOME_UNKNOWN, np.int8), nothing, nothing, remission
    cut, good = rule.nonresponse, rule.response
    with np.errstate(invalid="ignore"):
        is_nonresponse = pct < cut.pct if cut.op == "<" else pct <= cut.pct
        is_response = pct >= good.pct if good.op == ">=" else pct > good.pct
    outcome = np.select(
        [np.isnan(pct), is_nonresponse, is_response],
        [OUTCOME_UNKNOWN, NONRESPONSE, RESPONSE],
        default=PARTIAL,
    ).astype(np.int8)
    low_base = low_base & ~remission
    outcome[low_base] = OUTCOME_UNKNOWN
    outcome[remission] = REMISSION
    from_stop = np.zeros(m, dtype=bool)
    if rule.stop_reason_as_evidence:
        evidence = {"nonresponse": NONRESPONSE, "partial_response": PARTIAL, "remission": RESPONSE}
        for reason, category in evidence.items():
            use = np.isnan(pct) & np.isnan(hamd_end) & stop_reason.eq(reason)
            outcome[use] = category
            from_stop |= use
    return pct, outcome, from_stop, low_base, remission


def interim_response(
    courses: pd.DataFrame, seg: Segments, rated: Ratings, rules: RuleSet
) -> np.ndarray:
    """Per course: whether the lowest rating between its baseline and end rating (the
    lowest `hamd_lowest` or `madrs_lowest` of its rows, on the scale `rated` judged it
    on) shows a response or remission against its baseline."""
    lowest = np.full(seg.m, np.nan)
    for name, on in (("hamd_lowest", ~rated.madrs), ("madrs_lowest", rated.madrs)):
        if name in courses.columns:
            values = seg.reduce(np.fmin, floats(courses, name))
            lowest = np.where(on, values, lowest)
    seen = ~np.isnan(lowest) & ~np.isnan(rated.start) & ~np.isnan(rated.end)
    if not seen.any():
        return seen
    pair = Ratings(
        rated.start, lowest, rated.remission_max, rated.min_baseline, rated.madrs,
        rated.other_version,
    )  # fmt: skip
    nothing = Coded(np.zeros(seg.m, dtype=np.int8), ("",))
    outcome = course_outcome(pair, np.full(seg.m, np.nan), nothing, rules)[1]
    return seen & np.isin(outcome, (RESPONSE, REMISSION))
