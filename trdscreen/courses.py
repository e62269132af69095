"""Assess each treatment course: counted, dose, duration, adherence, episode, outcome.

Pure and vectorized over all rows at once. Rows of one course (refills, dose
steps) are merged first (`trdscreen.segments`); every rule then judges the
course, and each row carries its course's verdict. Drug names are looked up
once per distinct name and broadcast by factorized codes. Every check is
tri-state, and each row carries reason codes saying how it counted
(`trdscreen.reasons`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen import trials
from trdscreen.asof import AFTER, CENSORED
from trdscreen.coded import Coded, coded
from trdscreen.doses import compared_dose, lithium_state
from trdscreen.drugs import DrugFacts, drug_facts
from trdscreen.episode import current_episode
from trdscreen.formulary import Formulary
from trdscreen.outcome import course_outcome, ratings
from trdscreen.reasons import (
    ASSUMPTIONS,
    BIT,
    NONRESPONSE,
    OUTCOME_UNKNOWN,
    OUTCOMES,
    PARTIAL,
    REASON_TEXT,
    REASONS,
    REMISSION,
    RESPONSE,
)
from trdscreen.ruleset import DRUG_MODALITIES, ROLES, STOP_REASONS, RuleSet
from trdscreen.segments import Segments, dates, days, merge_segments
from trdscreen.tristate import MET, NOT_MET, UNKNOWN, all_of, from_bool, join_flags, labels, resolve

__all__ = ["DRUG_MODALITIES", "OUTCOMES", "REASONS", "REASON_TEXT", "CourseAssessment"]

STOPPED = tuple(reason for reason in STOP_REASONS if reason != "ongoing")
NO_MINIMUM_REASONS = (
    "no_minimum_dose", "no_minimum_dose_assumed_met", "no_minimum_dose_assumed_not_met",
)  # fmt: skip
"""Stop reasons that say a course ended (every one but `ongoing`)."""


@dataclass(frozen=True)
class CourseAssessment:
    """The courses table plus the tri-state arrays the subject stage counts on (per row;
    the rows of one course carry its verdict)."""

    table: pd.DataFrame
    adequate: np.ndarray
    failed: np.ndarray  # as counting sees it: the drug judged by `counting.same_drug`
    partial: np.ndarray  # adequate with a partial response (PRD band)
    responded: np.ndarray  # adequate with a response or remission
    identity: np.ndarray  # drug, moiety, class or regimen key used to count distinct trials
    # For staging models, which score roles and modalities separately: the
    # same checks with every role, modality and agent counted.
    failed_any: np.ndarray  # failed, whatever the preset's counting filters say
    used_any: np.ndarray  # a depression treatment given in scope (current episode)
    dose_optimised: np.ndarray  # bool: a later course of a drug at a higher dose
    in_view: np.ndarray  # bool: started on or before --as-of (all True without it)
    assumptions: np.ndarray  # int64 bits of ASSUMPTIONS a counted failure rests on


class _Reasons:
    """Reason bits per row, set by mask."""

    def __init__(self, n: int) -> None:
        self.bits = np.zeros(n, dtype=np.int64)

    def flag(self, mask: np.ndarray, reason: str) -> None:
        np.bitwise_or(self.bits, BIT[reason], out=self.bits, where=mask)

    def has(self, reason: str) -> np.ndarray:
        return (self.bits & BIT[reason]) != 0


def _text(column: pd.Series) -> pd.api.extensions.ExtensionArray:
    """A text column as the output's str dtype, without a round trip through Python objects."""
    return column.array if column.dtype == "str" else pd.array(column.to_numpy(object), dtype="str")


def _floats(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name in frame.columns:
        return np.asarray(frame[name].to_numpy(dtype=np.float64, na_value=np.nan))
    return np.full(len(frame), np.nan)


def _flags(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A boolean marker column (e.g. from the --as-of view), all False when absent."""
    if name in frame.columns:
        return frame[name].to_numpy(dtype=bool)
    return np.zeros(len(frame), dtype=bool)


def _counted(
    lookup: DrugFacts, role: Coded, modality: Coded, drug_modality: np.ndarray, in_view: np.ndarray,
    rules: RuleSet, why: _Reasons,
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


def _row_dose(
    dose: np.ndarray, required: np.ndarray, lookup: DrugFacts, drug_modality: np.ndarray,
    relevant: np.ndarray, rules: RuleSet, why: _Reasons,
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


def _min_days(rules: RuleSet, role: Coded, modality: Coded) -> np.ndarray:
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


def _bounds_state(low: np.ndarray, high: np.ndarray, minimum: np.ndarray | float) -> np.ndarray:
    """Met when the lower bound reaches `minimum`, not met when even the upper does not."""
    eps = 1e-9
    return np.select(
        [low >= minimum - eps, high < minimum - eps], [MET, NOT_MET], default=UNKNOWN
    ).astype(np.int8)


def assess_courses(
    courses: pd.DataFrame,
    codes: np.ndarray,
    reference: np.ndarray,
    episode_start: np.ndarray,
    rules: RuleSet,
    formulary: Formulary,
) -> CourseAssessment:
    """Assess every course; the table has one row per input row, in input order.

    `codes` is the subject code of each row; `reference` and `episode_start`
    are datetime64[s] per row (NaT = unknown), looked up from the subject by
    the caller. Steps: what counts, each row's dose and dates, merging rows into
    courses, then per course the episode, days at an adequate dose, adherence,
    outcome and early stop; then the counting keys and the drug's verdict.
    """
    n = len(courses)
    why = _Reasons(n)
    modality = coded(courses, "modality", "pharmacotherapy")
    role = coded(courses, "role", "monotherapy")
    stop_reason = coded(courses, "stop_reason", "")
    drug_modality = modality.isin(DRUG_MODALITIES)
    lookup = drug_facts(courses, rules, formulary)
    in_view = ~_flags(courses, AFTER)
    why.flag(_flags(courses, CENSORED), CENSORED)
    treatment, counted, on_drug = _counted(
        lookup, role, modality, drug_modality, in_view, rules, why
    )
    known = lookup.known

    # --- each row: dose and dates (an ongoing row runs to the reference date; a
    # stopped row without an end date has an unknown end, never "ongoing")
    dose, converted = compared_dose(courses, lookup)
    required = lookup.min_dose * rules.adequacy.dose.multiple
    # Dose reasons only where a dose can matter: not on a drug that never counts.
    dose_matters = on_drug & known & ~lookup.counts_as.eq("not_a_depression_treatment")
    why.flag(dose_matters & converted, "dose_daily_equivalent")
    row_dose = _row_dose(dose, required, lookup, drug_modality, dose_matters, rules, why)
    by_level, level_ok = lithium_state(courses, lookup, rules.adequacy.dose.lithium_min_level)
    if rules.adequacy.dose.check:  # the level decides: no dose assumption is left standing
        row_dose[by_level] = np.where(level_ok[by_level], MET, NOT_MET)
        for reason in NO_MINIMUM_REASONS:
            why.bits[by_level] &= ~BIT[reason]
        why.flag(dose_matters & by_level, "lithium_level_judged")
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

    # --- rows of one course (same subject, drug, role, modality and counting)
    course = merge_segments(
        (codes, lookup.same_drug, role.codes, modality.codes, counted.astype(np.int64)),
        drug_modality & in_view,
        first_day,
        last_day,
        rules.adequacy.segments.merge_gap_days,
    )
    seg = Segments.of(course, first_day)
    first, last = seg.first, seg.last
    why.flag(seg.size[course] > 1, "merged_segments")
    c_start = first_day[first]
    c_end = seg.reduce(np.maximum, last_day)  # NaN (unknown) propagates
    c_ongoing = ongoing[last]
    c_counted, c_treatment = counted[first], treatment[first]

    # --- current episode, per course
    episode = current_episode(c_start, c_end, days(episode_start)[first], rules)
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

    # --- dose and days at an adequate dose, counted from the episode's onset if clipped
    c_dose = seg.reduce(np.maximum, row_dose)  # Kleene OR: the course reached the minimum
    dose_of_row = c_dose[course]
    low_rows = np.select(
        [dose_of_row == MET, dose_of_row == UNKNOWN], [row_dose == MET, row_dose != NOT_MET], True
    )
    high_rows = np.where(dose_of_row == NOT_MET, True, row_dose != NOT_MET)
    lows = np.maximum(first_day, episode.window[course])
    low_days = seg.union_days(lows, last_day, low_rows)
    high_days = seg.union_days(lows, last_day, high_rows)
    high_days[seg.any(high_rows & np.isnan(last_day))] = np.inf
    below = dose_matters & (row_dose == NOT_MET)
    why.flag(below & (dose_of_row == NOT_MET), "dose_below_minimum")
    why.flag(below & (dose_of_row == MET), "sub_minimum_days_not_counted")
    c_duration = _bounds_state(low_days, high_days, _min_days(rules, role, modality)[first])
    sessions = seg.reduce(np.add, _floats(courses, "sessions"))
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

    # --- adherence: the lowest of the course's rows
    adherence = seg.reduce(np.minimum, _floats(courses, "adherence"))
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

    # --- outcome: first baseline, last end rating; remission and baselines per rule
    rated = ratings(courses, first, last, rules)
    why.flag(rated.madrs[course], "outcome_from_madrs")
    why.flag(rated.other_version[course], "hamd_version_not_compared")
    given = _floats(courses, "improvement")
    low, high = seg.reduce(np.fmin, given), seg.reduce(np.fmax, given)
    improvement = np.where(low == high, low, np.nan)  # rows that disagree: unknown
    last_stop = Coded(stop_reason.codes[last], stop_reason.values)
    pct, outcome, from_stop, low_base, remission = course_outcome(
        rated, improvement, last_stop, rules
    )
    before = episode.baseline_before & ~remission
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
    disagree = np.zeros(seg.m, dtype=bool)
    disagree[course[responded_rows]] = True
    disagree &= np.isin(outcome, (NONRESPONSE, PARTIAL))
    outcome[disagree] = OUTCOME_UNKNOWN
    why.flag(disagree[course], "segments_disagree")

    checks = all_of(c_dose, c_duration, c_adherence, episode.state)
    c_adequate = all_of(c_counted, checks)

    # --- per row from here: counting keys, then failure (register evidence needs keys)
    adequate = c_adequate[course]
    member = drug_modality & in_view & (counted != NOT_MET)
    window = rules.counting.regimen_window_days

    regimens = trials.Regimens.of(codes, c_start[course], member, window)

    def keyed(distinct: str) -> tuple[np.ndarray, np.ndarray]:
        return regimens.keys(trials.identity(lookup, modality.codes, drug_modality, distinct))

    key, together = keyed(rules.counting.distinct)  # what counts as a distinct trial
    # What is judged as one drug (or one regimen of drugs).
    drug_key = key if rules.counting.distinct == "drug" else keyed("drug")[0]
    why.flag(together, "same_regimen")
    counts_flag = (c_counted != NOT_MET)[course]
    by_scores = rules.outcome.evidence == "scores"
    if by_scores:
        c_nonresponse = np.select(
            [outcome == NONRESPONSE, outcome == OUTCOME_UNKNOWN], [MET, UNKNOWN], NOT_MET
        ).astype(np.int8)
        nonresponse = c_nonresponse[course]
    else:  # register evidence; an end rating in remission still says the course worked
        nonresponse = trials.superseded(codes, key, c_start[course], adequate)
        nonresponse[remission[course]] = NOT_MET
        why.flag(counts_flag & (nonresponse == MET), "superseded_by_later_trial")
        why.flag(counts_flag & (nonresponse == UNKNOWN), "superseded_possibly")
        why.flag(counts_flag & (nonresponse == NOT_MET), "not_superseded")

    # --- early discontinuation (Sforzini item 10): needs evidence, and min_days
    early_rule = rules.early_stop
    c_early = np.zeros(seg.m, dtype=bool)
    evidence = np.zeros(seg.m, dtype=bool)
    long_enough = np.full(seg.m, MET, dtype=np.int8)
    if early_rule is not None:
        span = c_end - c_start + 1
        with np.errstate(invalid="ignore"):  # a course of adequate duration never stopped early
            c_early = ~c_ongoing & (span < early_rule.before_weeks * 7.0 - 1e-9)
        c_early &= c_duration != MET
        if early_rule.evidence == "scores":
            # A stop for another cause (early_stop.other_causes) says nothing about
            # efficacy: too short, whatever the scores.
            other_cause = last_stop.isin(early_rule.other_causes)
            evidence = (outcome == NONRESPONSE) & ~from_stop & ~other_cause
        else:  # stopped for nonresponse, and no score says otherwise
            evidence = last_stop.eq("nonresponse") & np.isin(
                outcome, (NONRESPONSE, OUTCOME_UNKNOWN)
            )
        evidence &= c_early & early_rule.counts_if_explicit_nonresponse
        long_enough = _bounds_state(low_days, high_days, float(early_rule.min_days))
    early = c_early[course]

    def failed_if(included: np.ndarray) -> np.ndarray:
        full = all_of(included, checks[course], nonresponse)
        early_ok = all_of(
            included,
            c_dose[course],
            c_adherence[course],
            episode.state[course],
            from_bool(evidence[course]),
        )
        # No course shorter than early_stop.min_days is a failure, early or not.
        return all_of(np.where(early, early_ok, full), long_enough[course])

    failed = failed_if(c_counted[course])
    shorter = early & (long_enough[course] == NOT_MET)
    why.flag(
        counts_flag & ~early & (long_enough[course] == NOT_MET) & (c_duration[course] == MET),
        "shorter_than_min_days",
    )
    why.flag(counts_flag & early & ~evidence[course] & ~shorter, "early_stop")
    why.flag(counts_flag & shorter, "early_stop_shorter_than_min_days")
    early_failed = counts_flag & early & (failed == MET)
    if early_rule is not None:
        code = "rated" if early_rule.evidence == "scores" else "explicit"
        why.flag(early_failed, f"early_stop_{code}_nonresponse")
    outcome_of_row = outcome[course]
    why.flag(counts_flag & (outcome_of_row == RESPONSE), "response")
    why.flag(counts_flag & (outcome_of_row == PARTIAL), "partial_response")
    why.flag(counts_flag & remission[course], "remission")
    why.flag(counts_flag & low_base[course], "baseline_below_minimum")
    why.flag(counts_flag & before[course], "baseline_before_episode")
    # An early stop without scores is simply too short: its outcome is not what is missing.
    unexplained = ~(low_base | before | disagree)[course] & ~early
    why.flag(
        counts_flag & (outcome_of_row == OUTCOME_UNKNOWN) & unexplained & by_scores,
        "outcome_unknown",
    )
    why.flag(counts_flag & from_stop[course], "outcome_from_stop_reason")
    why.flag(failed == MET, "failed")

    # --- how counting judges a drug given more than once
    same_drug = rules.counting.same_drug
    judged = np.minimum(
        failed,
        trials.judged_per_drug(
            codes, drug_key, failed, adequate, nonresponse, c_start[course], same_drug
        ),
    )
    if same_drug != "any_failure":
        why.flag((failed == MET) & (judged != MET), f"judged_at_{same_drug.split('_')[0]}_course")
    treatment_failed = failed_if(c_treatment[course])
    plain_drug = trials.identity(lookup, modality.codes, drug_modality, "drug")
    failed_any = np.minimum(
        treatment_failed,
        trials.judged_per_drug(
            codes, plain_drug, treatment_failed, all_of(c_treatment, checks)[course],
            nonresponse, c_start[course], same_drug,
        ),
    )  # fmt: skip
    optimised, repeat = trials.repeats(
        codes,
        lookup.same_drug,
        known & drug_modality & in_view,
        first_day,
        dose,
        course,
        required,
    )
    why.flag(optimised, "dose_optimisation")
    why.flag(repeat, "repeat_of_earlier_drug")
    # A row hidden by --as-of says only that: its other checks are meaningless.
    why.bits[~in_view] = BIT[AFTER]
    assumptions = np.zeros(n, dtype=np.int64)
    for index, reason in enumerate(ASSUMPTIONS.values()):
        assumptions |= np.where(why.has(reason), np.int64(1) << index, np.int64(0))

    partial_state = np.select(
        [outcome == PARTIAL, outcome == OUTCOME_UNKNOWN], [MET, UNKNOWN], NOT_MET
    ).astype(np.int8)
    responded = np.isin(outcome, (RESPONSE, REMISSION))
    table = _table(
        courses, lookup, role, modality, dose, required, start, end_given, ongoing,
        first_day, last_day, codes, seg, c_start, episode.window, c_end, low_days, high_days, sessions,
        pct, outcome, c_counted, c_dose, c_duration, c_adherence, episode.state, early,
        adequate, failed, why.bits,
    )  # fmt: skip
    return CourseAssessment(
        table,
        adequate,
        judged,
        all_of(c_adequate, partial_state)[course],
        all_of(c_adequate, from_bool(responded))[course],
        key,
        failed_any=failed_any,
        used_any=all_of(c_treatment, episode.state)[course],
        dose_optimised=optimised,
        in_view=in_view,
        assumptions=assumptions,
    )


def _table(
    courses, lookup, role, modality, dose, required, start, end_given, ongoing, first_day,
    last_day, codes, seg, c_start, window, c_end, low_days, high_days, sessions, pct, outcome,
    counted, dose_state, duration_state, adherence_state, episode_state, early, adequate,
    failed, bits,
) -> pd.DataFrame:  # fmt: skip
    """The courses table: one row per input row, its course's verdict on each."""
    course = seg.course
    # Course numbers per subject, by start: course 1 is the subject's earliest.
    subject = codes[seg.first]
    day = np.nan_to_num(c_start, nan=0.0).astype(np.int64)
    order = np.lexsort((seg.first, day, subject)) if seg.m else np.zeros(0, np.int64)
    ordinal = np.empty(seg.m, dtype=np.int64)
    if seg.m:
        new = np.r_[True, subject[order][1:] != subject[order][:-1]]
        position = np.arange(seg.m)
        ordinal[order] = position - np.maximum.accumulate(np.where(new, position, 0)) + 1
    exposure_days = np.where(np.isinf(high_days), np.nan, low_days)
    return pd.DataFrame(
        {
            "subject_id": _text(courses["subject_id"]),
            "source_file": _text(courses["source_file"]),
            "source_line": courses["source_line"].to_numpy(),
            "course_id": ordinal[course],
            "course_rows": seg.size[course],
            "drug": _text(courses["drug"]),
            "drug_generic": lookup.drug_generic,
            "drug_class": lookup.drug_class,
            "role": role.text(),
            "modality": modality.text(),
            "daily_dose_mg": dose,
            "min_dose_mg": required,
            "min_dose_source": lookup.min_dose_source,
            "dose_margin_mg": dose - required,
            "start_date": start,
            "end_date": end_given,
            "ongoing": ongoing,
            "weeks": np.round((last_day - first_day + 1) / 7.0, 2),
            "exposure_start": dates(np.maximum(c_start, window))[course],
            "exposure_end": dates(c_end)[course],
            "exposure_weeks": np.round(exposure_days / 7.0, 2)[course],
            "sessions": _floats(courses, "sessions"),
            "adherence": _floats(courses, "adherence"),
            "pct_improvement": np.round(pct, 4)[course],  # display; decided on the exact value
            "outcome": pd.Categorical.from_codes(outcome[course], categories=list(OUTCOMES)),
            "counted": labels(counted[course]),
            "dose_check": labels(dose_state[course]),
            "duration_check": labels(duration_state[course]),
            "adherence_check": labels(adherence_state[course]),
            "episode_check": labels(episode_state[course]),
            "early_stop": early,
            "adequate": labels(adequate),
            "failed": labels(failed),
            "reasons": join_flags(bits, REASONS),
        }
    )
