"""Rule sets: what a protocol declares, as strict, validated data.

A rule file is YAML loaded with a safe loader (no tags, no aliases, bounded
size) and parsed into frozen pydantic models that reject unknown keys, wrong
types and out-of-range values. Nothing here evaluates anything: the engine
that applies a rule set lives in `courses`, `subjects` and `criteria`.
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trdscreen.errors import RuleError

MAX_RULE_FILE_BYTES = 1_000_000
MAX_CRITERIA = 200
"""Most protocol criteria in one rule set (a real protocol has a few dozen): the criteria
ledger has a row per subject and criterion."""

Resolution = Literal["unknown", "assume_met", "assume_not_met"]
Evidence = Literal["V", "S", "U"]
Scalar = bool | int | float | str

Role = Literal["monotherapy", "augmentation", "combination"]
ROLES: tuple[Role, ...] = ("monotherapy", "augmentation", "combination")
MODALITIES = ("pharmacotherapy", "ect", "rtms", "psychotherapy", "esketamine")
DRUG_MODALITIES = ("pharmacotherapy", "esketamine")
"""Modalities whose courses name a drug (dose, formulary and segments apply)."""
STOP_REASONS = (
    "nonresponse",
    "partial_response",
    "intolerance",
    "remission",
    "relapse",
    "patient_choice",
    "ongoing",
    "other",
)


class Op(StrEnum):
    """The closed vocabulary of criterion operators."""

    eq = "eq"
    ne = "ne"
    in_ = "in"
    not_in = "not_in"
    lt = "lt"
    le = "le"
    gt = "gt"
    ge = "ge"
    between = "between"
    is_null = "is_null"
    not_null = "not_null"


NUMERIC_OPS = {Op.lt, Op.le, Op.gt, Op.ge, Op.between}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)


class Threshold(_Model):
    op: Literal["<", "<="] = Field(description="boundary operator: Sforzini '<', MGH-ATRQ '<='")
    pct: float = Field(ge=0, le=100, description="percent improvement from the course's baseline")


class ResponseThreshold(_Model):
    op: Literal[">=", ">"] = ">="
    pct: float = Field(50, ge=0, le=100)


class Outcome(_Model):
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

    @model_validator(mode="after")
    def _ordered(self) -> Outcome:
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


class DoseRule(_Model):
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


class DurationRule(_Model):
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


class AdherenceRule(_Model):
    minimum: float | None = Field(None, ge=0, le=1)
    when_missing: Resolution = "unknown"


class EpisodeRule(_Model):
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


class SegmentRule(_Model):
    merge_gap_days: int | None = Field(
        30,
        ge=0,
        le=365,
        description=(
            "rows of one drug and subject whose gap (next start - previous end - 1) is at most "
            "this many days are one course; null = never merge"
        ),
    )


class Adequacy(_Model):
    dose: DoseRule = DoseRule()
    duration: DurationRule
    adherence: AdherenceRule = AdherenceRule()
    episode: EpisodeRule = EpisodeRule()
    segments: SegmentRule = SegmentRule()


class EarlyStop(_Model):
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


Agent = Literal["antidepressant", "augmentation"]
AGENTS: tuple[Agent, ...] = ("antidepressant", "augmentation")


class Counting(_Model):
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


class PRD(_Model):
    min_trials: int = Field(1, ge=1, le=20)


class Resistance(_Model):
    min_failed_trials: int = Field(ge=1, le=20)
    prd: PRD | None = None


class DoseOverride(_Model):
    min_mg_per_day: float = Field(gt=0)
    source: str = Field(min_length=1)


class FormularyConfig(_Model):
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


class ThaseRush(_Model):
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


class Severity(_Model):
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


class Maudsley(_Model):
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


class MGHS(_Model):
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


class ReferenceDate(_Model):
    column: str = "screening_date"


class ColumnMap(_Model):
    treatments: dict[str, str] = {}
    subjects: dict[str, str] = {}


_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$")


HamdVersion = Literal[17, 21, 24]


class Condition(_Model):
    """One comparison over one subject column (a criterion, or a member of its group)."""

    column: str = Field(min_length=1)
    op: Op
    value: Scalar | list[Scalar] | None = None
    hamd_versions: tuple[HamdVersion, ...] = Field(
        (17,),
        min_length=1,
        description=(
            "for a HAM-D column (hamd_screening): the versions the value is written for; a "
            "subject rated on another (subjects column hamd_version, 17 when empty) is unknown"
        ),
    )

    @property
    def values(self) -> list[Scalar]:
        """The value as a list: one value, or the values of in, not_in and between."""
        if self.value is None:
            return []
        return list(self.value) if isinstance(self.value, list) else [self.value]

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        value, op = self.value, self.op
        if op in (Op.is_null, Op.not_null):
            if value is not None:
                raise ValueError(f"op {op.value} takes no value")
        elif op is Op.between:
            if not (
                isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
            ):
                raise ValueError("op between takes value: [low, high] (two numbers)")
            if float(value[0]) > float(value[1]):
                raise ValueError("op between needs low <= high")
        elif op in (Op.in_, Op.not_in):
            if not (isinstance(value, list) and value):
                raise ValueError(f"op {op.value} takes a non-empty list of values")
        elif op in NUMERIC_OPS:
            if not _is_number(value):
                raise ValueError(f"op {op.value} takes a number")
        elif value is None or isinstance(value, list):
            raise ValueError(f"op {op.value} takes one value (number, text or true/false)")
        return self


class Criterion(_Model):
    id: str = Field(description="stable id, never reused (e.g. TRD-MIN, AGE, EX-BIPOLAR)")
    title: str = Field(min_length=1, max_length=120)
    source: str = Field(min_length=1)
    evidence: Evidence | None = None
    kind: Literal["inclusion", "exclusion"] = "inclusion"
    column: str | None = Field(None, min_length=1)
    op: Op | None = None
    value: Scalar | list[Scalar] | None = None
    hamd_versions: tuple[HamdVersion, ...] = Field((17,), min_length=1)
    any_of: tuple[Condition, ...] | None = Field(
        None, min_length=2, description="met when any condition is met (instead of column/op)"
    )
    all_of: tuple[Condition, ...] | None = Field(
        None, min_length=2, description="met when every condition is met (instead of column/op)"
    )
    when_unknown: Resolution = "unknown"
    near_miss_within: float | None = Field(None, gt=0)
    aliases: tuple[str, ...] = ()

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("ids are upper-case words joined by '-', e.g. TRD-MIN or EX-BIPOLAR")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Criterion:
        groups = [g for g in (self.any_of, self.all_of) if g is not None]
        single = self.column is not None or self.op is not None or self.value is not None
        if groups:
            if single or len(groups) > 1:
                raise ValueError(
                    "give either column/op/value or one group (any_of or all_of), not both"
                )
            if self.near_miss_within is not None:
                raise ValueError("near_miss_within applies to a single numeric comparison")
            return self
        if self.column is None or self.op is None:
            raise ValueError("give column and op (or a group: any_of or all_of)")
        Condition(column=self.column, op=self.op, value=self.value)  # the same checks
        if self.near_miss_within is not None and self.op not in NUMERIC_OPS:
            raise ValueError("near_miss_within applies to numeric operators only")
        return self

    @property
    def group(self) -> str | None:
        """ "any_of" or "all_of" for a group criterion, else None."""
        return "any_of" if self.any_of is not None else "all_of" if self.all_of else None

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The comparisons this criterion makes (one, or its group's)."""
        if self.any_of is not None:
            return self.any_of
        if self.all_of is not None:
            return self.all_of
        assert self.column is not None and self.op is not None
        return (
            Condition(
                column=self.column, op=self.op, value=self.value, hamd_versions=self.hamd_versions
            ),
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """The subject columns this criterion reads."""
        return tuple(dict.fromkeys(c.column for c in self.conditions))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class RuleSet(_Model):
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


# --------------------------------------------------------------------------- loading


class _NoAliasSafeLoader(yaml.SafeLoader):
    """Safe loader that refuses YAML aliases (no billion-laughs expansion)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in rule files", event.start_mark
            )
        return super().compose_node(parent, index)


def key_lines(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map each key path of a composed YAML document to its 1-based line (one pass, no
    recursion: linear in the document's size, whatever its shape)."""
    lines: dict[tuple[Any, ...], int] = {}
    stack: list[tuple[yaml.Node, tuple[Any, ...], int | None]] = [(node, path, None)]
    while stack:
        current, where, key_line = stack.pop()
        lines[where] = key_line if key_line is not None else current.start_mark.line + 1
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                stack.append((value_node, (*where, key_node.value), key_node.start_mark.line + 1))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                stack.append((item, (*where, index), None))
    return lines


MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists in a rule file or column map (a real one is
about 5 deep); deeper files are refused before the parser recurses into them."""


def _nesting_depth(text: str) -> int:
    """An upper bound of a YAML text's nesting: open flow brackets plus indentation levels."""
    depth = flow = 0
    for char in text:
        if char in "[{":
            flow += 1
            depth = max(depth, flow)
        elif char in "]}":
            flow = max(flow - 1, 0)
    indents = {len(line) - len(line.lstrip(" ")) for line in text.splitlines() if line.strip()}
    return depth + len(indents)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names allowed at `loc` (the parent of an unknown key), if a model sits there."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        annotation = fields[part].annotation
        current = _first_model(annotation)
        if current is None:
            return None
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(
    error: ValidationError,
    source: str,
    lines: dict,
    model: type[BaseModel] = None,  # type: ignore[assignment]
) -> list[str]:
    model = model or RuleSet
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        line = lines.get(loc) or lines.get(loc[:-1]) or lines.get(())
        where = f"{source}:{line}" if line else source
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            problems.append(f"{where}: key `{path}` is not a known key{hint}")
            continue
        if kind == "missing":
            problems.append(f"{where}: key `{path}` is required")
            continue
        got = item.get("input")
        shown = json.dumps(got, default=str) if not isinstance(got, dict) else "a mapping"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message = item["msg"].removeprefix("Value error, ")
        expected = item.get("ctx", {}).get("expected")
        if expected:
            message = f"expected one of {expected}"
        problems.append(f"{where}: key `{path}`: got {shown}; {message}")
    return problems


def load_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Safe-load YAML (aliases refused, nesting bounded); RuleError names the file and line."""
    if _nesting_depth(text) > MAX_YAML_DEPTH:
        raise RuleError(
            f"{source}: nested more than {MAX_YAML_DEPTH} levels deep; a rule file or column "
            "map is a few levels of keys and lists"
        )
    try:
        node = yaml.compose(text, Loader=_NoAliasSafeLoader)
        data = yaml.load(text, Loader=_NoAliasSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RuleError(f"{where}: not valid YAML ({problem})") from None
    except RecursionError:
        raise RuleError(f"{source}: nested too deeply to read") from None
    return node, data


def _validated(model: type[BaseModel], data: Any, node: yaml.Node | None, source: str, what: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = _format_errors(exc, source, key_lines(node) if node else {}, model)
        raise RuleError(f"{source}: invalid {what} ({len(problems)} problems)", problems) from None


def parse_rules(text: str, source: str) -> RuleSet:
    """Parse rule-file text; raise RuleError listing every problem."""
    if len(text.encode("utf-8")) > MAX_RULE_FILE_BYTES:
        raise RuleError(f"{source}: rule file is larger than {MAX_RULE_FILE_BYTES} bytes")
    node, data = load_yaml(text, source)
    if not isinstance(data, dict):
        raise RuleError(f"{source}: a rule file is a YAML mapping (keys such as id, criteria)")
    return _validated(RuleSet, data, node, source, "rule file")


def read_rule_file(path: Path) -> tuple[RuleSet, str]:
    """Load a rule file; returns the rule set and the SHA-256 of its bytes."""
    from trdscreen.io import read_config_file

    text, digest = read_config_file(Path(path), "rule file", MAX_RULE_FILE_BYTES)
    return parse_rules(text, str(path)), digest


DEFAULT_PRESET = "sforzini-2021"


def preset_dir() -> Path:
    """Folder of the shipped rule sets: inside the wheel, or rules/ in a checkout."""
    packaged = Path(str(resources.files("trdscreen"))) / "_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "rules"


def resolve_rules(name_or_path: str | None) -> Path:
    """A preset name (e.g. sforzini-2021) or a path to a rule file."""
    if name_or_path is None:
        name_or_path = DEFAULT_PRESET
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    preset = preset_dir() / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    known = sorted(p.stem for p in preset_dir().glob("*.yaml"))
    raise RuleError(
        f"rules {name_or_path!r}: no such file and no such preset; presets: {', '.join(known)}"
    )


def load_column_map(path: Path) -> ColumnMap:
    """A separate column-map file: the same shape as a rule file's `columns:`."""
    from trdscreen.io import read_config_file

    text, _ = read_config_file(Path(path), "column map", MAX_RULE_FILE_BYTES)
    node, data = load_yaml(text, str(path))
    if isinstance(data, dict) and set(data) == {"columns"}:
        data = data["columns"]
    return _validated(ColumnMap, data or {}, node, str(path), "column map")
