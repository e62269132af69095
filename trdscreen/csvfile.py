"""CSV inputs: decoding (`--encoding`, byte-order marks), splitting (`--delimiter`), the
header, Arrow's reader settings, and the diagnostics that name the line and column of a
file Arrow cannot read (an undecodable byte, a ragged row, broken quoting, a long line).
Reads files; knows nothing of the input contract."""

from __future__ import annotations

import codecs
import csv
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from trdscreen.errors import InputError, UsageError
from trdscreen.sniff import looks_like_data

NULL_TOKENS = ["", "NA", "N/A", "NULL", "null", "NaN", "nan", "None"]
"""CSV cells read as missing. Documented in the README."""

READ_BLOCK = 1 << 22
"""Bytes read at a time when hashing or scanning a file."""


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


BOMS = {  # UTF-32 first: its little-endian mark starts with UTF-16's
    codecs.BOM_UTF32_LE: "utf-32",
    codecs.BOM_UTF32_BE: "utf-32",
    codecs.BOM_UTF16_LE: "utf-16",
    codecs.BOM_UTF16_BE: "utf-16",
}


_BLOCK = 1 << 20  # Arrow's CSV block size: no row may be longer


def declared(path: Path, options: CsvOptions) -> CsvOptions:
    """A UTF-16/32 byte-order mark declares the encoding: honour it unless --encoding was given."""
    if not options.is_utf8:
        return options
    with open(path, "rb") as handle:
        head = handle.read(4)
    for mark, encoding in BOMS.items():
        if head.startswith(mark):
            return replace(options, encoding=encoding)
    return options


@dataclass
class LineBreaks:
    """A file's line breaks, counted a block at a time, by byte (UTF-8 and single-byte
    encodings: `add_bytes`) or by code unit (UTF-16 and UTF-32: `add_units`): the `\n`
    breaks, whether the file ends with one, and whether it holds a carriage return not
    before a line feed, which breaks a CSV row without a `\n` (lines are then counted
    exactly). A CR-LF pair cut by a block's edge is one pair."""

    newlines: int = 0
    returns: int = 0
    pairs: int = 0
    last: int = -1  # the last unit seen

    def add_bytes(self, block: bytes) -> None:
        self.newlines += block.count(b"\n")
        if b"\r" in block:  # a fast scan; counting costs as much as hashing
            self.returns += block.count(b"\r")
            self.pairs += block.count(b"\r\n")
        if block:
            self._edges(block[0], block[-1])

    def add_units(self, units: np.ndarray) -> None:
        newline, ret = units == 0x0A, units == 0x0D
        self.newlines += int(np.count_nonzero(newline))
        self.returns += int(np.count_nonzero(ret))
        self.pairs += int(np.count_nonzero(ret[:-1] & newline[1:]))
        if len(units):
            self._edges(int(units[0]), int(units[-1]))

    def _edges(self, first: int, last: int) -> None:
        self.pairs += self.last == 0x0D and first == 0x0A
        self.last = last

    @property
    def ends_with_newline(self) -> bool:
        return self.last == 0x0A

    @property
    def lone_cr(self) -> bool:
        return self.returns > self.pairs


def unit_lines(path: Path, options: CsvOptions) -> LineBreaks | None:
    """The line breaks of a UTF-16 or UTF-32 file, counted by code unit: there a line
    break is two or four bytes, and a `\n` byte may be half of another character (U+010A
    is 0A 01 in UTF-16 LE), so counting bytes as a UTF-8 file's are counted is wrong. The
    byte order is the encoding's, else its byte-order mark's, else this machine's (as the
    decoder reads it). None for other encodings."""
    if not options.wide:
        return None
    name = codecs.lookup(options.encoding).name
    width = 4 if name.startswith("utf-32") else 2
    with open(path, "rb") as handle:
        head = handle.read(width)
    if name.endswith(("-be", "-le")):
        big = name.endswith("-be")
    else:
        marks = (codecs.BOM_UTF32_BE, codecs.BOM_UTF32_LE) if width == 4 else (
            codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE)  # fmt: skip
        big = head.startswith(marks[0]) or (
            not head.startswith(marks[1]) and sys.byteorder == "big"
        )
    unit = np.dtype(f"{'>' if big else '<'}u{width}")
    breaks = LineBreaks()
    with open(path, "rb") as handle:
        while block := handle.read(READ_BLOCK):  # a multiple of 4: units stay whole
            breaks.add_units(np.frombuffer(block[: len(block) - len(block) % width], unit))
    return breaks


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


def checked_header(path: Path, options: CsvOptions) -> list[str]:
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
    refuse_duplicates(path, header, "the header repeats column names")
    return header


def read_csv(
    path: Path, header: list[str], options: CsvOptions, columns: list[int] | None = None
) -> pa.Table:
    """The file's cells as text, every column or the `columns` given (by position: every
    row is still parsed and its fields counted, only those columns are converted)."""
    try:
        return _arrow_csv(path, header, options, False, columns)
    except pa.ArrowInvalid:
        try:  # a quoted line break across Arrow's blocks: the slower exact parse reads it
            return _arrow_csv(path, header, options, True, columns)
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            # Arrow's message quotes the offending row: never pass it on, locate the row.
            raise InputError(f"{path}: {_csv_problem(path, header, options, exc)}") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: {_csv_problem(path, header, options, exc)}") from None


def csv_batches(
    path: Path, header: list[str], options: CsvOptions, rows: int
) -> Iterator[pa.Table]:
    """The CSV about `rows` rows at a time (Arrow's streaming reader, which parses quoted
    line breaks anywhere); a problem raises InputError as `read_csv` would."""
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


def _csv_settings(
    header: list[str], options: CsvOptions, newlines_in_values: bool,
    columns: list[int] | None = None,
) -> dict:  # fmt: skip
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
            include_columns=None if columns is None else [f"__c{i}" for i in columns],
        ),
    }


def _arrow_csv(
    path: Path, header: list[str], options: CsvOptions, newlines_in_values: bool,
    columns: list[int] | None,
) -> pa.Table:  # fmt: skip
    settings = _csv_settings(header, options, newlines_in_values, columns)
    names = header if columns is None else [header[i] for i in columns]
    return pacsv.read_csv(path, **settings).rename_columns(names)


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


def refuse_duplicates(path: Path, names: list[str], what: str) -> None:
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
        while chunk := handle.read(READ_BLOCK):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                return line + chunk[: error.start].count(b"\n")
            line += chunk.count(b"\n")
    return None


def _first_long_line(path: Path) -> int | None:
    line, length = 1, 0
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_BLOCK):
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


def csv_record_starts(path: Path, options: CsvOptions) -> Iterator[int]:
    """The first line of each CSV record, counting quoted line breaks (exact, slow)."""
    return (start for start, record in _csv_records(path, options, strict=False) if record)


def csv_record_lines(path: Path, n_rows: int, options: CsvOptions) -> np.ndarray:
    """First line of each CSV record, as an array of `n_rows` (exact, slow path)."""
    starts = list(csv_record_starts(path, options))
    if len(starts) < n_rows:  # pragma: no cover - the two parsers disagree
        raise InputError(f"{path}: could not match CSV records to lines; check quoting")
    return np.asarray(starts[:n_rows], dtype=np.int64)
