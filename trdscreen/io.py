"""Reading inputs and writing run folders. The only module that touches files.

Readers return every column as read (CSV cells as text) together with the
1-based source line of each row, so any later problem can be pointed at by
file and line. Typing and validation happen in `trdscreen.schemas`.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trdscreen.errors import InputError, OutputExistsError, RuleError

NULL_TOKENS = ["", "NA", "N/A", "NULL", "null", "NaN", "nan", "None"]
"""CSV cells read as missing. Documented in the README."""

_CHUNK = 1 << 22


@dataclass(frozen=True)
class SourceTable:
    """One input table as read: canonical column names, raw values, source lines."""

    name: str  # "treatments" or "subjects"
    path: Path
    fmt: str  # "csv" or "parquet"
    table: pa.Table
    lines: np.ndarray  # int64, 1-based line (CSV) or row (Parquet) of each row
    sha256: str
    size: int

    @property
    def file(self) -> str:
        return self.path.name


def find_inputs(path: Path, subjects: Path | None) -> tuple[Path, Path | None]:
    """Resolve INPUT (a treatments file, or a folder with treatments.* / subjects.*)."""
    path = Path(path)
    if path.is_dir():
        treatments = _one_of(path, "treatments")
        if treatments is None:
            raise InputError(
                f"{path}: folder has no treatments.csv or treatments.parquet; "
                "name the treatments file directly or rename it"
            )
        if subjects is None:
            subjects = _one_of(path, "subjects")
        return treatments, subjects
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return path, subjects


def _one_of(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}{ext}" for ext in (".csv", ".parquet", ".pq")]
    found = [p for p in found if p.exists()]
    if len(found) > 1:
        raise InputError(
            f"{folder}: both {found[0].name} and {found[1].name} exist; keep one or name it"
        )
    return found[0] if found else None


def _file_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    raise InputError(f"{path}: unknown file type {suffix!r}; expected .csv or .parquet")


def _hash_and_count_newlines(path: Path) -> tuple[str, int, int, bool]:
    digest = hashlib.sha256()
    newlines = 0
    size = 0
    last = b""
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    return digest.hexdigest(), newlines, size, last == b"\n"


def read_source(path: Path, name: str, rename: dict[str, str], canonical: set[str]) -> SourceTable:
    """Read one input table; rename site headers to canonical names.

    `rename` maps site headers to canonical names (the rule set's `columns:`
    section or `--map`). A header that differs from a canonical name only in
    case or surrounding spaces is matched too.
    """
    path = Path(path)
    fmt = _file_format(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        sha, newlines, size, ends_with_newline = _hash_and_count_newlines(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise InputError(f"{path}: the file is empty; expected a header line and data rows")
    if fmt == "parquet":
        table = _read_parquet(path)
        lines = np.arange(1, table.num_rows + 1, dtype=np.int64)
    else:
        table = _read_csv(path)
        total_lines = newlines + (0 if ends_with_newline else 1)
        if total_lines == table.num_rows + 1:
            lines = np.arange(2, table.num_rows + 2, dtype=np.int64)
        else:  # quoted line breaks or blank lines: count lines exactly (rare, slower)
            lines = _csv_record_lines(path, table.num_rows)
    table = _rename(table, path, rename, canonical)
    return SourceTable(name, path, fmt, table, lines, sha, size)


def _read_parquet(path: Path) -> pa.Table:
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        reason = "not a readable Parquet file" if isinstance(exc, pa.ArrowInvalid) else str(exc)
        raise InputError(f"{path}: {reason}") from None


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle), [])
    except UnicodeDecodeError:
        raise InputError(
            f"{path}: not UTF-8 text (tried UTF-8); re-export the file as UTF-8"
        ) from None


def _read_csv(path: Path) -> pa.Table:
    header = [h.strip() for h in _csv_header(path)]
    if not any(header):
        raise InputError(f"{path}: the first line is empty; expected a header line")
    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(
                column_names=[f"__c{i}" for i in range(len(header))], skip_rows=1
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={f"__c{i}": pa.string() for i in range(len(header))},
                null_values=NULL_TOKENS,
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        ).rename_columns(header)
    except pa.ArrowInvalid as exc:
        # Arrow's message quotes the offending row: keep only its position.
        raise InputError(f"{path}: {_safe_csv_error(str(exc))}") from None


def _safe_csv_error(message: str) -> str:
    first = message.splitlines()[0]
    if "Expected" in first and "columns" in first:
        return (
            "a row has a different number of fields than the header "
            "(wrong delimiter, a stray comma, or broken quoting); expected comma-separated UTF-8"
        )
    if "UTF8" in first or "utf8" in first.lower():
        return "not UTF-8 text (tried UTF-8); re-export the file as UTF-8"
    return "cannot be parsed as CSV (expected comma-separated UTF-8 with a header line)"


def _csv_record_lines(path: Path, n_rows: int) -> np.ndarray:
    """First line of each CSV record, counting quoted line breaks (exact, slow path)."""
    lines = np.empty(n_rows, dtype=np.int64)
    with open(path, encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        start = reader.line_num + 1
        i = 0
        for record in reader:
            if record and i < n_rows:
                lines[i] = start
                i += 1
            start = reader.line_num + 1
    if i != n_rows:  # pragma: no cover - the two parsers disagree
        raise InputError(f"{path}: could not match CSV records to lines; check quoting")
    return lines


def _rename(table: pa.Table, path: Path, rename: dict[str, str], canonical: set[str]) -> pa.Table:
    names = []
    for header in table.column_names:
        key = header.strip()
        if key in rename:
            names.append(rename[key])
        elif key.lower() in canonical:
            names.append(key.lower())
        else:
            names.append(key)
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    duplicates = sorted(n for n, count in seen.items() if count > 1)
    if duplicates:
        raise InputError(
            f"{path}: duplicate column names after mapping: {', '.join(duplicates)}; "
            "each column may appear once"
        )
    return table.rename_columns(names)


def read_config_file(path: Path, what: str, max_bytes: int | None = None) -> tuple[str, str]:
    """Text and SHA-256 of a rule file, column map or formulary; RuleError names the file."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise RuleError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if max_bytes is not None and len(raw) > max_bytes:
        raise RuleError(f"{path}: the {what} is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RuleError(f"{path}: the {what} is not UTF-8 text") from None
    return text, hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- output


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def prepare_out_dir(out: Path, force: bool) -> None:
    """Refuse an existing non-empty folder unless `force`."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(
            f"{out}: folder exists and is not empty; choose another --out or pass --force"
        )


@contextmanager
def atomic_folder(out: Path, force: bool) -> Iterator[Path]:
    """Write a run folder atomically: into a hidden sibling, renamed at the end.

    If the body raises, the temporary folder is removed and `out` is untouched.
    """
    out = Path(out)
    prepare_out_dir(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            backup = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, backup)
            os.replace(tmp, out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


Writer = Callable[[pa.Table, Path], None]


def write_csv(table: pa.Table, path: Path) -> None:
    pacsv.write_csv(table, path, write_options=pacsv.WriteOptions(include_header=True))


def write_parquet(table: pa.Table, path: Path) -> None:
    # Fixed options so that re-runs give identical bytes.
    pq.write_table(
        table,
        path,
        compression="zstd",
        use_dictionary=True,
        write_statistics=True,
        store_schema=True,
        row_group_size=1 << 20,
    )


WRITERS: dict[str, tuple[str, Writer]] = {
    "csv": (".csv", write_csv),
    "parquet": (".parquet", write_parquet),
}
