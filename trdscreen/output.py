"""Writing result tables: one Arrow conversion, then CSV and/or Parquet.

Tables are converted to Arrow with fixed, portable types (dates as date32,
categories as text) so CSV and Parquet carry the same values and re-runs
give identical bytes.
"""

from __future__ import annotations

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


def write_tables(
    tables: dict[str, pd.DataFrame], folder: Path, formats: tuple[str, ...]
) -> list[dict[str, object]]:
    """Write each table in each format; return a record per written file."""
    records = []
    for stem, frame in tables.items():
        table = to_arrow(frame)
        for fmt in formats:
            suffix, writer = WRITERS[fmt]
            path = folder / f"{stem}{suffix}"
            writer(table, path)
            records.append(
                {
                    "path": path.name,
                    "table": stem,
                    "format": fmt,
                    "rows": table.num_rows,
                    "size": path.stat().st_size,
                    "sha256": sha256_file(path),
                }
            )
    return records
