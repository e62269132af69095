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

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from trdscreen.io import sha256_file
from trdscreen.runs import RunFolder, records

EVENT_FIELDS = (
    "source_line", "drug", "event_date", "status", "days", "duration_source",
    "daily_dose_mg", "dose_source",
)  # fmt: skip


@dataclass(frozen=True)
class BuildTrace:
    """The events of one subject by treatments row (1-based), or why there are none."""

    events: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    source: str | None = None  # the drug events file
    note: str | None = None


def _treatments_input(manifest: dict) -> dict | None:
    for record in manifest.get("inputs", []):
        if isinstance(record, dict) and record.get("role") == "treatments":
            return record
    return None


def build_trace(run: RunFolder, subject_id: str) -> BuildTrace | None:
    """None when the run did not screen a build folder; else the subject's events."""
    record = _treatments_input(run.manifest)
    if record is None or not isinstance(record.get("resolved_path"), str):
        return None
    treatments = Path(record["resolved_path"])
    folder = treatments.parent
    try:
        built = json.loads((folder / "manifest.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(built, dict) or built.get("kind") != "build":
        return None
    outputs = {o.get("path"): o for o in built.get("outputs", []) if isinstance(o, dict)}
    trail = outputs.get("course_events.parquet")
    try:
        same_input = sha256_file(treatments) == record.get("sha256")
        same_trail = trail is not None and sha256_file(folder / trail["path"]) == trail["sha256"]
    except OSError:
        same_input = same_trail = False
    if not same_input or not same_trail:
        return BuildTrace(
            note=f"{folder}: the build folder changed since this run; its events are not shown"
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
    sources = [i for i in built.get("inputs", []) if i.get("role") == "drug_events"]
    source = Path(sources[0]["path"]).name if sources else "drug_events"
    return BuildTrace(by_row, source)
