"""The checks a treatment course is judged by, each a vectorized step over all rows or
courses at once: what counts, each row's dose and dates, the days at an adequate dose
and the duration, adherence, the outcome and an early stop. `trdscreen.courses` runs
them in order and counts on their verdicts; every check is tri-state, and each step
records the reason codes that explain it (`trdscreen.reasons`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.coded import Coded
from trdscreen.columns import floats
from trdscreen.doses import compared_dose, lithium_state
from trdscreen.drugs import DrugFacts
from trdscreen.episode import Episode, current_episode
from trdscreen.outcome import Ratings, course_outcome, interim_response, ratings
from trdscreen.reasons import (
    BIT,
    NONRESPONSE,
    OUTCOME_UNKNOWN,
    OUTCOMES,
    PARTIAL,
    REMISSION,
    RESPONSE,
)
from trdscreen.ruleset import ROLES, STOP_REASONS, RuleSet
from trdscreen.segments import Segments, days
from trdscreen.trials import changed_within, superseded
from trdscreen.tristate import MET, NOT_MET, UNKNOWN, from_bool, resolve

STOPPED = tuple(reason for reason in STOP_REASONS if reason != "ongoing")
NO_MINIMUM_REASONS = (
    "no_minimum_dose", "no_minimum_dose_assumed_met", "no_minimum_dose_assumed_not_met",
)  # fmt: skip
"""Stop reasons that say a course ended (every one but `ongoing`)."""


class Reasons:
    """Reason bits per row, set by mask."""

    def __init__(self, n: int) -> None:
        self.bits = np.zeros(n, dtype=np.int64)

    def flag(self, mask: np.ndarray, reason: str) -> None:
        # A few rows: set them by position; else OR a whole column of the bit, which
        # costs the same at any density (a masked ufunc, `where=mask`, was several times
        # slower on a mask of mixed rows, branching on each one).
        mask = np.broadcast_to(np.asarray(mask, dtype=bool), self.bits.shape)
        if np.count_nonzero(mask) * 32 < len(mask):
            self.bits[np.flatnonzero(mask)] |= BIT[reason]
        else:
            self.bits |= mask * BIT[reason]

    def has(self, reason: str) -> np.ndarray:
        return (self.bits & BIT[reason]) != 0


def text_array(column: pd.Series) -> pd.api.extensions.ExtensionArray:
    """A text column as the output's str dtype, without a round trip through Python objects."""
    return column.array if column.dtype == "str" else pd.array(column.to_numpy(object), dtype="str")


def counted_rows(
    lookup: DrugFacts, role: Coded, modality: Coded, drug_modality: np.ndarray, in_view: np.ndarray,
    rules: RuleSet, why: Reasons,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(treatment, counted, on_drug) per row.

    `treatment` is a depression treatment at all, whatever the rule set's role,
    modality and agent filters (staging scores those apart); `counted` applies
    them; `on_drug` is a drug row of a counted role and modality.
    """
    n = len(role.codes)
    known = lookup.known
    counts_as = lookup.counts_as  # Coded: compared once per distinct drug name
    counting = rules.counting
    augmenting = role.isin(("augmentation", "combination"))
    is_antidepressant = counts_as.eq("antidepressant") | (counts_as.eq("policy") & lookup.also)
    is_augmentation = counts_as.eq("augmentation") & augmenting
    drug_treatment = np.select(
        [~known, lookup.nondep, is_antidepressant | is_augmentation],
        [UNKNOWN, NOT_MET, MET],
        default=NOT_MET,
    ).astype(np.int8)
    treatment = np.where(drug_modality, drug_treatment, MET).astype(np.int8)
    treatment[~in_view] = NOT_MET
    modality_ok = modality.isin(counting.modalities)
    role_ok = role.isin(counting.roles)
    # A drug of an agent category the rule set does not count (other drugs that
    # do not count get their own reason codes below).
    excluded_agent = np.zeros(n, dtype=bool)
    if "antidepressant" not in counting.agents:
        excluded_agent |= is_antidepressant
    if "augmentation" not in counting.agents:
        excluded_agent |= is_augmentation
    agent_ok = ~(drug_modality & excluded_agent)
    counted = treatment.copy()
    counted[~role_ok | ~modality_ok | ~agent_ok] = NOT_MET
    why.flag(~modality_ok, "modality_not_counted")
    why.flag(modality_ok & ~role_ok, "role_not_counted")
    on_drug = drug_modality & modality_ok & role_ok
    other = on_drug & ~lookup.nondep
    why.flag(on_drug & ~agent_ok, "agent_not_counted")
    why.flag(on_drug & ~known, "unknown_drug")
    why.flag(on_drug & known & lookup.nondep, "non_depression_product")
    why.flag(
        other & counts_as.eq("augmentation") & ~augmenting,
        "augmentation_agent_without_augmentation_role",
    )
    why.flag(other & counts_as.eq("not_antidepressant"), "not_an_antidepressant")
    why.flag(other & counts_as.eq("policy") & ~lookup.also, "policy_drug_not_counted")
    why.flag(other & counts_as.eq("not_a_depression_treatment"), "not_a_depression_treatment")
    return treatment, counted, on_drug


def row_dose_check(
    dose: np.ndarray, required: np.ndarray, lookup: DrugFacts, drug_modality: np.ndarray,
    relevant: np.ndarray, rules: RuleSet, why: Reasons,
) -> np.ndarray:  # fmt: skip
    """Each row's dose against the minimum (met for non-drug modalities and dose-blind
    rule sets); unknown where the drug, its minimum or the dose is unknown."""
    n = len(dose)
    dose_rule = rules.adequacy.dose
    if not dose_rule.check:  # dose-blind rule set: the check always passes, nothing to flag
        return np.full(n, MET, dtype=np.int8)
    known = lookup.known
    any_dose = lookup.any_dose & known  # adequacy.dose.any_dose_for: no minimum applies
    has_min = ~np.isnan(required) & ~any_dose
    state = from_bool(dose >= required, known=has_min & ~np.isnan(dose))
    state[any_dose] = MET
    why.flag(relevant & any_dose, "no_minimum_dose_assumed_met")
    no_min = known & ~has_min & ~any_dose
    agent = lookup.counts_as.eq("augmentation")
    groups = [(dose_rule.when_no_minimum, no_min)]
    if dose_rule.augmentation_when_no_minimum is not None:
        groups = [
            (dose_rule.when_no_minimum, no_min & ~agent),
            (dose_rule.augmentation_when_no_minimum, no_min & agent),
        ]
    for when_no_minimum, rows in groups:
        if when_no_minimum == "unknown":
            why.flag(relevant & rows, "no_minimum_dose")
        else:  # the rule set resolves a missing minimum; only those rows, and recorded
            state[rows] = MET if when_no_minimum == "assume_met" else NOT_MET
            why.flag(
                relevant & rows, f"no_minimum_dose_{when_no_minimum.replace('assume', 'assumed')}"
            )
    state[~drug_modality] = MET  # no dose criterion for ECT, rTMS, psychotherapy
    why.flag(relevant & has_min & np.isnan(dose), "dose_missing")
    return state


def min_days(rules: RuleSet, role: Coded, modality: Coded) -> np.ndarray:
    """Minimum inclusive days per row: the general rule, then role, then modality."""
    duration = rules.adequacy.duration
    min_days = np.full(len(role.codes), duration.days)
    for key, weeks in duration.min_weeks_for.items():
        if key in ROLES:
            min_days[role.eq(key)] = weeks * 7.0
    for key, weeks in duration.min_weeks_for.items():
        if key not in ROLES:  # a modality: applied last, so it wins over a role
            min_days[modality.eq(key)] = weeks * 7.0
    return min_days


def bounds_state(low: np.ndarray, high: np.ndarray, minimum: np.ndarray | float) -> np.ndarray:
    """Met when the lower bound reaches `minimum`, not met when even the upper does not."""
    eps = 1e-9
    return np.select(
        [low >= minimum - eps, high < minimum - eps], [MET, NOT_MET], default=UNKNOWN
    ).astype(np.int8)


def row_doses(
    courses: pd.DataFrame, lookup: DrugFacts, on_drug: np.ndarray, drug_modality: np.ndarray,
    rules: RuleSet, why: Reasons,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(dose compared, required dose, rows where a dose can matter, each row's dose check):
    the daily equivalent against the minimum, or a lithium level against its minimum."""
    dose, converted = compared_dose(courses, lookup)
    required = lookup.min_dose * rules.adequacy.dose.multiple
    # Dose reasons only where a dose can matter: not on a drug that never counts.
    dose_matters = on_drug & lookup.known & ~lookup.counts_as.eq("not_a_depression_treatment")
    why.flag(dose_matters & converted, "dose_daily_equivalent")
    row_dose = row_dose_check(dose, required, lookup, drug_modality, dose_matters, rules, why)
    by_level, level_ok = lithium_state(courses, lookup, rules.adequacy.dose.lithium_min_level)
    if rules.adequacy.dose.check:  # the level decides: no dose assumption is left standing
        row_dose[by_level] = np.where(level_ok[by_level], MET, NOT_MET)
        for reason in NO_MINIMUM_REASONS:
            why.bits[by_level] &= ~BIT[reason]
        why.flag(dose_matters & by_level, "lithium_level_judged")
    return dose, required, dose_matters, row_dose


def row_dates(
    courses: pd.DataFrame, stop_reason: Coded, in_view: np.ndarray, reference: np.ndarray,
    why: Reasons,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """(start, end as given, ongoing, first and last day numbers) per row: an ongoing row
    runs to the reference date; a stopped row without an end date has an unknown end,
    never "ongoing"."""
    n = len(courses)
    start = courses["start_date"].to_numpy(dtype="datetime64[s]")
    end_given = (
        courses["end_date"].to_numpy(dtype="datetime64[s]")
        if "end_date" in courses.columns
        else np.full(n, np.datetime64("NaT", "s"))
    )
    stopped = stop_reason.isin(STOPPED)
    ongoing = np.isnat(end_given) & ~stopped
    why.flag(np.isnat(end_given) & stopped & in_view, "end_date_missing")
    end = np.where(ongoing, reference, end_given)
    first_day, last_day = days(start), days(end)

    return start, end_given, ongoing, first_day, last_day


def adherence_check(
    courses: pd.DataFrame, seg: Segments, rules: RuleSet, why: Reasons
) -> np.ndarray:
    """Each course's adherence check: the lowest of its rows against the minimum."""
    course = seg.course
    adherence = seg.reduce(np.minimum, floats(courses, "adherence"))
    rule = rules.adequacy.adherence
    if rule.minimum is None:
        c_adherence = np.full(seg.m, MET, dtype=np.int8)
    else:
        c_adherence = from_bool(adherence >= rule.minimum, known=~np.isnan(adherence))
        missing = c_adherence == UNKNOWN
        c_adherence, assumed = resolve(c_adherence, rule.when_missing)
        why.flag((missing & ~assumed)[course], "adherence_missing")
        met = "met" if rule.when_missing == "assume_met" else "not_met"
        why.flag(assumed[course], f"adherence_missing_assumed_{met}")
        why.flag(((c_adherence == NOT_MET) & ~assumed)[course], "adherence_below_minimum")

    return c_adherence


@dataclass(frozen=True)
class CourseOutcome:
    """Each course's outcome and what decided it."""

    pct: np.ndarray  # percent improvement (NaN: unknown)
    outcome: np.ndarray  # int8 codes of OUTCOMES
    from_stop: np.ndarray  # bool: taken from the stop reason
    low_base: np.ndarray  # bool: the baseline is below the scale's minimum
    remission: np.ndarray  # bool: the end rating shows remission
    before: np.ndarray  # bool: the baseline was rated before the current episode
    disagree: np.ndarray  # bool: a merged row rated a response the course's ratings do not
    # bool: unknown between a partial response (its ends) and a response (a row or an
    # interim rating): no nonresponse either way, so never a failure
    no_failure: np.ndarray
    last_stop: Coded  # the stop reason of each course's last row
    unrated: np.ndarray  # bool: no rating, improvement or stop-reason evidence on any row


def outcomes(
    courses: pd.DataFrame, seg: Segments, stop_reason: Coded, baseline_before: np.ndarray,
    rules: RuleSet, why: Reasons,
) -> CourseOutcome:  # fmt: skip
    """First baseline, last end rating; remission and baselines per rule; a row of a merged
    course that rated a response the course does not show leaves the outcome unknown."""
    course, first, last = seg.course, seg.first, seg.last
    rated = ratings(courses, first, last, rules)
    why.flag(rated.madrs[course], "outcome_from_madrs")
    why.flag(rated.other_version[course], "hamd_version_not_compared")
    given = floats(courses, "improvement")
    low, high = seg.reduce(np.fmin, given), seg.reduce(np.fmax, given)
    improvement = np.where(low == high, low, np.nan)  # rows that disagree: unknown
    last_stop = Coded(stop_reason.codes[last], stop_reason.values)
    pct, outcome, from_stop, low_base, remission = course_outcome(
        rated, improvement, last_stop, rules
    )
    before = baseline_before & ~remission
    outcome[before & (outcome != OUTCOME_UNKNOWN) & ~from_stop] = OUTCOME_UNKNOWN
    # A row of a merged course whose own ratings show response or remission, when the
    # course's first and last ratings do not: the evidence disagrees, the outcome is unknown.
    merged = np.flatnonzero(seg.size[course] > 1)
    row_outcome = course_outcome(
        ratings(courses, merged, merged, rules),
        given[merged],
        Coded(stop_reason.codes[merged], stop_reason.values),
        rules,
    )[1]
    responded_rows = merged[np.isin(row_outcome, (RESPONSE, REMISSION))]
    no_failure = np.zeros(seg.m, dtype=bool)

    def unknown_where(worked: np.ndarray, code: str) -> np.ndarray:
        """Courses whose ends show nonresponse or a partial response while `worked` (a
        response rated elsewhere in the course): outcome unknown, flagged `code`; one whose
        ends show a partial response is no failure either way (`no_failure`)."""
        hit = worked & np.isin(outcome, (NONRESPONSE, PARTIAL))
        no_failure[hit & (outcome == PARTIAL)] = True
        outcome[hit] = OUTCOME_UNKNOWN
        why.flag(hit[course], code)
        return hit

    worked = np.zeros(seg.m, dtype=bool)
    worked[course[responded_rows]] = True
    disagree = unknown_where(worked, "segments_disagree")
    # A rating between the baseline and the end rating (hamd_lowest, madrs_lowest: the
    # lowest on the scale the course is judged on) that shows a response or remission:
    # the patient responded and lost it, which the two ends alone would call a failure.
    # (A course the rows already made unknown is not flagged again.)
    if rules.outcome.interim_response == "unknown":
        disagree |= unknown_where(interim_response(courses, seg, rated, rules), "interim_response")
    if rules.outcome.other_evidence == "unknown" and rules.outcome.nonresponse is not None:
        better = _better_elsewhere(rated, improvement, last_stop, outcome, rules)
        disagree |= unknown_where(better, "outcome_disagrees")
    unrated = np.zeros(seg.m, dtype=bool)  # read only by outcome.infer_failure_from
    if rules.outcome.infer_failure_from is not None:
        unrated = ~from_stop
        for name in ("hamd_start", "hamd_end", "madrs_start", "madrs_end", "improvement"):
            unrated &= np.isnan(seg.reduce(np.fmax, floats(courses, name)))
    return CourseOutcome(
        pct,
        outcome,
        from_stop,
        low_base,
        remission,
        before,
        disagree,
        no_failure,
        last_stop,
        unrated,
    )


RANK = np.full(len(OUTCOMES), -1, dtype=np.int8)  # unknown: nothing is better than it
RANK[[NONRESPONSE, PARTIAL, RESPONSE, REMISSION]] = [0, 1, 2, 2]
"""How well a course went, by outcome code (a response and a remission alike)."""
STOP_RANK = {"remission": 2, "relapse": 2}
"""What a stop reason says of how well the course went: a remission, or a relapse (it
had responded). Not `partial_response`: what is partial is the rule set's band of
percent improvement (25 % is a partial response for Sforzini, a nonresponse for the
MGH-ATRQ), which the ratings measure and a stop reason only names."""


def _better_elsewhere(
    rated: Ratings, improvement: np.ndarray, stop: Coded, outcome: np.ndarray, rules: RuleSet
) -> np.ndarray:
    """Courses judged on their ratings whose improvement column, or last stop reason, says
    they went better than the ratings do: 24 -> 22 beside an improvement of 0.5, or a
    stop for remission. Which is right is for a reviewer; the ratings alone would count a
    failure the export itself contradicts. Judged on the few courses that have such
    evidence and a known outcome."""
    m = len(outcome)
    reasons = [
        r for r in STOP_RANK if r != "relapse" or rules.outcome.interim_response == "unknown"
    ]
    by_stop = np.array([STOP_RANK[v] if v in reasons else -1 for v in stop.values], np.int8)
    stopped = by_stop[stop.codes] >= 0
    known = (outcome == NONRESPONSE) | (outcome == PARTIAL)  # nothing else can be bettered
    scored = ~np.isnan(rated.start) & ~np.isnan(rated.end) & (rated.start > 0)
    at = np.flatnonzero(known & scored & (~np.isnan(improvement) | stopped))
    better = np.zeros(m, dtype=bool)
    if not at.size:
        return better
    k = len(at)
    nan, no = np.full(k, np.nan), np.zeros(k, dtype=bool)
    unrated = Ratings(nan, nan, nan, nan, no, no)  # the improvement column alone
    column = course_outcome(unrated, improvement[at], Coded(np.zeros(k, np.int8), ("",)), rules)[1]
    said = np.maximum(RANK[column], by_stop[stop.codes[at]])
    better[at] = said > RANK[outcome[at]]
    return better


@dataclass(frozen=True)
class Exposure:
    """Each course's dose check, its days at an adequate dose (an interval) and its
    duration check, and the sessions it counts."""

    dose: np.ndarray  # int8 tri-state: some row reached the minimum
    low_days: np.ndarray  # days surely at an adequate dose
    high_days: np.ndarray  # days possibly at an adequate dose (inf: no end)
    duration: np.ndarray  # int8 tri-state
    sessions: np.ndarray  # sessions of its rows (NaN: none given)


def exposure(
    courses: pd.DataFrame, seg: Segments, row_dose: np.ndarray, first_day: np.ndarray,
    last_day: np.ndarray, window: np.ndarray, dose_matters: np.ndarray, role: Coded,
    modality: Coded, rules: RuleSet, why: Reasons,
) -> Exposure:  # fmt: skip
    """Dose and days at an adequate dose, counted from the episode's onset if clipped
    (`window`, per course); with a `sessions` column the count decides for the
    modalities that name one."""
    course, first = seg.course, seg.first
    c_dose = seg.reduce(np.maximum, row_dose)  # Kleene OR: the course reached the minimum
    dose_of_row = c_dose[course]
    low_rows = np.select(
        [dose_of_row == MET, dose_of_row == UNKNOWN], [row_dose == MET, row_dose != NOT_MET], True
    )
    high_rows = np.where(dose_of_row == NOT_MET, True, row_dose != NOT_MET)
    lows = np.maximum(first_day, window[course])
    low_days = seg.union_days(lows, last_day, low_rows)
    high_days = seg.union_days(lows, last_day, high_rows)
    high_days[seg.any(high_rows & np.isnan(last_day))] = np.inf
    below = dose_matters & (row_dose == NOT_MET)
    why.flag(below & (dose_of_row == NOT_MET), "dose_below_minimum")
    why.flag(below & (dose_of_row == MET), "sub_minimum_days_not_counted")
    c_duration = bounds_state(low_days, high_days, min_days(rules, role, modality)[first])
    sessions = seg.reduce(np.add, floats(courses, "sessions"))
    c_modality = modality.codes[first]
    # With a `sessions` column the count decides for the modalities that name one: an
    # empty count is unknown, not weeks.
    given_sessions = "sessions" in courses.columns
    for session_key, needed in rules.adequacy.duration.min_sessions_for.items():
        by_sessions = np.isin(
            c_modality, [i for i, v in enumerate(modality.values) if v == session_key]
        )
        by_sessions &= given_sessions
        c_duration[by_sessions] = from_bool(
            sessions[by_sessions] >= needed, known=~np.isnan(sessions[by_sessions])
        )
        why.flag((by_sessions & ~np.isnan(sessions))[course], "sessions_counted")
        why.flag((by_sessions & np.isnan(sessions))[course], "sessions_missing")
    why.flag((c_duration == UNKNOWN)[course], "duration_unknown")
    why.flag((c_duration == NOT_MET)[course], "too_short")

    return Exposure(c_dose, low_days, high_days, c_duration, sessions)


def early_stop(
    c_start: np.ndarray, c_end: np.ndarray, c_ongoing: np.ndarray, c_duration: np.ndarray,
    rated: CourseOutcome, low_days: np.ndarray, high_days: np.ndarray, rules: RuleSet,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Early discontinuation (Sforzini item 10), per course: (stopped early, evidence of
    nonresponse that lets it fail (tri-state: unknown where the ratings showed
    nonresponse but other evidence disagrees), long enough to fail at all:
    `early_stop.min_days`)."""
    m = len(c_start)
    early_rule = rules.early_stop
    c_early = np.zeros(m, dtype=bool)
    evidence = np.full(m, NOT_MET, dtype=np.int8)
    long_enough = np.full(m, MET, dtype=np.int8)
    if early_rule is not None:
        span = c_end - c_start + 1
        with np.errstate(invalid="ignore"):  # a course of adequate duration never stopped early
            c_early = ~c_ongoing & (span < early_rule.before_weeks * 7.0 - 1e-9)
        c_early &= c_duration != MET
        if early_rule.evidence == "scores":
            # A stop for another cause (early_stop.other_causes) says nothing about
            # efficacy: too short, whatever the scores.
            other_cause = rated.last_stop.isin(early_rule.other_causes)
            shown = (rated.outcome == NONRESPONSE) & ~rated.from_stop & ~other_cause
            # Ratings that showed nonresponse, left unknown because other evidence
            # disagrees (`outcomes`): whether the stop was for nonresponse is unknown too.
            contested = rated.disagree & ~rated.no_failure & ~other_cause
            evidence = np.select([shown, contested], [MET, UNKNOWN], NOT_MET).astype(np.int8)
        else:  # stopped for nonresponse, and no score says otherwise
            evidence = from_bool(
                rated.last_stop.eq("nonresponse")
                & np.isin(rated.outcome, (NONRESPONSE, OUTCOME_UNKNOWN))
            )
        allowed = c_early & early_rule.counts_if_explicit_nonresponse
        evidence = np.where(allowed, evidence, NOT_MET).astype(np.int8)
        long_enough = bounds_state(low_days, high_days, float(early_rule.min_days))
    return c_early, evidence, long_enough


def flag_verdicts(
    why: Reasons, seg: Segments, counts_flag: np.ndarray, early: np.ndarray,
    evidence: np.ndarray, long_enough: np.ndarray, c_duration: np.ndarray,
    failed: np.ndarray, rated: CourseOutcome, rules: RuleSet,
) -> None:  # fmt: skip
    """The reason codes of a counted course's verdict: too short to fail, an early stop
    (with or without evidence), its outcome, and failed."""
    course = seg.course
    shorter = early & (long_enough[course] == NOT_MET)
    why.flag(
        counts_flag & ~early & (long_enough[course] == NOT_MET) & (c_duration[course] == MET),
        "shorter_than_min_days",
    )
    why.flag(counts_flag & early & (evidence[course] == NOT_MET) & ~shorter, "early_stop")
    why.flag(counts_flag & shorter, "early_stop_shorter_than_min_days")
    early_failed = counts_flag & early & (failed == MET)
    if rules.early_stop is not None:
        code = "rated" if rules.early_stop.evidence == "scores" else "explicit"
        why.flag(early_failed, f"early_stop_{code}_nonresponse")
    outcome_of_row = rated.outcome[course]
    why.flag(counts_flag & (outcome_of_row == RESPONSE), "response")
    why.flag(counts_flag & (outcome_of_row == PARTIAL), "partial_response")
    why.flag(counts_flag & rated.remission[course], "remission")
    why.flag(counts_flag & rated.low_base[course], "baseline_below_minimum")
    why.flag(counts_flag & rated.before[course], "baseline_before_episode")
    # An early stop without scores is simply too short: its outcome is not what is missing.
    unexplained = ~(rated.low_base | rated.before | rated.disagree)[course] & ~early
    why.flag(
        counts_flag
        & (outcome_of_row == OUTCOME_UNKNOWN)
        & unexplained
        & (rules.outcome.evidence == "scores"),
        "outcome_unknown",
    )
    why.flag(counts_flag & rated.from_stop[course], "outcome_from_stop_reason")
    why.flag(failed == MET, "failed")


EXPLAINED_STOPS = ("intolerance", "remission", "relapse", "patient_choice", "partial_response")
"""Stop reasons that explain a change of drug other than by nonresponse: no failure is
inferred from a switch after them."""


def inferred_failures(
    codes: np.ndarray, drug: np.ndarray, start: np.ndarray, candidate: np.ndarray,
    nonresponse: np.ndarray, rated: CourseOutcome, seg: Segments, rules: RuleSet,
) -> np.ndarray:  # fmt: skip
    """Per row, whether its course's nonresponse is inferred (`outcome.infer_failure_from`):
    the course has no rating at all, its stop reason does not explain a change, and the
    subject started another drug (a switch or an add-on; `candidate`: the first rows of
    counted courses) more than `counting.regimen_window_days` and at most
    `outcome.switch_window_days` after the course's first day. Sets those rows'
    `nonresponse` to met; adequacy is still required for a failure."""
    rule = rules.outcome
    if rule.infer_failure_from is None:
        return np.zeros(len(nonresponse), dtype=bool)
    course = seg.course
    is_first = np.zeros(len(course), dtype=bool)
    is_first[seg.first] = True
    changed = changed_within(
        codes, drug, start, candidate & is_first,
        rules.counting.regimen_window_days or 0, rule.switch_window_days,
    )  # fmt: skip
    inferable = rated.unrated & ~rated.last_stop.isin(EXPLAINED_STOPS)
    inferred = inferable[course] & changed & (nonresponse == UNKNOWN)
    nonresponse[inferred] = MET
    return inferred


def episode_check(
    seg: Segments, c_start: np.ndarray, c_end: np.ndarray, onset: np.ndarray, rules: RuleSet,
    why: Reasons,
) -> Episode:  # fmt: skip
    """Each course against the current episode (`adequacy.episode`), with its reasons."""
    course = seg.course
    episode = current_episode(c_start, c_end, onset, rules)
    why.flag(episode.clipped[course], "clipped_to_episode")
    why.flag(episode.unknown[course], "episode_unknown")
    if episode.assumed.any():
        assumed_in = rules.adequacy.episode.when_unknown == "assume_met"
        why.flag(
            episode.assumed[course], f"episode_unknown_assumed_{'in' if assumed_in else 'out'}"
        )
    out_reason = (
        "started_before_episode"
        if rules.adequacy.episode.scope == "started_within"
        else "before_current_episode"
    )
    why.flag(episode.out[course], out_reason)
    return episode


def nonresponse_of(
    codes: np.ndarray, key: np.ndarray, start: np.ndarray, adequate: np.ndarray,
    counts_flag: np.ndarray, rated: CourseOutcome, seg: Segments, rules: RuleSet,
    why: Reasons,
) -> np.ndarray:  # fmt: skip
    """Per row, whether its course showed nonresponse: by its scores, or by register
    evidence (superseded by a later adequate trial of another key, unless in remission)."""
    course = seg.course
    by_scores = rules.outcome.evidence == "scores"
    if by_scores:
        c_nonresponse = np.select(
            [rated.outcome == NONRESPONSE, (rated.outcome == OUTCOME_UNKNOWN) & ~rated.no_failure],
            [MET, UNKNOWN],
            NOT_MET,
        ).astype(np.int8)
        nonresponse = c_nonresponse[course]
    else:  # register evidence; an end rating in remission still says the course worked
        nonresponse = superseded(codes, key, start, adequate)
        nonresponse[rated.remission[course]] = NOT_MET
        why.flag(counts_flag & (nonresponse == MET), "superseded_by_later_trial")
        why.flag(counts_flag & (nonresponse == UNKNOWN), "superseded_possibly")
        why.flag(counts_flag & (nonresponse == NOT_MET), "not_superseded")
    return nonresponse
