"""Adjudication: human decisions as recorded inputs (`screen --adjudications FILE`).

A reviewer's decision for a named subject overrides the computed one in
`final_decision`; the computed `decision` stays beside it, with who decided, when and
why. The file (CSV or Parquet: subject_id, decision, reason, reviewer, date, and
optionally criterion) is checked whole before anything is screened: every problem is
reported with its file and line, nothing is dropped.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.columns import repeated_text
from trdscreen.conventions import text_as_read
from trdscreen.errors import InputError
from trdscreen.printable import printable, unmarked

FINAL_DECISIONS = ("eligible", "excluded", "needs_review")
REQUIRED = ("subject_id", "decision", "reason", "reviewer", "date")
QUESTION = ("computed_decision", "unknown_criteria", "failed_criteria", "to_resolve")
"""What the reviewer was asked (a worklist writes all four): an `eligible` whose question
has changed since is held (`_held`)."""
OPTIONAL = ("criterion", *QUESTION)
ADJUDICATION_COLUMNS = (
    "final_decision",
    "adjudicated",
    "adjudicated_by",
    "adjudicated_on",
    "adjudication_reason",
)
"""Columns every decisions table has (empty unless a reviewer decided the subject)."""
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class Adjudications:
    """A checked adjudication file: one row per subject, with its source line."""

    path: Path
    sha256: str
    table: pd.DataFrame = field(repr=False)  # subject_id, decision, reason, reviewer, date,
    # criterion, computed_decision ("": not recorded), unknown_criteria and
    # failed_criteria (None: not recorded), line
    blank: int = 0  # rows with no decision, reason or reviewer (an unfilled worklist row)

    @property
    def rows(self) -> int:
        return len(self.table)


def _cells(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line, cells) of a CSV or Parquet adjudication file, all as text."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception:  # noqa: BLE001 - any unreadable file, named
            raise InputError(f"{path}: not a readable Parquet file") from None
        names = table.column_names
        columns = [
            ["" if v is None else str(v) for v in table.column(n).to_pylist()] for n in names
        ]
        return names, [(i + 1, list(row)) for i, row in enumerate(zip(*columns, strict=True))]
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, [])
            rows = []
            start = reader.line_num + 1
            for record in reader:
                if any(cell.strip() for cell in record):  # unmarked: as a worklist wrote it
                    rows.append((start, [unmarked(cell) for cell in record]))
                start = reader.line_num + 1
                if len(rows) > MAX_ROWS:
                    raise InputError(f"{path}: more than {MAX_ROWS} adjudications")
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot be read as UTF-8 CSV ({type(exc).__name__})") from None
    return [h.strip() for h in header], rows


def read_adjudications(path: Path, sha256: str) -> Adjudications:
    """The adjudication file, checked: InputError listing every problem by line."""
    path = Path(path)
    header, rows = _cells(path)
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise InputError(
            f"{path}: line 1: columns {', '.join(missing)} missing; expected "
            f"{', '.join(REQUIRED)} (and optionally criterion)"
        )
    at = {name: header.index(name) for name in (*REQUIRED, *OPTIONAL) if name in header}
    problems: list[str] = []
    records = []
    first_line: dict[str, int] = {}
    blank = 0
    for line, cells in rows:
        if len(cells) == len(header) and not any(
            cells[at[name]].strip() for name in ("decision", "reason", "reviewer")
        ):
            blank += 1  # a worklist row nobody filled in: no decision was made
            continue
        if len(cells) != len(header):
            problems.append(
                f"{path}:{line}: the row has {len(cells)} fields, the header {len(header)}"
            )
            continue
        row = {name: cells[index].strip() for name, index in at.items()}
        where = f"{path}:{line}"
        for name in ("subject_id", "reason", "reviewer"):
            if not row[name]:
                problems.append(f"{where} column {name}: empty; every adjudication names the "
                                "subject, the reviewer and the reason")  # fmt: skip
        expected = f"expected one of {', '.join(FINAL_DECISIONS)}"
        if row["decision"] not in FINAL_DECISIONS:
            problems.append(f"{where} column decision: {expected}")
        if row.get("computed_decision", "") not in ("", *FINAL_DECISIONS):
            problems.append(f"{where} column computed_decision: {expected}")
        try:
            row["date"] = date.fromisoformat(row["date"]).isoformat()
        except ValueError:
            problems.append(f"{where} column date: expected an ISO date YYYY-MM-DD")
        subject = row["subject_id"]
        if subject and subject in first_line:
            problems.append(
                f"{where} column subject_id: {printable(subject)} is adjudicated again (first on "
                f"line {first_line[subject]}); one decision per subject"
            )
        elif subject:
            first_line[subject] = line
        records.append({**row, **_question(row, header), "line": line})
    if problems:
        raise InputError(f"{path}: {len(problems)} problem(s) in the adjudications", problems)
    table = pd.DataFrame(records, columns=[*REQUIRED, *OPTIONAL, "line"])
    return Adjudications(path, sha256, table.astype({"line": np.int64}), blank)


def _question(row: dict[str, str], header: list[str]) -> dict[str, str | None]:
    """The criterion and what the reviewer was asked, as recorded in the row. A worklist
    written before `computed_decision` was (it has `to_resolve` and `unknown_criteria`)
    listed subjects to review: their computed decision was needs_review."""
    computed = row.get("computed_decision", "")
    if (
        not computed
        and "computed_decision" not in header
        and {"to_resolve", "unknown_criteria"}.issubset(header)
    ):
        computed = "needs_review"
    return {
        "criterion": row.get("criterion", ""),
        "computed_decision": computed,
        "unknown_criteria": row.get("unknown_criteria"),
        "failed_criteria": row.get("failed_criteria"),
        "to_resolve": row.get("to_resolve") or None,  # empty: not recorded
    }


def unknown_subjects(adjudications: Adjudications, keys: list[pa.ChunkedArray]) -> None:
    """InputError naming the adjudicated subjects in none of the key columns `keys` (read
    as validation reads them: trimmed). The few adjudicated ids are looked up in each
    column's hash set; the columns are never sorted or copied to Python."""
    table = adjudications.table
    ids = pa.array(table["subject_id"].tolist(), pa.string())
    found = np.zeros(len(ids), dtype=bool)
    for key in keys:
        values = text_as_read(key)
        whole = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
        found |= pc.is_in(ids, value_set=whole).to_numpy(zero_copy_only=False)
    absent = table[~found]
    if len(absent):
        raise InputError(
            f"{adjudications.path}: {len(absent)} adjudicated subject(s) not in the inputs",
            [
                f"{adjudications.path}:{line} column subject_id: {printable(s)} is in neither "
                "the treatments nor the subjects table"
                for s, line in zip(absent["subject_id"], absent["line"], strict=True)
            ],
        )


def adjudicate(
    decisions: pd.DataFrame, adjudications: Adjudications | None
) -> tuple[pd.DataFrame, int]:
    """The decisions with the adjudication columns (`final_decision` is the reviewer's
    where one decided, else the computed decision) and how many reviewers' `eligible`
    were held because their question changed (`_held`)."""
    out = decisions.copy()
    n = len(out)
    held = 0
    if adjudications is None or not n:  # no reviewer: the computed decision, no per-row text
        computed = out["decision"]
        final = (
            computed.cat.set_categories(list(FINAL_DECISIONS)).array
            if isinstance(computed.dtype, pd.CategoricalDtype)
            else pd.Categorical(computed.astype("str"), categories=list(FINAL_DECISIONS))
        )
        added = {
            "final_decision": final,
            "adjudicated": np.zeros(n, dtype=bool),
            "adjudicated_by": repeated_text("", n),
            "adjudicated_on": repeated_text("", n),
            "adjudication_reason": repeated_text("", n),
        }
    else:
        added, held = _adjudicated(out, adjudications)
        _say_what_to_resolve(out, added)
    # After the decision's own columns, before any staging scores.
    at = out.columns.get_loc("reference_date") + 1
    for offset, (name, values) in enumerate(added.items()):
        out.insert(at + offset, name, values)
    return out, held


def _adjudicated(out: pd.DataFrame, adjudications: Adjudications) -> tuple[dict[str, object], int]:
    """The adjudication columns where reviewers decided some subjects, and how many
    reviewers' eligible were held."""
    computed = out["decision"].astype("str").to_numpy(dtype=object)
    n = len(out)
    by = np.full(n, "", dtype=object)
    on = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)
    final = computed.copy()
    table = adjudications.table.set_index("subject_id")
    rows = table.reindex(out["subject_id"].astype("str"))
    decided = rows["decision"].notna().to_numpy()
    final[decided] = rows["decision"].to_numpy(dtype=object)[decided]
    by[decided] = rows["reviewer"].to_numpy(dtype=object)[decided]
    on[decided] = rows["date"].to_numpy(dtype=object)[decided]
    criterion = rows["criterion"].fillna("").to_numpy(dtype=object)
    text = rows["reason"].fillna("").to_numpy(dtype=object)
    with_criterion = decided & (criterion != "")
    reason[decided] = text[decided]
    reason[with_criterion] = criterion[with_criterion] + ": " + text[with_criterion]
    held = 0
    for at, why in _held(out, rows, decided & (final == "eligible") & (computed != "eligible")):
        final[at] = "needs_review"
        reason[at] = f"{why}. Reviewer's reason: {reason[at]}"
        held += 1
    return {
        "final_decision": pd.Categorical(final, categories=list(FINAL_DECISIONS)),
        "adjudicated": decided,
        "adjudicated_by": pd.array(by, dtype="str"),
        "adjudicated_on": pd.array(on, dtype="str"),
        "adjudication_reason": pd.array(reason, dtype="str"),
    }, held


HELD_TO_RESOLVE = (
    "see adjudication_reason: a reviewer put this subject in review, or their eligible was "
    "held because the question changed"
)


def _say_what_to_resolve(out: pd.DataFrame, added: dict[str, object]) -> None:
    """A subject a reviewer left or put in review (or whose eligible was held) with
    nothing to resolve computed (its computed decision was eligible or excluded): its
    `to_resolve` points at the adjudication, so no needs_review row is left blank."""
    final = np.asarray(added["final_decision"], dtype=object)
    adjudicated = np.asarray(added["adjudicated"], dtype=bool)
    current = out["to_resolve"].fillna("").astype("str").to_numpy(dtype=object)
    blank = adjudicated & (final == "needs_review") & (current == "")
    if blank.any():
        current[blank] = HELD_TO_RESOLVE
        out["to_resolve"] = pd.array(current, dtype="str")


def _held(
    out: pd.DataFrame, rows: pd.DataFrame, candidates: np.ndarray
) -> Iterator[tuple[int, str]]:
    """(row, why) of each reviewer's `eligible` among `candidates` (computed decision not
    eligible) whose question has changed since the review: the computed decision differs
    from the one recorded with it, or a criterion is unknown, or not met, now that was
    not then, or the subject still needs review for another fact than the recorded
    `to_resolve` (`same_fact`: a criterion can stay unknown for another course). The
    reviewer answered another question; the subject goes back to review. Adjudications that record no question (a hand-written file without the QUESTION
    columns) stand as written. Few rows: the adjudicated ones only."""
    computed = out["decision"].astype("str").to_numpy(dtype=object)
    asked = rows["computed_decision"].fillna("").to_numpy(dtype=object)
    now = {c: out[c].fillna("").astype("str").to_numpy(dtype=object) for c in CRITERIA_LISTS}
    then = {c: rows[c].to_numpy(dtype=object) for c in CRITERIA_LISTS}
    fact_now = out["to_resolve"].fillna("").astype("str").to_numpy(dtype=object)
    fact_then = rows["to_resolve"].to_numpy(dtype=object)
    for at in np.flatnonzero(candidates).tolist():
        recorded = {c: None if pd.isna(then[c][at]) else str(then[c][at]) for c in then}
        grown = any(
            text is not None and not _criteria(now[c][at]) <= _criteria(text)
            for c, text in recorded.items()
        )
        fact = None if pd.isna(fact_then[at]) else str(fact_then[at])
        moved = (
            fact is not None
            and computed[at] == "needs_review"
            and not same_fact(fact, fact_now[at])
        )
        if (asked[at] and asked[at] != computed[at]) or grown or moved:
            was = "; ".join(f"{CRITERIA_LISTS[c]}: {_named(recorded[c])}" for c in then)
            is_ = "; ".join(f"{CRITERIA_LISTS[c]}: {_named(now[c][at])}" for c in now)
            if moved:
                was += f"; to resolve: {fact}"
                is_ += f"; to resolve: {fact_now[at]}"
            yield (
                at,
                "held for review: eligible was decided when the computed decision was "
                f"{asked[at] or 'not recorded'} ({was}); it is now {computed[at]} ({is_})",
            )


COURSE_FACT = re.compile(
    r"^(?P<file>.*?) (?P<unit>line|row) (?P<line>\d+) (?P<course>\(.* from \d{4}-\d{2}-\d{2}\)): "
)
"""A course's fact in `to_resolve` (`toresolve._facts`): file, line (a Parquet file's
row), then the course by drug and start: "treatments.csv line 57 (sertraline from
2023-04-10): daily_dose_mg missing"."""


def same_fact(then: str, now: str) -> bool:
    """Whether the fact to resolve a reviewer was shown (`then`) is the one a run shows
    now. A course's fact is the same course and the same fact wherever its line moved (a
    later export with rows added before it); the same line is not enough, since another
    course may have taken it. A fact recorded without the course's drug and start (a
    worklist before 0.9.0) is compared with its line, as it was written."""
    then, now = then.strip(), now.strip()
    if COURSE_FACT.match(then):
        return COURSE_FACT.sub(_without_line, then) == COURSE_FACT.sub(_without_line, now)
    return then == COURSE_FACT.sub(_as_before, now)


def _without_line(match: re.Match[str]) -> str:
    return f"{match['file']} {match['unit']} {match['course']}: "


def _as_before(match: re.Match[str]) -> str:
    """A course's fact as worklists before 0.9.0 wrote it: file and line, no course."""
    return f"{match['file']} {match['unit']} {match['line']}: "


CRITERIA_LISTS = {"unknown_criteria": "unknown", "failed_criteria": "not met"}
"""The decision's criteria lists a reviewer's question records, as the reason names them."""


def _criteria(text: str) -> set[str]:
    return {c.strip() for c in text.split(";") if c.strip()}


def _named(criteria: str | None) -> str:
    if criteria is None:
        return "not recorded"
    return ";".join(c.strip() for c in criteria.split(";") if c.strip()) or "none"


WORKLIST_COLUMNS = ("subject_id", "to_resolve", "unknown_criteria", "decision", "reason",
                    "reviewer", "date", "criterion", "computed_decision",
                    "computed_reason", "failed_criteria")  # fmt: skip
"""The columns of 0.8.6 in their places (a pipeline reading them by position still
can), then the question the reviewer answers."""
WORKLIST_MARK = b"unknown_criteria,decision,reason,reviewer,date,criterion"
"""In the header of every worklist trdscreen writes (and wrote before computed_decision)."""
REVIEWER_COLUMNS = ("decision", "reason", "reviewer", "date", "criterion")


def worklist(decisions: pd.DataFrame) -> pd.DataFrame:
    """The subjects still to review (final decision needs_review), with the computed
    decision and reason, what to resolve, and empty columns for the reviewer's decision:
    filled in, the file is an adjudication file (rows left empty are skipped as
    undecided). The computed decision and unknown criteria it records are the question
    the reviewer answers: an `eligible` answer is held if they have changed by the run
    it is applied to (`_held`)."""
    review = decisions[decisions["final_decision"].astype("str") == "needs_review"]

    def text(name: str) -> np.ndarray:
        return review[name].fillna("").astype("str").to_numpy()

    out = pd.DataFrame(
        {
            "subject_id": text("subject_id"),
            "computed_decision": text("decision"),
            "computed_reason": text("reason"),
            "to_resolve": text("to_resolve"),
            "unknown_criteria": text("unknown_criteria"),
            "failed_criteria": text("failed_criteria"),
        }
    )
    for name in REVIEWER_COLUMNS:
        out[name] = ""
    return out[list(WORKLIST_COLUMNS)]


def filled_rows(path: Path) -> int:
    """Rows of a worklist CSV where a reviewer wrote a decision, reason, reviewer, date
    or criterion (0 for an unreadable file: the caller's own checks name it)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [h.strip() for h in next(reader, [])]
            at = [header.index(c) for c in REVIEWER_COLUMNS if c in header]
            return sum(any(i < len(row) and row[i].strip() for i in at) for row in reader)
    except (OSError, UnicodeDecodeError, csv.Error):
        return 0
