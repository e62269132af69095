"""`screen --engine dask`: the same kernel, one task per hash bucket of subject_id.

Every check and decision depends on one subject's rows only, so a cohort can
be cut into buckets that each hold all rows (courses and subject row) of
their subjects, and each bucket screened on its own by
`pipeline.screen_part`, the kernel the default engine runs on the whole
cohort. The bucket of a row is a stable hash of its subject key as validation
reads it (text, trimmed): pandas' SipHash with its fixed key, modulo the
number of buckets (never Python's salted `hash`). The results do not depend
on the number of buckets, only on the subjects.

The buckets' tables are merged back into the order the default engine writes
(decisions by subject, courses by subject, start and line, ledger by subject
and criterion order, issues by file, line, column and check), with the same
dtypes, so the written tables are byte-identical to the default engine's.

Without a scheduler address a local cluster is started on 127.0.0.1
(`workers` processes, one thread each, `worker_memory` each); with one, the
buckets run on that cluster, whose workers need trdscreen installed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.coded import sorted_categories
from trdscreen.errors import UsageError
from trdscreen.io import SourceTable
from trdscreen.pipeline import Part, Screening, ScreenResult, screen_part
from trdscreen.quarantine import Quarantine, held_attrition, without_held_step
from trdscreen.schemas import ISSUE_COLUMNS, empty_issues, sorted_issues
from trdscreen.validate import ValidatedInputs

ENGINES = ("pandas", "dask")

ORDER = {
    "decisions": ["subject_id"],
    "courses": ["subject_id", "start_date", "source_line"],
    "ledger": ["subject_id", "order"],
    "quarantine": ["source_line"],
}
"""Sort keys of the merged tables: the orders the default engine produces."""


@dataclass(frozen=True)
class DaskOptions:
    scheduler: str | None = None  # address of a running scheduler; None: a local cluster
    partitions: int | None = None  # hash buckets; None: 4 per worker
    workers: int = 2  # local cluster only
    worker_memory: str = "auto"  # local cluster only, e.g. "2GiB"

    def __post_init__(self) -> None:
        if self.partitions is not None and self.partitions < 1:
            raise UsageError(f"--partitions {self.partitions}: expected at least 1")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: expected at least 1")


def bucket_of(ids: pa.ChunkedArray | pa.Array, buckets: int) -> np.ndarray:
    """Stable bucket number per row: SipHash (pandas' fixed key) of the key text, mod
    `buckets`. Rows without a key go to bucket 0. Each distinct key is hashed once."""
    text = pc.utf8_trim_whitespace(ids.cast(pa.string()))
    encoded = pc.dictionary_encode(text)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    keys = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    per_key = (pd.util.hash_array(keys, categorize=False) % np.uint64(buckets)).astype(np.int64)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    valid = ~np.asarray(encoded.indices.is_null().to_numpy(zero_copy_only=False))
    out = np.zeros(len(text), np.int64)
    out[valid] = per_key[codes[valid].astype(np.int64)]
    return out


def partition_rows(numbers: np.ndarray, count: int) -> list[np.ndarray]:
    """The row positions of each partition 0..count-1, each in file order."""
    order = np.argsort(numbers, kind="stable")
    bounds = np.searchsorted(numbers[order], np.arange(count + 1))
    return [order[bounds[p] : bounds[p + 1]] for p in range(count)]


def split(source: SourceTable | None, buckets: int) -> list[SourceTable | None]:
    """The rows of each bucket, in file order, with their source lines."""
    if source is None:
        return [None] * buckets
    if "subject_id" not in source.table.column_names:
        # Validation reports the missing key column; one bucket gives that report.
        return [source] + [None] * (buckets - 1)
    bucket = bucket_of(source.table["subject_id"], buckets)
    return [source.take(rows) if len(rows) else None for rows in partition_rows(bucket, buckets)]


def _piece_or_empty(piece: SourceTable | None, source: SourceTable) -> SourceTable:
    return piece if piece is not None else source.take(np.zeros(0, np.int64))


def run_parts(
    treatments: SourceTable,
    subjects: SourceTable | None,
    screening: Screening,
    options: DaskOptions,
) -> list[Part]:
    """Run the kernel on every non-empty bucket on a Dask cluster, in bucket order."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UsageError(
            "--engine dask needs dask.distributed: pip install 'trdscreen[dask]'"
        ) from None

    cluster = None
    if options.scheduler is None:
        cluster = LocalCluster(
            n_workers=options.workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # loopback, any free port
            memory_limit=options.worker_memory,
        )
    try:
        with Client(options.scheduler or cluster) as client:
            workers = max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
            buckets = options.partitions or 4 * workers
            course_pieces = split(treatments, buckets)
            subject_pieces = split(subjects, buckets)
            futures = []
            for b, (courses, people) in enumerate(zip(course_pieces, subject_pieces, strict=True)):
                if courses is None and people is None:
                    continue
                futures.append(
                    client.submit(
                        screen_part,
                        _piece_or_empty(courses, treatments),
                        people,
                        screening,
                        key=f"trdscreen-bucket-{b}-of-{buckets}",
                        pure=False,
                    )
                )
            del course_pieces, subject_pieces
            return client.gather(futures)
    finally:
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------- merging


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
    file_level = issues["line"] == 0
    once = ~(file_level & issues.duplicated(ISSUE_COLUMNS))
    return sorted_issues(issues[once])


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
        merge_sorted([q.treatments for q in held], ORDER["quarantine"]),
        merge_sorted([q.subjects for q in held], ORDER["quarantine"]),
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


def merge_results(parts: list[Part], issues: pd.DataFrame) -> ScreenResult:
    """One result from every part's result, as the default engine would have given it."""
    results = [p.result for p in parts if p.result is not None]
    held = [r.quarantine for r in results if r.quarantine is not None]
    quarantine = merge_quarantine(held) if held else None
    return ScreenResult(
        decisions=merge_sorted([r.decisions for r in results], ORDER["decisions"]),
        courses=merge_sorted([r.courses for r in results], ORDER["courses"]),
        ledger=merge_sorted([r.ledger for r in results], ORDER["ledger"]),
        attrition=merge_attrition(
            [r.attrition for r in results], [r.quarantine for r in results], quarantine
        ),
        issues=issues,
        quarantine=quarantine,
    )
