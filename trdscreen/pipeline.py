"""The pure screening pipeline: validated frames in, result tables out.

No I/O, no printing, no global state: the same inputs give the same tables,
which is what lets the stages run per partition elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date
from typing import Protocol

import numpy as np
import pandas as pd

from trdscreen import quarantine as quarantine_policy
from trdscreen.adjudication import Adjudications, adjudicate
from trdscreen.asof import as_of_view
from trdscreen.courses import assess_courses
from trdscreen.criteria import assumption_counts, attrition, decide, evaluate_all, ledger
from trdscreen.diagnoses import derived_columns
from trdscreen.errors import InvalidInputData
from trdscreen.formulary import Formulary
from trdscreen.history import HISTORY_FLAGS, history_columns
from trdscreen.io import SourceTable
from trdscreen.issues import issue_counts
from trdscreen.keys import day_numbers, lex_order
from trdscreen.quarantine import Quarantine, held_attrition, held_decisions
from trdscreen.ruleset import RuleSet
from trdscreen.staging import staging_columns
from trdscreen.subjects import Cohort, assess_subjects, build_cohort
from trdscreen.tables import SPLITS
from trdscreen.toresolve import to_resolve
from trdscreen.validate import ValidatedInputs, validate_inputs

DECISION_COLUMNS = (
    "subject_id",
    "decision",
    "classification",
    "reason",
    "first_failed_criterion",
    "first_failed_margin",
    "failed_criteria",
    "unknown_criteria",
    "to_resolve",
    "near_miss_criteria",
    "assumptions",
    "n_courses",
    "n_adequate_trials",
    "n_adequate_trials_max",
    "n_failed_trials",
    "n_failed_trials_max",
    "n_partial_response_trials",
    "n_partial_response_trials_max",
    "age",
    "reference_date",
)


class RunSummary(Protocol):
    """What a screened run tells beyond its decision tables, whether screened whole
    (`ScreenResult`) or a part at a time (`stream.StreamedResult`)."""

    @property
    def attrition(self) -> pd.DataFrame: ...

    @property
    def issues(self) -> pd.DataFrame: ...

    @property
    def quarantine(self) -> Quarantine | None: ...

    def counts(self) -> dict[str, dict[str, int]]: ...

    def near_misses(self) -> int: ...


@dataclass(frozen=True)
class ScreenResult:
    decisions: pd.DataFrame  # one row per subject, sorted by subject_id
    courses: pd.DataFrame  # one row per input course, sorted by subject, start, line
    ledger: pd.DataFrame | None  # subject x criterion (None: not built, `Screening.ledger`)
    attrition: pd.DataFrame
    issues: pd.DataFrame
    quarantine: Quarantine | None = None  # with --on-invalid quarantine
    held: int = 0  # reviewers' eligible held: the question changed (adjudication._held)

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every output table by its file stem, in writing order (the splits follow the
        final decision: the reviewer's where one adjudicated)."""
        decision = self.decisions["final_decision"]
        held = {}
        if self.quarantine is not None:
            held = {
                "quarantine_treatments": self.quarantine.treatments,
                "quarantine_subjects": self.quarantine.subjects,
            }
        return {
            "decisions": self.decisions,
            **{
                name: self.decisions[decision == value].reset_index(drop=True)
                for name, value in SPLITS.items()
            },
            **self.ledger_table(),
            "courses": self.courses,
            "attrition": self.attrition,
            "validation_issues": self.issues,
            **held,
        }

    def ledger_table(self) -> dict[str, pd.DataFrame]:
        """The criteria ledger by its file stem, or nothing when it was not built."""
        return {} if self.ledger is None else {"criteria_ledger": self.ledger}

    def near_misses(self) -> int:
        """Subjects with at least one near-miss criterion."""
        return int((self.decisions["near_miss_criteria"].fillna("") != "").sum())

    def counts(self) -> dict[str, dict[str, int]]:
        def tally(column: str) -> dict[str, int]:
            values = self.decisions[column].value_counts(sort=False)
            return {str(k): int(v) for k, v in values.items()}

        counts = {
            "subjects": {"total": len(self.decisions)},
            "courses": {"total": len(self.courses)},
            "decision": tally("decision"),
            "classification": tally("classification"),
            "assumptions": assumption_counts(self.attrition),
            "issues": issue_counts(self.issues),
        }
        adjudicated = self.decisions["adjudicated"].to_numpy(dtype=bool)
        if adjudicated.any():
            counts["final_decision"] = tally("final_decision")
            changed = self.decisions["final_decision"].astype("str") != self.decisions[
                "decision"
            ].astype("str")
            counts["adjudicated"] = {
                "subjects": int(adjudicated.sum()),
                "changed": int((changed.to_numpy() & adjudicated).sum()),
                **({"held": self.held} if self.held else {}),
            }
        if self.quarantine is not None:
            counts["quarantine"] = self.quarantine.counts()
        return counts


def _assess(
    inputs: ValidatedInputs,
    rules: RuleSet,
    formulary: Formulary,
    as_of: date | None,
    cohort: Cohort | None = None,
):
    """Build the cohort (unless one built with the same reference date is given) and
    assess every course under `rules`."""
    if cohort is None:
        cohort = build_cohort(inputs.treatments, inputs.subjects, rules, as_of)
    codes = cohort.course_codes
    assessed = assess_courses(
        inputs.treatments,
        codes=codes,
        reference=cohort.reference[codes],
        episode_start=cohort.episode_start[codes],
        rules=rules,
        formulary=formulary,
    )
    return cohort, assessed


def _staging(
    inputs: ValidatedInputs,
    rules: RuleSet,
    formulary: Formulary,
    as_of: date | None,
    cohort: Cohort,
    assessed,
    reports: tuple[tuple[RuleSet, Formulary], ...],
) -> pd.DataFrame:
    """Staging columns of the rule set's own model, then of each reported preset.

    A reported preset is applied with its own adequacy rules (e.g. MSM's six
    weeks), to the same validated inputs; its decision is not used.
    """
    blocks = []
    if rules.staging is not None:
        blocks.append(staging_columns(rules.staging, cohort, assessed, cohort.subjects))
    for report_rules, report_formulary in reports:
        if report_rules.staging is None:
            continue
        same_reference = report_rules.reference_date == rules.reference_date
        report_cohort, report_assessed = _assess(
            inputs, report_rules, report_formulary, as_of, cohort if same_reference else None
        )
        blocks.append(
            staging_columns(
                report_rules.staging, report_cohort, report_assessed, report_cohort.subjects
            )
        )
    if not blocks:
        return pd.DataFrame(index=range(len(cohort.ids)))
    return pd.concat(blocks, axis=1)


def decide_validated(
    inputs: ValidatedInputs,
    rules: RuleSet,
    formulary: Formulary,
    as_of: date | None,
    reports: tuple[tuple[RuleSet, Formulary], ...] = (),
    quarantine: Quarantine | None = None,
    adjudications: Adjudications | None = None,
    with_ledger: bool = True,
) -> ScreenResult:
    """Screen validated inputs. Every input subject and course appears exactly once.

    `reports` are other rule sets whose staging scores are added as columns.
    With `as_of`, only what was recorded on or before that date is screened
    (`trdscreen.asof`); later courses are listed but counted nowhere. With a
    `quarantine`, its held subjects are not screened: they get needs_review
    and their rows are in the quarantine tables instead (`trdscreen.quarantine`).
    """
    given = inputs
    if quarantine is not None:
        inputs = replace(
            inputs,
            treatments=inputs.treatments[~quarantine.course_rows].reset_index(drop=True),
            subjects=inputs.subjects[~quarantine.subject_rows].reset_index(drop=True),
        )
    treatments, people = as_of_view(inputs.treatments, inputs.subjects, as_of)
    inputs = replace(inputs, treatments=treatments, subjects=people)
    cohort, assessed = _assess(inputs, rules, formulary, as_of)
    subjects = assess_subjects(cohort, assessed, rules)
    scores = _staging(inputs, rules, formulary, as_of, cohort, assessed, reports)
    subjects = pd.concat([subjects, scores], axis=1)
    # cohort.subjects is aligned row for row with `subjects` (both sorted by id).
    extra = cohort.subjects.drop(columns=[c for c in subjects.columns if c in cohort.subjects])
    derived = [derived_columns(cohort.subjects)]
    if any(set(c.columns) & set(HISTORY_FLAGS) for c in rules.criteria):
        derived.append(
            history_columns(cohort.course_codes, assessed.table, assessed.in_view, cohort.subjects)
        )
    criteria_frame = pd.concat([subjects, extra.reset_index(drop=True), *derived], axis=1)
    results = evaluate_all(rules, criteria_frame)
    decided = decide(subjects, results)
    # By subject_id (codes are id ranks), start_date, then source_line: the rows are in
    # line order and the sort is stable, so the line needs no key of its own.
    listed = assessed.table
    order = lex_order(cohort.course_codes, day_numbers(listed["start_date"].to_numpy()))
    in_order = bool(np.all(order[1:] > order[:-1])) if len(order) else True
    courses = (
        listed.reset_index(drop=True) if in_order else listed.take(order).reset_index(drop=True)
    )
    decided["to_resolve"] = to_resolve(
        decided,
        results,
        criteria_frame,
        set(cohort.subjects.columns),
        set(derived[0].columns),
        cohort.has_row,
        cohort.reference,
        courses,
        cohort.course_codes[order],
        formulary,
        staging_inputs(rules, *(r for r, _ in reports)),
    )
    decided["to_resolve"] = decided["to_resolve"].astype("str")
    decisions = decided[[*DECISION_COLUMNS, *scores.columns]]
    table = attrition(decisions, results)
    if quarantine is not None:
        decisions = held_decisions(decisions, quarantine, given.treatments)
        table = held_attrition(table, len(quarantine.held))
    decisions, held = adjudicate(decisions, adjudications)
    return ScreenResult(
        decisions=decisions,
        courses=courses,
        ledger=ledger(subjects, results) if with_ledger else None,
        attrition=table,
        issues=inputs.issues,
        quarantine=quarantine,
        held=held,
    )


def staging_inputs(*rule_sets: RuleSet) -> tuple[str, ...]:
    """The subject columns the rule sets' staging scores read besides the courses."""
    columns: list[str] = []
    for rule_set in rule_sets:
        severity = getattr(rule_set.staging, "severity", None)
        if severity is not None:
            columns += [severity.column, severity.psychosis_column, "episode_start"]
    return tuple(dict.fromkeys(c for c in columns if c))


def refuse_invalid(validated: ValidatedInputs, on_invalid: str) -> None:
    """Raise InvalidInputData when validation errors stop the run under `on_invalid`:
    always under "fail"; under "quarantine" when the errors cannot be set aside."""
    if not validated.n_errors:
        return
    why = quarantine_policy.refuse_quarantine(validated.rejections, validated.issues)
    if on_invalid == "quarantine":
        if why is None:
            return
        raise InvalidInputData(f"--on-invalid quarantine cannot be used: {why}", validated.issues)
    raise InvalidInputData(
        f"input validation found {validated.n_errors} error(s); "
        "see validation_issues for file, line and column"
        + (
            " (or pass --on-invalid quarantine to hold the subjects concerned for review)"
            if why is None
            else ""
        ),
        validated.issues,
    )


@dataclass(frozen=True)
class Screening:
    """How a run screens, apart from its data: what the kernel needs on any partition."""

    rules: RuleSet
    formulary: Formulary
    as_of: date | None = None
    reports: tuple[tuple[RuleSet, Formulary], ...] = ()  # rule sets whose staging is added
    on_invalid: str = "fail"  # vocabulary.ON_INVALID
    adjudications: Adjudications | None = None  # reviewers' decisions (--adjudications)
    ledger: bool = True  # build the criteria ledger (a streamed run that writes none: no)


def decide_checked(
    treatments: SourceTable,
    subjects: SourceTable | None,
    validated: ValidatedInputs,
    screening: Screening,
) -> ScreenResult:
    """Screen validated inputs that `refuse_invalid` let through: subjects with rejected
    rows (if any) are held for review, everyone else is screened."""
    held = None
    if validated.n_errors:
        held = quarantine_policy.plan(
            treatments,
            subjects,
            validated.treatments,
            validated.subjects,
            validated.rejections,
            validated.issues,
        )
    return decide_validated(
        validated,
        screening.rules,
        screening.formulary,
        screening.as_of,
        screening.reports,
        held,
        screening.adjudications,
        screening.ledger,
    )


@dataclass(frozen=True)
class Part:
    """What one partition of the inputs gives: its issues, and its result unless its
    own errors stop it (the caller decides for the whole run with `refuse_invalid`)."""

    issues: pd.DataFrame
    rejections: pd.DataFrame
    result: ScreenResult | None


def decide_part(
    treatments: SourceTable, subjects: SourceTable | None, screening: Screening
) -> Part:
    """The kernel a partition runs: validate, then screen as the whole run would.

    Correct on any partition that holds all rows of each of its subjects: every
    check and every decision depends on one subject's rows only.
    """
    validated = validate_inputs(
        treatments,
        subjects,
        screening.rules,
        screening.formulary,
        screening.as_of,
        tuple(r for r, _ in screening.reports),
    )
    try:
        refuse_invalid(validated, screening.on_invalid)
    except InvalidInputData:
        return Part(validated.issues, validated.rejections, None)
    result = decide_checked(treatments, subjects, validated, screening)
    return Part(validated.issues, validated.rejections, result)
