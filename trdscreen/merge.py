"""Merging what partitions of a cohort give (chunks of the default engine, Dask buckets)
back into what the whole cohort gives: the same rows, order and dtypes."""

from __future__ import annotations

import numpy as np
import pandas as pd

from trdscreen.coded import sorted_categories
from trdscreen.issues import (
    ISSUE_COLUMNS,
    cap_issues,
    empty_issues,
    is_summary,
    sorted_issues,
)
from trdscreen.quarantine import Quarantine, held_attrition, without_held_step
from trdscreen.validate import ValidatedInputs

QUARANTINE_ORDER = ["source_line"]
"""The quarantine tables' order (as the whole cohort's run writes them)."""


def partition_rows(numbers: np.ndarray, count: int) -> list[np.ndarray]:
    """The row positions of each partition 0..count-1, each in file order."""
    order = np.argsort(numbers, kind="stable")
    bounds = np.searchsorted(numbers[order], np.arange(count + 1))
    return [order[bounds[p] : bounds[p + 1]] for p in range(count)]


def _unified(frames: list[pd.DataFrame]) -> list[pd.DataFrame]:
    """Give every frame the same dtype per column, as one frame of all rows would have:
    a column that is nullable Int64 anywhere (held subjects) is Int64 everywhere, and a
    categorical column has the union of the parts' categories."""
    if len(frames) < 2:
        return frames
    target = {}
    for name in frames[0].columns:
        dtypes = [f[name].dtype for f in frames]
        if all(d == dtypes[0] for d in dtypes):
            continue
        if all(isinstance(d, pd.CategoricalDtype) for d in dtypes):
            # Each part's categories are the texts it uses (trdscreen.coded):
            # the whole table's are their union, sorted the same way.
            target[name] = sorted_categories(set().union(*(d.categories for d in dtypes)))
            continue
        nullable = [d for d in dtypes if isinstance(d, pd.Int64Dtype)]
        target[name] = (
            nullable[0]
            if nullable
            else max(zip((len(f) for f in frames), dtypes, strict=True), key=lambda pair: pair[0])[
                1
            ]
        )
    if not target:
        return frames
    return [f.astype(target) for f in frames]


def merge_sorted(frames: list[pd.DataFrame], by: list[str]) -> pd.DataFrame:
    """Concatenate parts and sort by `by` (a key unique per row, so the order is total)."""
    frames = _unified([f for f in frames if len(f)] or frames[:1])
    table = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return table.sort_values(by, kind="stable").reset_index(drop=True)


def merge_issues(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """All parts' issues in the default order; file-level issues (line 0) once."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return empty_issues()
    issues = pd.concat(_unified(frames), ignore_index=True)
    file_level = (issues["line"] == 0) & ~is_summary(issues)
    once = ~(file_level & issues.duplicated(ISSUE_COLUMNS))
    return cap_issues(sorted_issues(issues[once]))


def merge_validated(issues: list[pd.DataFrame], rejections: list[pd.DataFrame]) -> ValidatedInputs:
    """The issues and rejections of all parts (typed frames stay with the parts)."""
    merged = pd.concat(rejections, ignore_index=True) if rejections else None
    return ValidatedInputs(pd.DataFrame(), pd.DataFrame(), merge_issues(issues), merged)


def merge_quarantine(held: list[Quarantine]) -> Quarantine:
    """One quarantine from the parts' (held ids sorted, rows by source line)."""
    ids = pd.Index(np.concatenate([np.asarray(q.held, dtype=object) for q in held]), dtype="str")
    reasons = np.concatenate([q.reasons for q in held])
    order = np.argsort(ids.to_numpy(dtype=object), kind="stable")
    return Quarantine(
        ids[order],
        reasons[order],
        np.zeros(0, bool),  # row masks are per part and already applied
        np.zeros(0, bool),
        merge_sorted([q.treatments for q in held], QUARANTINE_ORDER),
        merge_sorted([q.subjects for q in held], QUARANTINE_ORDER),
    )


def merge_attrition(
    tables: list[pd.DataFrame], held: list[Quarantine | None], quarantine: Quarantine | None
) -> pd.DataFrame:
    """Counts add up over parts (each part's own quarantine step taken out); the
    quarantine step is added once, with the total held."""
    tables = [
        without_held_step(table, part) if part is not None else table
        for table, part in zip(tables, held, strict=True)
    ]
    first = tables[0]
    counts = [c for c in first.columns if c not in ("step", "criterion_id", "title")]
    total = first.copy()
    total[counts] = sum(t[counts].to_numpy() for t in tables)
    if quarantine is not None:
        total = held_attrition(total, len(quarantine.held))
    return total.astype(first.dtypes.to_dict())
