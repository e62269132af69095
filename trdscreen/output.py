"""Writing result tables: one Arrow conversion, then CSV and/or Parquet.

Tables are converted to Arrow with fixed, portable types (dates as date32,
text as string) so CSV and Parquet carry the same values and re-runs give
identical bytes. Categorical columns stay dictionary-encoded on the way to
Parquet, which then writes their codes without hashing every cell again; the
file stores no Arrow schema, so every reader sees plain text columns.
Tables are written two at a time (the writers release the GIL).
"""

from __future__ import annotations

import codecs
import hashlib
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trdscreen.io import sha256_file
from trdscreen.printable import ESCAPE_MARK, FORMULA_TRIGGERS

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
NEAR_UNIQUE = (
    "subject_id", "source_line", "first_source_line", "last_source_line", "treatments_row",
)  # fmt: skip
"""Columns whose values are (nearly) all different within a row group: a dictionary
page would be tried, grow and be thrown away for each, at a cost and no saving."""
UNIQUE_IDS = ("course_id", "episode_id")
"""Ids that are near-unique as text (a build's `SUBJECT:3`), but not as the screen's
course numbers per subject (1, 2, ...), which a dictionary page holds well."""
KEY = "subject_id"


def parquet_options(schema: pa.Schema) -> dict[str, object]:
    """PARQUET_OPTIONS for a table of this schema, column by column: dictionary pages
    for every column but the NEAR_UNIQUE ones, and min/max statistics only for the
    subject key and the columns that are not text (text statistics cost the writer
    a comparison of every string, and no reader prunes row groups on a drug name or a
    reason list). The values written are the same; only the encoding differs."""
    text = {
        field.name
        for field in schema
        if pa.types.is_string(field.type)
        or pa.types.is_large_string(field.type)
        or (pa.types.is_dictionary(field.type) and pa.types.is_string(field.type.value_type))
    }
    names = schema.names
    return {
        **PARQUET_OPTIONS,
        "use_dictionary": [
            n for n in names if n not in NEAR_UNIQUE and not (n in UNIQUE_IDS and n in text)
        ],
        "write_statistics": [n for n in names if n not in text or n == KEY],
    }


CSV_OPTIONS = pacsv.WriteOptions(include_header=True)
EXCEL_EU_OPTIONS = pacsv.WriteOptions(include_header=True, delimiter=";")
"""`--csv-dialect excel-eu`: what a spreadsheet set to a European locale opens as columns
(with a UTF-8 byte-order mark before the header and decimal commas, `excel_eu`)."""
CSV_DIALECTS = ("standard", "excel-eu")
FILE_FORMATS = ("csv", "parquet")
"""Formats written as one file per table; `xlsx` is one workbook (`write_workbook`)."""
WORKBOOK = "screening.xlsx"
WORKBOOK_PARTS = ".xlsx-parts"
"""A hidden folder of the run's draft holding each table's rows until the workbook is
written (`write_workbook` removes it)."""


def excel_eu(text: pa.Table) -> pa.Table:
    """CSV text for a European spreadsheet: every floating-point number written with a
    decimal comma (as the standard text writes it, the point replaced)."""
    for index, field in enumerate(text.schema):
        if pa.types.is_floating(field.type):
            column = pc.replace_substring(text.column(index).cast(pa.string()), ".", ",")
            text = text.set_column(index, pa.field(field.name, pa.string()), column)
    return text


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    """The frame as Arrow; categorical columns become dictionary arrays of text (what
    the Parquet writer takes; `as_text` gives the plain text the CSV writer needs)."""
    columns = {}
    for name, series in frame.items():
        if isinstance(series.dtype, pd.CategoricalDtype):  # codes -> text in Arrow, no objects
            codes = series.cat.codes.to_numpy()
            categories = pa.array(series.cat.categories.to_numpy(dtype=object), pa.string())
            empty = codes < 0 if len(codes) and codes.min() < 0 else None  # no mask: faster
            indices = pa.array(codes.astype(np.int32), mask=empty)  # one type for every piece
            # pandas keeps a categorical's codes within its categories: no bounds check
            array = pa.DictionaryArray.from_arrays(indices, categories, safe=False)
        elif series.dtype == np.float64:  # NaN is empty, as from_pandas reads it, at half the cost
            values = series.to_numpy()
            nan = np.isnan(values)
            array = pa.array(values, mask=nan if nan.any() else None)
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
                pa.DictionaryArray.from_arrays(  # the same indices into as many values
                    chunk.indices, _rewrite(chunk.dictionary, hit, change), safe=False
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


def write_worklist(table: pd.DataFrame, path: Path, escape: bool = True) -> None:
    """A worklist CSV (every column text), its cells escaped as the run's CSVs are (a
    subject id exported as `=HYPERLINK(...)` is written `'=HYPERLINK(...)`), so opening it
    in a spreadsheet runs nothing; `adjudication.read_adjudications` undoes the mark. Put
    in place whole: a failed write leaves the old file."""
    arrow = pa.table(
        {name: pa.array(table[name].to_numpy(object), pa.string()) for name in table.columns}
    )  # every column text (escape_formulas rewrites `string` and dictionary columns)
    written = (escape_formulas(arrow) if escape else arrow).to_pandas()
    draft = path.with_name(f".{path.name}.draft")
    written.to_csv(draft, index=False)
    draft.replace(path)


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
    sorted (as `coded.sorted_categories` sorts them), whatever pieces the rows came in.

    The Parquet writer stores a dictionary column's dictionary as given, so this is
    what makes a row group's bytes depend on its rows only: a table written whole,
    streamed in chunks of subjects, or merged from Dask buckets gives the same file.
    Done in Arrow: the pieces' dictionaries unified, the codes used found and the
    values sorted (a few per column), then one `take` renumbers every row (none when
    the unified dictionary is already the sorted values in use).
    """
    for index, field in enumerate(table.schema):
        if not pa.types.is_dictionary(field.type):
            continue
        whole = table.column(index).combine_chunks()  # one dictionary for every piece
        if isinstance(whole, pa.ChunkedArray):  # pragma: no cover - older pyarrow
            whole = pa.concat_arrays(whole.chunks)
        indices = whole.indices.cast(pa.int32())
        counts = np.bincount(
            pc.fill_null(indices, len(whole.dictionary)).to_numpy(zero_copy_only=False),
            minlength=len(whole.dictionary) + 1,
        )
        used = np.flatnonzero(counts[:-1]).astype(np.int32)
        values = whole.dictionary.cast(pa.string()).take(pa.array(used, pa.int32()))
        order = pc.sort_indices(values).to_numpy(zero_copy_only=False)
        renumber = np.zeros(len(whole.dictionary), dtype=np.int32)
        renumber[used[order]] = np.arange(len(order), dtype=np.int32)
        if len(used) == len(renumber) and (renumber == np.arange(len(renumber))).all():
            codes = indices  # every value used, already in order: the same codes
        else:
            codes = pc.take(pa.array(renumber), indices)  # nulls stay null
        array = pa.DictionaryArray.from_arrays(codes, values.take(pa.array(order)), safe=False)
        table = table.set_column(index, field.with_type(array.type), array)
    return table


@dataclass(frozen=True)
class Destination:
    """Where and how a run folder is written: the options that ride with every writer."""

    out: Path
    formats: tuple[str, ...] = ("csv",)
    force: bool = False  # replace a run folder trdscreen wrote (never anything else)
    escape_formulas: bool = True  # CSV text cells that would start a formula get a '
    csv_dialect: str = "standard"  # or "excel-eu": ; between fields, decimal commas, a BOM
    tables: tuple[str, ...] | None = None  # --tables: only these (None: every table)

    def writes(self, name: str) -> bool:
        """Whether the run writes this table (or `report`)."""
        return self.tables is None or name in self.tables


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
        return cls(
            stem, folder, destination.formats, destination.escape_formulas, destination.csv_dialect
        )

    def __init__(
        self,
        stem: str,
        folder: Path,
        formats: tuple[str, ...],
        escape: bool,
        dialect: str = "standard",
    ):
        self.stem, self.formats, self.escape, self.dialect = stem, formats, escape, dialect
        self.paths = {fmt: folder / f"{stem}.{fmt}" for fmt in formats if fmt in FILE_FORMATS}
        self.workbook_part = (
            folder / WORKBOOK_PARTS / f"{stem}.arrow" if "xlsx" in formats else None
        )
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.rows = 0
        self.empty: pa.Table | None = None  # the first empty piece: the schema of no rows
        self.parquet: pq.ParquetWriter | None = None
        self.text: pacsv.CSVWriter | None = None  # the CSV file, in its dialect
        self.text_file = None
        self.hashed: pacsv.CSVWriter | None = None  # standard CSV text, only hashed
        self.hash_file = None
        self.hash: _HashSink | None = None
        self.part: pa.ipc.RecordBatchStreamWriter | None = None
        self.part_file = None

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
                    self.paths["parquet"], table.schema, **parquet_options(table.schema)
                )
            self.parquet.write_table(table, row_group_size=ROW_GROUP_ROWS)
        standard_file = "csv" in self.formats and self.dialect == "standard"
        if "csv" in self.formats or self.stem in CONTENT_HASHED:
            text = as_text(escape_formulas(table) if self.escape else table)
            if "csv" in self.formats:
                shown = text if standard_file else excel_eu(text)
                if self.text is None:
                    handle = self.text_file = pa.OSFile(str(self.paths["csv"]), "wb")
                    options = CSV_OPTIONS if standard_file else EXCEL_EU_OPTIONS
                    if not standard_file:
                        handle.write(codecs.BOM_UTF8)
                    self.text = pacsv.CSVWriter(handle, shown.schema, write_options=options)
                self.text.write_table(shown)
            if not standard_file:  # the content hash is of the standard text, always
                if self.hashed is None:
                    self.hash = _HashSink()
                    self.hash_file = pa.PythonFile(self.hash, mode="w")
                    self.hashed = pacsv.CSVWriter(
                        self.hash_file, text.schema, write_options=CSV_OPTIONS
                    )
                self.hashed.write_table(text)
        if self.workbook_part is not None:  # the values, as Parquet holds them
            plain = as_text(table)
            if self.part is None:
                self.workbook_part.parent.mkdir(exist_ok=True)
                self.part_file = pa.OSFile(str(self.workbook_part), "wb")
                self.part = pa.ipc.new_stream(self.part_file, plain.schema)
            self.part.write_table(plain)
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
        if "csv" in self.formats and self.dialect == "standard":
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
        writers = (self.parquet, self.text, self.text_file, self.hashed, self.hash_file)
        for writer in (*writers, self.part, self.part_file):
            if writer is not None:
                writer.close()
        self.parquet = self.text = self.text_file = self.hashed = self.hash_file = None
        self.part = self.part_file = None

    def abort(self) -> None:
        """Close and remove the files written so far (a run that turned out invalid)."""
        try:
            self._close_files()
        finally:
            for path in self.paths.values():
                path.unlink(missing_ok=True)
            if self.workbook_part is not None:
                self.workbook_part.unlink(missing_ok=True)


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
            if destination.writes(stem)
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


SHEET_ROWS = 1_048_575
"""Data rows in one worksheet (Excel's 1,048,576 rows, less the header): a longer
table continues on sheets named `courses (2)`, `courses (3)`, ..."""
WORKBOOK_CREATED = datetime(2000, 1, 1)
"""The workbook's creation date: fixed, so a re-run writes the same bytes (the run's
own times are in the manifest)."""


def column_title(name: str) -> str:
    """A column's title in the workbook: `first_failed_criterion` is `First failed criterion`."""
    words = name.replace("_", " ")
    return words[:1].upper() + words[1:]


def write_workbook(folder: Path, order: tuple[str, ...]) -> list[OutputFile]:
    """The workbook of a run written with `--format xlsx`: one sheet per table (in
    `order`, then any other), a frozen header row of readable titles with filters, and
    the values as Parquet holds them. Text is always written as text, never as a
    formula or a link (no escaping needed, none applied). Removes the parts folder."""
    import xlsxwriter

    parts_folder = folder / WORKBOOK_PARTS
    if not parts_folder.is_dir():
        return []
    parts = {p.stem: p for p in parts_folder.glob("*.arrow")}
    stems = [s for s in order if s in parts] + sorted(set(parts) - set(order))
    path = folder / WORKBOOK
    book = xlsxwriter.Workbook(
        str(path),
        {
            "strings_to_formulas": False,
            "strings_to_urls": False,
            "strings_to_numbers": False,
            "constant_memory": True,
            "default_date_format": "yyyy-mm-dd",
        },
    )
    book.set_properties({"created": WORKBOOK_CREATED})
    header = book.add_format({"bold": True})
    rows = 0
    try:
        for stem in stems:
            with pa.OSFile(str(parts[stem]), "rb") as source:
                table = pa.ipc.open_stream(source).read_all()
            rows += table.num_rows
            _write_sheets(book, stem, table, header)
    finally:
        book.close()
        shutil.rmtree(parts_folder, ignore_errors=True)
    digest = sha256_file(path)
    return [OutputFile(WORKBOOK, "workbook", "xlsx", rows, path.stat().st_size, digest, None)]


def _write_sheets(book, stem: str, table: pa.Table, header) -> None:
    titles = [column_title(n) for n in table.column_names]
    for number, start in enumerate(range(0, max(table.num_rows, 1), SHEET_ROWS), start=1):
        sheet = book.add_worksheet(stem if number == 1 else f"{stem} ({number})"[:31])
        for index, title in enumerate(titles):
            sheet.set_column(index, index, min(max(len(title) + 2, 10), 40))
        sheet.freeze_panes(1, 0)
        piece = table.slice(start, SHEET_ROWS)
        if titles:
            sheet.autofilter(0, 0, max(piece.num_rows, 1), len(titles) - 1)
        sheet.write_row(0, 0, titles, header)
        columns = [_cells(piece.column(i)) for i in range(piece.num_columns)]
        for row, values in enumerate(zip(*columns, strict=True), start=1):
            sheet.write_row(row, 0, values)


def _cells(column: pa.ChunkedArray) -> list:
    """A column's cells for the workbook: NaN as an empty cell (a sheet has no NaN)."""
    values = column.to_pylist()
    if pa.types.is_floating(column.type):
        return [None if v is None or v != v else v for v in values]
    return values
