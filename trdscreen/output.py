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
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.io import WRITERS, sha256_file


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as Arrow; categorical columns become dictionary arrays of text (what
    the Parquet writer takes; `as_text` gives the plain text the CSV writer needs)."""
    columns = {}
    for name, series in frame.items():
        if isinstance(series.dtype, pd.CategoricalDtype):  # codes -> text in Arrow, no objects
            codes = series.cat.codes.to_numpy()
            categories = pa.array(series.cat.categories.to_numpy(dtype=object), pa.string())
            array = pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), categories)
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
_NEEDS_MARK = r"^[=+\-@\t\r']"  # the triggers, and the mark itself so escaping can be undone


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


def content_sha256(table: pa.Table) -> str:
    """SHA-256 of the table's canonical CSV (what the CSV writer puts in a file).

    The same for a CSV and a Parquet run of the same decisions and escaping
    option, so runs in different formats can be compared; for a CSV output it
    equals the file hash. Pass the table as the CSV would hold it (escaped or not).
    """
    sink = _HashSink()
    with pa.PythonFile(sink, mode="w") as stream:
        WRITERS["csv"][1](table, stream)
    return sink.digest.hexdigest()


def write_tables(
    tables: dict[str, pd.DataFrame],
    folder: Path,
    formats: tuple[str, ...],
    escape: bool = True,
) -> list[dict[str, object]]:
    """Write each table in each format; return a record per written file, in table order.

    With `escape`, CSV files hold formula-escaped text (`escape_formulas`);
    Parquet always holds the raw values. Two tables are written at a time; an
    error or an interrupt cancels the tables not yet started and waits for the
    ones under way, so the caller can remove the folder.
    """
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="write")
    try:
        futures = [
            pool.submit(_write_table, stem, frame, folder, formats, escape)
            for stem, frame in tables.items()
        ]
        return [record for future in futures for record in future.result()]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _write_table(
    stem: str, frame: pd.DataFrame, folder: Path, formats: tuple[str, ...], escape: bool
) -> list[dict[str, object]]:
    table = to_arrow(frame)
    hashed = "csv" in formats or stem in CONTENT_HASHED
    as_csv = None
    if hashed:
        as_csv = as_text(escape_formulas(table) if escape else table)
    written = []
    for fmt in formats:
        suffix, writer = WRITERS[fmt]
        path = folder / f"{stem}{suffix}"
        writer(as_csv if fmt == "csv" else table, path)
        written.append(
            {
                "path": path.name,
                "table": stem,
                "format": fmt,
                "rows": table.num_rows,
                "size": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
    # The format-free hash: the CSV file's own hash when one is written; otherwise
    # computed for the decisions only (a CSV serialization costs ~1 s per 1M rows).
    if "csv" in formats:
        content = written[formats.index("csv")]["sha256"]
    else:
        content = content_sha256(as_csv) if as_csv is not None else None
    return [{**record, "content_sha256": content} for record in written]
