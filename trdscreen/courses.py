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
from trdscreen.checks import (
    Reasons,
    adherence_check,
    counted_rows,
    early_stop,
    episode_check,
    exposure,
    flag_verdicts,
    inferred_failures,
    nonresponse_of,
    outcomes,
    row_dates,
    row_doses,
    text_array,
)
from trdscreen.coded import Coded, coded
from trdscreen.columns import flags, floats
from trdscreen.drugs import DrugFacts, drug_facts
from trdscreen.formulary import Formulary
from trdscreen.keys import lex_order
from trdscreen.reasons import (
    ASSUMPTIONS,
    BIT,
    OUTCOME_UNKNOWN,
    OUTCOMES,
    PARTIAL,
    REASON_TEXT,
    REASONS,
    REMISSION,
    RESPONSE,
)
from trdscreen.roles import infer_roles
from trdscreen.ruleset import DRUG_MODALITIES, RuleSet
from trdscreen.segments import Segments, dates, days, merge_segments, rank_within
from trdscreen.tristate import (
    MET,
    NOT_MET,
    UNKNOWN,
    all_of,
    failed_labels,
    from_bool,
    join_flags,
    labels,
)

__all__ = ["DRUG_MODALITIES", "OUTCOMES", "REASONS", "REASON_TEXT", "CourseAssessment"]


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
    why = Reasons(n)
    modality = coded(courses, "modality", "pharmacotherapy")
    role = coded(courses, "role", "monotherapy")
    stop_reason = coded(courses, "stop_reason", "")
    drug_modality = modality.isin(DRUG_MODALITIES)
    lookup = drug_facts(courses, rules, formulary)
    in_view = ~flags(courses, AFTER)
    why.flag(flags(courses, CENSORED), CENSORED)
    # --- each row's dates (an ongoing row runs to the reference date; a stopped row
    # without an end date has an unknown end, never "ongoing"); then what counts, with
    # an add-on agent given no role read by the antidepressant it was taken alongside
    start, end_given, ongoing, first_day, last_day = row_dates(
        courses, stop_reason, in_view, reference, why
    )
    # A role is read only from an overlap the export states: a row without an end date
    # runs to the reference date by the input contract, but its stop reason does not say
    # it was still taken (an end left out of the export reads the same), so nothing is
    # inferred from the days it is assumed to run.
    stated = np.where(ongoing & ~stop_reason.eq("ongoing"), np.nan, last_day)
    role = infer_roles(
        courses, role, lookup, modality, drug_modality & in_view, codes, first_day, stated,
        rules, why,
    )  # fmt: skip
    treatment, counted, on_drug = counted_rows(
        lookup, role, modality, drug_modality, in_view, rules, why
    )
    known = lookup.known

    # --- each row's dose
    dose, required, dose_matters, row_dose = row_doses(
        courses, lookup, on_drug, drug_modality, rules, why
    )
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

    episode = episode_check(seg, c_start, c_end, days(episode_start)[first], rules, why)

    exposed = exposure(
        courses, seg, row_dose, first_day, last_day, episode.window, dose_matters,
        role, modality, rules, why,
    )  # fmt: skip
    c_dose, c_duration, sessions = exposed.dose, exposed.duration, exposed.sessions
    low_days, high_days = exposed.low_days, exposed.high_days
    c_adherence = adherence_check(courses, seg, rules, why)
    why.flag(flags(courses, "duration_assumed"), "duration_assumed")

    rated = outcomes(courses, seg, stop_reason, episode.baseline_before, rules, why)
    pct, outcome = rated.pct, rated.outcome

    checks = all_of(c_dose, c_duration, c_adherence, episode.state)
    c_adequate = all_of(c_counted, checks)

    # --- per row from here: counting keys, then failure (register evidence needs keys)
    adequate = c_adequate[course]
    member = drug_modality & in_view & (counted != NOT_MET)
    key, drug_key = _counting_keys(
        codes, c_start[course], member, lookup, modality, drug_modality, rules, why
    )
    counts_flag = (c_counted != NOT_MET)[course]
    nonresponse = nonresponse_of(
        codes, key, c_start[course], adequate, counts_flag, rated, seg, rules, why
    )
    plain_drug = trials.identity(lookup, modality.codes, drug_modality, "drug")
    inferred = inferred_failures(
        codes, plain_drug, c_start[course], in_view & (counted == MET), nonresponse, rated,
        seg, rules,
    )  # fmt: skip

    c_early, evidence, long_enough = early_stop(
        c_start, c_end, c_ongoing, c_duration, rated, low_days, high_days, rules
    )
    early = c_early[course]

    def failed_if(included: np.ndarray) -> np.ndarray:
        full = all_of(included, checks[course], nonresponse)
        early_ok = all_of(
            included,
            c_dose[course],
            c_adherence[course],
            episode.state[course],
            evidence[course],
        )
        # No course shorter than early_stop.min_days is a failure, early or not.
        return all_of(np.where(early, early_ok, full), long_enough[course])

    failed = failed_if(c_counted[course])
    inferred &= failed == MET
    why.flag(inferred, "failure_inferred")
    flag_verdicts(
        why, seg, counts_flag, early, evidence, long_enough, c_duration, failed, rated, rules
    )

    judged = _judged_per_drug(codes, drug_key, failed, adequate, nonresponse, c_start[course],
                              rules, why)  # fmt: skip
    treatment_failed = failed_if(c_treatment[course])
    failed_any = np.minimum(
        treatment_failed,
        trials.judged_per_drug(
            codes, plain_drug, treatment_failed, all_of(c_treatment, checks)[course],
            nonresponse, c_start[course], rules.counting.same_drug,
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
    assumptions = _assumption_bits(why)

    partial_state = np.select(
        [outcome == PARTIAL, outcome == OUTCOME_UNKNOWN], [MET, UNKNOWN], NOT_MET
    ).astype(np.int8)
    responded = np.isin(outcome, (RESPONSE, REMISSION))
    table = _table(
        courses=courses, lookup=lookup, role=role, modality=modality, dose=dose,
        required=required, start=start, end_given=end_given, ongoing=ongoing,
        first_day=first_day, last_day=last_day, codes=codes, seg=seg, c_start=c_start,
        window=episode.window, c_end=c_end, low_days=low_days, high_days=high_days,
        sessions=sessions, pct=pct, outcome=outcome, counted=c_counted, dose_state=c_dose,
        duration_state=c_duration, adherence_state=c_adherence, episode_state=episode.state,
        early=early, adequate=adequate, failed=failed, inferred=inferred, bits=why.bits,
        rules=rules,
    )  # fmt: skip
    return CourseAssessment(
        table=table,
        adequate=adequate,
        failed=judged,
        partial=all_of(c_adequate, partial_state)[course],
        responded=all_of(c_adequate, from_bool(responded))[course],
        identity=key,
        failed_any=failed_any,
        used_any=all_of(c_treatment, episode.state)[course],
        dose_optimised=optimised,
        in_view=in_view,
        assumptions=assumptions,
    )


def _counting_keys(
    codes: np.ndarray, start: np.ndarray, member: np.ndarray, lookup: DrugFacts,
    modality: Coded, drug_modality: np.ndarray, rules: RuleSet, why: Reasons,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(what counts as a distinct trial, what is judged as one drug) per row: the drug,
    moiety or class (`counting.distinct`), drugs started together one regimen."""
    regimens = trials.Regimens.of(codes, start, member, rules.counting.regimen_window_days)

    def keyed(distinct: str) -> tuple[np.ndarray, np.ndarray]:
        return regimens.keys(trials.identity(lookup, modality.codes, drug_modality, distinct))

    key, together = keyed(rules.counting.distinct)
    drug_key = key if rules.counting.distinct == "drug" else keyed("drug")[0]
    why.flag(together, "same_regimen")
    return key, drug_key


def _judged_per_drug(
    codes: np.ndarray, drug_key: np.ndarray, failed: np.ndarray, adequate: np.ndarray,
    nonresponse: np.ndarray, start: np.ndarray, rules: RuleSet, why: Reasons,
) -> np.ndarray:  # fmt: skip
    """Failed as counting sees it: a drug given more than once judged by
    `counting.same_drug` (any failure, its best adequate course, or its last course)."""
    same_drug = rules.counting.same_drug
    judged = np.minimum(
        failed,
        trials.judged_per_drug(codes, drug_key, failed, adequate, nonresponse, start, same_drug),
    )
    if same_drug != "any_failure":
        why.flag((failed == MET) & (judged != MET), f"judged_at_{same_drug.split('_')[0]}_course")
    return judged


def _assumption_bits(why: Reasons) -> np.ndarray:
    """Per row, the `reasons.ASSUMPTIONS` its reasons record, as bits."""
    assumptions = np.zeros(len(why.bits), dtype=np.int64)
    for index, reason in enumerate(ASSUMPTIONS.values()):
        assumptions |= np.where(why.has(reason), np.int64(1) << index, np.int64(0))
    return assumptions


def _table(
    *, courses, lookup, role, modality, dose, required, start, end_given, ongoing, first_day,
    last_day, codes, seg, c_start, window, c_end, low_days, high_days, sessions, pct, outcome,
    counted, dose_state, duration_state, adherence_state, episode_state, early, adequate,
    failed, inferred, bits, rules,
) -> pd.DataFrame:  # fmt: skip
    """The courses table: one row per input row, its course's verdict on each."""
    course = seg.course
    # Course numbers per subject, by start: course 1 is the subject's earliest.
    subject = codes[seg.first]
    day = np.nan_to_num(c_start, nan=0.0).astype(np.int64)
    order = lex_order(subject, day, seg.first) if seg.m else np.zeros(0, np.int64)
    ordinal = rank_within(order, subject)
    exposure_days = np.where(np.isinf(high_days), np.nan, low_days)
    return pd.DataFrame(
        {
            "subject_id": text_array(courses["subject_id"]),
            "source_file": text_array(courses["source_file"]),
            "source_line": courses["source_line"].to_numpy(),
            "course_id": ordinal[course],
            "course_rows": seg.size[course],
            "drug": text_array(courses["drug"]),
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
            "sessions": floats(courses, "sessions"),
            "adherence": floats(courses, "adherence"),
            "pct_improvement": np.round(pct, 4)[course],  # display; decided on the exact value
            "outcome": pd.Categorical.from_codes(outcome[course], categories=list(OUTCOMES)),
            "counted": labels(counted[course]),
            "dose_check": labels(dose_state[course]),
            "duration_check": labels(duration_state[course]),
            "adherence_check": labels(adherence_state[course]),
            "episode_check": labels(episode_state[course]),
            "early_stop": early,
            "adequate": labels(adequate),
            "failed": failed_labels(failed, inferred, rules.outcome.infer_failure_from),
            "reasons": join_flags(bits, REASONS),
        },
        copy=False,  # no 2-D blocks copied: the pipeline takes this table's rows in order
    )
