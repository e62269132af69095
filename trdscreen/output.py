"""Writing result tables: one Arrow conversion, then CSV and/or Parquet.

Tables are converted to Arrow with fixed, portable types (dates as date32,
categories as text) so CSV and Parquet carry the same values and re-runs
give identical bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pyarrow as pa

from trdscreen.io import WRITERS, sha256_file


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    columns = {}
    for name, series in frame.items():
        if isinstance(series.dtype, pd.CategoricalDtype):
            series = series.astype("str")
        array = pa.array(series, from_pandas=True)
        if pa.types.is_timestamp(array.type):
            array = array.cast(pa.date32())
        elif pa.types.is_large_string(array.type) or pa.types.is_string_view(array.type):
            array = array.cast(pa.string())
        columns[str(name)] = array
    return pa.table(columns)


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

    The same for a CSV and a Parquet run of the same decisions, so runs in
    different formats can be compared; for a CSV output it equals the file hash.
    """
    sink = _HashSink()
    with pa.PythonFile(sink, mode="w") as stream:
        WRITERS["csv"][1](table, stream)
    return sink.digest.hexdigest()


def write_tables(
    tables: dict[str, pd.DataFrame], folder: Path, formats: tuple[str, ...]
) -> list[dict[str, object]]:
    """Write each table in each format; return a record per written file."""
    records = []
    for stem, frame in tables.items():
        table = to_arrow(frame)
        written = []
        for fmt in formats:
            suffix, writer = WRITERS[fmt]
            path = folder / f"{stem}{suffix}"
            writer(table, path)
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
            content = content_sha256(table) if stem in CONTENT_HASHED else None
        records += [{**record, "content_sha256": content} for record in written]
    return records
