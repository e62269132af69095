"""`--on-invalid quarantine`: set rejected rows aside and hold their subjects for review.

A row with an error-level validation issue is *rejected*: it cannot be read
as the contract says, so the subject's history is incomplete. Screening such
a subject on the rows that remain would decide on a truncated history, so
every subject with a rejected row (in either table) is *held*:

- all of its rows, rejected or not, go to the quarantine tables
  (`quarantine_treatments`, `quarantine_subjects`) with their source line,
  status (`rejected` or `held`), check codes and reasons, and the row's
  values as read;
- it gets the decision `needs_review` with classification `undetermined` and
  a reason naming the rejected lines; its counts are left empty, and it has
  no course or ledger rows;
- attrition shows the held subjects as their own step after `screened`.

Every other subject is screened as usual. Quarantine cannot help when an
error concerns a whole file or column (a missing column, a column of the
wrong type) or a row without a subject key (it is not known whose history it
truncates): the run then fails as under `--on-invalid fail`.

Pure: frames in, frames out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from trdscreen.coded import sorted_categories
from trdscreen.errors import InvalidInputData, UsageError
from trdscreen.io import SourceTable
from trdscreen.issues import keyless_errors

QUARANTINED = "quarantined"
META_COLUMNS = ("source_file", "source_line", "status", "checks", "reasons")
REASON_LINES_SHOWN = 3


@dataclass(frozen=True)
class Quarantine:
    held: pd.Index  # sorted ids of the subjects held for review
    reasons: np.ndarray  # reason text per held subject (aligned to `held`)
    course_rows: np.ndarray  # bool per treatments row: set aside
    subject_rows: np.ndarray  # bool per subjects row: set aside
    treatments: pd.DataFrame  # quarantine_treatments table
    subjects: pd.DataFrame  # quarantine_subjects table

    def counts(self) -> dict[str, int]:
        rejected = {
            name: int((table["status"] == "rejected").sum())
            for name, table in (("treatments", self.treatments), ("subjects", self.subjects))
        }
        return {
            "subjects_held": len(self.held),
            "treatment_rows_rejected": rejected["treatments"],
            "treatment_rows_held": len(self.treatments) - rejected["treatments"],
            "subject_rows_rejected": rejected["subjects"],
            "subject_rows_held": len(self.subjects) - rejected["subjects"],
        }


def refuse_quarantine(rejections: pd.DataFrame, issues: pd.DataFrame) -> str | None:
    """Why these errors cannot be quarantined (None when they can)."""
    whole = rejections[rejections["row"] < 0]
    if len(whole):
        checks = ", ".join(sorted(set(whole["check"])))
        return (
            f"{len(whole)} error(s) concern a whole file or column ({checks}); quarantine sets "
            "aside rows, not columns: fix these first"
        )
    keyless = keyless_errors(issues)
    if len(keyless):
        listed = keyless[keyless["line"] > 0]
        lines = ", ".join(f"{f} line {n}" for f, n in listed[["file", "line"]].head(5).values)
        return (
            f"{keyless['rows'].sum()} rejected row(s) have no usable subject key ({lines}); it is not "
            "known whose history they belong to, so no subject can be safely screened"
        )
    return None


def plan(
    treatments: SourceTable,
    subjects: SourceTable | None,
    typed_courses: pd.DataFrame,
    typed_subjects: pd.DataFrame,
    rejections: pd.DataFrame,
    issues: pd.DataFrame,
) -> Quarantine:
    """Which rows and subjects to set aside; raises InvalidInputData when it cannot."""
    why = refuse_quarantine(rejections, issues)
    if why is not None:
        raise InvalidInputData(f"--on-invalid quarantine cannot be used: {why}", issues)
    course_ids = typed_courses["subject_id"]
    subject_ids = typed_subjects["subject_id"]
    by_table = dict(iter(rejections.groupby("table")))
    none = rejections.iloc[:0]
    rejected_ids = [
        ids.iloc[by_table.get(name, none)["row"].to_numpy()].dropna().to_numpy(dtype=str)
        for name, ids in (("treatments", course_ids), ("subjects", subject_ids))
    ]
    held = pd.Index(np.unique(np.concatenate(rejected_ids)), dtype="str")
    course_rows = held.get_indexer(course_ids) >= 0
    subject_rows = held.get_indexer(subject_ids) >= 0
    q_treatments = _table(treatments, course_rows, by_table.get("treatments", none))
    q_subjects = (
        _table(subjects, subject_rows, by_table.get("subjects", none))
        if subjects is not None
        else pd.DataFrame(
            {c: pd.Series(dtype="int64" if c == "source_line" else "str") for c in META_COLUMNS}
        )
    )
    reasons = _reasons(held, issues)
    return Quarantine(held, reasons, course_rows, subject_rows, q_treatments, q_subjects)


def _join_per_key(
    keys: np.ndarray, texts: np.ndarray, sep: str, limit: int | None = None
) -> pd.Series:
    """The texts of each key joined in order (the first `limit` of them), indexed by key.

    Vectorized: one pass per position within a key (at most `limit`, or the
    largest group), never a Python call per key.
    """
    frame = pd.DataFrame({"key": keys, "text": texts})
    position = frame.groupby("key", sort=False).cumcount().to_numpy()
    width = int(position.max()) + 1 if len(frame) else 0
    first = frame[position == 0].set_index("key")["text"]
    joined = first.copy()
    for k in range(1, width if limit is None else min(width, limit)):
        part = frame[position == k].set_index("key")["text"]
        joined = joined + (sep + part).reindex(joined.index).fillna("")
    return joined


def _table(source: SourceTable, rows: np.ndarray, rejected: pd.DataFrame) -> pd.DataFrame:
    """The quarantine table of one input: its set-aside rows, as read, with why."""
    positions = np.flatnonzero(rows)
    rejected = rejected.sort_values(["row", "column", "check"], kind="stable")
    text = rejected["column"] + " " + rejected["check"] + ": " + rejected["message"]
    reasons = _join_per_key(rejected["row"].to_numpy(), text.to_numpy(dtype=object), "; ")
    distinct = rejected.drop_duplicates(["row", "check"])
    checks = _join_per_key(
        distinct["row"].to_numpy(), distinct["check"].to_numpy(dtype=object), ","
    ).reindex(positions)
    meta = pd.DataFrame(
        {
            "source_file": source.file,
            "source_line": source.lines[positions],
            "status": np.where(checks.notna().to_numpy(), "rejected", "held"),
            "checks": checks.fillna("").to_numpy(dtype=object),
            "reasons": reasons.reindex(positions)
            .fillna("not rejected itself: held because the subject has a rejected row")
            .to_numpy(dtype=object),
        }
    )
    values = source.table.take(pa.array(positions, type=pa.int64()))
    raw = {}
    for name in values.column_names:
        column = values.column(name)
        try:
            column = column.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # e.g. a nested Parquet type
            column = pa.nulls(len(column), pa.string())
        key = f"input.{name}" if name in META_COLUMNS else name
        raw[key] = pd.array(column, dtype="str")
    table = pd.concat([meta, pd.DataFrame(raw)], axis=1)
    return table.astype({c: "str" for c in META_COLUMNS if c != "source_line"})


def _reasons(held: pd.Index, issues: pd.DataFrame) -> np.ndarray:
    """'quarantined: N rejected row(s): file line L (check), ...' per held subject."""
    errors = issues[(issues["severity"] == "error") & (issues["subject_id"] != "")]
    errors = errors.drop_duplicates(["subject_id", "file", "line"])
    where = errors["file"] + " line " + errors["line"].astype(str) + " (" + errors["check"] + ")"
    ids = errors["subject_id"].to_numpy(dtype=object)
    listed = _join_per_key(ids, where.to_numpy(dtype=object), ", ", REASON_LINES_SHOWN)
    count = pd.Series(ids).value_counts().reindex(listed.index)
    more = np.where(count.to_numpy() > REASON_LINES_SHOWN, ", ...", "")
    summary = f"{QUARANTINED}: " + count.astype(str) + " rejected row(s): " + listed + more
    return summary.reindex(held).fillna(f"{QUARANTINED}: rejected rows").to_numpy(dtype=object)


def held_decisions(
    decisions: pd.DataFrame, quarantine: Quarantine, courses: pd.DataFrame
) -> pd.DataFrame:
    """The decisions table with one needs_review row per held subject, sorted by id.

    Counts of a held subject are empty (nothing was counted) except n_courses,
    the number of its course rows in the input.
    """
    held = quarantine.held
    if not len(held):
        return decisions
    n_courses = courses["subject_id"][quarantine.course_rows].value_counts().reindex(held).fillna(0)
    extra = {
        "subject_id": pd.array(held, dtype="str"),
        "decision": "needs_review",
        "classification": "undetermined",
        "reason": quarantine.reasons,
        "to_resolve": quarantine.reasons,  # the rejected rows: correct them and re-run
        "n_courses": n_courses.to_numpy(dtype=np.int64),
    }
    for name in (
        "first_failed_criterion",
        "failed_criteria",
        "unknown_criteria",
        "near_miss_criteria",
        "assumptions",
    ):
        extra[name] = ""
    rows = pd.DataFrame(extra)
    merged = pd.concat([decisions, rows], ignore_index=True)
    for name, dtype in decisions.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype):
            added = set(rows[name].dropna()) - set(dtype.categories) if name in rows else set()
            if added:  # texts of held rows: sorted in (fixed vocabularies never get here)
                dtype = sorted_categories({*dtype.categories, *added})
            merged[name] = pd.Categorical(merged[name].astype(str), dtype=dtype)
        elif dtype == np.int64 and name not in rows.columns:
            merged[name] = merged[name].astype("Int64")  # empty for held subjects
        else:
            merged[name] = merged[name].astype(dtype)
    return merged.sort_values("subject_id", kind="stable").reset_index(drop=True)


def held_attrition(attrition: pd.DataFrame, n_held: int) -> pd.DataFrame:
    """Attrition with the held subjects as step 1, right after `screened`."""
    table = attrition.copy()
    table.loc[table["step"] == 0, "remaining"] += n_held
    table.loc[table["step"] > 0, "step"] += 1
    step = pd.DataFrame(
        {
            "step": [1],
            "criterion_id": [""],
            "title": [f"{QUARANTINED}: rows rejected by validation (decision needs_review)"],
            "excluded_at_step": [n_held],
            "remaining": [int(table.loc[table["step"] == 0, "remaining"].iloc[0]) - n_held],
            "not_met_total": [0],
            "unknown_total": [0],
            "excluded_only_by_this": [0],
            "with_assumptions": [0],
        }
    )
    merged = pd.concat([table.iloc[:1], step, table.iloc[1:]], ignore_index=True)
    return merged.astype(attrition.dtypes.to_dict())


def without_held_step(attrition: pd.DataFrame, quarantine: Quarantine) -> pd.DataFrame:
    """`held_attrition` undone: the table as if no subject had been held (used to add up
    the attrition of several partitions before adding the step once)."""
    n_held = len(quarantine.held)
    table = attrition[attrition["step"] != 1].reset_index(drop=True)
    table.loc[table["step"] == 0, "remaining"] -= n_held
    table.loc[table["step"] > 1, "step"] -= 1
    return table.astype(attrition.dtypes.to_dict())


def parse_limit(text: str) -> tuple[float, bool]:
    """`--max-quarantine N` (subjects) or `P%` (of the subjects screened): (value, is
    percent). UsageError for anything else."""
    raw = text.strip()
    percent = raw.endswith("%")
    number = raw[:-1].strip() if percent else raw
    try:
        value = float(number) if percent else int(number)
    except ValueError:
        value = -1
    if value < 0 or (percent and value > 100) or value != value:
        raise UsageError(
            f"--max-quarantine {text!r}: expected a number of subjects (e.g. 10) or a "
            "percentage of the subjects screened (e.g. 2%)"
        )
    return float(value), percent


def over_limit(held: int, total: int, limit: str | None) -> str | None:
    """Why holding `held` of `total` subjects is more than `--max-quarantine` allows
    (None when within it, or when there is no limit)."""
    if limit is None:
        return None
    value, percent = parse_limit(limit)
    share = 100 * held / total if total else 0.0
    if (share if percent else held) <= value:
        return None
    return (
        f"--max-quarantine {limit}: {held} of {total} subject(s) ({share:.1f}%) would be held "
        "for review, more than the limit; the run stops as with --on-invalid fail"
    )
