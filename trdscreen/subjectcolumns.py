"""The subject columns a rule set's criteria read, and the types they read them as.

Criteria may name columns no input holds (derived: age, the trial counts, the
diagnoses, the history flags, the staging scores) and columns the contract does not
name (a site's `ocd`, `bmi`): the latter are read from the subjects table, each with
the type its criteria compare it with where they say one.
"""

from __future__ import annotations

from trdscreen.criterion import NUMERIC_OPS
from trdscreen.diagnoses import DERIVED_COLUMNS as DIAGNOSIS_COLUMNS
from trdscreen.history import HISTORY_FLAGS
from trdscreen.ruleset import STAGING_COLUMNS, RuleSet

DERIVED_SUBJECT_COLUMNS = (
    "age",
    "n_courses",
    "n_adequate_trials",
    "n_failed_trials",
    "n_partial_response_trials",
    "classification",
    *DIAGNOSIS_COLUMNS,
    *HISTORY_FLAGS,
    *(column for columns in STAGING_COLUMNS.values() for column in columns),
)
"""Columns that criteria may name although no input table holds them."""


def criteria_subject_columns(rules: RuleSet, *reports: RuleSet) -> tuple[str, ...]:
    """Subject columns the rule set's criteria and staging models read (besides derived ones)."""
    names = [column for c in rules.criteria for column in c.columns]
    for rule_set in (rules, *reports):
        severity = getattr(rule_set.staging, "severity", None)
        if severity is not None:
            names += [severity.column, severity.psychosis_column]
    wanted = (n for n in names if n and n != "age" and n not in DERIVED_SUBJECT_COLUMNS)
    return tuple(dict.fromkeys(wanted))


def criteria_column_kinds(rules: RuleSet, *reports: RuleSet) -> dict[str, str | None]:
    """`criteria_subject_columns`, each with the working type its criteria declare:
    "bool" where one compares it with true or false, "float" where one compares it with
    numbers or by order, else None (text and null tests: inferred from the cells).

    A declared type does not depend on the cells: a column of yes, no and "unknown"
    compared with `true` was inferred as text, where "yes" is not `true`, so a subject
    with the excluding condition was eligible; now "unknown" is a not_boolean error at
    its line, as in a contract column, and every chunk of a streamed run reads the
    column as the same type."""
    kinds: dict[str, str | None] = dict.fromkeys(criteria_subject_columns(rules, *reports))
    for condition in (c for criterion in rules.criteria for c in criterion.conditions):
        values = condition.values
        if condition.column not in kinds:
            continue
        if any(isinstance(v, bool) for v in values):
            kinds[condition.column] = "bool"
        elif kinds[condition.column] != "bool" and (
            condition.op in NUMERIC_OPS
            or (values and all(isinstance(v, int | float) for v in values))
        ):
            kinds[condition.column] = "float"
    return kinds
