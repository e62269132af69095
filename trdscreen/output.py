"""Writing result tables: one Arrow conversion, then CSV and/or Parquet.

Tables are converted to Arrow with fixed, portable types (dates as date32,
text as string) so CSV and Parquet carry the same values and re-runs give
identical bytes. Categorical columns stay dictionary-encoded on the way to
Parquet, which then writes their codes without hashing every cell again; the
file stores no Arrow schema, so every reader sees plain text columns.
Tables are written two at a time (the writers release the GIL).
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trdscreen.coded import sorted_categories
from trdscreen.io import sha256_file

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


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as Arrow; categorical columns become dictionary arrays of text (what
    the Parquet writer takes; `as_text` gives the plain text the CSV writer needs)."""
    columns = {}
    for name, series in frame.items():
        if isinstance(series.dtype, pd.CategoricalDtype):  # codes -> text in Arrow, no objects
            codes = series.cat.codes.to_numpy()
            categories = pa.array(series.cat.categories.to_numpy(dtype=object), pa.string())
            indices = pa.array(codes.astype(np.int32), mask=codes < 0)  # one type for every piece
            array = pa.DictionaryArray.from_arrays(indices, categories)
        else:
            array = pa.array(series, from_pandas=True)
        if pa.types.is_timestamp(array.type):
            array = array.cast(pa.date32())
        elif pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
            array = array.cast(pa.string())
        columns[str(name)] = array
    return pa.table(columns)


def as_text(table: pa.Table) -> pa.Table:
    """Dictionary columns (from `to_arrow`) cast to plain text."""
    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            table = table.set_column(index, field.name, table.column(index).cast(pa.string()))
    return table


FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet may run a text cell that starts with one of these as a formula."""
ESCAPE_MARK = "'"
# The triggers, and the mark itself so escaping can be undone, as one character class.
_NEEDS_MARK = (
    "^[" + "".join("\\" + c if c in "-" else c for c in (*FORMULA_TRIGGERS, ESCAPE_MARK)) + "]"
)


def _rewrite(column, hit, change):
    where = pc.fill_null(hit(column), False)
    return pc.if_else(where, change(column), column) if pc.any(where).as_py() else column


def _rewrite_text(table: pa.Table, hit, change) -> pa.Table:
    """Replace the text cells where `hit(column)` holds by `change(column)`; other types
    kept. A dictionary column of text is rewritten once per dictionary value."""
    for index, field in enumerate(table.schema):
        column = table.column(index)
        if pa.types.is_dictionary(field.type) and pa.types.is_string(field.type.value_type):
            chunks = [
                pa.DictionaryArray.from_arrays(
                    chunk.indices, _rewrite(chunk.dictionary, hit, change)
                )
                for chunk in column.chunks
            ]
            table = table.set_column(index, field, pa.chunked_array(chunks, field.type))
        elif pa.types.is_string(field.type):
            table = table.set_column(index, field, _rewrite(column, hit, change))
    return table


def escape_formulas(table: pa.Table) -> pa.Table:
    """Prefix `'` to every text cell that starts with a formula trigger (or with `'`).

    Spreadsheets show such a cell as text instead of evaluating it (OWASP's
    advice for CSV injection). Cells that already start with `'` get a second
    one, so `unescape_formulas` restores the exact values. Numbers are not text
    and are never changed (a negative margin stays a number).
    """
    return _rewrite_text(
        table,
        lambda column: pc.match_substring_regex(column, _NEEDS_MARK),
        lambda column: pc.binary_join_element_wise(ESCAPE_MARK, column, ""),
    )


def unescape_formulas(table: pa.Table) -> pa.Table:
    """The inverse of `escape_formulas` (for reading an escaped CSV back)."""
    return _rewrite_text(
        table,
        lambda column: pc.starts_with(column, ESCAPE_MARK),
        lambda column: pc.utf8_slice_codeunits(column, 1),
    )


CONTENT_HASHED = ("decisions",)
"""Tables whose content hash is computed even when no CSV file is written."""


class _HashSink:
    """A write-only file object that hashes what is written to it."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def canonical_dictionaries(table: pa.Table) -> pa.Table:
    """Every dictionary column as one array whose dictionary is the values its rows use,
    sorted (`coded.sorted_categories`), whatever pieces the rows came in.

    The Parquet writer stores a dictionary column's dictionary as given, so this is
    what makes a row group's bytes depend on its rows only: a table written whole,
    streamed in chunks of subjects, or merged from Dask buckets gives the same file.
    """
    for index, field in enumerate(table.schema):
        if not pa.types.is_dictionary(field.type):
            continue
        chunks = table.column(index).chunks
        values = sorted_categories(
            text for chunk in chunks for text in chunk.dictionary.to_pylist()
        ).categories
        union = pa.array(values.to_numpy(dtype=object), pa.string())
        codes = [
            np.append(pc.index_in(chunk.dictionary, value_set=union).to_numpy(False), -1)[
                chunk.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            ]
            for chunk in chunks
        ]
        code = np.concatenate(codes) if codes else np.zeros(0, np.int64)
        used = np.bincount(code[code >= 0], minlength=len(union)) > 0
        renumber = np.append(np.cumsum(used) - 1, -1)
        compact = renumber[code].astype(np.int32)
        array = pa.DictionaryArray.from_arrays(
            pa.array(compact, mask=compact < 0), union.filter(pa.array(used))
        )
        table = table.set_column(index, field.with_type(array.type), array)
    return table


@dataclass(frozen=True)
class Destination:
    """Where and how a run folder is written: the options that ride with every writer."""

    out: Path
    formats: tuple[str, ...] = ("csv",)
    force: bool = False  # replace a run folder trdscreen wrote (never anything else)
    escape_formulas: bool = True  # CSV text cells that would start a formula get a '


@dataclass(frozen=True)
class OutputFile:
    """One written table file, as the manifest and the audit log list it."""

    path: str  # the file name inside the run folder
    table: str
    format: str
    rows: int
    size: int
    sha256: str
    content_sha256: str | None  # the CSV text's SHA-256, whatever formats were written

    def as_json(self) -> dict[str, object]:
        return asdict(self)


class TableSink:
    """One output table written in pieces, in row order, to each format.

    Parquet gets row groups of `ROW_GROUP_ROWS` rows (the last one shorter), each
    with canonical dictionaries, so the file depends on the rows and not on how they
    were cut: written whole, streamed per chunk of subjects or merged from buckets,
    the bytes are the same. CSV gets the rows as text (formula-escaped with
    `escape`); the decisions also get a content hash of that text when no CSV file
    is written. `close` returns a record per file; `abort` removes the files.
    """

    @classmethod
    def of(cls, stem: str, folder: Path, destination: Destination) -> TableSink:
        return cls(stem, folder, destination.formats, destination.escape_formulas)

    def __init__(self, stem: str, folder: Path, formats: tuple[str, ...], escape: bool):
        self.stem, self.formats, self.escape = stem, formats, escape
        self.paths = {fmt: folder / f"{stem}.{fmt}" for fmt in formats}
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0
        self.empty: pa.Table | None = None  # the first empty piece: the schema of no rows
        self.parquet: pq.ParquetWriter | None = None
        self.text: pacsv.CSVWriter | None = None
        self.text_file = None
        self.hash: _HashSink | None = None

    def write(self, frame: pd.DataFrame | pa.Table) -> None:
        table = frame if isinstance(frame, pa.Table) else to_arrow(frame)
        if not table.num_rows:
            self.empty = self.empty if self.empty is not None else table
            return
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= ROW_GROUP_ROWS:
            self._emit(ROW_GROUP_ROWS)

    def _emit(self, rows: int) -> None:
        whole = pa.concat_tables(self.pending) if len(self.pending) > 1 else self.pending[0]
        rest = whole.slice(rows)
        self.pending = [rest] if rest.num_rows else []
        self.pending_rows = rest.num_rows
        self._write_group(canonical_dictionaries(whole.slice(0, rows)).combine_chunks())

    def _write_group(self, table: pa.Table) -> None:
        if "parquet" in self.formats:
            if self.parquet is None:
                self.parquet = pq.ParquetWriter(
                    self.paths["parquet"], table.schema, **PARQUET_OPTIONS
                )
            self.parquet.write_table(table, row_group_size=ROW_GROUP_ROWS)
        if "csv" in self.formats or self.stem in CONTENT_HASHED:
            text = as_text(escape_formulas(table) if self.escape else table)
            if self.text is None:
                if "csv" in self.formats:
                    self.text_file = pa.OSFile(str(self.paths["csv"]), "wb")
                else:
                    self.hash = _HashSink()
                    self.text_file = pa.PythonFile(self.hash, mode="w")
                self.text = pacsv.CSVWriter(self.text_file, text.schema, write_options=CSV_OPTIONS)
            self.text.write_table(text)
        self.rows += table.num_rows

    def close(self) -> list[OutputFile]:
        """Write what is left (a table of no rows if nothing came) and close the files."""
        if self.pending_rows:
            self._emit(self.pending_rows)
        if not self.rows:
            empty = self.empty if self.empty is not None else pa.table({})
            self._write_group(canonical_dictionaries(empty))
        self._close_files()
        hashes = {fmt: sha256_file(path) for fmt, path in self.paths.items()}
        content: str | None
        if "csv" in self.formats:
            content = hashes["csv"]
        else:  # a CSV serialization costs ~1 s per 1M rows: the decisions only
            content = self.hash.digest.hexdigest() if self.hash is not None else None
        return [
            OutputFile(
                path=path.name,
                table=self.stem,
                format=fmt,
                rows=self.rows,
                size=path.stat().st_size,
                sha256=hashes[fmt],
                content_sha256=content,
            )
            for fmt, path in self.paths.items()
        ]

    def _close_files(self) -> None:
        for writer in (self.parquet, self.text, self.text_file):
            if writer is not None:
                writer.close()
        self.parquet = self.text = self.text_file = None

    def abort(self) -> None:
        """Close and remove the files written so far (a run that turned out invalid)."""
        try:
            self._close_files()
        finally:
            for path in self.paths.values():
                path.unlink(missing_ok=True)


def write_tables(
    tables: dict[str, pd.DataFrame], folder: Path, destination: Destination
) -> list[OutputFile]:
    """Write each table in each of the destination's formats into `folder` (the run's
    draft); return a record per written file, in table order.

    With `escape_formulas`, CSV files hold formula-escaped text (`escape_formulas`);
    Parquet always holds the raw values. Two tables are written at a time; an
    error or an interrupt cancels the tables not yet started and waits for the
    ones under way, so the caller can remove the folder.
    """
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="write")
    try:
        futures = [
            pool.submit(write_whole, TableSink.of(stem, folder, destination), frame)
            for stem, frame in tables.items()
        ]
        return [record for future in futures for record in future.result()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def write_whole(sink: TableSink, frame: pd.DataFrame) -> list[OutputFile]:
    """A whole table through its sink: written and closed."""
    try:
        sink.write(frame)
        return sink.close()
    except BaseException:
        sink.abort()
        raise
