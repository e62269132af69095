"""Reading inputs: hashed, their format and header checked, rows with source lines.

Readers return every column as read (CSV cells as text) together with the
1-based source line of each row, so any later problem can be pointed at by
file and line. Typing and validation happen in `trdscreen.schemas`.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import re
import stat
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trdscreen.errors import (
    InputError,
    RuleError,
    UsageError,
)
from trdscreen.sniff import looks_like_data, refuse_binary, refuse_other_table

NULL_TOKENS = ["", "NA", "N/A", "NULL", "null", "NaN", "nan", "None"]
"""CSV cells read as missing. Documented in the README."""

_CHUNK = 1 << 22


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
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            newlines += chunk.count(b"\n")
            size += len(chunk)
            last = chunk[-1:]
    return digest.hexdigest(), newlines, size, last == b"\n"


@dataclass(frozen=True)
class CsvOptions:
    """How CSV inputs are decoded and split (`--encoding`, `--delimiter`)."""

    encoding: str = "utf-8"
    delimiter: str = ","

    def __post_init__(self) -> None:
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise UsageError(
                f"--encoding {self.encoding!r} is not a known text encoding "
                "(e.g. utf-8, cp1252, latin-1, utf-16)"
            ) from None
        if len(self.delimiter) != 1 or self.delimiter in '"\r\n':
            raise UsageError("--delimiter must be one character other than a quote or line break")

    @property
    def is_utf8(self) -> bool:
        return codecs.lookup(self.encoding).name == "utf-8"

    @property
    def wide(self) -> bool:
        return codecs.lookup(self.encoding).name.startswith(("utf-16", "utf-32"))

    @property
    def python_encoding(self) -> str:
        return "utf-8-sig" if self.is_utf8 else self.encoding


_DELIMITER_NAMES = {";": "semicolon", "\t": "tab", "|": "pipe", ",": "comma"}
_BOMS = {  # UTF-32 first: its little-endian mark starts with UTF-16's
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}
_BLOCK = 1 << 20  # Arrow's CSV block size: no row may be longer


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
            table = _one_piece(_read_csv(self.path, list(self.header), self.options))
            for raw in self._coded(table.schema):
                index = table.schema.get_field_index(raw)
                table = table.set_column(index, raw, table.column(index).dictionary_encode())
            if self.total_lines == table.num_rows + 1:
                lines = np.arange(2, table.num_rows + 2, dtype=np.int64)
            else:  # quoted line breaks or blank lines: count lines exactly (rare, slower)
                lines = _csv_record_lines(self.path, table.num_rows, self.options)
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
            starts = _csv_record_starts(self.path, self.options) if exact_lines else None
            for table in _csv_batches(self.path, list(self.header), self.options, rows):
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
        return SourceTable(self.name, self.path, self.fmt, table, lines, self.sha256, self.size)


def open_source(
    path: Path,
    name: str,
    rename: dict[str, str],
    canonical: set[str],
    options: CsvOptions = CsvOptions(),
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
        _refuse_duplicates(path, names, "the Parquet file has duplicate column names")
    else:
        refuse_binary(path, options.is_utf8, tuple(_BOMS))
        options = _declared(path, options)
        names = header = _checked_header(path, options)
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


def _declared(path: Path, options: CsvOptions) -> CsvOptions:
    """A UTF-16/32 byte-order mark declares the encoding: honour it unless --encoding was given."""
    if not options.is_utf8:
        return options
    with open(path, "rb") as handle:
        head = handle.read(4)
    for mark, encoding in _BOMS.items():
        if head.startswith(mark):
            return replace(options, encoding=encoding)
    return options


def _csv_header(path: Path, options: CsvOptions) -> list[str]:
    try:
        if options.wide:  # UTF-16/32: a line break is more than one byte
            with open(path, encoding=options.encoding, newline="") as handle:
                text = handle.readline(_BLOCK)
        else:  # decode the first line only, so a bad byte further down is reported there
            with open(path, "rb") as handle:
                text = handle.readline(_BLOCK).decode(options.python_encoding)
    except UnicodeError:
        raise InputError(f"{path}: line 1: {_encoding_hint(options)}") from None
    try:
        return next(csv.reader([text], delimiter=options.delimiter, strict=True), [])
    except csv.Error:
        raise InputError(
            f"{path}: line 1: the header line cannot be split into columns "
            "(broken quoting); expected a header line of column names"
        ) from None


def _encoding_hint(options: CsvOptions) -> str:
    if options.is_utf8:
        return (
            "not UTF-8 text (tried UTF-8); re-export the file as UTF-8 or pass its encoding, "
            "e.g. --encoding cp1252 (Windows Excel) or --encoding latin-1"
        )
    return f"cannot be decoded as {options.encoding} (--encoding); check the file's encoding"


def _checked_header(path: Path, options: CsvOptions) -> list[str]:
    header = [h.strip() for h in _csv_header(path, options)]
    if not any(header):
        raise InputError(f"{path}: the first line is empty; expected a header line")
    if looks_like_data(header):
        raise InputError(
            f"{path}: line 1 looks like data, not a header line (it holds numbers or dates); "
            "expected a header line of column names (subject_id, drug, start_date, ...). "
            "Add the header line the export lost"
        )
    blank = [str(i + 1) for i, name in enumerate(header) if not name]
    if len(blank) > 1:
        raise InputError(
            f"{path}: line 1: columns {', '.join(blank)} have no name; expected a name for "
            "every column (or drop the empty columns)"
        )
    if len(header) == 1:
        _refuse_single_column(path, header[0], options)
    _refuse_duplicates(path, header, "the header repeats column names")
    return header


def _read_csv(path: Path, header: list[str], options: CsvOptions) -> pa.Table:
    try:
        return _arrow_csv(path, header, options, newlines_in_values=False)
    except pa.ArrowInvalid:
        try:  # a quoted line break across Arrow's blocks: the slower exact parse reads it
            return _arrow_csv(path, header, options, newlines_in_values=True)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            # Arrow's message quotes the offending row: never pass it on, locate the row.
            raise InputError(f"{path}: {_csv_problem(path, header, options, exc)}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: {_csv_problem(path, header, options, exc)}") from None


def _csv_batches(
    path: Path, header: list[str], options: CsvOptions, rows: int
) -> Iterator[pa.Table]:
    """The CSV about `rows` rows at a time (Arrow's streaming reader, which parses quoted
    line breaks anywhere); a problem raises InputError as `_read_csv` would."""
    pending: list[pa.RecordBatch] = []
    count = 0
    try:
        reader = pacsv.open_csv(path, **_csv_settings(header, options, newlines_in_values=True))
        for batch in reader:
            pending.append(batch)
            count += batch.num_rows
            if count >= rows:
                yield pa.Table.from_batches(pending).combine_chunks().rename_columns(header)
                pending, count = [], 0
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: {_csv_problem(path, header, options, exc)}") from None
    if pending:
        yield pa.Table.from_batches(pending).combine_chunks().rename_columns(header)


def _csv_settings(header: list[str], options: CsvOptions, newlines_in_values: bool) -> dict:
    return {
        "read_options": pacsv.ReadOptions(
            column_names=[f"__c{i}" for i in range(len(header))],
            skip_rows=1,
            encoding="utf8" if options.is_utf8 else options.encoding,  # utf8: no transcoding
        ),
        "parse_options": pacsv.ParseOptions(
            delimiter=options.delimiter, newlines_in_values=newlines_in_values
        ),
        "convert_options": pacsv.ConvertOptions(
            column_types={f"__c{i}": pa.string() for i in range(len(header))},
            null_values=NULL_TOKENS,
            strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    }


def _arrow_csv(
    path: Path, header: list[str], options: CsvOptions, newlines_in_values: bool
) -> pa.Table:
    settings = _csv_settings(header, options, newlines_in_values)
    return pacsv.read_csv(path, **settings).rename_columns(header)


def _refuse_single_column(path: Path, name: str, options: CsvOptions) -> None:
    for delimiter, label in _DELIMITER_NAMES.items():
        if delimiter != options.delimiter and delimiter in name:
            shown = "\\t" if delimiter == "\t" else delimiter
            raise InputError(
                f"{path}: line 1: the header is a single column that contains {label}s, so "
                f"the file looks {label}-separated; expected "
                f"{_DELIMITER_NAMES.get(options.delimiter, repr(options.delimiter))}-separated "
                f"columns. Pass --delimiter '{shown}'"
            )


def _refuse_duplicates(path: Path, names: list[str], what: str) -> None:
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1 and n)
    if duplicates:
        raise InputError(
            f"{path}: {what}: {', '.join(duplicates)}; each column may appear once "
            "(rename or drop the copies)"
        )


def _csv_problem(path: Path, header: list[str], options: CsvOptions, exc: Exception) -> str:
    """Say what is wrong with a CSV Arrow refused, and where, without quoting data."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, UnicodeDecodeError) or "utf8" in first.lower():
        line = _first_undecodable_line(path, options)
        where = f"line {line}: " if line else ""
        column = re.search(r"column #(\d+)", first)
        if column and int(column.group(1)) < len(header):
            where += f"column `{header[int(column.group(1))]}`: "
        return where + _encoding_hint(options)
    if "straddl" in first:
        line = _first_long_line(path)
        where = f"line {line}: " if line else ""
        return (
            f"{where}a row is longer than {_BLOCK >> 20} MiB; expected short cells "
            "(look for a runaway quote or an embedded document)"
        )
    return _first_bad_record(path, len(header), options)


def _first_undecodable_line(path: Path, options: CsvOptions) -> int | None:
    decoder = codecs.getincrementaldecoder(options.python_encoding)()
    line = 1
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                return line + chunk[: error.start].count(b"\n")
            line += chunk.count(b"\n")
    return None


def _first_long_line(path: Path) -> int | None:
    line, length = 1, 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            for part_index, part in enumerate(chunk.split(b"\n")):
                if part_index:
                    line, length = line + 1, 0
                length += len(part)
                if length > _BLOCK:
                    return line
    return None


def _csv_records(
    path: Path, options: CsvOptions, strict: bool
) -> Iterator[tuple[int, list[str] | None]]:
    """(first line, fields) of each CSV record after the header, counting quoted line breaks.

    Python's csv module, for the rare exact paths (line numbers, locating a bad row).
    A record the module cannot parse (broken quoting) ends the walk as (its line, None).
    """
    csv.field_size_limit(1 << 30)
    errors = "replace" if strict else "strict"
    with open(path, encoding=options.python_encoding, newline="", errors=errors) as handle:
        reader = csv.reader(handle, delimiter=options.delimiter, strict=strict)
        next(reader, None)
        start = reader.line_num + 1
        try:
            for record in reader:
                yield start, record
                start = reader.line_num + 1
        except csv.Error:
            yield start, None


def _first_bad_record(path: Path, width: int, options: CsvOptions) -> str:
    """The first record whose field count differs from the header's, or open quote."""
    for start, record in _csv_records(path, options, strict=True):
        if record is None:
            return (
                f"line {start}: broken quoting: a quoted field opened on this line is not "
                'closed properly; expected each quoted field to end with " before the next '
                "delimiter or line end"
            )
        if record and len(record) != width:
            return (
                f"line {start}: the row has {len(record)} fields but the header has "
                f"{width} (a stray delimiter, a missing field or broken quoting); "
                f"expected {width} {_DELIMITER_NAMES.get(options.delimiter, 'delimited')}"
                "-separated fields per row"
            )
    return "cannot be parsed as CSV (expected delimited text with a header line)"


def _csv_record_starts(path: Path, options: CsvOptions) -> Iterator[int]:
    """The first line of each CSV record, counting quoted line breaks (exact, slow)."""
    return (start for start, record in _csv_records(path, options, strict=False) if record)


def _csv_record_lines(path: Path, n_rows: int, options: CsvOptions) -> np.ndarray:
    """First line of each CSV record, as an array of `n_rows` (exact, slow path)."""
    starts = list(_csv_record_starts(path, options))
    if len(starts) < n_rows:  # pragma: no cover - the two parsers disagree
        raise InputError(f"{path}: could not match CSV records to lines; check quoting")
    return np.asarray(starts[:n_rows], dtype=np.int64)


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
    _refuse_duplicates(path, names, "duplicate column names after mapping")
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


# --------------------------------------------------------------------------- output


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


ROW_GROUP_ROWS = 1 << 18
"""Rows per Parquet row group of every output table (the last one may be shorter)."""

PARQUET_OPTIONS: dict[str, object] = {
    # Fixed options so that re-runs give identical bytes. No stored Arrow schema: the
    # Parquet types (UTF8 text, DATE, INT64, DOUBLE, BOOLEAN) say everything, and a
    # dictionary-encoded input column then reads back as plain text.
    "compression": "zstd",
    "use_dictionary": True,
    "write_statistics": True,
    "store_schema": False,
}

CSV_OPTIONS = pacsv.WriteOptions(include_header=True)
