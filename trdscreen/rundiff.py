"""`trdscreen diff RUN_A RUN_B`: what changed between two runs, and why.

For a protocol amendment (same inputs, other rules) or a data refresh (same
rules, other inputs): which subjects changed decision and in which
direction, which criteria flipped for each (a criterion only one rule set has is
listed where it is not met there), which of their courses counted
differently (when the inputs are identical, courses are matched by source
file and line), subjects present in one run only, and both attritions side
by side. Read from the two run folders; nothing is recomputed. Vectorized
joins on subject (and criterion or course) keys.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from trdscreen.runs import RunFolder, json_value, records

COURSE_STATES = ("counted", "adequate", "failed", "outcome")
ABSENT = "absent"
"""The outcome shown for a criterion the other run's rule set does not have."""


def _hashes(run: RunFolder, key: str) -> dict[str, str]:
    return {r["role"]: r["sha256"] for r in run.manifest.get(key, [])}


def _context(a: RunFolder, b: RunFolder) -> dict[str, Any]:
    ma, mb = a.manifest, b.manifest
    inputs_same = _hashes(a, "inputs") == _hashes(b, "inputs")
    rules_same = ma["rules"]["normalized_sha256"] == mb["rules"]["normalized_sha256"]
    formulary_same = ma["formulary"]["sha256"] == mb["formulary"]["sha256"]
    reference_same = ma.get("reference_date") == mb.get("reference_date")
    changed = [
        name
        for name, same in (
            ("inputs", inputs_same),
            ("rules", rules_same),
            ("formulary", formulary_same),
            ("reference date", reference_same),
        )
        if not same
    ]
    adjudications_same = (ma.get("adjudications") or {}).get("sha256") == (
        mb.get("adjudications") or {}
    ).get("sha256")
    if not changed:
        note = (
            "same inputs, rules, formulary and reference date: the computed decisions should "
            "not differ"
            + ("" if adjudications_same else "; the adjudications differ (final decisions)")
        )
    elif changed == ["rules"]:
        note = "only the rules differ (same inputs): every change comes from the rule set"
    elif "inputs" in changed and "rules" not in changed:
        note = "the inputs differ (a data refresh) under the same rules: changes come from the data"
    else:
        note = f"{', '.join(changed)} differ: a change may come from any of them"
    versions = sorted(
        k for k in ma.get("versions", {}) if ma["versions"].get(k) != mb.get("versions", {}).get(k)
    )
    return {
        "inputs_identical": inputs_same,
        "rules_identical": rules_same,
        "formulary_identical": formulary_same,
        "reference_date_identical": reference_same,
        "adjudications_identical": adjudications_same,
        "versions_differ": versions,
        "note": note,
    }


def _run_info(run: RunFolder) -> dict[str, Any]:
    m = run.manifest
    return {
        "path": str(run.path),
        "run_id": run.run_id,
        "finished_at": m.get("finished_at"),
        "rules_id": m["rules"]["id"],
        "rules_normalized_sha256": m["rules"]["normalized_sha256"],
        "decisions_content_sha256": m.get("decisions_content_sha256"),
        "inputs": _hashes(run, "inputs"),
    }


def _attrition(a: RunFolder, b: RunFolder) -> dict[str, Any]:
    counts = {
        side: (run.manifest.get("counts") or {}).get("decision", {})
        for side, run in (("a", a), ("b", b))
    }
    decisions = ("eligible", "excluded", "needs_review")
    return {
        "decisions": [
            {"decision": d, "a": counts["a"].get(d, 0), "b": counts["b"].get(d, 0)}
            for d in decisions
        ],
        "a": records(a.read("attrition")),
        "b": records(b.read("attrition")),
    }


def _grouped(frame: pd.DataFrame, columns: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Rows grouped by subject_id into lists of dicts (only for the changed subjects)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in records(frame[["subject_id", *columns]]):
        out.setdefault(row.pop("subject_id"), []).append(row)
    return out


def diff_runs(a: RunFolder, b: RunFolder, limit: int | None = None) -> dict[str, Any]:
    """The comparison as plain data; `limit` caps the changed subjects given in detail
    (in subject order; the counts always cover every subject)."""
    context = _context(a, b)
    keep = ["subject_id", "decision", "classification", "first_failed_criterion"]
    da = a.read("decisions")[keep]
    db = b.read("decisions")[keep]
    merged = da.merge(db, on="subject_id", how="outer", suffixes=("_a", "_b"), indicator=True)
    both = merged[merged["_merge"] == "both"]
    text = both[["decision_a", "decision_b"]].astype("str")
    changed = both[text["decision_a"] != text["decision_b"]].sort_values("subject_id")
    detailed = changed if limit is None else changed.head(limit)
    ids = detailed["subject_id"]

    la = a.read("criteria_ledger")[["subject_id", "criterion_id", "outcome"]]
    lb = b.read("criteria_ledger")[["subject_id", "criterion_id", "outcome"]]
    la = la[la["subject_id"].isin(ids)]
    lb = lb[lb["subject_id"].isin(ids)]
    ledger = la.merge(lb, on=["subject_id", "criterion_id"], how="outer", suffixes=("_a", "_b"))
    # A criterion in one run only matters where it is not met there (or unknown).
    outcome_a = ledger["outcome_a"].astype("str").fillna(ABSENT)
    outcome_b = ledger["outcome_b"].astype("str").fillna(ABSENT)
    one_sided = (outcome_a == ABSENT) | (outcome_b == ABSENT)
    matters = ~one_sided | ((outcome_a != "met") & (outcome_b != "met"))
    flipped = (
        ledger[(outcome_a != outcome_b) & matters]
        .assign(outcome_a=outcome_a, outcome_b=outcome_b)
        .sort_values(["subject_id", "criterion_id"])
    )
    criteria = _grouped(flipped, ["criterion_id", "outcome_a", "outcome_b"])

    courses: dict[str, list[dict[str, Any]]] = {}
    if context["inputs_identical"]:
        key = ["subject_id", "source_file", "source_line", "drug"]
        ca = a.read("courses")[[*key, "pct_improvement", *COURSE_STATES]]
        cb = b.read("courses")[[*key, *COURSE_STATES]]
        ca = ca[ca["subject_id"].isin(ids)]
        cb = cb[cb["subject_id"].isin(ids)]
        course = ca.merge(cb, on=key, how="inner", suffixes=("_a", "_b"))
        differ = pd.Series(False, index=course.index)
        for state in COURSE_STATES:
            differ |= course[f"{state}_a"].astype("str") != course[f"{state}_b"].astype("str")
        columns = [c for state in COURSE_STATES for c in (f"{state}_a", f"{state}_b")]
        courses = _grouped(
            course[differ].sort_values(["subject_id", "source_line"]),
            ["source_file", "source_line", "drug", "pct_improvement", *columns],
        )

    changes = []
    for row in records(detailed):
        sid = row["subject_id"]
        changes.append(
            {
                "subject_id": sid,
                "direction": f"{row['decision_a']} -> {row['decision_b']}",
                "decision_a": row["decision_a"],
                "decision_b": row["decision_b"],
                "classification_a": row["classification_a"],
                "classification_b": row["classification_b"],
                "criteria_flipped": criteria.get(sid, []),
                "courses_changed": courses.get(sid, []),
            }
        )
    directions = (
        changed["decision_a"].astype("str") + " -> " + changed["decision_b"].astype("str")
    ).value_counts()
    adjudicated = _adjudication_changes(a, b, both[text["decision_a"] == text["decision_b"]])
    return {
        "a": _run_info(a),
        "b": _run_info(b),
        "context": context,
        "subjects": {
            "in_both": len(both),
            "only_in_a": sorted(
                json_value(v) for v in merged.loc[merged["_merge"] == "left_only", "subject_id"]
            ),
            "only_in_b": sorted(
                json_value(v) for v in merged.loc[merged["_merge"] == "right_only", "subject_id"]
            ),
            "changed_decision": len(changed),
            "changed_by_adjudication": len(adjudicated),
        },
        "adjudication_changes": adjudicated,
        "directions": {str(k): int(v) for k, v in directions.items()},
        "changes": changes,
        "attrition": _attrition(a, b),
    }


def _final(run: RunFolder) -> pd.DataFrame:
    """subject_id, final decision and the reviewer's reason (a run before 0.6.0, or one
    without adjudications: the computed decision, no reason)."""
    decisions = run.read("decisions")
    if "final_decision" not in decisions.columns:
        return decisions[["subject_id"]].assign(
            final=decisions["decision"].astype("str"), reviewer="", reason=""
        )
    return decisions[["subject_id"]].assign(
        final=decisions["final_decision"].astype("str"),
        reviewer=decisions["adjudicated_by"].fillna("").astype("str"),
        reason=decisions["adjudication_reason"].fillna("").astype("str"),
    )


def _adjudication_changes(a: RunFolder, b: RunFolder, same: pd.DataFrame) -> list[dict]:
    """Subjects whose computed decision is the same in both runs but whose final decision
    differs: changed by a reviewer, not by the data or the rules."""
    merged = _final(a).merge(_final(b), on="subject_id", suffixes=("_a", "_b"))
    merged = merged[merged["subject_id"].isin(same["subject_id"])]
    moved = merged[merged["final_a"] != merged["final_b"]].sort_values("subject_id")
    return [
        {
            "subject_id": json_value(row["subject_id"]),
            "direction": f"{row['final_a']} -> {row['final_b']}",
            "reviewer_a": row["reviewer_a"],
            "reviewer_b": row["reviewer_b"],
            "reason_a": row["reason_a"],
            "reason_b": row["reason_b"],
        }
        for row in records(moved)
    ]
