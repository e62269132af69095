"""What `report.html` shows, read from a run folder: plain data for the template.

Everything comes from the folder (manifest.json and the tables, whose SHA-256 the
caller has checked), so `trdscreen report RUN_DIR` renders the same file the run
wrote, months later and whatever the current rule files say. Nothing is
recomputed: counts are the manifest's and attrition's, lists are rows of the
decisions table, subject sections are `explain` traces.

Large cohorts: the decisions table is read once (the columns the lists need) and
every list is cut at `max_rows`; per-subject sections are drawn for all subjects
only up to `max_subjects` (else for the subjects asked for with `--subject`), so
a million-subject run's report reads no course or ledger row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen import __version__
from trdscreen.criterion import Op
from trdscreen.explain import explanation, held_rows, num, ordered, records
from trdscreen.manifest import tags_from_record
from trdscreen.quarantine import QUARANTINED
from trdscreen.runs import RunFolder, to_frame

MAX_SUBJECTS = 200
"""Per-subject sections for every subject up to this many subjects (else --subject)."""
MAX_ROWS = 1000
"""Rows of each list (near misses, worklist, screening log, overrides) in the report."""
TOP_REASONS = 3

LIST_COLUMNS = [
    "subject_id",
    "decision",
    "final_decision",
    "classification",
    "reason",
    "first_failed_criterion",
    "first_failed_margin",
    "failed_criteria",
    "near_miss_criteria",
    "to_resolve",
    "age",
    "reference_date",
    "adjudicated",
    "adjudicated_by",
    "adjudicated_on",
    "adjudication_reason",
]


@dataclass(frozen=True)
class ReportOptions:
    min_cell: int | None = None  # counts from 1 to min_cell - 1 shown as "<min_cell"
    subjects: tuple[str, ...] = ()  # sections for these subjects (else all, up to a limit)
    max_subjects: int = MAX_SUBJECTS
    max_rows: int = MAX_ROWS

    def as_json(self) -> dict[str, Any]:
        return {
            "min_cell": self.min_cell,
            "subjects": list(self.subjects),
            "max_subjects": self.max_subjects,
            "max_rows": self.max_rows,
        }


def _text(value: Any) -> str:
    return (
        ""
        if value is None or value is pd.NA or (isinstance(value, float) and value != value)
        else str(value)
    )


def _split(text: Any) -> list[str]:
    return [part for part in _text(text).split(";") if part]


def header(run: RunFolder) -> dict[str, Any]:
    """Item 1: what was screened, under which rules, by which version; how to check it."""
    m = run.manifest
    rules = m["rules"]
    reference = m.get("reference_date") or {}
    if reference.get("source") == "as_of":
        reference_text = f"--as-of {reference.get('value')} (one date for every subject)"
    else:
        reference_text = f"each subject's {reference.get('column', 'reference date')} column"
    return {
        "run_id": m.get("run_id"),
        "status": m.get("status"),
        "started_at": m.get("started_at"),
        "finished_at": m.get("finished_at"),
        "version": m.get("versions", {}).get("trdscreen"),
        "renderer": __version__,
        "rules_id": rules.get("id"),
        "rules_title": rules.get("title"),
        "rules_sha256": rules.get("normalized_sha256"),
        "rules_file_sha256": rules.get("file_sha256"),
        "formulary": m.get("formulary", {}),
        "reference": reference_text,
        "inputs": [
            {k: i.get(k) for k in ("role", "path", "format", "rows", "sha256")}
            for i in m.get("inputs", [])
        ],
        "adjudications": m.get("adjudications"),
        "inputs_not_read": m.get("inputs_not_read", []),
        "column_map": m.get("column_map"),
        "on_invalid": m.get("options", {}).get("on_invalid"),
    }


ENCODED = [
    "decision",
    "final_decision",
    "classification",
    "reason",
    "first_failed_criterion",
    "failed_criteria",
    "near_miss_criteria",
]
"""Decision columns with few distinct texts: read dictionary-encoded from Parquet."""


def _is(table: pa.Table, column: str, value: str) -> pa.ChunkedArray:
    """Where a text column (plain or dictionary-encoded) equals `value` (null: False)."""
    return _where(table.column(column), lambda text: pc.equal(text, value))


def _where(column: pa.ChunkedArray, test) -> pa.ChunkedArray:
    """`test` of a text column's values, per row (null: False). A dictionary-encoded
    column is tested once per distinct text and the answer taken by code: comparing its
    rows would decode a million of them first."""
    if not pa.types.is_dictionary(column.type):
        return pc.fill_null(test(column), False)
    return pa.chunked_array(
        [
            pc.fill_null(test(chunk.dictionary).take(chunk.indices), False)
            for chunk in column.chunks
        ],
        pa.bool_(),
    )


def _text_column(table: pa.Table, name: str) -> pa.ChunkedArray:
    """A text column as plain strings, empty for null (for the few rows a list shows)."""
    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return pc.fill_null(column, "")


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return records(to_frame(table))


def flow(run: RunFolder, attrition: pd.DataFrame, decisions: pa.Table) -> dict:
    """Item 2: the CONSORT-style flow, one box per attrition row (every number is the
    attrition table's), with the top reasons of each step's exclusions: the distance
    to the threshold (margin) of the subjects excluded there, from the decisions."""
    rows = records(attrition)
    needed = decisions.select(["first_failed_criterion", "first_failed_margin"])
    excluded = needed.filter(_is(decisions, "decision", "excluded"))
    margin = excluded.column("first_failed_margin").cast(pa.float64())
    tally = (
        pa.table(
            {
                "step": excluded.column("first_failed_criterion"),
                "margin": pc.round(margin, 2),
            }
        )
        .group_by(["step", "margin"], use_threads=False)
        .aggregate([([], "count_all")])
        .to_pylist()
    )
    reasons: dict[str, list[tuple[str, int]]] = {}
    for group in sorted(
        tally, key=lambda g: (g["step"], -g["count_all"], g["margin"] is None, g["margin"] or 0)
    ):
        label = "not met" if group["margin"] is None else f"margin {num(group['margin'])}"
        reasons.setdefault(group["step"], []).append((label, int(group["count_all"])))
    reasons = {k: v[:TOP_REASONS] for k, v in reasons.items()}
    steps, ends = [], {}
    for row in rows:
        title = _text(row["title"])
        if row["criterion_id"]:
            kind = "criterion"
        elif title.startswith(QUARANTINED):
            kind = "quarantined"
        elif title in ("needs_review", "eligible", "screened"):
            ends[title] = int(row["remaining"])
            continue
        else:
            kind = "other"
        steps.append(
            {
                "step": int(row["step"]),
                "criterion_id": _text(row["criterion_id"]),
                "title": title,
                "kind": kind,
                "excluded": int(row["excluded_at_step"]),
                "remaining": int(row["remaining"]),
                "reasons": reasons.get(_text(row["criterion_id"]), []),
            }
        )
    counts = run.manifest.get("counts") or {}
    return {
        "screened": ends.get("screened", 0),
        "steps": steps,
        "needs_review": ends.get("needs_review", 0),
        "eligible": ends.get("eligible", 0),
        "final": counts.get("final_decision"),
        "adjudicated": counts.get("adjudicated"),
    }


def criteria_table(attrition: pd.DataFrame, rules: dict) -> list[dict[str, Any]]:
    """Item 3: per criterion, met / not met / unknown among the subjects evaluated (the
    screened minus any quarantined), and how many it alone excludes."""
    rows = records(attrition)
    evaluated = rows[0]["remaining"] if rows else 0
    held = sum(r["excluded_at_step"] for r in rows if _text(r["title"]).startswith(QUARANTINED))
    evaluated -= held
    kinds = {c["id"]: c.get("kind", "inclusion") for c in rules.get("criteria", [])}
    return [
        {
            "criterion_id": r["criterion_id"],
            "title": r["title"],
            "kind": kinds.get(r["criterion_id"], ""),
            "met": evaluated - r["not_met_total"] - r["unknown_total"],
            "not_met": r["not_met_total"],
            "unknown": r["unknown_total"],
            "alone": r["excluded_only_by_this"],
        }
        for r in rows
        if r["criterion_id"]
    ]


def classifications(decisions: pa.Table) -> dict[str, Any]:
    """Item 4: subjects by decision and classification (computed decisions)."""
    tally = (
        decisions.select(["classification", "decision"])
        .group_by(["classification", "decision"], use_threads=False)
        .aggregate([([], "count_all")])
        .to_pylist()
    )
    for g in tally:
        g["classification"] = g["classification"] or ""
    present = {g["decision"] for g in tally}
    columns = [c for c in ("eligible", "needs_review", "excluded") if c in present]
    cells = {(g["classification"], g["decision"]): int(g["count_all"]) for g in tally}
    kinds = sorted({g["classification"] for g in tally})
    return {
        "columns": columns,
        "rows": [
            {"classification": k, "counts": [cells.get((k, c), 0) for c in columns]} for k in kinds
        ],
        "totals": [sum(cells.get((k, c), 0) for k in kinds) for c in columns],
    }


def _criteria_by_id(rules: dict) -> dict[str, Any]:
    from trdscreen.ruleset import RuleSet

    try:
        parsed = RuleSet.model_validate(rules)
    except ValueError:  # a rule set this version cannot read: thresholds left out
        return {}
    return {c.id: c for c in parsed.criteria}


def _meets_on(criterion: Any, age: Any, reference: Any) -> str:
    """When only time stands between a subject and an age criterion's lower bound: the
    date by which a whole-years age reaches it if nothing else changes (else '')."""
    if criterion is None or criterion.column != "age" or criterion.group is not None:
        return ""
    condition = criterion.conditions[0]
    if condition.op is Op.ge:
        low = float(condition.values[0])
    elif condition.op is Op.between:
        low = float(condition.values[0])
    else:
        return ""
    if age is None or reference is None or age >= low or criterion.kind != "inclusion":
        return ""
    years = int(-(-(low - float(age)) // 1))  # whole years still to go, rounded up
    day = pd.Timestamp(reference) + pd.DateOffset(years=years)
    return f"by {day.date().isoformat()} at the latest (age {low:g} reached; ages are whole years)"


def near_misses(decisions: pa.Table, rules: dict, limit: int) -> dict[str, Any]:
    """Item 5: excluded subjects failing exactly one criterion, within its margin."""
    near = decisions.column("near_miss_criteria")
    candidates = decisions.filter(_where(near, lambda text: pc.not_equal(text, "")))  # the few
    failed = _text_column(candidates, "failed_criteria")
    one = pc.and_(
        pc.invert(pc.match_substring(failed, ";")),
        pc.equal(failed, _text_column(candidates, "near_miss_criteria")),
    )
    picked = candidates.filter(one)
    criteria = _criteria_by_id(rules)
    from trdscreen.criteria import threshold_text

    rows = []
    for row in _rows(picked.slice(0, limit)):
        criterion = criteria.get(row["failed_criteria"])
        rows.append(
            {
                "subject_id": row["subject_id"],
                "criterion_id": row["failed_criteria"],
                "title": criterion.title if criterion is not None else "",
                "threshold": threshold_text(criterion) if criterion is not None else "",
                "margin": row["first_failed_margin"],
                "meets_on": _meets_on(criterion, row["age"], row["reference_date"]),
            }
        )
    return {"rows": rows, "total": picked.num_rows}


def worklist(decisions: pa.Table, limit: int) -> dict[str, Any]:
    """Item 6: the needs_review subjects and the fact that would resolve each (the first
    `limit` taken from the table, not the whole table filtered: a million subjects have
    a hundred thousand to review)."""
    where = pc.indices_nonzero(_is(decisions, "decision", "needs_review"))
    rows = [
        {"subject_id": r["subject_id"], "reason": r["reason"], "to_resolve": r.get("to_resolve")}
        for r in _rows(decisions.take(where.slice(0, limit)))
    ]
    return {"rows": rows, "total": len(where)}


def screening_log(decisions: pa.Table, limit: int) -> dict[str, Any]:
    """Item 7: the ICH E6-style screening log, on the final decision (a reviewer's
    where one adjudicated): eligible yes / no / pending review, why not."""
    rows = []
    for r in _rows(decisions.slice(0, limit)):
        final = r.get("final_decision") or r["decision"]
        eligible = {"eligible": "yes", "excluded": "no"}.get(final, "pending review")
        why: Any = ""
        if final != "eligible":
            why = r.get("adjudication_reason") if _adjudicated(r) else r["reason"]
        rows.append(
            {
                "subject_id": r["subject_id"],
                "date": r.get("reference_date") or "",
                "eligible": eligible,
                "reason": why or "",
                "adjudicated": _adjudicated(r),
            }
        )
    return {"rows": rows, "total": decisions.num_rows}


def _adjudicated(row: dict) -> bool:
    return row.get("adjudicated") in (True, "true", "True")


def overrides(decisions: pa.Table, limit: int) -> dict[str, Any]:
    """Every adjudicated decision: computed, final, reviewer, date, reason."""
    if "adjudicated" not in decisions.column_names:
        return {"rows": [], "total": 0}
    flag = decisions.column("adjudicated")
    if not pa.types.is_boolean(flag.type):  # a CSV read back may hold text
        flag = pc.equal(pc.utf8_lower(flag.cast(pa.string())), "true")
    picked = decisions.filter(pc.fill_null(flag, False))
    rows = [
        {
            "subject_id": r["subject_id"],
            "computed": r["decision"],
            "final": r["final_decision"],
            "reviewer": r["adjudicated_by"],
            "date": r["adjudicated_on"],
            "reason": r["adjudication_reason"],
        }
        for r in _rows(picked.slice(0, limit))
    ]
    return {"rows": rows, "total": picked.num_rows}


def section_subjects(decisions: pa.Table, options: ReportOptions) -> tuple[list[str], str]:
    """The subjects drawn one per page, and a note when some are not."""
    known = _text_column(decisions, "subject_id")
    if options.subjects:
        asked = pa.array(list(options.subjects), pa.string())
        found = set(pc.filter(asked, pc.is_in(asked, value_set=known.combine_chunks())).to_pylist())
        missing = [s for s in options.subjects if s not in found]
        if missing:
            from trdscreen.errors import UsageError

            raise UsageError(
                f"--subject {missing[0]!r} is not in this run's decisions ({len(known)} subjects)"
            )
        return list(dict.fromkeys(options.subjects)), ""
    if len(known) > options.max_subjects:
        return [], (
            f"{len(known)} subjects: more than {options.max_subjects}, so no subject has a "
            "section here; render chosen ones with `trdscreen report RUN_DIR --subject ID`"
        )
    return known.to_pylist(), ""


def sections(run: RunFolder, ids: list[str], checked: bool) -> list[dict[str, Any]]:
    """Item 8: one `explain` trace per subject, from one read of each table."""
    if not ids:
        return []
    decisions = run.read("decisions", subjects=ids, checked=checked)
    courses = run.read("courses", subjects=ids, checked=checked)
    ledger = run.read("criteria_ledger", subjects=ids, checked=checked)
    held_ids = [
        s
        for s, reason in zip(decisions["subject_id"], decisions["reason"], strict=True)
        if str(reason).startswith(QUARANTINED)
    ]
    held = held_rows(run, held_ids) if held_ids else []
    # Every table made records once (a frame's rows cost a call per column each time),
    # then grouped by subject.
    course_rows, ledger_rows = ordered(courses, ledger)
    by: dict[str, dict[str, list[dict[str, Any]]]] = {
        part: {} for part in ("courses", "ledger", "held")
    }
    for part, rows in (("courses", course_rows), ("ledger", ledger_rows), ("held", held)):
        for row in rows:
            by[part].setdefault(row["subject_id"], []).append(row)
    decision_of = {row["subject_id"]: row for row in records(decisions)}
    columns = list(decisions.columns)
    return [
        explanation(
            run,
            decision_of[subject],
            columns,
            by["courses"].get(subject, []),
            by["ledger"].get(subject, []),
            by["held"].get(subject, []),
        )
        for subject in ids
    ]


def protocol(run: RunFolder) -> dict[str, Any]:
    """Item 9: the rule set as protocol text, from the normalized rules and evidence
    tags the manifest recorded (what `rules show` printed for that file)."""
    from trdscreen.protocol import protocol_text
    from trdscreen.ruleset import RuleSet

    record = run.manifest["rules"]
    try:
        rules = RuleSet.model_validate(record["normalized"])
    except ValueError:
        return {"lines": [], "unverified": 0, "tagged": False}
    tags = tags_from_record(record)
    text = protocol_text(rules, tags, str(record.get("path")), str(record.get("file_sha256")))
    return {
        "lines": text.splitlines(),
        "unverified": sum(line.startswith("  ! ") for line in text.splitlines()),
        "tagged": bool(tags),
    }


def issues_summary(issues: pd.DataFrame, limit: int) -> dict[str, Any]:
    """Input problems by severity and check, and the first rows (file, line, column)."""
    if issues.empty:
        return {"groups": [], "rows": [], "total": 0}
    groups = (
        issues.groupby(["severity", "check", "column"], dropna=False, sort=True)["rows"]
        .sum()
        .reset_index()
    )
    shown = issues.head(limit)
    return {
        "groups": records(groups),
        "rows": records(
            shown[["severity", "file", "line", "column", "check", "subject_id", "message"]]
        ),
        "total": len(issues),
    }


def report_data(run: RunFolder, options: ReportOptions, checked: bool = True) -> dict[str, Any]:
    """Everything the template shows, as plain data."""
    m = run.manifest
    data: dict[str, Any] = {
        "header": header(run),
        "options": options.as_json(),
        "identified": options.min_cell is None,
    }
    issues = run.read("validation_issues", checked=checked)
    data["issues"] = issues_summary(issues, min(options.max_rows, 200))
    data["protocol"] = protocol(run)
    if m.get("status") != "ok":
        return data
    attrition = run.read("attrition", checked=checked)
    decisions = run.arrow("decisions", columns=LIST_COLUMNS, checked=checked, dictionary=ENCODED)
    rules = m["rules"]["normalized"]
    counts = m.get("counts") or {}
    data.update(
        counts=counts,
        flow=flow(run, attrition, decisions),
        criteria=criteria_table(attrition, rules),
        classifications=classifications(decisions),
        assumptions=counts.get("assumptions", {}),
        quarantine=counts.get("quarantine"),
    )
    if options.min_cell is not None:  # a shareable copy: counts only, no subject named
        return data
    ids, note = section_subjects(decisions, options)
    data.update(
        near_misses=near_misses(decisions, rules, options.max_rows),
        worklist=worklist(decisions, options.max_rows),
        screening_log=screening_log(decisions, options.max_rows),
        overrides=overrides(decisions, options.max_rows),
        sections=sections(run, ids, checked),
        sections_note=note,
    )
    return data
