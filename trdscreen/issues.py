"""The validation-issues table: its columns, the log that collects it, and its cap.

Validation (`schemas`, `validate`) logs every input problem here as vectorized
blocks, with file, line, column, check and subject key but no patient values.
Each file, column and check lists its first `ISSUE_CAP` issues; the rest are one
summary row whose `rows` says how many, so memory and the table stay small while
every count (`issue_counts`) still includes every issue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    from trdscreen.io import SourceTable

ISSUE_COLUMNS = ["severity", "file", "line", "column", "check", "subject_id", "message", "rows"]
ISSUE_CAP = 1000
"""Issues listed per file, column and check (those on the first lines); the rest of the
group is one summary row whose `rows` says how many were not listed. Counts always
include every issue (`issue_counts` sums `rows`)."""
NOT_LISTED = "not listed: "
"""How a summary row's message starts."""
KEYLESS = "without a subject key"
"""In a summary row's message: the rows it stands for have no subject key (such errors
stop a quarantine, so they are counted apart from the rows that have one)."""


def is_summary(issues: pd.DataFrame) -> pd.Series:
    """The summary rows of capped groups (`cap_issues`)."""
    return issues["message"].str.startswith(NOT_LISTED)


def _keyless(issues: pd.DataFrame, summary: pd.Series) -> pd.Series:
    """Rows without a subject key: listed ones, and summary rows that stand for such rows."""
    stands_for = ~summary | issues["message"].str.contains(KEYLESS, regex=False)
    return (issues["subject_id"] == "") & stands_for


def keyless_errors(issues: pd.DataFrame) -> pd.DataFrame:
    """Error rows without a subject key, listed or summarized (their `rows` add up)."""
    keyless = _keyless(issues, is_summary(issues))
    return issues[(issues["severity"] == "error") & keyless]


def empty_issues() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "severity": pd.Series(dtype="str"),
            "file": pd.Series(dtype="str"),
            "line": pd.Series(dtype="int64"),
            "column": pd.Series(dtype="str"),
            "check": pd.Series(dtype="str"),
            "subject_id": pd.Series(dtype="str"),
            "message": pd.Series(dtype="str"),
            "rows": pd.Series(dtype="int64"),
        }
    )


def issue_counts(issues: pd.DataFrame) -> dict[str, int]:
    """Issues per severity, most frequent first (the counts in summaries and the audit log)."""
    totals = issues.groupby("severity", sort=False)["rows"].sum()
    order = sorted(totals.items(), key=lambda item: (-item[1], str(item[0])))
    return {str(k): int(v) for k, v in order if v}


_GROUP = ["file", "column", "check", "severity", "keyless"]


def cap_issues(issues: pd.DataFrame, cap: int = ISSUE_CAP) -> pd.DataFrame:
    """At most `cap` listed issues per file, column and check (the first lines), and one
    summary row for the rest. Capping parts and then their concatenation lists the
    same issues as capping the whole, so streamed and Dask runs agree."""
    if len(issues) <= cap:
        return issues
    summary = is_summary(issues)
    issues = issues.assign(keyless=_keyless(issues, summary))
    summary = summary.to_numpy()
    real = issues[~summary].sort_values([*_GROUP, "line"], kind="stable")
    rank = real.groupby(_GROUP, sort=False).cumcount().to_numpy()
    if not (rank >= cap).any() and not summary.any():
        return issues.drop(columns="keyless")
    dropped = real[rank >= cap]
    more = pd.concat(
        [dropped.groupby(_GROUP)["rows"].sum(), issues[summary].groupby(_GROUP)["rows"].sum()]
    )
    more = more.groupby(level=list(range(len(_GROUP)))).sum().reset_index()
    rows = pd.DataFrame(
        {
            "severity": more["severity"],
            "file": more["file"],
            "line": 0,
            "column": more["column"],
            "check": more["check"],
            "subject_id": "",
            "message": NOT_LISTED
            + more["rows"].astype(str)
            + np.where(more["keyless"], f" more row(s) {KEYLESS}", " more row(s)")
            + f" with this check; the first {cap} are listed",
            "rows": more["rows"].astype("int64"),
        }
    )
    kept = real[rank < cap].drop(columns="keyless")
    table = pd.concat([kept, rows], ignore_index=True)
    table = table.astype({c: "str" for c in ISSUE_COLUMNS if c not in ("line", "rows")})
    return sorted_issues(table.astype({"line": "int64", "rows": "int64"}))


def _capped(block: pd.DataFrame, cap: int = ISSUE_CAP) -> pd.DataFrame:
    """One add's rows (one file, column, check and severity) capped as `cap_issues` caps
    them: the first `cap` lines with a subject key and the first `cap` without, and a
    summary row for the rest of each. `cap_issues` on the log's blocks then gives what
    capping every row would: a chunk of a million rows with a warning on each no longer
    builds, sorts and groups a million issue rows to keep a thousand."""
    keyless = (block["subject_id"] == "").to_numpy()
    lines = block["line"].to_numpy()
    parts = []
    for without_key in (False, True):
        at = np.flatnonzero(keyless == without_key)
        if len(at) <= cap:
            parts.append(block.iloc[at])
            continue
        at = at[np.argsort(lines[at], kind="stable")]
        parts.append(block.iloc[at[:cap]])
        rest = len(at) - cap
        parts.append(
            block.iloc[at[:1]].assign(
                line=0,
                subject_id="",
                message=NOT_LISTED
                + str(rest)
                + (f" more row(s) {KEYLESS}" if without_key else " more row(s)")
                + f" with this check; the first {cap} are listed",
                rows=rest,
            )
        )
    return pd.concat(parts, ignore_index=True)


REJECTION_COLUMNS = ["table", "row", "column", "check", "message"]


class IssueLog:
    """Collects issue rows as vectorized blocks; never holds patient values.

    Besides the issues table it keeps, for error-level issues, the input table
    and row position they concern (`rejections`): what `--on-invalid
    quarantine` sets aside.
    """

    def __init__(self) -> None:
        self._blocks: list[pd.DataFrame] = []
        self._rejections: list[pd.DataFrame] = []
        self.unconverted: dict[tuple[str, str], np.ndarray] = {}
        """Rows per (table, column) whose cell could not be converted (already reported)."""

    def add_duplicates(
        self, source: SourceTable, codes: np.ndarray, ids: pd.Series, column: str = "subject_id"
    ) -> None:
        """An error on every row whose key (`codes`, one per row; -1: none) another row has
        too, naming the first line of that key: a subject given twice has no one reference
        date, age or screening score."""
        twice = pd.Series(codes).duplicated(keep=False).to_numpy() & (codes >= 0)
        if twice.any():
            first = pd.Series(source.lines).groupby(codes).transform("min").to_numpy()
            message = f"{column} appears more than once; first at line " + first.astype(str)
            self.add(
                source, np.flatnonzero(twice), column, "duplicate_subject", message[twice], ids
            )

    def add(
        self,
        source: SourceTable | None,
        rows: np.ndarray | None,
        column: str,
        check: str,
        message: str | pd.Series | np.ndarray,
        subject_ids: pd.Series | None = None,
        severity: str = "error",
        file: str | None = None,
    ) -> None:
        """Record one issue per row position in `rows` (or one file-level issue)."""
        if rows is None:
            block = pd.DataFrame(
                {
                    "severity": [severity],
                    "file": [file or (source.file if source else "")],
                    "line": [0],
                    "column": [column],
                    "check": [check],
                    "subject_id": [""],
                    "message": [message],
                    "rows": [1],
                }
            )
        else:
            rows = np.asarray(rows, dtype=np.int64)
            if rows.size == 0:
                return
            assert source is not None, "row issues need the table the rows belong to"
            ids = (
                subject_ids.iloc[rows].fillna("").to_numpy(dtype=object)
                if subject_ids is not None
                else np.full(rows.size, "", dtype=object)
            )
            if isinstance(message, pd.Series):  # over all rows: picked by position
                messages = message.iloc[rows].to_numpy(dtype=object)
            else:  # one text, or an array with one text per entry of `rows`
                messages = message
            block = pd.DataFrame(
                {
                    "severity": severity,
                    "file": file or source.file,
                    "line": source.lines[rows],
                    "column": column,
                    "check": check,
                    "subject_id": ids,
                    "message": messages,
                    "rows": 1,
                }
            )
        self._blocks.append(
            _capped(block) if severity != "error" and len(block) > ISSUE_CAP else block
        )
        if severity == "error":
            table = source.name if source is not None else ""
            positions = np.asarray(rows, dtype=np.int64) if rows is not None else np.array([-1])
            self._rejections.append(
                pd.DataFrame(
                    {
                        "table": table,
                        "row": positions,
                        "column": column,
                        "check": check,
                        "message": block["message"].to_numpy(dtype=object),
                    }
                )
            )

    def rejections(self) -> pd.DataFrame:
        """Error-level issues by input table and row position (-1: the whole file)."""
        if not self._rejections:
            return pd.DataFrame(
                {c: pd.Series(dtype="int64" if c == "row" else "str") for c in REJECTION_COLUMNS}
            )
        frame = pd.concat(self._rejections, ignore_index=True)
        return frame.astype({c: "str" for c in REJECTION_COLUMNS if c != "row"})

    def frame(self) -> pd.DataFrame:
        if not self._blocks:
            return empty_issues()
        issues = pd.concat(self._blocks, ignore_index=True)
        text = {c: "str" for c in ISSUE_COLUMNS if c not in ("line", "rows")}
        issues = issues.astype(text | {"line": "int64", "rows": "int64"})
        if _capped_already(self._blocks):  # capping again would only sort them
            return sorted_issues(issues)
        return cap_issues(sorted_issues(issues))


def _capped_already(blocks: list[pd.DataFrame], cap: int = ISSUE_CAP) -> bool:
    """Whether `cap_issues` on the blocks' rows would give them back, sorted: each block
    (one file, column, check and severity, as `IssueLog.add` makes it) has a file, column
    and check no other block has, at most `cap` listed rows with a subject key and `cap`
    without, and at most one summary row of each (what `_capped` leaves). Capping a
    chunk's few thousand issues again cost tens of milliseconds of small-frame work."""
    seen = set()
    for block in blocks:
        group = (block["file"].iat[0], block["column"].iat[0], block["check"].iat[0])
        if group in seen:
            return False
        seen.add(group)
        if len(block) <= cap:  # fewer rows than a cap leaves: nothing capped, no summary
            if is_summary(block).any():
                return False
            continue
        summary = is_summary(block).to_numpy()
        keyless = (block["subject_id"] == "").to_numpy()
        if (~summary & keyless).sum() > cap or (~summary & ~keyless).sum() > cap:
            return False
        summaries = block["message"][summary]
        stands_keyless = summaries.str.contains(KEYLESS, regex=False).to_numpy()
        if stands_keyless.sum() > 1 or (~stands_keyless).sum() > 1:
            return False
    return True


def sorted_issues(issues: pd.DataFrame) -> pd.DataFrame:
    """Issues in the order they are written: by file, line, column and check."""
    return issues.sort_values(["file", "line", "column", "check"], kind="stable").reset_index(
        drop=True
    )
