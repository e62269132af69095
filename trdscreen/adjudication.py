"""Adjudication: human decisions as recorded inputs (`screen --adjudications FILE`).

A reviewer's decision for a named subject overrides the computed one in
`final_decision`; the computed `decision` stays beside it, with who decided, when and
why. The file (CSV or Parquet: subject_id, decision, reason, reviewer, date, and
optionally criterion) is checked whole before anything is screened: every problem is
reported with its file and line, nothing is dropped.
"""

from __future__ import annotations

import csv
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
from trdscreen.printable import printable

FINAL_DECISIONS = ("eligible", "excluded", "needs_review")
REQUIRED = ("subject_id", "decision", "reason", "reviewer", "date")
OPTIONAL = ("criterion",)
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
    # criterion, line
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
                if any(cell.strip() for cell in record):
                    rows.append((start, record))
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
        if row["decision"] not in FINAL_DECISIONS:
            problems.append(
                f"{where} column decision: expected one of {', '.join(FINAL_DECISIONS)}"
            )
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
        records.append({**row, "criterion": row.get("criterion", ""), "line": line})
    if problems:
        raise InputError(f"{path}: {len(problems)} problem(s) in the adjudications", problems)
    table = pd.DataFrame(records, columns=[*REQUIRED, "criterion", "line"])
    return Adjudications(path, sha256, table.astype({"line": np.int64}), blank)


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


def adjudicate(decisions: pd.DataFrame, adjudications: Adjudications | None) -> pd.DataFrame:
    """The decisions with the adjudication columns: `final_decision` is the reviewer's
    where one decided, else the computed decision."""
    out = decisions.copy()
    n = len(out)
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
        added = _adjudicated(out, adjudications)
    # After the decision's own columns, before any staging scores.
    at = out.columns.get_loc("reference_date") + 1
    for offset, (name, values) in enumerate(added.items()):
        out.insert(at + offset, name, values)
    return out


def _adjudicated(out: pd.DataFrame, adjudications: Adjudications) -> dict[str, object]:
    """The adjudication columns where reviewers decided some subjects."""
    computed = out["decision"].astype("str")
    n = len(out)
    by = np.full(n, "", dtype=object)
    on = np.full(n, "", dtype=object)
    reason = np.full(n, "", dtype=object)
    final = computed.to_numpy(dtype=object).copy()
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
    return {
        "final_decision": pd.Categorical(final, categories=list(FINAL_DECISIONS)),
        "adjudicated": decided,
        "adjudicated_by": pd.array(by, dtype="str"),
        "adjudicated_on": pd.array(on, dtype="str"),
        "adjudication_reason": pd.array(reason, dtype="str"),
    }


WORKLIST_COLUMNS = ("subject_id", "to_resolve", "unknown_criteria", "decision", "reason",
                    "reviewer", "date", "criterion")  # fmt: skip


def worklist(decisions: pd.DataFrame) -> pd.DataFrame:
    """The subjects still to review (final decision needs_review), with what to resolve
    and empty columns for the reviewer's decision: filled in, the file is an
    adjudication file (rows left empty are skipped as undecided)."""
    review = decisions[decisions["final_decision"].astype("str") == "needs_review"]
    out = pd.DataFrame(
        {
            "subject_id": review["subject_id"].astype("str").to_numpy(),
            "to_resolve": review["to_resolve"].fillna("").astype("str").to_numpy(),
            "unknown_criteria": review["unknown_criteria"].fillna("").astype("str").to_numpy(),
        }
    )
    for name in ("decision", "reason", "reviewer", "date", "criterion"):
        out[name] = ""
    return out[list(WORKLIST_COLUMNS)]
