"""Reading inputs: hashed, their format and header checked, rows with source lines (CSV
decoding, splitting and its diagnostics are in `trdscreen.csvfile`).

Readers return every column as read (CSV cells as text) together with the
1-based source line of each row, so any later problem can be pointed at by
file and line. Typing and validation happen in `trdscreen.schemas`.
"""

from __future__ import annotations

import hashlib
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from trdscreen.csvfile import (
    BOMS,
    READ_BLOCK,
    CsvOptions,
    checked_header,
    csv_batches,
    csv_record_lines,
    csv_record_starts,
    declared,
    read_csv,
    refuse_duplicates,
)
from trdscreen.errors import (
    InputError,
    RuleError,
)
from trdscreen.ruleset import ColumnMap
from trdscreen.sniff import refuse_binary, refuse_other_table

DEFAULT_CSV = CsvOptions()  # UTF-8, comma

__all__ = [
    "CsvOptions", "InputFile", "LinesNotCounted", "SourceTable", "find_inputs", "open_source",
    "read_config_file", "sha256_file",
]  # fmt: skip


@dataclass(frozen=True)
class SourceTable:
    """One input table as read: canonical column names, raw values, source lines."""

    name: str  # "treatments" or "subjects"
    path: Path
    fmt: str  # "csv" or "parquet"
    # Never in the repr: a failed Dask task's log prints its arguments, and patient
    # rows must not reach a log.
    table: pa.Table = field(repr=False)
    lines: np.ndarray = field(repr=False)  # int64, 1-based line (CSV) or row (Parquet)
    sha256: str
    size: int
    site: ColumnMap | None = None  # the declared conventions its cells are read under

    @property
    def file(self) -> str:
        return self.path.name

    @property
    def rows(self) -> int:
        return self.table.num_rows

    def take(self, rows: np.ndarray) -> SourceTable:
        """These rows (positions, in the order given), with their source lines."""
        return replace(
            self, table=self.table.take(pa.array(rows, pa.int64())), lines=self.lines[rows]
        )

    def key_text(self) -> pa.ChunkedArray | None:
        """The subject key column as text (as in the file: not trimmed); None when the
        table has none or it cannot be read as text (validation reports either)."""
        if "subject_id" not in self.table.column_names:
            return None
        try:
            return self.table["subject_id"].cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None

    def slice(self, start: int, stop: int) -> SourceTable:
        """Rows start..stop-1 with their source lines, without copying them."""
        return replace(
            self, table=self.table.slice(start, stop - start), lines=self.lines[start:stop]
        )


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
        while chunk := handle.read(READ_BLOCK):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    return digest.hexdigest(), newlines, size, last == b"\n"


class LinesNotCounted(Exception):
    """A CSV read in batches numbered its rows as one line each, and the file turned out
    to have quoted line breaks or blank lines: read it again with `exact_lines`."""


@dataclass(frozen=True)
class InputFile:
    """An input file opened for reading: hashed, its format and header checked, its rows
    not read yet. `read` reads it whole; `batches` a batch of rows at a time."""

    name: str  # "treatments" or "subjects"
    path: Path
    fmt: str  # "csv" or "parquet"
    sha256: str
    size: int
    rename: dict[str, str]
    canonical: frozenset[str]
    options: CsvOptions  # CSV only: as declared by a byte-order mark
    header: tuple[str, ...]  # CSV only: the header line's names, trimmed
    total_lines: int  # CSV only: lines in the file, the header included
    rows: int | None = None  # known once read
    site: ColumnMap | None = None  # the declared conventions its cells are read under

    def read(self) -> SourceTable:
        """The whole file as one table. Its text columns, but for the subject key, are
        dictionary-encoded: an export repeats a hundred drug names, a few stop reasons
        and a few thousand dates over millions of rows. As codes and distinct texts the
        table takes less memory, and validation reads each distinct text once
        (`schemas.coerce`). Parquet is read so directly, which is also faster."""
        if self.fmt == "parquet":
            with _parquet_errors(self.path):
                coded = self._coded(pq.ParquetFile(self.path).schema_arrow)
                table = _one_piece(pq.ParquetFile(self.path, read_dictionary=coded).read())
            lines = np.arange(1, table.num_rows + 1, dtype=np.int64)
        else:
            table = _one_piece(read_csv(self.path, list(self.header), self.options))
            for raw in self._coded(table.schema):
                index = table.schema.get_field_index(raw)
                table = table.set_column(index, raw, table.column(index).dictionary_encode())
            if self.total_lines == table.num_rows + 1:
                lines = np.arange(2, table.num_rows + 2, dtype=np.int64)
            else:  # quoted line breaks or blank lines: count lines exactly (rare, slower)
                lines = csv_record_lines(self.path, table.num_rows, self.options)
        self._refuse_no_rows(table.num_rows)
        return self._source(table, lines)

    def batches(self, rows: int, exact_lines: bool = False) -> Iterator[SourceTable]:
        """The file about `rows` rows at a time, in file order, with their source lines.

        A CSV's rows are numbered one line each unless `exact_lines`; when the file
        turns out to have quoted line breaks or blank lines, LinesNotCounted is raised
        after the last batch, and the caller reads it again with `exact_lines`.
        """
        read = 0
        if self.fmt == "parquet":
            with _parquet_errors(self.path):
                for batch in pq.ParquetFile(self.path).iter_batches(batch_size=rows):
                    table = pa.Table.from_batches([batch])
                    lines = np.arange(read + 1, read + table.num_rows + 1, dtype=np.int64)
                    read += table.num_rows
                    yield self._source(table, lines)
        else:
            starts = csv_record_starts(self.path, self.options) if exact_lines else None
            for table in csv_batches(self.path, list(self.header), self.options, rows):
                n = table.num_rows
                if starts is not None:
                    lines = np.fromiter(starts, np.int64, n)
                else:
                    lines = np.arange(read + 2, read + n + 2, dtype=np.int64)
                read += n
                yield self._source(table, lines)
            if starts is None and self.total_lines != read + 1:
                raise LinesNotCounted(self.path)
        self._refuse_no_rows(read)

    def _refuse_no_rows(self, rows: int) -> None:
        if rows == 0:
            raise InputError(
                f"{self.path}: the file has a header but no data rows; expected one row per "
                + ("treatment course" if self.name == "treatments" else "subject")
            )

    def _coded(self, schema: pa.Schema) -> list[str]:
        """The file's headers of its text columns, but the subject key's."""
        renamed = _rename(schema.empty_table(), self.path, self.rename, set(self.canonical))
        return [
            raw
            for raw, name, field in zip(schema.names, renamed.column_names, schema, strict=True)
            if pa.types.is_string(field.type) and name != "subject_id"
        ]

    def _source(self, table: pa.Table, lines: np.ndarray) -> SourceTable:
        table = _rename(table, self.path, self.rename, set(self.canonical))
        return SourceTable(
            self.name, self.path, self.fmt, table, lines, self.sha256, self.size, self.site
        )


def open_source(
    path: Path,
    name: str,
    rename: dict[str, str],
    canonical: set[str],
    options: CsvOptions = DEFAULT_CSV,
    site: ColumnMap | None = None,
) -> InputFile:
    """Open one input table for reading: hash it and check its format and header.

    `rename` maps site headers to canonical names (the rule set's `columns:`
    section or `--map`). A header that differs from a canonical name only in
    case or surrounding spaces is matched too. Every problem that stops the
    file from being read raises InputError naming the file and, where there is
    one, the line; no cell value is ever quoted.
    """
    path = Path(path)
    fmt = _file_format(path)
    if not path.is_file():
        if path.exists():
            raise InputError(f"{path}: not a regular file (a device, FIFO or folder)")
        raise InputError(f"{path}: no such file")
    try:
        sha, newlines, size, ends_with_newline = _hash_and_count_newlines(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if size == 0:
        raise InputError(f"{path}: the file is empty; expected a header line and data rows")
    header: list[str] = []
    if fmt == "parquet":
        with _parquet_errors(path):
            names = pq.ParquetFile(path).schema_arrow.names
        refuse_duplicates(path, names, "the Parquet file has duplicate column names")
    else:
        refuse_binary(path, options.is_utf8, tuple(BOMS))
        options = declared(path, options)
        names = header = checked_header(path, options)
    refuse_other_table(path, name, names, rename)
    return InputFile(
        name,
        path,
        fmt,
        sha,
        size,
        dict(rename),
        frozenset(canonical),
        options,
        tuple(header),
        newlines + (0 if ends_with_newline else 1),
        site=site if site is not None and site.has_conventions else None,
    )


_FEW_PIECES = 16
"""Columns in at most this many pieces (Parquet row groups, usually) are kept as read."""


def _one_piece(table: pa.Table) -> pa.Table:
    """Each column in many pieces as one array. The CSV reader gives one piece per block
    (hundreds per million rows), Parquet one per row group, and taking a chunk of
    subjects' rows from a column of many pieces costs time in proportion to the
    pieces. Column by column, so only one column is held twice at a time."""
    for index in range(table.num_columns):
        column = table.column(index)
        if column.num_chunks > _FEW_PIECES:
            table = table.set_column(index, table.field(index), column.combine_chunks())
        del column
    return table


@contextmanager
def _parquet_errors(path: Path) -> Iterator[None]:
    """Arrow's errors on a Parquet file as InputError naming the file."""
    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        reason = (
            "not a readable Parquet file (expected Parquet written by pandas, pyarrow, "
            "Spark or DuckDB; the file may be truncated or another format)"
            if isinstance(exc, pa.ArrowInvalid | pa.ArrowNotImplementedError)
            else f"cannot read ({exc.strerror or type(exc).__name__})"
        )
        raise InputError(f"{path}: {reason}") from None


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
    refuse_duplicates(path, names, "duplicate column names after mapping")
    return table.rename_columns(names)


CONFIG_MAX_BYTES = 16 << 20
"""No rule file, column map or formulary is larger (a formulary table is the largest)."""


def read_config_file(
    path: Path, what: str, max_bytes: int | None = CONFIG_MAX_BYTES
) -> tuple[str, str]:
    """Text and SHA-256 of a rule file, column map or formulary; RuleError names the file.

    Only a regular file is read, and only when it is no larger than `max_bytes`
    (checked before reading and while reading): a name pointing at /dev/zero, a
    FIFO or a huge file is refused instead of hanging or filling memory.
    """
    limit = CONFIG_MAX_BYTES if max_bytes is None else max_bytes
    path = Path(path)
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise RuleError(
                f"{path}: the {what} is not a regular file (a device, FIFO or folder); "
                "expected a YAML or CSV file"
            )
        if info.st_size > limit:
            raise RuleError(f"{path}: the {what} is larger than {limit} bytes")
        with open(path, "rb") as handle:
            raw = handle.read(limit + 1)
    except OSError as exc:
        raise RuleError(f"{path}: cannot read the {what} ({exc.strerror})") from None
    if len(raw) > limit:
        raise RuleError(f"{path}: the {what} is larger than {limit} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise RuleError(f"{path}: the {what} is not UTF-8 text") from None
    return text, hashlib.sha256(raw).hexdigest()


# --------------------------------------------------------------------------- hashes


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()
