"""Reading inputs: hashed, their format and header checked, rows with source lines (CSV
decoding, splitting and its diagnostics are in `trdscreen.csvfile`).

Readers return every column as read (CSV cells as text) together with the
1-based source line of each row, so any later problem can be pointed at by
file and line. Typing and validation happen in `trdscreen.convert` and `trdscreen.schemas`.
"""

from __future__ import annotations

import hashlib
import re
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
    LineBreaks,
    checked_header,
    csv_batches,
    csv_record_lines,
    csv_record_starts,
    declared,
    read_csv,
    refuse_duplicates,
    unit_lines,
)
from trdscreen.errors import (
    InputError,
    RuleError,
)
from trdscreen.sitemap import ColumnMap
from trdscreen.sniff import refuse_binary, refuse_other_table
from trdscreen.sources import data_name, display, folder_sha256, locate, parquet_files

DEFAULT_CSV = CsvOptions()  # UTF-8, comma
TEXT_FILE = r"(?i)\.(?:csv|tsv|txt)(?:\.(?:gz|zst|bz2))?$"
"""Inputs whose rows have lines (CSV, compressed or piped); Parquet rows are numbered."""


def row_unit(file: str) -> str:
    """What a message calls a row of `file`: "line" in a text file (`TEXT_FILE`), "row"
    in a Parquet file, whose rows have no lines."""
    return "line" if re.search(TEXT_FILE, file) else "row"


__all__ = [
    "CsvOptions", "InputFile", "LinesNotCounted", "SourceTable", "open_source",
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
        return "stdin.csv" if str(self.path) == "-" else self.path.name  # verify: --inputs

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


def _file_format(path: Path) -> str:
    if path.is_dir():
        return "parquet"
    suffix = Path(data_name(path)).suffix.lower()
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".csv", ".txt", ".tsv"):
        return "csv"
    raise InputError(
        f"{path}: unknown file type {suffix!r}; expected .csv (also .csv.gz, .csv.zst, "
        ".csv.bz2), .parquet, or a folder of Parquet files"
    )


def _hash_and_count_newlines(path: Path) -> tuple[str, int, LineBreaks]:
    """(the file's SHA-256, its size, its line breaks counted by byte), in one read."""
    digest = hashlib.sha256()
    breaks = LineBreaks()
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BLOCK):
            digest.update(chunk)
            breaks.add_bytes(chunk)
            size += len(chunk)
    return digest.hexdigest(), size, breaks


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
    data: Path | None = None  # where the rows are read (a local copy of stdin, a .gz...)
    # A CSV's key column as `counted` read it (counting a CSV's rows means parsing it),
    # kept for `keys`. Never in the repr: patient keys must not reach a log.
    key_column: pa.Table | None = field(default=None, repr=False, compare=False)
    stamp: tuple[int, ...] | None = None  # `_stamp` of the file when it was hashed
    # A carriage return alone (not before a line feed) breaks a row but is no `\n` line:
    # lines are then counted exactly, whatever the counts say.
    lone_cr: bool = False

    def unchanged(self) -> None:
        """InputError when the file was written to or replaced since it was hashed: the
        rows read from it are then not the rows its hash in the manifest stands for."""
        if self.stamp is not None and _stamp(self.local) != self.stamp:
            raise InputError(f"{self.path}: the file changed while it was read")

    @property
    def local(self) -> Path:
        """The local file (or Parquet folder) the rows are read from."""
        return self.data if self.data is not None else self.path

    def read(self) -> SourceTable:
        """The whole file as one table. Its text columns, but for the subject key, are
        dictionary-encoded: an export repeats a hundred drug names, a few stop reasons
        and a few thousand dates over millions of rows. As codes and distinct texts the
        table takes less memory, and validation reads each distinct text once
        (`convert.coerce`). Parquet is read so directly, which is also faster."""
        if self.fmt == "parquet":
            with _parquet_errors(self.path):
                coded = self._coded(_parquet_schema(self.local))
                table = _one_piece(_parquet_read(self.local, coded))
            lines = np.arange(1, table.num_rows + 1, dtype=np.int64)
        else:
            # Coded before the pieces are joined: Arrow gives every piece of a column one
            # dictionary, so joining them copies codes, not text (the same table; the 1M
            # subject CSV run's read stage 1.96 -> 1.85 CPU-s). Each step lets go of
            # what it replaced.
            with _named(self):
                table = _one_piece(
                    self._text_coded(read_csv(self.local, list(self.header), self.options))
                )
            lines = self._csv_lines(table.num_rows)
        self._refuse_no_rows(table.num_rows)
        self.unchanged()
        return self._source(table, lines)

    def _text_coded(self, table: pa.Table) -> pa.Table:
        """A CSV's text columns, but the subject key, dictionary-encoded (as Parquet's
        are read: `read`)."""
        for raw in self._coded(table.schema):
            index = table.schema.get_field_index(raw)
            table = table.set_column(index, raw, table.column(index).dictionary_encode())
        return table

    def _csv_lines(self, rows: int) -> np.ndarray:
        """The line of each of a CSV's `rows` data rows."""
        if self._one_line_each(rows):
            return np.arange(2, rows + 2, dtype=np.int64)
        # Quoted line breaks or blank lines: count lines exactly (rare, slower).
        with _named(self):
            return csv_record_lines(self.local, rows, self.options)

    def _one_line_each(self, rows: int) -> bool:
        """Whether a CSV's `rows` data rows are one line each (its lines numbered by
        counting): as many lines as rows and a header, and no lone carriage return (a
        lone CR and a blank line would cancel out in the counts, and every row between
        them be numbered a line off)."""
        return not self.lone_cr and self.total_lines == rows + 1

    @property
    def in_ranges(self) -> bool:
        """Its rows can be read a range at a time (`ranges`): one Parquet or CSV file."""
        return self.local.is_file()

    def counted(self) -> InputFile | SourceTable:
        """This file with its row count, its rows not read: a Parquet file's count is in
        its footer; a CSV's key column is read (and kept for `keys`), every row parsed and
        its fields counted. A CSV whose rows are not one line each (quoted line breaks,
        blank lines) is read whole instead, its lines counted exactly. InputError when the
        file has no rows or cannot be parsed, as `read` would say."""
        if self.fmt == "parquet":
            with _parquet_errors(self.path):
                rows = pq.ParquetFile(self.local).metadata.num_rows
            self._refuse_no_rows(rows)
            return replace(self, rows=rows)
        keys = self._csv_keys()
        self._refuse_no_rows(keys.num_rows)
        if not self._one_line_each(keys.num_rows):
            return self.read()
        return replace(self, rows=keys.num_rows, key_column=keys)

    def keys(self) -> SourceTable:
        """The subject key column alone, every row with its line (no columns when the file
        has none): what cutting the rows into chunks of subjects needs (`ranges`)."""
        if self.fmt == "csv":
            table = self.key_column if self.key_column is not None else self._csv_keys()
            return self._source(table, self._csv_lines(table.num_rows))
        with _parquet_errors(self.path):
            file = pq.ParquetFile(self.local)
            keyed = self._key_headers(file.schema_arrow.names)
            table = file.read(columns=[file.schema_arrow.names[i] for i in keyed])
        self.unchanged()
        lines = np.arange(1, file.metadata.num_rows + 1, dtype=np.int64)
        return self._source(table, lines)

    def _csv_keys(self) -> pa.Table:
        """The key column, every row parsed (no column, but every row, without one: Arrow
        reads every column when asked for none)."""
        header = list(self.header)
        keyed = self._key_headers(header)
        with _named(self):
            keys = read_csv(self.local, header, self.options, keyed or [0])
        self.unchanged()
        return keys if keyed else keys.select([])

    def _key_headers(self, headers: list[str]) -> list[int]:
        """The position of the header read as the subject key (none, or one)."""
        empty = pa.table({f"__c{i}": pa.array([], pa.null()) for i in range(len(headers))})
        named = _rename(empty.rename_columns(headers), self.path, self.rename,
                        set(self.canonical)).column_names  # fmt: skip
        return [i for i, name in enumerate(named) if name == "subject_id"]

    def ranges(self, bounds: list[tuple[int, int]], rows: int = 1 << 16) -> Iterator[SourceTable]:
        """Consecutive ranges of rows (first, end), from the first row on, each as a table
        with its lines, as `read` would give them: read `rows` at a time in file order,
        so memory holds about one range of the file, never the whole of it."""
        with self.errors():
            pieces = self.pieces(rows)
            held: list[pa.Table] = []
            start = read = 0  # the first row held; the rows read so far
            for first, end in bounds:
                assert start <= first < end, "ranges are consecutive and not empty"
                while read < end:
                    piece = next(pieces, None)
                    if piece is None:  # fewer rows than counted when opened
                        raise InputError(f"{self.path}: the file changed while it was read")
                    held.append(piece)
                    read += piece.num_rows
                table = pa.concat_tables(held).slice(first - start, end - first)
                if end == bounds[-1][1]:  # the last range: read from the file as hashed?
                    self.unchanged()
                yield self.as_read(table, np.arange(first, end, dtype=np.int64))
                while held and start + held[0].num_rows <= end:
                    start += held.pop(0).num_rows

    def as_read(self, table: pa.Table, rows: np.ndarray) -> SourceTable:
        """Rows of this file (`pieces`) as `read` gives them, their 0-based positions in the
        file `rows`: a CSV's text columns coded, each row's line (a Parquet row's number;
        a CSV's line, one a row after the header: the file was `counted`)."""
        lines = rows.astype(np.int64) + (1 if self.fmt == "parquet" else 2)
        if self.fmt == "parquet":
            return self._source(table, lines)
        assert self.rows is not None, "a CSV is counted before it is read in pieces"
        return self._source(self._text_coded(table), lines)

    def errors(self):
        """Errors reading its rows as InputError naming the input as given."""
        return _parquet_errors(self.path) if self.fmt == "parquet" else _named(self)

    def pieces(self, rows: int) -> Iterator[pa.Table]:
        """Its rows, about `rows` at a time, in file order, as read (`as_read` gives them
        as `read` does); within `errors`."""
        if self.fmt == "csv":
            yield from csv_batches(self.local, list(self.header), self.options, rows)
            return
        coded = self._coded(_parquet_schema(self.local))
        for batch in pq.ParquetFile(self.local, read_dictionary=coded).iter_batches(rows):
            yield pa.Table.from_batches([batch])

    def batches(self, rows: int, exact_lines: bool = False) -> Iterator[SourceTable]:
        """The file about `rows` rows at a time, in file order, with their source lines.

        A CSV's rows are numbered one line each unless `exact_lines`; when the file
        turns out to have quoted line breaks or blank lines, LinesNotCounted is raised
        after the last batch, and the caller reads it again with `exact_lines`.
        """
        read = 0
        if self.fmt == "parquet":
            with _parquet_errors(self.path):
                for batch in _parquet_batches(self.local, rows):
                    table = pa.Table.from_batches([batch])
                    lines = np.arange(read + 1, read + table.num_rows + 1, dtype=np.int64)
                    read += table.num_rows
                    yield self._source(table, lines)
        else:
            starts = csv_record_starts(self.local, self.options) if exact_lines else None
            with _named(self):  # a problem names the input as given, not a local copy
                for table in csv_batches(self.local, list(self.header), self.options, rows):
                    n = table.num_rows
                    if starts is not None:
                        lines = np.fromiter(starts, np.int64, n)
                    else:
                        lines = np.arange(read + 2, read + n + 2, dtype=np.int64)
                    read += n
                    yield self._source(table, lines)
            if starts is None and not self._one_line_each(read):
                raise LinesNotCounted(self.path)
        self._refuse_no_rows(read)
        self.unchanged()

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
    located = locate(path)
    path, data = located.shown, located.data
    if data.is_dir():  # a dataset: a folder of Parquet files
        files = parquet_files(data)
        if not files:
            raise InputError(f"{path}: the folder holds no Parquet files (*.parquet)")
        sha, size = folder_sha256(data, files)
        with _parquet_errors(path):
            names = _parquet_schema(data).names
        refuse_duplicates(path, names, "the Parquet files have duplicate column names")
        refuse_other_table(path, name, names, rename)
        return InputFile(name, path, "parquet", sha, size, dict(rename), frozenset(canonical),
                         options, (), 0, site=_declared(site), data=data)  # fmt: skip
    fmt = _file_format(data)  # stdin is read as CSV; a .csv.gz by its inner name
    if not data.is_file():
        if data.exists():
            raise InputError(f"{path}: not a regular file (a device, FIFO or folder)")
        raise InputError(f"{path}: no such file")
    try:
        stamp = _stamp(data)
        sha, size, breaks = _hash_and_count_newlines(data)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from None
    if _stamp(data) != stamp:
        raise InputError(f"{path}: the file changed while it was read")
    if located.copied:  # recorded as given: the compressed file, the stdin stream
        assert located.sha256 is not None and located.size is not None
        sha, given_size = located.sha256, located.size
    if size == 0:
        raise InputError(f"{path}: the file is empty; expected a header line and data rows")
    if located.copied:
        size = given_size
    header: list[str] = []
    with _named_paths(data, path):
        if fmt == "parquet":
            with _parquet_errors(path):
                names = pq.ParquetFile(data).schema_arrow.names
            refuse_duplicates(path, names, "the Parquet file has duplicate column names")
        else:
            refuse_binary(data, options.is_utf8, tuple(BOMS))
            options = declared(data, options)
            names = header = checked_header(data, options)
            by_unit = unit_lines(data, options)  # UTF-16 and UTF-32: by code unit
            breaks = by_unit if by_unit is not None else breaks
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
        breaks.newlines + (0 if breaks.ends_with_newline else 1),
        site=_declared(site),
        data=data if located.copied else None,
        stamp=stamp,
        lone_cr=breaks.lone_cr,
    )


def _stamp(path: Path) -> tuple[int, ...] | None:
    """What writing to a file or replacing it changes: its device, inode, size and
    modification time in nanoseconds (None once it is gone)."""
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _declared(site: ColumnMap | None) -> ColumnMap | None:
    return site if site is not None and site.has_conventions else None


@contextmanager
def _named_paths(data: Path, shown: Path) -> Iterator[None]:
    """An InputError about the local copy `data` names the input as given (`shown`)."""
    try:
        yield
    except InputError as exc:
        if data == shown:
            raise

        # The local copy's whole path only: its name is a prefix of the input's own
        # (`treatments.csv` of `treatments.csv.gz`), so replacing the name would garble it.
        def named(text: str) -> str:
            return text.replace(str(data), display(shown))

        raise InputError(named(str(exc)), [named(p) for p in exc.problems]) from None


def _named(source: InputFile):
    return _named_paths(source.local, source.path)


def _parquet_schema(path: Path) -> pa.Schema:
    if path.is_dir():
        return pq.ParquetDataset(parquet_files(path)).schema
    return pq.ParquetFile(path).schema_arrow


def _parquet_read(path: Path, coded: list[str]) -> pa.Table:
    if path.is_dir():  # the files in name order, each file's rows in order
        return pq.ParquetDataset(parquet_files(path), read_dictionary=coded).read()
    return pq.ParquetFile(path, read_dictionary=coded).read()


def _parquet_batches(path: Path, rows: int) -> Iterator[pa.RecordBatch]:
    files = parquet_files(path) if path.is_dir() else [path]
    for file in files:
        yield from pq.ParquetFile(file).iter_batches(batch_size=rows)


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


def has_sha256(path: Path, sha256: object) -> bool:
    """Whether `path` is a file whose SHA-256 is `sha256` (False when it cannot be read)."""
    try:
        return path.is_file() and sha256_file(path) == sha256
    except OSError:
        return False


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BLOCK):
            digest.update(chunk)
    return digest.hexdigest()
