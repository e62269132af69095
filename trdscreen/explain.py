"""`trdscreen explain RUN_DIR SUBJECT_ID`: one subject's decision, traced from the run's tables.

Nothing is recomputed: the explanation is read from the run folder (its
decisions, courses and criteria ledger, each checked against the manifest's
SHA-256) and the normalized rule set recorded in the manifest, so it shows
what that run decided, whatever the current rules say.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from trdscreen.adjudication import ADJUDICATION_COLUMNS
from trdscreen.buildtrace import build_trace
from trdscreen.errors import UsageError
from trdscreen.pipeline import DECISION_COLUMNS
from trdscreen.quarantine import META_COLUMNS, QUARANTINED
from trdscreen.reasons import ASSUMPTION_TEXT, REASON_TEXT
from trdscreen.runs import RunFolder, records

COUNT_COLUMNS = (
    ("n_courses", None, "treatment courses"),
    ("n_adequate_trials", "n_adequate_trials_max", "adequate trials"),
    ("n_failed_trials", "n_failed_trials_max", "failed adequate trials"),
    ("n_partial_response_trials", "n_partial_response_trials_max", "partial-response trials"),
)


def _summary(normalized: dict[str, Any]) -> str:
    """The run's rule set in one generated line (empty if this version cannot read it)."""
    from trdscreen.protocol import summary_line
    from trdscreen.ruleset import RuleSet

    try:
        return summary_line(RuleSet.model_validate(normalized))
    except ValueError:
        return ""


def _split(text: Any) -> list[str]:
    return [part for part in (text or "").split(";") if part]


def explain_subject(run: RunFolder, subject_id: str) -> dict[str, Any]:
    """The decision trace of one subject as plain data (what `--json` prints)."""
    decisions = run.read("decisions", subject_id)
    if decisions.empty:
        raise UsageError(
            f"{run.path}: subject {subject_id!r} is not in this run's decisions "
            f"({run.manifest.get('counts', {}).get('subjects', {}).get('total', '?')} subjects)"
        )
    held: list[dict[str, Any]] = []
    if str(decisions["reason"].iloc[0]).startswith(QUARANTINED):
        held = held_rows(run, [subject_id])
    courses, ledger = ordered(
        run.read("courses", subject_id), run.read("criteria_ledger", subject_id)
    )
    out = explanation(run, records(decisions)[0], list(decisions.columns), courses, ledger, held)
    trace = build_trace(run, subject_id, [int(c["source_line"]) for c in courses])
    if trace is not None:  # the run screened a `trdscreen build` folder
        out["build"] = {
            "events_file": trace.source, "ratings_file": trace.ratings_source, "note": trace.note,
        }  # fmt: skip
        for course in out["courses"]:
            course["built_from"] = trace.events.get(course["source_line"], [])
            course["built_ratings"] = trace.ratings.get(course["source_line"], {})
    return out


def held_rows(run: RunFolder, subjects: list[str]) -> list[dict[str, Any]]:
    """The quarantined input rows of these subjects (file, line, status, reasons)."""
    held = []
    for table in ("quarantine_treatments", "quarantine_subjects"):
        if run.output(table) is not None:
            held += [
                {
                    "table": table,
                    **{c: row[c] for c in META_COLUMNS},
                    "subject_id": row["subject_id"],
                }
                for row in records(run.read(table, subjects=subjects))
            ]
    return held


def ordered(
    courses: pd.DataFrame, ledger: pd.DataFrame
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Course and ledger rows as records in a trace's order: courses by start and source
    line, criteria by their order. The sorts are stable, so the rows of many subjects
    sorted at once keep, subject by subject, the order each subject's alone would have."""
    return (
        records(courses.sort_values(["start_date", "source_line"], kind="stable")),
        records(ledger.sort_values("order", kind="stable")),
    )


def explanation(
    run: RunFolder,
    decision: dict[str, Any],
    columns: list[str],
    courses: list[dict[str, Any]],
    ledger: list[dict[str, Any]],
    held: list[dict[str, Any]],
) -> dict[str, Any]:
    """One subject's trace from its rows of the run's tables as records (`ordered`):
    its one decision (the decisions table's `columns`), its courses and ledger rows."""
    subject_id = decision["subject_id"]
    rules = run.manifest["rules"]
    titles = {c["id"]: c for c in rules["normalized"].get("criteria", [])}

    course_rows = []
    for course in courses:
        course = dict(course)
        codes = _split(course.pop("reasons"))
        course["reasons"] = [{"code": c, "text": REASON_TEXT.get(c, c)} for c in codes]
        course_rows.append(course)
    criteria = []
    for row in ledger:
        spec = titles.get(row["criterion_id"], {})
        criteria.append({**row, "title": spec.get("title", ""), "source": spec.get("source", "")})
    counts = {
        low: {
            "label": label,
            "certain": decision.get(low),
            "at_most": decision.get(high) if high else decision.get(low),
        }
        for low, high, label in COUNT_COLUMNS
    }
    own = {*DECISION_COLUMNS, *ADJUDICATION_COLUMNS}
    staging = {c: decision[c] for c in columns if c not in own}
    return {
        "subject_id": subject_id,
        "run": {
            "path": str(run.path),
            "run_id": run.run_id,
            "finished_at": run.manifest.get("finished_at"),
            "rules_id": rules["id"],
            "rules_title": rules["title"],
            "rules_normalized_sha256": rules["normalized_sha256"],
            "rules_summary": _summary(rules["normalized"]),
            "reference_date": run.manifest.get("reference_date"),
            "trdscreen_version": run.manifest.get("versions", {}).get("trdscreen"),
        },
        "decision": decision["decision"],
        "reason": decision["reason"],
        "to_resolve": decision.get("to_resolve") or None,  # runs before 0.6.0 have none
        "final_decision": decision.get("final_decision", decision["decision"]),
        "adjudication": (
            {
                "reviewer": decision["adjudicated_by"],
                "date": decision["adjudicated_on"],
                "reason": decision["adjudication_reason"],
            }
            if decision.get("adjudicated") in (True, "true", "True")
            else None
        ),
        "classification": decision["classification"],
        "first_failed_criterion": decision["first_failed_criterion"] or None,
        "failed_criteria": _split(decision["failed_criteria"]),
        "unknown_criteria": _split(decision["unknown_criteria"]),
        "near_miss_criteria": _split(decision["near_miss_criteria"]),
        "assumptions": [
            {"code": code, "text": ASSUMPTION_TEXT.get(code, code)}
            for code in _split(decision.get("assumptions"))
        ],
        "age": decision["age"],
        "reference_date": decision["reference_date"],
        "counts": counts,
        "staging": staging,
        "courses": course_rows,
        "criteria": criteria,
        "quarantine": held,
    }


# Plain words for a trace, shared by the terminal (render) and the report.


def observed(row: dict) -> str:
    if row.get("observed_text") not in (None, ""):
        return str(row["observed_text"])
    low, high = row.get("observed_value"), row.get("observed_max")
    if low is None:
        return "unknown"
    if high is not None and high != low:
        return f"{num(low)} to {num(high)}"
    return num(low)


def num(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}" if value == int(value) else f"{value:.2f}".rstrip("0")
    return str(value)


def course_verdict(course: dict) -> str:
    if course["counted"] == "not_met":
        return "not a trial"
    if course["failed"] == "met":
        return "FAILED trial"
    if course["failed"] == "inferred":
        return "FAILED trial (inferred)"
    if course["failed"] == "unknown":
        return "failed? (unknown)"
    if course["adequate"] == "not_met":
        return "not adequate"
    if course["adequate"] == "unknown":
        return "adequacy unknown"
    return "adequate, not failed"


def state(value: str) -> str:
    return str(value).replace("_", " ")
