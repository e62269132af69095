"""The outcome of a course (`outcome`): percent improvement, its category, remission.

Percent improvement from HAM-D (`(start - end) / start`, exact at integer
cuts), else the `improvement` column; the category by the rule set's
nonresponse and response cuts; an end rating at or below `remission_max` is
remission whatever the percentage, and a baseline below `min_baseline` leaves
the outcome unknown. Vectorized over the arrays given (courses or rows).
"""

from __future__ import annotations

import numpy as np

from trdscreen.coded import Coded
from trdscreen.reasons import NONRESPONSE, OUTCOME_UNKNOWN, PARTIAL, REMISSION, RESPONSE
from trdscreen.ruleset import RuleSet


def course_outcome(
    hamd_start: np.ndarray, hamd_end: np.ndarray, improvement: np.ndarray, stop_reason: Coded,
    rules: RuleSet,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Per course: percent improvement, outcome category, whether it came from the stop
    reason, and whether a low baseline or remission decided it."""
    scored = ~np.isnan(hamd_start) & ~np.isnan(hamd_end) & (hamd_start > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        from_scores = (hamd_start - hamd_end) * 100.0 / hamd_start  # exact at integer cuts
    pct = np.where(scored, from_scores, np.round(improvement * 100.0, 9))
    rule = rules.outcome
    m = len(pct)
    nothing = np.zeros(m, dtype=bool)
    with np.errstate(invalid="ignore"):
        remission = nothing if rule.remission_max is None else hamd_end <= rule.remission_max
        low_base = nothing if rule.min_baseline is None else hamd_start < rule.min_baseline
    if rule.nonresponse is None:  # register evidence: no score threshold; improvement shown
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
