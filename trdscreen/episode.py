"""The current-episode rule of a course (`adequacy.episode`).

Per course: whether it belongs to the current episode, from which day its
exposure counts (`scope: clipped` starts it at the episode's onset), and
whether its baseline was rated too long before the onset to judge the
episode. Dates are float day numbers (NaN = unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trdscreen.ruleset import RuleSet
from trdscreen.tristate import MET, NOT_MET, UNKNOWN, from_bool, resolve


@dataclass(frozen=True)
class Episode:
    """Per course: in the current episode, where counted exposure begins, and flags."""

    state: np.ndarray
    window: np.ndarray  # first day that counts (-inf: the whole course)
    clipped: np.ndarray
    baseline_before: np.ndarray  # started before onset - tolerance (clipped scope)
    assumed: np.ndarray
    unknown: np.ndarray
    out: np.ndarray  # not in the episode (certainly, not by assumption)


def current_episode(
    start: np.ndarray, end: np.ndarray, onset: np.ndarray, rules: RuleSet
) -> Episode:
    """The current-episode rule per course (`adequacy.episode`)."""
    m = len(start)
    rule = rules.adequacy.episode
    nothing = np.zeros(m, dtype=bool)
    if not rule.current_only:
        return Episode(np.full(m, MET, np.int8), np.full(m, -np.inf), nothing, nothing,
                        nothing, nothing, nothing)  # fmt: skip
    known_onset = ~np.isnan(onset)
    with np.errstate(invalid="ignore"):
        if rule.scope == "started_within":
            state = from_bool(start >= onset - rule.tolerance_days, known=known_onset)
        else:  # overlap and clipped: the course runs on or after the onset
            inside = (end >= onset) | (start >= onset)
            state = from_bool(inside, known=known_onset & (~np.isnan(end) | (start >= onset)))
        unknown = state == UNKNOWN
        state, assumed = resolve(state, rule.when_unknown)
        out = (state == NOT_MET) & ~assumed
        clipping = rule.scope == "clipped"
        clipped = clipping & (state == MET) & known_onset & (start < onset)
        baseline_before = clipped & (start < onset - rule.tolerance_days)
    window = np.where(clipped, onset, -np.inf)
    return Episode(state, window, clipped, baseline_before, assumed, unknown & ~assumed, out)
