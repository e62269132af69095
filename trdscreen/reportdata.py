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

from trdscreen import __version__
from trdscreen.criterion import Op
from trdscreen.explain import explanation, held_rows, records
from trdscreen.manifest import tags_from_record
from trdscreen.quarantine import QUARANTINED
from trdscreen.runs import RunFolder

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
        "column_map": m.get("column_map"),
        "on_invalid": m.get("options", {}).get("on_invalid"),
    }


def flow(run: RunFolder, attrition: pd.DataFrame, decisions: pd.DataFrame | None) -> dict:
    """Item 2: the CONSORT-style flow, one box per attrition row (every number is the
    attrition table's), with the top reasons of each step's exclusions: the distance
    to the threshold (margin) of the subjects excluded there, from the decisions."""
    rows = records(attrition)
    reasons: dict[str, list[tuple[str, int]]] = {}
    if decisions is not None:
        failed = decisions[decisions["decision"].astype("string") == "excluded"]
        margin = failed["first_failed_margin"].astype("Float64").round(2)
        label = ("margin " + margin.astype("string")).fillna("not met")
        tally = (
            pd.DataFrame(
                {"step": failed["first_failed_criterion"].astype("string"), "label": label}
            )
            .value_counts(sort=False)
            .reset_index(name="n")
            .sort_values(["step", "n", "label"], ascending=[True, False, True], kind="stable")
        )
        for step, group in tally.groupby("step", sort=False):
            reasons[str(step)] = [
                (str(lab).removesuffix(".0"), int(n))
                for lab, n in zip(group["label"], group["n"], strict=True)
            ][:TOP_REASONS]
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


def classifications(decisions: pd.DataFrame) -> dict[str, Any]:
    """Item 4: subjects by decision and classification (computed decisions)."""
    table = pd.crosstab(
        decisions["classification"].astype("string").fillna(""),
        decisions["decision"].astype("string").fillna(""),
    )
    columns = [c for c in ("eligible", "needs_review", "excluded") if c in table.columns]
    return {
        "columns": columns,
        "rows": [
            {"classification": str(k), "counts": [int(table.loc[k, c]) for c in columns]}
            for k in table.index
        ],
        "totals": [int(table[c].sum()) for c in columns],
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


def near_misses(decisions: pd.DataFrame, rules: dict, limit: int) -> dict[str, Any]:
    """Item 5: excluded subjects failing exactly one criterion, within its margin."""
    failed = decisions["failed_criteria"].astype("string").fillna("")
    near = decisions["near_miss_criteria"].astype("string").fillna("")
    one = (failed != "") & ~failed.str.contains(";", regex=False) & (failed == near)
    picked = decisions[one.to_numpy(dtype=bool)]
    criteria = _criteria_by_id(rules)
    from trdscreen.criteria import threshold_text

    rows = []
    for row in records(picked.head(limit)):
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
    return {"rows": rows, "total": len(picked)}


def worklist(decisions: pd.DataFrame, limit: int) -> dict[str, Any]:
    """Item 6: the needs_review subjects and the fact that would resolve each."""
    picked = decisions[decisions["decision"].astype("string") == "needs_review"]
    rows = [
        {"subject_id": r["subject_id"], "reason": r["reason"], "to_resolve": r.get("to_resolve")}
        for r in records(picked.head(limit))
    ]
    return {"rows": rows, "total": len(picked)}


def screening_log(decisions: pd.DataFrame, limit: int) -> dict[str, Any]:
    """Item 7: the ICH E6-style screening log, on the final decision (a reviewer's
    where one adjudicated): eligible yes / no / pending review, why not."""
    rows = []
    for r in records(decisions.head(limit)):
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
    return {"rows": rows, "total": len(decisions)}


def _adjudicated(row: dict) -> bool:
    return row.get("adjudicated") in (True, "true", "True")


def overrides(decisions: pd.DataFrame, limit: int) -> dict[str, Any]:
    """Every adjudicated decision: computed, final, reviewer, date, reason."""
    if "adjudicated" not in decisions.columns:
        return {"rows": [], "total": 0}
    flag = decisions["adjudicated"].astype("string").fillna("false").str.lower() == "true"
    picked = decisions[flag.to_numpy(dtype=bool)]
    rows = [
        {
            "subject_id": r["subject_id"],
            "computed": r["decision"],
            "final": r["final_decision"],
            "reviewer": r["adjudicated_by"],
            "date": r["adjudicated_on"],
            "reason": r["adjudication_reason"],
        }
        for r in records(picked.head(limit))
    ]
    return {"rows": rows, "total": len(picked)}


def section_subjects(decisions: pd.DataFrame, options: ReportOptions) -> tuple[list[str], str]:
    """The subjects drawn one per page, and a note when some are not."""
    known = decisions["subject_id"].astype("string")
    if options.subjects:
        missing = [s for s in options.subjects if s not in set(known)]
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
    return list(known), ""


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
    by_course = dict(tuple(courses.groupby("subject_id", sort=False)))
    by_ledger = dict(tuple(ledger.groupby("subject_id", sort=False)))
    by_row = {s: i for i, s in enumerate(decisions["subject_id"])}
    out = []
    for subject in ids:
        i = by_row[subject]
        traced = explanation(
            run,
            decisions.iloc[i : i + 1],
            by_course.get(subject, courses.iloc[:0]),
            by_ledger.get(subject, ledger.iloc[:0]),
            [h for h in held if h["subject_id"] == subject],
        )
        out.append(traced)
    return out


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
    decisions = run.read("decisions", columns=LIST_COLUMNS, checked=checked)
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
