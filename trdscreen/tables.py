"""The catalogue of what a run folder holds: every output table with its columns, each
declared once with what it means, and the reason codes (declared in `trdscreen.reasons`).

The README's column reference is `markdown()` printed verbatim, and the tests check that
every table a run writes has exactly these columns, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass

from trdscreen.reasons import REASON_TEXT


@dataclass(frozen=True)
class Table:
    name: str
    one_row_per: str
    columns: dict[str, str]  # column -> what it holds, in the order written


_DECISIONS = {
    "subject_id": "the subject key",
    "decision": "eligible, excluded or needs_review",
    "classification": "TRD, PRD, not_resistant or undetermined",
    "reason": "the decision in words: the first criterion not met, or the first unknown",
    "first_failed_criterion": "id of the first criterion not met, in protocol order",
    "first_failed_margin": "its signed distance to passing (negative: failed by that much)",
    "failed_criteria": "every criterion not met (;-separated ids)",
    "unknown_criteria": "every criterion that could not be decided",
    "to_resolve": "needs_review only: the fact to look up first, where it is in the export "
    "(e.g. `treatments.csv line 12 (sertraline from 2023-02-01): adherence missing`: "
    "file, line or a Parquet file's row, the course's drug (its generic where the "
    "formulary knows it, else as exported) and its start; `subjects: episode_start "
    "missing`); "
    "for a subject a reviewer put in review, or whose reviewer's eligible was held, a "
    "pointer to adjudication_reason",
    "near_miss_criteria": "criteria not met within their near_miss_within",
    "assumptions": "the assumption codes the decision rests on (;-separated)",
    "n_courses": "courses of the subject in view (not after --as-of)",
    "n_adequate_trials": "distinct adequate trials, certain (lower bound)",
    "n_adequate_trials_max": "distinct adequate trials, possible (upper bound)",
    "n_failed_trials": "distinct failed adequate trials, certain (lower bound)",
    "n_failed_trials_max": "distinct failed adequate trials, possible (upper bound)",
    "n_partial_response_trials": "adequate trials with a partial response, certain",
    "n_partial_response_trials_max": "adequate trials with a partial response, possible",
    "age": "whole years at the reference date",
    "reference_date": "the screening date, or --as-of",
    "final_decision": "the decision that stands: a reviewer's (--adjudications), else `decision`",
    "adjudicated": "true where a reviewer decided the subject",
    "adjudicated_by": "the reviewer",
    "adjudicated_on": "the date of the reviewer's decision",
    "adjudication_reason": "the reviewer's reason (prefixed with the criterion it concerns; "
    "for an eligible held because the question changed since the review, what changed)",
}

TABLES = {
    t.name: t
    for t in (
        Table(
            "decisions",
            "subject",
            _DECISIONS,
        ),
        Table(
            "courses",
            "input row",
            {
                "subject_id": "the subject key",
                "source_file": "the input file",
                "source_line": "its 1-based line (CSV, header included) or row (Parquet)",
                "course_id": "the subject's course number, by start (rows merged share it)",
                "course_rows": "input rows merged into this course",
                "drug": "the drug name as exported",
                "drug_generic": "the formulary generic (or ATC code) it resolved to; empty: unknown",
                "drug_class": "its class",
                "role": "monotherapy, augmentation or combination",
                "modality": "pharmacotherapy, ect, rtms, psychotherapy or esketamine",
                "daily_dose_mg": "the dose compared: the daily equivalent in the drug's unit",
                "min_dose_mg": "the minimum adequate dose applied (x the rule set's multiple)",
                "min_dose_source": "where that minimum comes from",
                "dose_margin_mg": "dose minus minimum",
                "start_date": "first day",
                "end_date": "last day as given (empty: ongoing or unknown)",
                "ongoing": "true when still running at the reference date",
                "weeks": "the row's own length in weeks",
                "exposure_start": "first day that counted toward the course's duration",
                "exposure_end": "last day that counted",
                "exposure_weeks": "weeks at an adequate dose that counted",
                "sessions": "sessions given (ECT, rTMS, esketamine)",
                "adherence": "share of doses taken",
                "pct_improvement": "the course's percent improvement",
                "outcome": "response, partial_response, nonresponse, remission or unknown",
                "counted": "met when the course counts as a trial at all",
                "dose_check": "met, not_met or unknown",
                "duration_check": "met, not_met or unknown",
                "adherence_check": "met, not_met or unknown",
                "episode_check": "met, not_met or unknown: in the current episode",
                "early_stop": "true when stopped before the early-stop week",
                "adequate": "met, not_met or unknown",
                "failed": "met, not_met or unknown: a failed adequate trial; inferred: failed "
                "by a switch or add-on, without ratings (outcome.infer_failure_from)",
                "reasons": "the reason codes explaining how it counted (;-separated)",
            },
        ),
        Table(
            "criteria_ledger",
            "subject x criterion",
            {
                "subject_id": "the subject key",
                "order": "the criterion's position in the protocol",
                "criterion_id": "its id",
                "kind": "inclusion or exclusion",
                "outcome": "met, not_met or unknown",
                "resolved_from_unknown": "true when the rule set resolved an unknown",
                "observed_value": "the value compared (numbers)",
                "observed_max": "its upper bound (counts and scores are intervals)",
                "observed_text": "the value compared (text, true/false)",
                "threshold": "what the criterion asks, in words",
                "margin": "signed distance to flipping, positive on the passing side",
            },
        ),
        Table(
            "attrition",
            "protocol step",
            {
                "step": "0 screened, then one per criterion, then needs_review and eligible",
                "criterion_id": "the criterion of the step",
                "title": "its title, or screened / needs_review / eligible",
                "excluded_at_step": "subjects whose first criterion not met is this one",
                "remaining": "subjects left after the step (the final rows: their count)",
                "not_met_total": "subjects not meeting the criterion, wherever it comes",
                "unknown_total": "subjects for whom it is unknown",
                "excluded_only_by_this": "subjects excluded by this criterion alone",
                "with_assumptions": "needs_review and eligible decisions resting on assumptions",
            },
        ),
        Table(
            "validation_issues",
            "issue",
            {
                "severity": "error, warning or info",
                "file": "the input file",
                "line": "its 1-based line (0: the whole file or a summary row)",
                "column": "the column at fault",
                "check": "the check's code",
                "subject_id": "the subject key of the row, when it has one",
                "message": "what was expected (never a patient value)",
                "rows": "rows this issue stands for (1, or the count of a summary row)",
            },
        ),
    )
}
"""The tables of every run folder (included, excluded and needs_review are decisions split
by decision; a run with `--on-invalid quarantine` adds the quarantine tables, and a
staging model adds its score columns to decisions)."""

SPLITS = {"included": "eligible", "excluded": "excluded", "needs_review": "needs_review"}
"""Decisions split for coordinators (table -> decision): the decisions table's columns."""


def markdown() -> str:
    """The README's column reference: one list per table, then the reason codes."""
    out = []
    for table in TABLES.values():
        out.append(f"**{table.name}** (one row per {table.one_row_per}):")
        out.append("")
        out += [f"- `{column}`: {meaning}" for column, meaning in table.columns.items()]
        out.append("")
    out.append("**Reason codes** (the `reasons` column of courses, in this order):")
    out.append("")
    out += [f"- `{code}`: {text}" for code, text in REASON_TEXT.items()]
    return "\n".join(out) + "\n"


SHEET_ORDER = ("decisions", *SPLITS, *(t for t in TABLES if t != "decisions"))
"""The sheets of the `--format xlsx` workbook: the decisions and their three splits
first, then the other tables (the quarantine tables, when written, last)."""


QUARANTINE_TABLES = ("quarantine_treatments", "quarantine_subjects")
REPORT = "report"
REPORT_TABLES = ("decisions", "courses", "criteria_ledger", "attrition", "validation_issues")
"""What report.html is rendered from: it is written only with every one of these."""
CHOOSABLE = (*SHEET_ORDER, *QUARANTINE_TABLES, REPORT)
"""What `screen --tables` may name (decisions are always written, with the manifest,
the audit log and summary.txt)."""


def chosen_tables(names: list[str] | tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The tables a run writes (`--tables`), decisions first, in SHEET_ORDER; None for
    every table. ValueError naming what is unknown, or what `report` needs."""
    if names is None:
        return None
    wanted = {n.strip() for name in names for n in name.split(",") if n.strip()}
    unknown = sorted(wanted - set(CHOOSABLE))
    if unknown:
        raise ValueError(
            f"--tables: unknown {', '.join(unknown)}; expected some of {', '.join(CHOOSABLE)}"
        )
    wanted.add("decisions")
    missing = [t for t in REPORT_TABLES if t not in wanted]
    if REPORT in wanted and missing:
        raise ValueError(f"--tables report renders from {', '.join(missing)}: name them too")
    return tuple(t for t in CHOOSABLE if t in wanted)
