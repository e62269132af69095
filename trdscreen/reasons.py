"""The reason codes a course carries and the outcome categories, each declared once.

A course's `reasons` column lists the codes that explain how it counted, in
the order of `REASONS`. The codes are stable: documented in the README, used
by tests and by `explain`; a retired code is never reused.
"""

from __future__ import annotations

import numpy as np

OUTCOMES = ("response", "partial_response", "nonresponse", "unknown", "remission")
RESPONSE, PARTIAL, NONRESPONSE, OUTCOME_UNKNOWN, REMISSION = range(5)

REASON_TEXT = {
    "after_as_of": "started after --as-of: left out of this screening",
    "censored_at_as_of": "still running on --as-of: counted as ongoing to that date, end results hidden",
    "failed": "counted as a failed adequate trial",
    "early_stop_explicit_nonresponse": "stopped early for nonresponse with no contrary score: "
    "still counts as a failure",
    "early_stop_rated_nonresponse": "stopped early, but rated as nonresponse: still counts as a "
    "failure",
    "modality_not_counted": "this treatment modality is not counted by the rule set",
    "role_not_counted": "this treatment role is not counted by the rule set",
    "non_depression_product": "a product marketed for another condition (e.g. Zyban): "
    "not an antidepressant trial",
    "augmentation_agent_without_augmentation_role": "an add-on agent given without an "
    "augmentation or combination role: not an antidepressant trial",
    "role_inferred": "no role given: an add-on agent (an antidepressant) added to an "
    "antidepressant and taken beside it for at least counting.augmentation_overlap_days "
    "days, read as augmentation (combination): an assumption",
    "not_an_antidepressant": "not an antidepressant",
    "not_a_depression_treatment": "a known drug for another condition (ATC layer): never a trial",
    "policy_drug_not_counted": "the rule set does not count this drug",
    "unknown_drug": "drug name not in the formulary: adequacy unknown",
    "merged_segments": "one of several rows of the same drug merged into one course "
    "(refills, dose steps, a titration)",
    "dose_missing": "dose missing: dose adequacy unknown",
    "no_minimum_dose": "the formulary has no minimum dose for this drug: dose adequacy unknown",
    "no_minimum_dose_assumed_met": "no minimum dose applied (none known, or the drug is in "
    "adequacy.dose.any_dose_for): the rule set assumes the dose was adequate",
    "no_minimum_dose_assumed_not_met": "no minimum dose known: the rule set assumes the dose "
    "was not adequate",
    "dose_below_minimum": "dose below the minimum adequate dose",
    "dose_daily_equivalent": "given once every dose_every_days days: compared as its daily "
    "equivalent (dose / days)",
    "lithium_level_judged": "lithium judged by its serum level (lithium_level) against "
    "adequacy.dose.lithium_min_level, not by its dose",
    "sub_minimum_days_not_counted": "days of this row below the minimum dose do not count toward "
    "the course's duration",
    "too_short": "shorter than the minimum duration",
    "duration_unknown": "duration unknown (no reference date for an ongoing course, or no end "
    "date)",
    "end_date_missing": "stopped (a stop reason other than ongoing) but no end date: its "
    "duration is unknown",
    "sessions_counted": "duration judged on the number of sessions",
    "sessions_missing": "the export has a sessions column but this course has no count: its "
    "duration is unknown",
    "shorter_than_min_days": "shorter than early_stop.min_days: never a failure",
    "adherence_below_minimum": "adherence below the minimum",
    "adherence_missing": "adherence missing: adequacy unknown",
    "adherence_missing_assumed_met": "adherence missing: the rule set assumes it was adequate",
    "adherence_missing_assumed_not_met": "adherence missing: the rule set assumes it was not "
    "adequate",
    "before_current_episode": "ended before the current episode began",
    "started_before_episode": "started before the current episode (beyond the tolerance): "
    "not a trial of this episode",
    "clipped_to_episode": "started before the current episode: only its days from the onset count",
    "episode_unknown": "current episode onset unknown: whether the course is in it is unknown",
    "episode_unknown_assumed_in": "episode onset unknown: the rule set assumes the course is in "
    "the current episode",
    "episode_unknown_assumed_out": "episode onset unknown: the rule set assumes the course is "
    "not in the current episode",
    "early_stop": "stopped before the early-stop week without evidence of nonresponse: too "
    "short, not a failure",
    "early_stop_shorter_than_min_days": "stopped before the shortest course that can fail: not "
    "a failure, whatever the evidence",
    "agent_not_counted": "the rule set does not count this kind of agent",
    "same_regimen": "started together with another drug (within the regimen window): the "
    "regimen is one trial",
    "dose_optimisation": "a later course of a drug already tried, at a higher dose: dose "
    "optimisation, not a new drug",
    "repeat_of_earlier_drug": "a repeat of a drug already tried: the same drug counts once",
    "judged_at_best_course": "another adequate course of this drug did not fail: judged at its "
    "best adequate course, the drug is not a failure",
    "judged_at_last_course": "the drug is judged by its last course, which did not fail",
    "superseded_by_later_trial": "a later adequate trial of another drug started: failed by "
    "register evidence",
    "superseded_possibly": "a later trial of another drug started whose adequacy is unknown: "
    "possibly failed by register evidence",
    "not_superseded": "no later adequate trial of another drug: not failed by register evidence",
    "response": "response (improvement at or above the response cut)",
    "partial_response": "partial response: improvement in the band between failure and response",
    "remission": "the end rating shows remission: never a failure, whatever the percentage",
    "baseline_below_minimum": "baseline rating below the rule set's minimum: improvement cannot "
    "be judged",
    "baseline_before_episode": "baseline rated before the current episode began: improvement "
    "in this episode cannot be judged",
    "segments_disagree": "a row of this merged course rated a response or remission that the "
    "course's first and last ratings do not show: outcome unknown (no failure when its ends "
    "show a partial response)",
    "interim_response": "a rating between this course's baseline and end rating "
    "(hamd_lowest, madrs_lowest) showed a response or remission its end rating does not: "
    "outcome unknown (no failure when its ends show a partial response)",
    "outcome_disagrees": "the improvement column, or a stop for remission or relapse, says "
    "this course went better than its ratings do: outcome unknown (no failure when its "
    "ratings show a partial response)",
    "outcome_from_madrs": "outcome judged on MADRS (madrs_start/madrs_end): no HAM-D the rule "
    "set compares",
    "hamd_version_not_compared": "HAM-D rated on a version (hamd_version) the rule set's "
    "thresholds are not written for (outcome.hamd_versions): not judged on it",
    "outcome_unknown": "outcome unknown (no scores or improvement)",
    "outcome_from_stop_reason": "outcome taken from the stop reason (no scores)",
    "failure_inferred": "no ratings, but another drug was started or added within "
    "outcome.switch_window_days of its first day: failure inferred (outcome."
    "infer_failure_from), an assumption",
    "duration_assumed": "its end rests on a supply assumed to last until the next issue "
    "(duration_assumed, from `trdscreen build`)",
}
"""What each reason code means, as `explain` prints it; the order is the listing order."""

REASONS = tuple(REASON_TEXT)
BIT = {name: np.int64(1) << i for i, name in enumerate(REASONS)}
assert len(REASONS) <= 64, "reason codes are the 64 bits of one int64"
# Bit 63 is the sign bit: OR, AND and `join_flags`' arithmetic shifts treat it as any other.

ASSUMPTIONS = {
    "adherence_assumed": "adherence_missing_assumed_met",
    "episode_assumed": "episode_unknown_assumed_in",
    "minimum_dose_assumed": "no_minimum_dose_assumed_met",
    "outcome_from_stop_reason": "outcome_from_stop_reason",
    "duration_assumed": "duration_assumed",
    "failure_inferred": "failure_inferred",
    "role_inferred": "role_inferred",
}
"""Assumption codes of the decisions' `assumptions` column: each names the course reason
that records an assumption a counted failed trial rests on."""
ROLE_INFERRED = "role_inferred"
"""The reason, and assumption, of a role read into a row that gave none (`roles`)."""
CRITERION_ASSUMED = "criterion_assumed"
"""The assumption code of a protocol criterion resolved by its `when_unknown`."""
EPISODE_DERIVED = "episode_derived"
EPISODE_LEFT_CENSORED = "episode_left_censored"
SUBJECT_ASSUMPTIONS = (EPISODE_DERIVED, EPISODE_LEFT_CENSORED)
"""Subject-level assumptions from the subjects table's `episode_source` and
`left_censored` (written by `trdscreen build`); their bits follow those of ASSUMPTIONS and
CRITERION_ASSUMED."""
ASSUMPTION_TEXT = {
    "adherence_assumed": "adherence was missing and assumed adequate",
    "episode_assumed": "the episode onset was unknown and the course assumed in the current "
    "episode",
    "minimum_dose_assumed": "no minimum dose was applied (none known, or the rule set takes "
    "any dose of the drug) and the dose was assumed adequate",
    "outcome_from_stop_reason": "the outcome was taken from the stop reason, not from ratings",
    "duration_assumed": "a course's end rests on a supply assumed to last until the next "
    "issue (no end date, days' supply or quantity was exported)",
    "failure_inferred": "a failed trial was inferred from a switch or add-on within "
    "outcome.switch_window_days, without ratings (outcome.infer_failure_from)",
    "role_inferred": "an add-on agent (an antidepressant) the export gave no role was read "
    "as augmentation (combination), since it was added to an antidepressant "
    "(counting.augmentation_overlap_days)",
    EPISODE_DERIVED: "the current episode's start was derived from the records by `trdscreen "
    "build` (first treatment after a treatment-free gap, confirmed by a depression diagnosis)",
    EPISODE_LEFT_CENSORED: "the records may begin after the episode did: trials before them "
    "are not seen",
    CRITERION_ASSUMED: "a protocol criterion's unknown value was resolved by the rule set",
}
