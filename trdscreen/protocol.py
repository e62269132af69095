"""Rule sets as readable protocol text, generated from the YAML (never hand-written).

Evidence tags come from the rule file itself (`evidence`): the comment on a parameter's
line carries `[V]`, `[S]` or `[U]` (the convention of the shipped presets).
`rules show` prints every parameter with its tag and lists the unverified
ones at the end, so a reviewer sees exactly what to check or override.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trdscreen.criteria import threshold_text
from trdscreen.evidence import Tags, tag_of
from trdscreen.printable import printable
from trdscreen.ruleset import MGHS, Criterion, Maudsley, RuleSet, ThaseRush

# --------------------------------------------------------------------------- summary


def _pct(value: float) -> str:
    return f"{value:g} %"


def failure_text(rules: RuleSet) -> str:
    outcome = rules.outcome
    if outcome.evidence == "next_trial":
        return "superseded by a later adequate trial"
    cut = outcome.nonresponse
    assert cut is not None  # Outcome._ordered: required when evidence is scores
    return f"improvement {cut.op} {_pct(cut.pct)}"


def duration_text(rules: RuleSet) -> str:
    duration = rules.adequacy.duration
    if duration.min_days is not None:
        return f">= {duration.min_days} days"
    return f">= {duration.min_weeks:g} weeks"


def summary_line(rules: RuleSet) -> str:
    """One generated line: what makes a failed trial and how many are needed."""
    parts = [
        f">= {rules.resistance.min_failed_trials} failed trials ({failure_text(rules)})",
        duration_text(rules),
        "dose-blind"
        if not rules.adequacy.dose.check
        else f"dose >= {rules.adequacy.dose.multiple:g} x {rules.formulary.dose_source} minimum",
        f"current episode ({rules.adequacy.episode.scope})"
        if rules.adequacy.episode.current_only
        else "any episode",
        f"distinct {rules.counting.distinct}",
        f"{rules.counting.same_drug.replace('_', ' ')}",
    ]
    if rules.staging is not None:
        parts.append(f"staging {rules.staging.model}")
    parts.append(f"{len(rules.criteria)} criteria")
    return "; ".join(parts)


@dataclass(frozen=True)
class PresetInfo:
    id: str
    title: str
    source: str
    summary: str
    staging: str | None
    path: Path


def catalog(folder: Path) -> list[PresetInfo]:
    """The shipped presets, sorted by id (each parsed, so a broken preset fails loudly)."""
    from trdscreen.rulefile import read_rule_file

    out = []
    for path in sorted(folder.glob("*.yaml")):
        rules, _ = read_rule_file(path)
        staging = rules.staging.model if rules.staging is not None else None
        out.append(
            PresetInfo(rules.id, rules.title, rules.source, summary_line(rules), staging, path)
        )
    return out


# --------------------------------------------------------------------------- protocol text


def _flag(tag: str) -> str:
    return {"U": "[U] UNVERIFIED", "-": "[no tag]"}.get(tag, f"[{tag}]")


def _listing(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(values) if values else "none"


def _resolution(value: str) -> str:
    return {
        "unknown": "left unknown",
        "assume_met": "assumed met",
        "assume_not_met": "assumed not met",
    }[value]


SCOPE_TEXT = {
    "clipped": "a course that began before the onset counts only its days from the onset; a "
    "baseline rated more than {days} days before the onset does not decide the outcome",
    "started_within": "a course must start in the episode (up to {days} days before the onset)",
    "overlap": "a course running at the onset counts whole (register style)",
}
SAME_DRUG_TEXT = {
    "any_failure": "a drug given more than once is failed if any of its courses failed",
    "best_adequate_course": "a drug given more than once is judged at its best adequate course: "
    "one that did not fail clears it",
    "last_course": "a drug given more than once is judged by its last course",
}


class _Text:
    """Protocol text being written: its lines, and the unverified statements listed last."""

    def __init__(self, tags: Tags) -> None:
        self.tags = tags
        self.lines: list[str] = []
        self.unverified: list[str] = []

    def say(self, text: str, *path: str | int, indent: int = 2) -> None:
        """One statement, flagged with the evidence tag of the rule-set key at `path`."""
        tag = tag_of(self.tags, *path) if path else ""
        if tag == "U":
            self.unverified.append(f"{'.'.join(str(p) for p in path)}: {text}")
        self.lines.append(" " * indent + f"- {text}" + (f"  {_flag(tag)}" if path else ""))


def protocol_text(rules: RuleSet, tags: Tags, where: str, file_sha256: str) -> str:
    """The rule set as numbered protocol text, every statement with its evidence tag."""
    w = _Text(tags)
    _header(w, rules, where, file_sha256)
    _counting(w, rules)
    _adequacy(w, rules)
    _failure(w, rules)
    _resistance(w, rules)
    _staging_and_criteria(w, rules)
    w.lines += ["", f"Unverified parameters ({len(w.unverified)}): check each or override it"]
    w.lines += [f"  ! {item}" for item in w.unverified] or ["  none"]
    # One element per line: a line break or escape inside a title or source is shown escaped.
    return "\n".join(printable(line) for line in w.lines) + "\n"


def _header(w: _Text, rules: RuleSet, where: str, file_sha256: str) -> None:
    """The title, the file and its hash, the source and the evidence legend."""
    w.lines += [
        rules.title,
        "=" * len(rules.title),
        f"Rule set {rules.id}  (file {where}, sha256 {file_sha256[:16]}...)",
        f"Source: {rules.source}",
    ]
    if rules.description:
        w.lines += ["", " ".join(rules.description.split())]
    w.lines += [
        "",
        "Evidence: [V] confirmed in the primary source; [S] secondary source; "
        "[U] UNVERIFIED project default (review it; override it in your own rule file).",
        "",
        "1. Which treatments count as trials",
    ]


def _counting(w: _Text, rules: RuleSet) -> None:
    """1. Which treatments count as trials."""
    c = rules.counting
    w.say(
        f"agents: {_listing(c.agents)} (augmentation agents only in an augmentation or combination role)",
        "counting",
        "agents",
    )
    w.say(f"roles: {_listing(c.roles)}", "counting", "roles")
    w.say(
        "a row that gives no role is monotherapy"
        if c.augmentation_overlap_days is None
        else "a row that gives no role is monotherapy, but an add-on agent's is augmentation "
        "(an antidepressant's combination) when its course was added to an antidepressant's "
        "(on or after its first day; an antidepressant after the regimen window) and the "
        f"export shows it taken beside it for at least {c.augmentation_overlap_days} days "
        "(an assumption: role_inferred)",
        "counting",
        "augmentation_overlap_days",
    )
    w.say(f"modalities: {_listing(c.modalities)}", "counting", "modalities")
    w.say(
        f"failed trials are counted by distinct {c.distinct}: the same {c.distinct} repeated counts once, "
        "a later course of a drug at a higher dose is dose optimisation, not a new trial",
        "counting",
        "distinct",
    )
    if c.regimen_window_days is None:
        w.say(
            "every drug is its own trial, however close their starts",
            "counting",
            "regimen_window_days",
        )
    else:
        w.say(
            f"different drugs started within {c.regimen_window_days} days of each other are one "
            "regimen, one trial (an add-on started later is its own trial)",
            "counting",
            "regimen_window_days",
        )
    w.say(SAME_DRUG_TEXT[c.same_drug], "counting", "same_drug")
    w.say(
        f"policy drugs counted: {_listing(rules.formulary.also_count)}", "formulary", "also_count"
    )
    w.say(
        "non-depression products of an antidepressant (e.g. Zyban, Silenor, Brisdelle) never count",
    )


def _adequacy(w: _Text, rules: RuleSet) -> None:
    """2. What makes a trial adequate."""
    a = rules.adequacy
    w.lines += ["", "2. Adequate trial"]
    gap = a.segments.merge_gap_days
    w.say(
        "rows are never merged: each row is a course"
        if gap is None
        else f"rows of one drug with a gap of at most {gap} days are one course (refills, dose "
        "steps); its duration counts the days at or above the minimum dose",
        "adequacy",
        "segments",
        "merge_gap_days",
    )
    if a.dose.check:
        w.say(
            f"dose at least {a.dose.multiple:g} x the minimum daily dose "
            f"(formulary column: {rules.formulary.dose_source})",
            "adequacy",
            "dose",
            "multiple",
        )
        w.say(
            f"drug without a known minimum: dose check {_resolution(a.dose.when_no_minimum)}",
            "adequacy",
            "dose",
            "when_no_minimum",
        )
        if a.dose.augmentation_when_no_minimum is not None:
            w.say(
                "augmentation agent without a known minimum: dose check "
                f"{_resolution(a.dose.augmentation_when_no_minimum)}",
                "adequacy",
                "dose",
                "augmentation_when_no_minimum",
            )
        if a.dose.any_dose_for:
            w.say(f"any recorded dose counts as adequate for: {_listing(list(a.dose.any_dose_for))}",
                "adequacy", "dose", "any_dose_for")  # fmt: skip
        if a.dose.lithium_min_level is not None:
            w.say(f"lithium with a serum level: adequate at {a.dose.lithium_min_level:g} mmol/L "
                "or more (without a level: by its dose)",
                "adequacy", "dose", "lithium_min_level")  # fmt: skip
        overrides = rules.formulary.overrides
        w.say(
            "per-drug minimums replaced: "
            + (
                _listing(
                    [f"{k} {v.min_mg_per_day:g} mg ({v.source})" for k, v in overrides.items()]
                )
            ),
            "formulary",
            "overrides",
        )
    else:
        w.say("no dose check (dose-blind)", "adequacy", "dose", "check")
    unit = "min_days" if a.duration.min_days is not None else "min_weeks"
    w.say(
        f"duration {duration_text(rules)} (inclusive day count; ongoing courses run to the reference date)",
        "adequacy",
        "duration",
        unit,
    )
    for key, weeks in a.duration.min_weeks_for.items():
        w.say(
            f"duration for {key}: >= {weeks:g} weeks", "adequacy", "duration", "min_weeks_for", key
        )
    for key, sessions in a.duration.min_sessions_for.items():
        w.say(
            f"{key} with a session count: >= {sessions} sessions (decides instead of weeks)",
            *("adequacy", "duration", "min_sessions_for", key),
        )
    if a.adherence.minimum is None:
        w.say("no adherence threshold", "adequacy", "adherence", "minimum")
    else:
        w.say(
            f"adherence at least {a.adherence.minimum:g} of prescribed doses",
            "adequacy",
            "adherence",
            "minimum",
        )
        w.say(
            f"missing adherence: {_resolution(a.adherence.when_missing)}",
            "adequacy",
            "adherence",
            "when_missing",
        )
    if a.episode.current_only:
        w.say(
            "only courses in the current episode count",
            "adequacy",
            "episode",
            "current_only",
        )
        w.say(
            SCOPE_TEXT[a.episode.scope].format(days=a.episode.tolerance_days),
            "adequacy",
            "episode",
            "scope",
        )
        if a.episode.scope != "overlap":
            w.say(
                f"tolerance: {a.episode.tolerance_days} days before the onset",
                *("adequacy", "episode", "tolerance_days"),
            )
        w.say(
            f"episode onset unknown: {_resolution(a.episode.when_unknown)}",
            "adequacy",
            "episode",
            "when_unknown",
        )
    else:
        w.say("courses from any episode count", "adequacy", "episode", "current_only")


def _failure(w: _Text, rules: RuleSet) -> None:
    """3. What makes an adequate trial a failure, and the early-stop exception."""
    o = rules.outcome
    w.lines += ["", "3. Failed trial"]
    if o.evidence == "next_trial":
        w.say(
            "an adequate trial failed when a later adequate trial of another drug started",
            "outcome",
            "evidence",
        )
    else:
        w.say(f"failure: {failure_text(rules)} from the course's baseline",
              "outcome", "nonresponse")  # fmt: skip
        w.say(f"response: improvement {o.response.op} {_pct(o.response.pct)}",
              "outcome", "response")  # fmt: skip
        w.say("a stop reason stands in for missing scores" if o.stop_reason_as_evidence
              else "without scores the outcome is unknown (a stop reason is not used)",
              "outcome", "stop_reason_as_evidence")  # fmt: skip
        if o.infer_failure_from is not None:
            w.say(f"an unrated course fails, inferred (an assumption), when another drug is "
                  f"started or added within {o.switch_window_days} days of its first day and "
                  "no stop reason explains the change", "outcome", "infer_failure_from")  # fmt: skip
        if o.remission_max is not None:
            w.say(
                f"an end rating (hamd_end) <= {o.remission_max:g} is remission: never a failure",
                *("outcome", "remission_max"),
            )
        if o.min_baseline is not None:
            w.say(
                f"a baseline (hamd_start) below {o.min_baseline:g}: outcome unknown (unless "
                "remission)",
                *("outcome", "min_baseline"),
            )
        w.say(
            "a response or remission rated between a course's ends (hamd_lowest) that its end "
            "rating lost: outcome unknown"
            if o.interim_response == "unknown"
            else "a rating between a course's ends is not read (hamd_lowest): its ends decide",
            *("outcome", "interim_response"),
        )
        w.say(
            "an improvement column, or a stop for remission"
            + (" or relapse" if o.interim_response == "unknown" else "")
            + ", that says a course went better than its ratings: outcome unknown"
            if o.other_evidence == "unknown"
            else "the ratings decide alone: an improvement column or a stop reason beside them "
            "is not read",
            *("outcome", "other_evidence"),
        )
        versions = ", ".join(f"HAM-D{v}" for v in o.hamd_versions)
        w.say(f"HAM-D totals compared: {versions} (others: not judged on HAM-D)",
            "outcome", "hamd_versions")  # fmt: skip
        w.say(f"scales, in order: {', '.join(s.upper() for s in o.scales)}", "outcome", "scales")
        if "madrs" in o.scales:
            if o.madrs_remission_max is not None:
                w.say(f"an end MADRS <= {o.madrs_remission_max:g} is remission",
                    "outcome", "madrs_remission_max")  # fmt: skip
            if o.madrs_min_baseline is not None:
                w.say(f"a baseline MADRS below {o.madrs_min_baseline:g}: outcome unknown",
                    "outcome", "madrs_min_baseline")  # fmt: skip
    if rules.early_stop is None:
        w.say("no early-stop exception: a trial must reach its full duration", "early_stop")
    else:
        e = rules.early_stop
        w.say(
            f"a course stopped before week {e.before_weeks:g} is not a failure",
            "early_stop",
            "before_weeks",
        )
        if e.counts_if_explicit_nonresponse:
            w.say(
                "... unless there is clear evidence of nonresponse",
                "early_stop",
                "counts_if_explicit_nonresponse",
            )
            w.say(
                "clear evidence: a rated improvement that meets the failure rule (a stop reason "
                "alone is not evidence)"
                if e.evidence == "scores"
                else "clear evidence: stopped for nonresponse with no contrary scores",
                *("early_stop", "evidence"),
            )
            w.say(
                f"no course shorter than {e.min_days} days is a failure", "early_stop", "min_days"
            )
            if e.evidence == "scores":
                w.say(
                    f"a stop for another cause ({_listing(e.other_causes)}) is never a failure",
                    *("early_stop", "other_causes"),
                )


def _resistance(w: _Text, rules: RuleSet) -> None:
    """4. How many failures make resistance (and the PRD band)."""
    o = rules.outcome
    w.lines += ["", "4. Resistance"]
    w.say(
        f"TRD: at least {rules.resistance.min_failed_trials} failed adequate trials",
        "resistance",
        "min_failed_trials",
    )
    if rules.resistance.prd is not None and o.nonresponse is not None:
        w.say(
            f"PRD: at least {rules.resistance.prd.min_trials} adequate trial(s) with improvement from "
            f"{_pct(o.nonresponse.pct)} to below {_pct(o.response.pct)}, and no adequate trial "
            "that reached response or remission",
            "resistance",
            "prd",
            "min_trials",
        )
    else:
        w.say("no partial-response (PRD) band", "resistance", "prd")


def _staging_and_criteria(w: _Text, rules: RuleSet) -> None:
    """5. A staging model, if any, then the protocol criteria in order."""
    if rules.staging is not None:
        w.lines += ["", f"5. Staging: {rules.staging.model}"]
        _staging_lines(rules, w.say)
    if rules.report:
        w.lines += ["", f"Staging scores also reported from: {_listing(rules.report)}"]

    w.lines += [
        "",
        f"{6 if rules.staging is not None else 5}. Protocol criteria, in order (the first not met is the attrition reason)",
    ]
    for order, criterion in enumerate(rules.criteria, start=1):
        tag = criterion.evidence or "-"
        text = _criterion_text(criterion)
        if tag == "U":
            w.unverified.append(f"criteria.{order - 1} ({criterion.id}): {text}")
        w.lines.append(f"  {order}. {criterion.id} ({criterion.kind}): {text}  {_flag(tag)}")
        w.lines.append(f"     source: {criterion.source}")


def _criterion_text(criterion: Criterion) -> str:
    if criterion.group is not None:
        return f"{criterion.title} [{threshold_text(criterion)}]"
    return f"{criterion.title} [{criterion.column} {threshold_text(criterion)}]"


def _staging_lines(rules: RuleSet, say) -> None:
    model = rules.staging
    if isinstance(model, ThaseRush):
        for group, members in model.major_classes.items():
            say(f"major class {group}: {_listing(members)}", "staging", "major_classes", group)
        say(
            "stages: 0 none failed; I one class failed; II two classes; III II + a failed TCA; "
            "IV III + a failed MAOI; V IV + failed ECT"
            + (" (each stage adds a new failed class)" if model.sequential else ""),
            "staging",
            "sequential",
        )
        say(f"ECT counts for stage V when {model.ect_counts_when}", "staging", "ect_counts_when")
    elif isinstance(model, Maudsley):
        say(
            f"episode duration: <= {model.subacute_after_months:g} months 1, "
            f"<= {model.chronic_after_months:g} months 2, longer 3",
            "staging",
            "subacute_after_months",
        )
        s = model.severity
        say(
            f"severity from `{s.column}`: below {s.mild_from:g} subsyndromal 1, mild 2 from {s.mild_from:g}, "
            f"moderate 3 from {s.moderate_from:g}, severe 4 from {s.severe_from:g}, "
            f"5 when severe with `{s.psychosis_column}` true",
            "staging",
            "severity",
            "column",
        )
        steps = model.failed_antidepressant_steps
        say(
            "failed antidepressants: "
            + ", ".join(f">= {n} gives {i + 1}" for i, n in enumerate(steps)),
            "staging",
            "failed_antidepressant_steps",
        )
        say("augmentation used 1; ECT used 1 (current episode)", "staging", "model")
        say(
            f"bands: mild below {model.moderate_from:g}, moderate from {model.moderate_from:g}, severe from {model.severe_from:g}",
            "staging",
            "moderate_from",
        )
    else:
        assert isinstance(model, MGHS)
        say(
            f"{model.points_per_failed_trial:g} point per failed monotherapy trial",
            "staging",
            "points_per_failed_trial",
        )
        say(
            f"{model.points_per_dose_optimisation:g} per failed trial optimised by a higher dose",
            "staging",
            "points_per_dose_optimisation",
        )
        say(
            f"{model.points_per_augmentation_or_combination:g} per failed augmentation or combination trial",
            "staging",
            "points_per_augmentation_or_combination",
        )
        say(f"{model.points_ect:g} for ECT ({model.ect_counts_when})", "staging", "points_ect")
