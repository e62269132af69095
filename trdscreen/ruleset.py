"""Rule sets: what a protocol declares, as strict, validated data.

A rule file (read by `trdscreen.rulefile`: YAML with a safe loader, no tags, no
aliases, bounded size) is parsed into these frozen pydantic models, which reject
unknown keys, wrong types and out-of-range values; criteria are in
`trdscreen.criterion`, vocabularies in `trdscreen.vocabulary`. Nothing here
evaluates anything: the engine
that applies a rule set lives in `courses`, `subjects` and `criteria`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Literal

from pydantic import Field, model_validator

from trdscreen.buildrules import BuildRules
from trdscreen.criterion import NUMERIC_OPS, Condition, Criterion, Op, RuleModel
from trdscreen.sitemap import ColumnMap
from trdscreen.vocabulary import (
    AGENTS,
    DRUG_MODALITIES,
    MODALITIES,
    ROLES,
    STOP_REASONS,
    Agent,
    Evidence,
    Resolution,
    Role,
    Scalar,
)

__all__ = [  # the vocabularies and criterion models are re-exported for the rule set's readers
    "AGENTS", "DRUG_MODALITIES", "MODALITIES", "NUMERIC_OPS", "ROLES", "STOP_REASONS", "Agent",
    "Condition", "Criterion", "Evidence", "Op", "Resolution", "Role", "RuleSet", "Scalar",
]  # fmt: skip

MAX_CRITERIA = 200
"""Most protocol criteria in one rule set (a real protocol has a few dozen): the criteria
ledger has a row per subject and criterion."""


class Threshold(RuleModel):
    op: Literal["<", "<="] = Field(description="boundary operator: Sforzini '<', MGH-ATRQ '<='")
    pct: float = Field(ge=0, le=100, description="percent improvement from the course's baseline")


class ResponseThreshold(RuleModel):
    op: Literal[">=", ">"] = ">="
    pct: float = Field(50, ge=0, le=100)


class Outcome(RuleModel):
    evidence: Literal["scores", "next_trial"] = Field(
        "scores",
        description=(
            "scores: failure = nonresponse by percent improvement; next_trial: register-style, "
            "a trial failed when a later adequate trial of another drug (or class) started"
        ),
    )
    nonresponse: Threshold | None = None
    response: ResponseThreshold = ResponseThreshold()
    stop_reason_as_evidence: bool = Field(
        False,
        description="use stop_reason (nonresponse/partial_response/remission) when no scores exist",
    )
    remission_max: float | None = Field(
        7,
        ge=0,
        le=52,
        description=(
            "an end rating (hamd_end) at or below this is remission: never a failure, whatever "
            "the percentage (HAM-D17 <= 7, Frank 1991); null = not used"
        ),
    )
    min_baseline: float | None = Field(
        14,
        ge=0,
        le=52,
        description=(
            "a baseline (hamd_start) below this gives an unknown outcome unless the end rating "
            "shows remission; null = any baseline"
        ),
    )
    scales: tuple[Literal["hamd", "madrs"], ...] = Field(
        ("hamd",),
        min_length=1,
        description=(
            "the rating scales an outcome is read from, in order of preference: a course "
            "rated on the first is judged on it, else on the next (madrs_start/madrs_end)"
        ),
    )
    hamd_versions: tuple[Literal[17, 21, 24], ...] = Field(
        (17,),
        min_length=1,
        description=(
            "HAM-D versions whose totals are compared with remission_max and min_baseline "
            "(written for HAM-D17); a course rated on another version (hamd_version) is not "
            "judged on HAM-D"
        ),
    )
    madrs_remission_max: float | None = Field(
        10,
        ge=0,
        le=60,
        description="an end MADRS at or below this is remission (<= 10, Zimmerman 2004)",
    )
    madrs_min_baseline: float | None = Field(
        18,
        ge=0,
        le=60,
        description="a baseline MADRS below this gives an unknown outcome (like min_baseline)",
    )
    infer_failure_from: Literal["switch_or_augment"] | None = Field(
        None,
        description=(
            "null: a course without ratings has an unknown outcome; switch_or_augment "
            "(register-style, an assumption): an unrated course whose stop reason does not "
            "explain a change fails when another drug is started or added more than "
            "counting.regimen_window_days and at most switch_window_days after its first "
            "day; the trial is labelled `inferred` and the decision names failure_inferred"
        ),
    )
    switch_window_days: int = Field(
        98,
        ge=1,
        le=366,
        description=(
            "with infer_failure_from: how many days after a course's first day a switch or "
            "add-on still says the course failed (98 = 14 weeks, the acute phase)"
        ),
    )

    interim_response: Literal["unknown", "ignored"] = Field(
        "unknown",
        description=(
            "a rating between a course's baseline and end rating (hamd_lowest, madrs_lowest) "
            "that showed a response or remission its end rating does not: unknown leaves a "
            "nonresponse or partial response unknown (interim_response); ignored judges the "
            "course on its two ends alone"
        ),
    )

    other_evidence: Literal["unknown", "ignored"] = Field(
        "unknown",
        description=(
            "where ratings judge a course, the export's other evidence of its outcome: an "
            "improvement column in a better category than the ratings', or a stop reason "
            "of remission (or relapse, unless interim_response is ignored) beside ratings "
            "that show none: unknown leaves a nonresponse or partial response unknown "
            "(outcome_disagrees); ignored lets the ratings decide alone"
        ),
    )

    ADDED_LATER = {  # no failures inferred, interim ratings and other evidence as added
        "infer_failure_from": (None, ("switch_window_days",)),
        "interim_response": ("unknown", ()),  # 0.8.3
        "other_evidence": ("unknown", ()),  # 0.8.7
    }

    @model_validator(mode="after")
    def _ordered(self) -> Outcome:
        if self.infer_failure_from is not None and self.evidence != "scores":
            raise ValueError(
                "outcome.infer_failure_from needs evidence: scores (next_trial already takes "
                "a later trial as the failure)"
            )
        if self.nonresponse is None:
            if self.evidence == "scores":
                raise ValueError("outcome.nonresponse is required when evidence is scores")
            return self
        if self.nonresponse.pct > self.response.pct:
            raise ValueError(
                f"nonresponse.pct ({self.nonresponse.pct}) must not exceed response.pct "
                f"({self.response.pct})"
            )
        return self


class DoseRule(RuleModel):
    check: bool = Field(True, description="false: dose-blind (register models such as KIM)")
    multiple: float = Field(1.0, gt=0, le=10, description="required dose = multiple x minimum")
    when_no_minimum: Resolution = "unknown"
    augmentation_when_no_minimum: Resolution | None = Field(
        None, description="for augmentation agents without a minimum; empty = when_no_minimum"
    )
    any_dose_for: tuple[str, ...] = Field(
        (),
        description=(
            "generics whose every recorded dose counts as adequate (no minimum applied), "
            "recorded on the course as an assumption (no_minimum_dose_assumed_met)"
        ),
    )
    lithium_min_level: float | None = Field(
        None,
        gt=0,
        le=2,
        description=(
            "serum lithium (mmol/L) an adequate lithium course reaches; a course with a "
            "`lithium_level` is judged by it, one without by its dose; null = by dose only"
        ),
    )


DurationKey = Literal[
    "monotherapy", "augmentation", "combination", "ect", "rtms", "psychotherapy", "esketamine"
]


SessionKey = Literal["ect", "rtms", "esketamine"]


class DurationRule(RuleModel):
    min_weeks: float | None = Field(None, gt=0, le=104)
    min_days: int | None = Field(
        None, gt=0, le=730, description="inclusive day count; KIM '> 28 days' is min_days: 29"
    )
    min_weeks_for: dict[DurationKey, float] = Field(
        {},
        description="per role or modality (a modality wins over a role), e.g. augmentation: 4",
    )
    min_sessions_for: dict[SessionKey, int] = Field(
        {},
        description=(
            "sessions an adequate ECT, rTMS or esketamine course needs; where a course has a "
            "`sessions` value it decides duration adequacy instead of weeks"
        ),
    )

    @model_validator(mode="after")
    def _one_minimum(self) -> DurationRule:
        if (self.min_weeks is None) == (self.min_days is None):
            raise ValueError("give exactly one of min_weeks or min_days")
        for key, weeks in self.min_weeks_for.items():
            if not 0 < weeks <= 104:
                raise ValueError(f"min_weeks_for.{key} must be > 0 and <= 104 weeks")
        for key, sessions in self.min_sessions_for.items():
            if not 0 < sessions <= 1000:
                raise ValueError(f"min_sessions_for.{key} must be > 0 and <= 1000 sessions")
        return self

    @property
    def days(self) -> float:
        """The general minimum as an inclusive day count."""
        if self.min_days is not None:
            return float(self.min_days)
        assert self.min_weeks is not None  # _one_minimum: exactly one is given
        return self.min_weeks * 7.0


class AdherenceRule(RuleModel):
    minimum: float | None = Field(None, ge=0, le=1)
    when_missing: Resolution = "unknown"


class EpisodeRule(RuleModel):
    current_only: bool = True
    when_unknown: Resolution = "unknown"
    scope: Literal["clipped", "started_within", "overlap"] = Field(
        "clipped",
        description=(
            "clipped: only exposure from the episode's onset counts, and a baseline rated long "
            "before it does not; started_within: the course must start in the episode; "
            "overlap: any course running at the onset counts whole (register style)"
        ),
    )
    tolerance_days: int = Field(
        14,
        ge=0,
        le=365,
        description="a course starting up to this many days before the onset still started in it",
    )


class SegmentRule(RuleModel):
    merge_gap_days: int | None = Field(
        30,
        ge=0,
        le=365,
        description=(
            "rows of one drug and subject whose gap (next start - previous end - 1) is at most "
            "this many days are one course; null = never merge"
        ),
    )


class Adequacy(RuleModel):
    dose: DoseRule = DoseRule()
    duration: DurationRule
    adherence: AdherenceRule = AdherenceRule()
    episode: EpisodeRule = EpisodeRule()
    segments: SegmentRule = SegmentRule()


class EarlyStop(RuleModel):
    before_weeks: float = Field(gt=0, le=52)
    counts_if_explicit_nonresponse: bool = True
    evidence: Literal["scores", "stop_reason"] = Field(
        "scores",
        description=(
            "scores: an early stop is a failure only when its rated improvement is nonresponse; "
            "stop_reason: also when stopped for nonresponse without scores"
        ),
    )
    min_days: int = Field(
        14,
        ge=1,
        le=365,
        description="no course shorter than this is a failure, whatever the evidence",
    )
    other_causes: tuple[Literal[STOP_REASONS], ...] = Field(  # type: ignore[valid-type]
        ("intolerance", "patient_choice", "remission"),
        description=(
            "stop reasons naming a cause other than lack of efficacy: an early stop for one of "
            "them is too short, never a failure, whatever its scores"
        ),
    )


class Counting(RuleModel):
    distinct: Literal["drug", "moiety", "class"] = Field(
        "drug",
        description=(
            "what makes two trials different: the drug, its active moiety (citalopram and "
            "escitalopram are one) or its class"
        ),
    )
    regimen_window_days: int | None = Field(
        7,
        ge=0,
        le=90,
        description=(
            "different drugs started within this many days of each other form one regimen, "
            "one trial; null = every drug is its own trial"
        ),
    )
    same_drug: Literal["any_failure", "best_adequate_course", "last_course"] = Field(
        "best_adequate_course",
        description=(
            "how a drug given more than once is judged: failed if any course failed, only if "
            "its best adequate course failed, or by its last course"
        ),
    )
    agents: tuple[Agent, ...] = Field(
        AGENTS,
        description=(
            "formulary categories that count as trials: antidepressants, and augmentation agents "
            "(lithium, antipsychotics, T3) when used in an augmentation or combination role"
        ),
    )
    roles: tuple[Role, ...] = ROLES
    modalities: tuple[
        Literal["pharmacotherapy", "ect", "rtms", "psychotherapy", "esketamine"], ...
    ] = ("pharmacotherapy",)
    augmentation_overlap_days: int | None = Field(
        30,
        ge=1,
        le=365,
        description=(
            "a row of an add-on agent (lithium, an antipsychotic, T3) that gives no role, "
            "whose course started on or after an antidepressant course's first day and ran "
            "beside it for at least this many days (as the export states: an end date, or "
            "the stop reason ongoing), is read as augmentation, and an antidepressant's so "
            "added (after counting.regimen_window_days) as combination (trd-reference F.2: "
            "an add-on is augmentation), an assumption named on the course (role_inferred); "
            "null = a row without a role is monotherapy"
        ),
    )
    ADDED_LATER = {"augmentation_overlap_days": (30, ())}  # 0.8.8


class PRD(RuleModel):
    min_trials: int = Field(1, ge=1, le=20)


class Resistance(RuleModel):
    min_failed_trials: int = Field(ge=1, le=20)
    prd: PRD | None = None


class DoseOverride(RuleModel):
    min_mg_per_day: float = Field(gt=0)
    source: str = Field(min_length=1)


class FormularyConfig(RuleModel):
    path: str | None = None
    dose_source: Literal["atrq", "atrq_then_alternative"] = "atrq"
    overrides: dict[str, DoseOverride] = {}
    also_count: tuple[str, ...] = ()
    aliases: dict[str, str] = Field(
        {},
        description=(
            'site names for formulary generics, e.g. {"Sertra-Q": sertraline}; normalized like '
            "every exported name"
        ),
    )


# --------------------------------------------------------------------------- staging


class ThaseRush(RuleModel):
    """Thase & Rush 1997 stages 0-V (as described by Fava 2003)."""

    model: Literal["thase-rush"]
    major_classes: dict[Literal["TCA", "MAOI", "SSRI", "SNRI", "other"], tuple[str, ...]] = Field(
        description="formulary drug_class values grouped into the model's major classes"
    )
    sequential: bool = Field(
        True,
        description=(
            "true: each stage adds a failure of a new class (III = a failed TCA besides two "
            "other failed classes; IV = III plus a failed MAOI); false: III = II and a failed TCA"
        ),
    )
    ect_counts_when: Literal["failed", "used"] = "failed"

    @model_validator(mode="after")
    def _complete(self) -> ThaseRush:
        missing = {"TCA", "MAOI"} - set(self.major_classes)
        if missing:
            raise ValueError(f"major_classes needs {', '.join(sorted(missing))}")
        seen: set[str] = set()
        for members in self.major_classes.values():
            for member in members:
                if member in seen:
                    raise ValueError(f"drug class {member!r} is in two major classes")
                seen.add(member)
        return self


class Severity(RuleModel):
    column: str = "hamd_screening"
    mild_from: float = Field(ge=0)
    moderate_from: float = Field(ge=0)
    severe_from: float = Field(ge=0)
    psychosis_column: str | None = "psychotic_features"

    @model_validator(mode="after")
    def _ordered(self) -> Severity:
        if not self.mild_from < self.moderate_from < self.severe_from:
            raise ValueError("need mild_from < moderate_from < severe_from")
        return self


class Maudsley(RuleModel):
    """Maudsley Staging Method (Fekadu 2009; standardised by Fekadu 2018, Table 3)."""

    model: Literal["maudsley"]
    subacute_after_months: float = Field(12, gt=0)
    chronic_after_months: float = Field(24, gt=0)
    severity: Severity
    failed_antidepressant_steps: tuple[int, ...] = Field(
        (1, 3, 5, 7, 11),
        description="failed antidepressants needed for 1, 2, 3, ... points (MSM: 1-2, 3-4, 5-6, 7-10, >10)",
    )
    moderate_from: float = 7
    severe_from: float = 11

    @model_validator(mode="after")
    def _ordered(self) -> Maudsley:
        steps = self.failed_antidepressant_steps
        if not steps or any(b <= a for a, b in zip(steps, steps[1:], strict=False)) or steps[0] < 1:
            raise ValueError("failed_antidepressant_steps must be increasing positive counts")
        if self.subacute_after_months >= self.chronic_after_months:
            raise ValueError("subacute_after_months must be below chronic_after_months")
        if self.moderate_from >= self.severe_from:
            raise ValueError("moderate_from must be below severe_from")
        return self


class MGHS(RuleModel):
    """MGH Staging method (Fava 2003; as used by Gibson 2010 and Hägg 2020)."""

    model: Literal["mgh-s"]
    points_per_failed_trial: float = Field(1.0, ge=0)
    points_per_dose_optimisation: float = Field(0.5, ge=0)
    points_per_augmentation_or_combination: float = Field(0.5, ge=0)
    points_ect: float = Field(3.0, ge=0)
    ect_counts_when: Literal["failed", "used"] = "failed"


STAGING_COLUMNS = {
    "thase-rush": ("thase_rush_stage", "thase_rush_stage_max"),
    "maudsley": ("msm_score", "msm_score_max", "msm_band"),
    "mgh-s": ("mgh_s_score", "mgh_s_score_max"),
}
"""Columns each staging model adds: value, upper bound of the interval, and (MSM) its band."""
STAGING_MODEL_OF = {column: model for model, cols in STAGING_COLUMNS.items() for column in cols}

Staging = Annotated[ThaseRush | Maudsley | MGHS, Field(discriminator="model")]


class ReferenceDate(RuleModel):
    column: str = "screening_date"


class RuleSet(RuleModel):
    schema_version: Literal[1]
    id: str = Field(min_length=1)
    title: str = Field(min_length=1)
    source: str = Field(min_length=1)
    description: str = ""
    columns: ColumnMap = ColumnMap()
    reference_date: ReferenceDate = ReferenceDate()
    formulary: FormularyConfig = FormularyConfig()
    adequacy: Adequacy
    outcome: Outcome
    early_stop: EarlyStop | None = None
    counting: Counting = Counting()
    resistance: Resistance
    staging: Staging | None = None
    report: tuple[str, ...] = Field(
        (), description="presets (or rule files) whose staging scores are added to the decisions"
    )
    criteria: Annotated[tuple[Criterion, ...], Field(min_length=1, max_length=MAX_CRITERIA)]
    build: BuildRules | None = Field(
        None, description="how `trdscreen build` makes courses from drug events and ratings"
    )

    ADDED_LATER = {"build": (None, ())}  # a rule set without `build:` hashes as before it

    def build_rules(self) -> BuildRules:
        """The rule set's `build:` section, or every default."""
        return self.build if self.build is not None else BuildRules()

    @model_validator(mode="after")
    def _staging_columns_provided(self) -> RuleSet:
        own = self.staging.model if self.staging is not None else None
        for index, criterion in enumerate(self.criteria):
            for column in criterion.columns:
                model = STAGING_MODEL_OF.get(column)
                if model is None or model == own or self.report:
                    continue  # columns of reported presets are checked when those are loaded
                raise ValueError(
                    f"criteria.{index} ({criterion.id}) reads `{column}`, a {model} "
                    f"staging column, but the rule set has no `staging: {{model: {model}}}` "
                    "and reports no preset that has one (`report:`)"
                )
        return self

    @model_validator(mode="after")
    def _unique_ids(self) -> RuleSet:
        seen: set[str] = set()
        for criterion in self.criteria:
            for name in (criterion.id, *criterion.aliases):
                if name in seen:
                    raise ValueError(f"criterion id or alias {name!r} is used twice")
                seen.add(name)
        return self

    def normalized_json(self) -> str:
        """Canonical JSON of the parsed rule set (sorted keys): what is hashed."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))

    def sha256(self) -> str:
        return hashlib.sha256(self.normalized_json().encode("utf-8")).hexdigest()
