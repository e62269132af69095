"""The drug events behind a screened course, when the run screened a `trdscreen build`
folder: `explain` shows them under each course.

The run's manifest names its treatments input with its SHA-256. When that file
sits in a build folder (a manifest.json of kind "build" beside it) and is still
the file the run read, the build's `course_events` table (checked against the
build manifest's SHA-256) maps each treatments row to the events it was built
from. When anything does not match, no event is shown and a note says why:
never events of another build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from trdscreen.buildtables import RATING_COLUMNS
from trdscreen.io import has_sha256
from trdscreen.printable import printable
from trdscreen.runs import RunFolder, records
from trdscreen.sources import build_manifest

EVENT_FIELDS = (
    "source_line", "drug", "event_date", "status", "days", "duration_source",
    "daily_dose_mg", "dose_source",
)  # fmt: skip


@dataclass(frozen=True)
class BuildTrace:
    """The events of one subject by treatments row (1-based), or why there are none; and
    the ratings the build attached to each of those rows."""

    events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    source: str | None = None  # the drug events file
    note: str | None = None
    ratings: dict[int, dict[str, Any]] = field(default_factory=dict)
    ratings_source: str | None = None  # the assessments file


EXPORT_COLUMNS = ("source_file", "first_source_line")
"""A `--profile courses` build's treatments row: the export's file and line it came from."""


def _rows(path: Path, rows: list[int], extra: tuple[str, ...] = ()) -> dict[int, dict[str, Any]]:
    """The rating columns (and `extra` ones) of these treatments rows (1-based), reading
    only the row groups that hold them."""
    file = pq.ParquetFile(path)
    names = [n for n in (*RATING_COLUMNS, *extra) if n in file.schema_arrow.names]
    if not names or not rows:
        return {}
    sizes = [file.metadata.row_group(i).num_rows for i in range(file.num_row_groups)]
    bounds = np.cumsum([0, *sizes])
    wanted = np.asarray(sorted(set(rows)), dtype=np.int64) - 1
    group = np.searchsorted(bounds, wanted, "right") - 1
    groups = sorted(set(group.tolist()))
    before = np.cumsum([0, *(sizes[g] for g in groups)])  # rows read ahead of each group
    at = wanted - bounds[group] + before[np.searchsorted(groups, group)]
    table = file.read_row_groups(groups, columns=names).take(pa.array(at))
    return {int(w) + 1: r for w, r in zip(wanted, records(table.to_pandas()), strict=True)}


def _treatments_input(manifest: dict) -> dict | None:
    for record in manifest.get("inputs", []):
        if isinstance(record, dict) and record.get("role") == "treatments":
            return record
    return None


def build_trace(run: RunFolder, subject_id: str, rows: Sequence[int] = ()) -> BuildTrace | None:
    """None when the run did not screen a build folder; else the subject's events (of a
    `--profile courses` build, which has none, the ratings of its treatments `rows`)."""
    record = _treatments_input(run.manifest)
    if record is None or not isinstance(record.get("resolved_path"), str):
        return None
    treatments = Path(record["resolved_path"])
    folder = treatments.parent
    built = build_manifest(folder)
    if built is None:
        return None
    names = {i.get("role"): Path(i["path"]).name for i in built.get("inputs", []) if "path" in i}
    ratings = names.get("assessments", "assessments")
    # A `--profile courses` build has no events: the ratings attached to the given rows.
    given = built.get("profile") == "courses"
    outputs = {o.get("path"): o for o in built.get("outputs", []) if isinstance(o, dict)}
    trail = outputs.get("course_events.parquet")
    if not has_sha256(treatments, record.get("sha256")) or not (
        given or (trail is not None and has_sha256(folder / trail["path"], trail.get("sha256")))
    ):
        shown = "ratings" if given else "events"
        return BuildTrace(
            note=f"{folder}: the build folder changed since this run; its {shown} are not shown"
        )
    if given:
        return BuildTrace(
            ratings=_rows(treatments, list(rows), EXPORT_COLUMNS), ratings_source=ratings
        )
    events = pd.read_parquet(
        folder / "course_events.parquet", filters=[("subject_id", "==", subject_id)]
    )
    by_row: dict[int, list[dict[str, Any]]] = {}
    for row in records(events):
        if row.get("treatments_row") is not None:
            by_row.setdefault(int(row["treatments_row"]), []).append(
                {k: row.get(k) for k in EVENT_FIELDS}
            )
    return BuildTrace(
        by_row,
        names.get("drug_events", "drug_events"),
        ratings=_rows(treatments, list(by_row)),
        ratings_source=ratings,
    )


def export_text(row: dict[str, Any]) -> str | None:
    """The export's row a `--profile courses` build made this treatments row from."""
    file, line = row.get("source_file"), row.get("first_source_line")
    if not isinstance(file, str) or not isinstance(line, int | float):
        return None
    return f"     the export's row: {printable(file)} line {line:g}"


def rating_text(row: dict[str, Any], source: str) -> str | None:
    """The ratings the build attached to one treatments row, for `explain` (None: none):
    each scale's baseline and end rating with date and line, and the lowest between."""
    parts = []
    version = row.get("hamd_version")
    hamd = f"HAM-D{version:g}" if isinstance(version, int | float) else "HAM-D"
    for scale, label in (("hamd", hamd), ("madrs", "MADRS")):
        shown = {}
        for when in ("start", "end", "lowest"):
            value, line = row.get(f"{scale}_{when}"), row.get(f"{scale}_{when}_line")
            if isinstance(value, int | float) and isinstance(line, int | float):
                # (a rating without a line is the export's own: not the build's to show)
                shown[when] = f"{value:g} on {row.get(f'{scale}_{when}_date')} (line {line:g})"
        if shown:
            text = f"{label} {shown.get('start', 'none')} -> {shown.get('end', 'none')}"
            if "lowest" in shown:
                text += f", lowest between {shown['lowest']}"
            parts.append(text)
    return f"     ratings ({source}): " + "; ".join(parts) if parts else None
