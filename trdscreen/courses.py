"""Assess each treatment course: counted, dose, duration, adherence, episode, outcome.

Pure and vectorized over all courses at once. Drug names are looked up once
per distinct name and broadcast by factorized codes. Every check is
tri-state, and each course carries reason codes saying how it counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.asof import AFTER, CENSORED
from trdscreen.coded import Coded, categorical, coded
from trdscreen.formulary import Formulary
from trdscreen.keys import day_numbers, lex_order
from trdscreen.ruleset import ROLES, RuleSet
from trdscreen.tristate import MET, NOT_MET, UNKNOWN, all_of, from_bool, join_flags, labels, resolve

DRUG_MODALITIES = ("pharmacotherapy", "esketamine")


@dataclass(frozen=True)
class CourseAssessment:
    """The courses table plus the tri-state arrays the subject stage counts on."""

    table: pd.DataFrame
    adequate: np.ndarray
    failed: np.ndarray
    partial: np.ndarray  # adequate with a partial response (PRD band)
    identity: np.ndarray  # drug or class key used to count distinct trials
    # For staging models, which score roles and modalities separately: the
    # same checks with every role, modality and agent counted.
    failed_any: np.ndarray  # failed, whatever the preset's counting filters say
    used_any: np.ndarray  # a depression treatment given in scope (current episode)
    dose_optimised: np.ndarray  # bool: a later course of a drug at a higher dose
    in_view: np.ndarray  # bool: started on or before --as-of (all True without it)


OUTCOMES = ("response", "partial_response", "nonresponse", "unknown")
RESPONSE, PARTIAL, NONRESPONSE, OUTCOME_UNKNOWN = range(4)

# Reason codes, in the order they are listed on a course. Stable: documented
# in the README and used by tests; never reuse a retired code.
REASONS = (
    "after_as_of",  # started after --as-of: hidden from this screening, counted nowhere
    "censored_at_as_of",  # running on --as-of: ongoing to that date, end results hidden
    "failed",  # counted as a failed adequate trial
    "early_stop_explicit_nonresponse",  # stopped before the early-stop week for nonresponse: counts
    "modality_not_counted",
    "role_not_counted",
    "non_depression_product",
    "augmentation_agent_without_augmentation_role",
    "not_an_antidepressant",
    "policy_drug_not_counted",
    "unknown_drug",
    "dose_missing",
    "no_minimum_dose",
    "no_minimum_dose_assumed_met",
    "no_minimum_dose_assumed_not_met",
    "dose_below_minimum",
    "too_short",
    "duration_unknown",
    "adherence_below_minimum",
    "adherence_missing",
    "adherence_missing_assumed_met",
    "adherence_missing_assumed_not_met",
    "before_current_episode",
    "episode_unknown",
    "episode_unknown_assumed_in",
    "episode_unknown_assumed_out",
    "early_stop",
    "agent_not_counted",
    "dose_optimisation",
    "repeat_of_earlier_drug",
    "superseded_by_later_trial",
    "not_superseded",
    "response",
    "partial_response",
    "outcome_unknown",
    "outcome_from_stop_reason",
)
_BIT = {name: np.int64(1) << i for i, name in enumerate(REASONS)}
REASON_TEXT = {
    "after_as_of": "started after --as-of: left out of this screening",
    "censored_at_as_of": "still running on --as-of: counted as ongoing to that date, end results hidden",
    "failed": "counted as a failed adequate trial",
    "early_stop_explicit_nonresponse": "stopped early for nonresponse with no contrary score: "
    "still counts as a failure",
    "modality_not_counted": "this treatment modality is not counted by the rule set",
    "role_not_counted": "this treatment role is not counted by the rule set",
    "non_depression_product": "a product marketed for another condition (e.g. Zyban): "
    "not an antidepressant trial",
    "augmentation_agent_without_augmentation_role": "an add-on agent given without an "
    "augmentation or combination role: not an antidepressant trial",
    "not_an_antidepressant": "not an antidepressant",
    "policy_drug_not_counted": "the rule set does not count this drug",
    "unknown_drug": "drug name not in the formulary: adequacy unknown",
    "dose_missing": "dose missing: dose adequacy unknown",
    "no_minimum_dose": "the formulary has no minimum dose for this drug: dose adequacy unknown",
    "no_minimum_dose_assumed_met": "no minimum dose known: the rule set assumes the dose was "
    "adequate",
    "no_minimum_dose_assumed_not_met": "no minimum dose known: the rule set assumes the dose "
    "was not adequate",
    "dose_below_minimum": "dose below the minimum adequate dose",
    "too_short": "shorter than the minimum duration",
    "duration_unknown": "duration unknown (no reference date for an ongoing course)",
    "adherence_below_minimum": "adherence below the minimum",
    "adherence_missing": "adherence missing: adequacy unknown",
    "adherence_missing_assumed_met": "adherence missing: the rule set assumes it was adequate",
    "adherence_missing_assumed_not_met": "adherence missing: the rule set assumes it was not "
    "adequate",
    "before_current_episode": "ended before the current episode began",
    "episode_unknown": "current episode onset unknown: whether the course is in it is unknown",
    "episode_unknown_assumed_in": "episode onset unknown: the rule set assumes the course is in "
    "the current episode",
    "episode_unknown_assumed_out": "episode onset unknown: the rule set assumes the course is "
    "not in the current episode",
    "early_stop": "stopped before the early-stop week without clear nonresponse: not a failure",
    "agent_not_counted": "the rule set does not count this kind of agent",
    "dose_optimisation": "a later course of a drug already tried, at a higher dose: dose "
    "optimisation, not a new drug",
    "repeat_of_earlier_drug": "a repeat of a drug already tried: the same drug counts once",
    "superseded_by_later_trial": "a later adequate trial of another drug started: failed by "
    "register evidence",
    "not_superseded": "no later adequate trial of another drug: not failed by register evidence",
    "response": "response (improvement at or above the response cut)",
    "partial_response": "partial response: improvement in the band between failure and response",
    "outcome_unknown": "outcome unknown (no scores or improvement)",
    "outcome_from_stop_reason": "outcome taken from the stop reason (no scores)",
}
"""What each reason code means, as `explain` prints it."""


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


def _drug_lookup(drugs: pd.Series, rules: RuleSet, formulary: Formulary) -> dict:
    """Formulary facts per course, computed once per distinct exported name."""
    codes, uniques = pd.factorize(drugs)
    rows = []
    for name in uniques:
        match = formulary.match(name)
        if match.generic is None:
            rows.append((None, match.normalized, "", "", np.nan, "", False))
            continue
        drug = formulary.drugs[match.generic]
        minimum, source = formulary.rule_minimum(
            match.generic,
            match.formulation,
            rules.formulary.dose_source,
            rules.formulary.overrides,
        )
        rows.append(
            (
                match.generic,
                match.normalized,
                drug.drug_class,
                drug.counts_as,
                np.nan if minimum is None else minimum,
                source,
                match.non_depression_product,
            )
        )
    keys = ("generic", "normalized", "drug_class", "counts_as", "min_dose", "min_source", "nondep")
    table = {k: np.array([r[i] for r in rows], dtype=object) for i, k in enumerate(keys)}
    table["min_dose"] = table["min_dose"].astype(np.float64)
    table["nondep"] = table["nondep"].astype(bool)
    table["known"] = np.array([r[0] is not None for r in rows], dtype=bool)
    table["also"] = np.isin(table["generic"].astype(str), rules.formulary.also_count)
    # What makes two names the same trial when counting (see _identity), as integers
    # per distinct name: the generic or the class; an unknown name counts as itself.
    for key, column in (("same_drug", "generic"), ("same_class", "drug_class")):
        text = np.where(table["known"], table[column], "?" + table["normalized"].astype(str))
        table[key] = pd.factorize(text)[0].astype(np.int64) if len(rows) else np.zeros(0, int)
    # Output text columns: built per distinct name, gathered by Arrow (no Python strings).
    has_min = ~np.isnan(table["min_dose"])
    texts = {
        "drug_generic": table["generic"],
        "drug_class": np.where(table["known"], table["drug_class"], None),
        "min_dose_source": np.where(has_min, table["min_source"], None),
    }
    # Per row: numbers and flags only; text is compared per distinct name (Coded) or
    # gathered by Arrow. A null name reads the first name's facts, as its checks are
    # decided by its modality (a drug course without a name fails validation).
    safe = np.where(codes >= 0, codes, 0)
    numeric = ("known", "nondep", "also", "min_dose", "same_drug", "same_class")
    if len(uniques) == 0:
        per_row = {k: np.empty(0, dtype=table[k].dtype) for k in numeric}
    else:
        per_row = {k: table[k][safe] for k in numeric}
    per_row["counts_as"] = Coded(safe, tuple(str(v) for v in table["counts_as"]))
    for name, values in texts.items():
        per_row[name] = categorical(values, codes)
    return per_row


def assess_courses(
    courses: pd.DataFrame,
    codes: np.ndarray,
    reference: np.ndarray,
    episode_start: np.ndarray,
    rules: RuleSet,
    formulary: Formulary,
) -> CourseAssessment:
    """Assess every course; the table has one row per input course, in input order.

    `codes` is the subject code of each course; `reference` and
    `episode_start` are datetime64[s] per course row (NaT = unknown), looked
    up from the subject by the caller.
    """
    n = len(courses)
    bits = np.zeros(n, dtype=np.int64)

    def flag(mask: np.ndarray, reason: str) -> None:
        nonlocal bits
        bits = bits | np.where(mask, _BIT[reason], np.int64(0))

    modality = coded(courses, "modality", "pharmacotherapy")
    role = coded(courses, "role", "monotherapy")
    stop_reason = coded(courses, "stop_reason", "")
    drug_modality = modality.isin(DRUG_MODALITIES)
    lookup = _drug_lookup(courses["drug"], rules, formulary)
    known = lookup["known"]
    counts_as = lookup["counts_as"]  # Coded: compared once per distinct drug name
    counting = rules.counting

    # --- counted as a treatment trial at all. `treatment` ignores the rule
    # set's role, modality and agent filters (staging scores those apart).
    augmenting = role.isin(("augmentation", "combination"))
    also = lookup["also"]
    is_antidepressant = counts_as.eq("antidepressant") | (counts_as.eq("policy") & also)
    is_augmentation = counts_as.eq("augmentation") & augmenting
    drug_treatment = np.select(
        [~known, lookup["nondep"], is_antidepressant | is_augmentation],
        [UNKNOWN, NOT_MET, MET],
        default=NOT_MET,
    ).astype(np.int8)
    treatment = np.where(drug_modality, drug_treatment, MET).astype(np.int8)
    in_view = ~_flags(courses, AFTER)
    treatment[~in_view] = NOT_MET
    flag(_flags(courses, CENSORED), CENSORED)
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
    flag(~modality_ok, "modality_not_counted")
    flag(modality_ok & ~role_ok, "role_not_counted")
    on_drug = drug_modality & modality_ok & role_ok
    flag(on_drug & ~agent_ok, "agent_not_counted")
    flag(on_drug & ~known, "unknown_drug")
    flag(on_drug & known & lookup["nondep"], "non_depression_product")
    flag(
        on_drug & ~lookup["nondep"] & counts_as.eq("augmentation") & ~augmenting,
        "augmentation_agent_without_augmentation_role",
    )
    flag(on_drug & ~lookup["nondep"] & counts_as.eq("not_antidepressant"), "not_an_antidepressant")
    flag(on_drug & ~lookup["nondep"] & counts_as.eq("policy") & ~also, "policy_drug_not_counted")

    # --- dose (unknown where the drug, its minimum or the dose is unknown)
    dose = _floats(courses, "daily_dose_mg")
    dose_rule = rules.adequacy.dose
    required = lookup["min_dose"] * dose_rule.multiple
    has_min = ~np.isnan(required)
    relevant = on_drug & known
    if not dose_rule.check:  # dose-blind rule set: the check always passes, nothing to flag
        dose_state = np.full(n, MET, dtype=np.int8)
    else:
        dose_state = from_bool(dose >= required, known=has_min & ~np.isnan(dose))
        no_min = known & ~has_min
        agent = counts_as.eq("augmentation")
        groups = [(dose_rule.when_no_minimum, no_min)]
        if dose_rule.augmentation_when_no_minimum is not None:
            groups = [
                (dose_rule.when_no_minimum, no_min & ~agent),
                (dose_rule.augmentation_when_no_minimum, no_min & agent),
            ]
        for when_no_minimum, rows in groups:
            if when_no_minimum == "unknown":
                flag(relevant & rows, "no_minimum_dose")
            else:  # the rule set resolves a missing minimum; only those rows, and recorded
                dose_state[rows] = MET if when_no_minimum == "assume_met" else NOT_MET
                flag(
                    relevant & rows,
                    f"no_minimum_dose_{when_no_minimum.replace('assume', 'assumed')}",
                )
        dose_state[~drug_modality] = MET  # no dose criterion for ECT, rTMS, psychotherapy
        flag(relevant & has_min & np.isnan(dose), "dose_missing")
        flag(relevant & (dose_state == NOT_MET) & has_min, "dose_below_minimum")

    # --- duration (inclusive day count; ongoing courses run to the reference date)
    start = courses["start_date"].to_numpy(dtype="datetime64[s]")
    end_given = (
        courses["end_date"].to_numpy(dtype="datetime64[s]")
        if "end_date" in courses.columns
        else np.full(n, np.datetime64("NaT", "s"))
    )
    ongoing = np.isnat(end_given)
    end = np.where(ongoing, reference, end_given)
    days = (end - start) / np.timedelta64(1, "D") + 1.0
    weeks = days / 7.0
    min_days = _min_days(rules, role, modality)
    duration_state = from_bool(days >= min_days - 1e-9, known=~np.isnan(days))
    flag(duration_state == UNKNOWN, "duration_unknown")
    flag(duration_state == NOT_MET, "too_short")

    # --- adherence
    adherence = _floats(courses, "adherence")
    rule = rules.adequacy.adherence
    if rule.minimum is None:
        adherence_state = np.full(n, MET, dtype=np.int8)
    else:
        adherence_state = from_bool(adherence >= rule.minimum, known=~np.isnan(adherence))
        missing = adherence_state == UNKNOWN
        adherence_state, assumed = resolve(adherence_state, rule.when_missing)
        flag(missing & ~assumed, "adherence_missing")
        flag(
            assumed,
            f"adherence_missing_assumed_{'met' if rule.when_missing == 'assume_met' else 'not_met'}",
        )
        flag((adherence_state == NOT_MET) & ~assumed, "adherence_below_minimum")

    # --- current episode: the course overlaps it (ends on or after its onset)
    episode = rules.adequacy.episode
    if not episode.current_only:
        episode_state = np.full(n, MET, dtype=np.int8)
    else:
        episode_state = from_bool(
            end >= episode_start, known=~np.isnat(end) & ~np.isnat(episode_start)
        )
        unknown_episode = episode_state == UNKNOWN
        episode_state, assumed = resolve(episode_state, episode.when_unknown)
        flag(unknown_episode & ~assumed, "episode_unknown")
        flag(
            assumed,
            "episode_unknown_assumed_in"
            if episode.when_unknown == "assume_met"
            else "episode_unknown_assumed_out",
        )
        flag((episode_state == NOT_MET) & ~assumed, "before_current_episode")

    identity = _identity(lookup, modality, drug_modality, rules)
    checks = all_of(dose_state, duration_state, adherence_state, episode_state)
    adequate = all_of(counted, checks)

    # --- outcome: percent improvement from HAM-D scores, else the improvement column;
    # register rule sets infer failure from a later trial instead (KIM).
    pct, outcome, from_stop = _outcome(courses, stop_reason, rules)
    counts_flag = counted != NOT_MET
    by_scores = rules.outcome.evidence == "scores"
    if by_scores:
        nonresponse_state = np.select(
            [outcome == NONRESPONSE, outcome == OUTCOME_UNKNOWN], [MET, UNKNOWN], default=NOT_MET
        ).astype(np.int8)
    else:
        nonresponse_state = _superseded(codes, identity, start, adequate)
        flag(counts_flag & (nonresponse_state == MET), "superseded_by_later_trial")
        flag(counts_flag & (nonresponse_state == NOT_MET), "not_superseded")

    # --- early discontinuation (Sforzini item 10)
    if rules.early_stop is None:
        early = explicit = np.zeros(n, dtype=bool)
    else:
        early = ~ongoing & (days < rules.early_stop.before_weeks * 7.0 - 1e-9)
        explicit = (
            early
            & stop_reason.eq("nonresponse")
            & np.isin(outcome, (NONRESPONSE, OUTCOME_UNKNOWN))
            & rules.early_stop.counts_if_explicit_nonresponse
        )

    def failed_if(included: np.ndarray) -> np.ndarray:
        full = all_of(included, checks, nonresponse_state)
        early_ok = all_of(included, dose_state, adherence_state, episode_state)
        return np.where(early, np.where(explicit, early_ok, NOT_MET), full).astype(np.int8)

    failed = failed_if(counted)
    flag(counts_flag & early & ~explicit, "early_stop")
    flag(counts_flag & explicit & (failed == MET), "early_stop_explicit_nonresponse")
    flag(counts_flag & (outcome == RESPONSE), "response")
    flag(counts_flag & (outcome == PARTIAL), "partial_response")
    flag(counts_flag & (outcome == OUTCOME_UNKNOWN) & ~explicit & by_scores, "outcome_unknown")
    flag(counts_flag & from_stop, "outcome_from_stop_reason")
    flag(failed == MET, "failed")
    partial = all_of(
        adequate,
        np.select(
            [outcome == PARTIAL, outcome == OUTCOME_UNKNOWN], [MET, UNKNOWN], default=NOT_MET
        ).astype(np.int8),
    )

    optimised, repeat = _repeats(
        codes, lookup["same_drug"], known & drug_modality & in_view, start, dose
    )
    flag(optimised, "dose_optimisation")
    flag(repeat, "repeat_of_earlier_drug")
    # A course hidden by --as-of says only that: its other checks are meaningless.
    bits[~in_view] = _BIT[AFTER]

    out = pd.DataFrame(
        {
            "subject_id": _text(courses["subject_id"]),
            "source_file": _text(courses["source_file"]),
            "source_line": courses["source_line"].to_numpy(),
            "drug": _text(courses["drug"]),
            "drug_generic": lookup["drug_generic"],
            "drug_class": lookup["drug_class"],
            "role": role.text(),
            "modality": modality.text(),
            "daily_dose_mg": dose,
            "min_dose_mg": required,
            "min_dose_source": lookup["min_dose_source"],
            "dose_margin_mg": dose - required,
            "start_date": start,
            "end_date": end_given,
            "ongoing": ongoing,
            "weeks": np.round(weeks, 2),
            "adherence": adherence,
            "pct_improvement": np.round(pct, 4),  # display; decided on the exact value
            "outcome": pd.Categorical.from_codes(outcome, categories=list(OUTCOMES)),
            "counted": labels(counted),
            "dose_check": labels(dose_state),
            "duration_check": labels(duration_state),
            "adherence_check": labels(adherence_state),
            "episode_check": labels(episode_state),
            "early_stop": early,
            "adequate": labels(adequate),
            "failed": labels(failed),
            "reasons": join_flags(bits, REASONS),
        }
    )
    return CourseAssessment(
        out,
        adequate,
        failed,
        partial,
        identity,
        failed_any=failed_if(treatment),
        used_any=all_of(treatment, episode_state),
        dose_optimised=optimised,
        in_view=in_view,
    )


def _min_days(rules: RuleSet, role: Coded, modality: Coded) -> np.ndarray:
    """Minimum inclusive days per course: the general rule, then role, then modality."""
    duration = rules.adequacy.duration
    min_days = np.full(len(role.codes), duration.days)
    for key, weeks in duration.min_weeks_for.items():
        if key in ROLES:
            min_days[role.eq(key)] = weeks * 7.0
    for key, weeks in duration.min_weeks_for.items():
        if key not in ROLES:  # a modality: applied last, so it wins over a role
            min_days[modality.eq(key)] = weeks * 7.0
    return min_days


def _superseded(
    codes: np.ndarray, identity: np.ndarray, start: np.ndarray, adequate: np.ndarray
) -> np.ndarray:
    """Register-style failure: a later adequate trial of another drug (or class) started.

    Met when a certainly adequate later trial exists, unknown when only a
    possibly adequate one does, not met otherwise.
    """
    keys = pd.factorize(identity)[0] if len(identity) else np.zeros(0, np.int64)
    day = start.astype("datetime64[D]").astype(np.int64)
    sure = _latest_other_start(codes, keys, day, adequate == MET) > day
    maybe = _latest_other_start(codes, keys, day, adequate != NOT_MET) > day
    return np.select([sure, maybe], [MET, UNKNOWN], default=NOT_MET).astype(np.int8)


def _latest_other_start(
    codes: np.ndarray, keys: np.ndarray, day: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Per course: the latest start among the subject's masked courses of another key.

    Grouped reductions only: the latest start per (subject, key), then per
    subject the latest and the second-latest key; a course of the latest key
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


def _repeats(
    codes: np.ndarray,
    drug: np.ndarray,
    mask: np.ndarray,
    start: np.ndarray,
    dose: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Later courses of a drug already given to the subject.

    A later course above every earlier dose of the same generic is dose
    optimisation (MGH-S half point); any other later course is a repeat.
    Neither is a new trial: distinct counting already counts the drug once.
    """
    n = len(codes)
    optimised = np.zeros(n, dtype=bool)
    repeat = np.zeros(n, dtype=bool)
    rows = np.flatnonzero(mask)
    if len(rows) < 2:
        return optimised, repeat
    drug_codes = pd.factorize(drug[rows])[0]
    # Rows are in source-line order and the sort is stable, so lines break the ties
    # without being a key (fewer bits: the keys stay packable at 4M+ subjects).
    order = lex_order(codes[rows], drug_codes, day_numbers(start[rows]))
    group = codes[rows][order].astype(np.int64) * (drug_codes.max() + 1) + drug_codes[order]
    sorted_dose = dose[rows][order]
    running = pd.Series(sorted_dose).groupby(group).cummax().to_numpy()
    same = np.zeros(len(order), dtype=bool)
    same[1:] = group[1:] == group[:-1]
    before = np.full(len(order), np.nan)
    before[1:] = running[:-1]
    before[~same] = np.nan
    higher = same & (sorted_dose > before)  # NaN compares false: unknown doses never optimise
    optimised[rows[order]] = higher
    repeat[rows[order]] = same & ~higher
    return optimised, repeat


def _outcome(
    courses: pd.DataFrame, stop_reason: Coded, rules: RuleSet
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percent improvement, outcome category and whether it came from stop_reason."""
    start = _floats(courses, "hamd_start")
    end = _floats(courses, "hamd_end")
    scored = ~np.isnan(start) & ~np.isnan(end) & (start > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        from_scores = (start - end) * 100.0 / start  # exact at integer boundaries (e.g. 25.0)
    fraction = _floats(courses, "improvement")
    pct = np.where(scored, from_scores, np.round(fraction * 100.0, 9))
    cut = rules.outcome.nonresponse
    good = rules.outcome.response
    if cut is None:  # register evidence: no score threshold; improvement shown only
        return pct, np.full(len(pct), OUTCOME_UNKNOWN, dtype=np.int8), np.zeros(len(pct), bool)
    is_nonresponse = pct < cut.pct if cut.op == "<" else pct <= cut.pct
    is_response = pct >= good.pct if good.op == ">=" else pct > good.pct
    outcome = np.select(
        [np.isnan(pct), is_nonresponse, is_response],
        [OUTCOME_UNKNOWN, NONRESPONSE, RESPONSE],
        default=PARTIAL,
    ).astype(np.int8)
    from_stop = np.zeros(len(outcome), dtype=bool)
    if rules.outcome.stop_reason_as_evidence:
        evidence = {"nonresponse": NONRESPONSE, "partial_response": PARTIAL, "remission": RESPONSE}
        for reason, category in evidence.items():
            use = (outcome == OUTCOME_UNKNOWN) & stop_reason.eq(reason)
            outcome[use] = category
            from_stop |= use
    return pct, outcome, from_stop


def _identity(
    lookup: dict[str, np.ndarray],
    modality: Coded,
    drug_modality: np.ndarray,
    rules: RuleSet,
) -> np.ndarray:
    """What makes two trials 'the same' when counting, as an integer key per course: the
    drug or its class.

    Unknown names count as themselves (an upper bound); ECT, rTMS and
    psychotherapy count as their modality (keys after every drug key).
    """
    key = lookup["same_drug"] if rules.counting.distinct == "drug" else lookup["same_class"]
    if drug_modality.all():
        return key
    offset = int(key.max()) + 1 if len(key) else 0
    modality_key = offset + modality.codes  # one code per distinct modality text
    return np.where(drug_modality, key, modality_key)
