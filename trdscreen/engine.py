"""`screen --engine dask`: the same kernel, one task per hash bucket of subject_id,
with no process holding the whole cohort.

Every check and decision depends on one subject's rows only, so a cohort can
be cut into buckets that each hold all rows (courses and subject row) of
their subjects, and each bucket screened on its own by
`pipeline.decide_part`, the kernel the default engine runs per chunk. The
bucket of a row is a stable hash of its subject key as validation reads it
(text, trimmed): pandas' SipHash with its fixed key, modulo the number of
buckets (never Python's salted `hash`). The results do not depend on the
number of buckets, only on the subjects.

The run, so that a cohort larger than memory completes:

1. The client reads each input a batch of rows at a time, routes each batch's
   rows to their buckets and hands the pieces to the bucket's worker
   (`Client.scatter`). It keeps a hash-chosen sample of the keys it saw.
2. The sample, sorted, cuts the key space into intervals of about
   `interval_subjects` subjects. Each bucket's task validates and screens its
   subjects and writes its tables to its worker's local disk, one Arrow IPC
   file per table with one record batch per interval (`Pieces`). Input pieces
   wait in the workers' memory and are spilled to disk by Dask beyond the
   memory limit.
3. The client has the workers read the buckets' pieces one interval at a
   time (`read_interval`, on the worker holding the files), puts their rows
   in key order (within an interval each subject's rows come from one bucket,
   already in order) and appends them to the output files (`TableSink`)
   while the next interval is read. The run's files are then removed from
   the workers.

So the client holds a batch of input or an interval of output at a time, a
worker the bucket it is screening, and the written tables are byte-identical
to the default engine's. Without a scheduler address a local cluster is
started on 127.0.0.1 (`workers` processes, one thread each, `worker_memory`
each); with one, the buckets run on that cluster, whose workers need
trdscreen installed and a local disk; no files are shared (data travels
through Dask).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.conventions import text_as_read
from trdscreen.errors import UsageError
from trdscreen.io import InputFile, LinesNotCounted, SourceTable
from trdscreen.merge import partition_rows
from trdscreen.output import Destination, OutputFile, to_arrow
from trdscreen.pipeline import Screening, decide_part
from trdscreen.stream import (
    STREAMED,
    Collector,
    PartSummary,
    StreamedResult,
    ledger_bounded,
    sinks_for,
    write_behind,
)
from trdscreen.validate import ValidatedInputs

BUCKET_ROWS = 1 << 18
"""Input rows per bucket the default bucket count aims at (at least 4 buckets per worker)."""

BATCH_ROWS = 1 << 20
"""Input rows the client reads and routes at a time."""

INTERVAL_SUBJECTS = 1 << 16
"""Subjects per interval of the merge, about."""

SAMPLE_EVERY = 1024
"""About one key in this many is sampled to place the interval boundaries."""


@dataclass(frozen=True)
class DaskOptions:
    scheduler: str | None = None  # address of a running scheduler; None: a local cluster
    partitions: int | None = None  # hash buckets; None: 4 per worker, or more for big inputs
    workers: int = 2  # local cluster only
    worker_memory: str = "auto"  # local cluster only, e.g. "2GiB"
    interval_subjects: int = INTERVAL_SUBJECTS  # the merge's step; tests make it small
    batch_rows: int = BATCH_ROWS  # rows read and routed at a time

    def __post_init__(self) -> None:
        if self.partitions is not None and self.partitions < 1:
            raise UsageError(f"--partitions {self.partitions}: expected at least 1")
        if self.workers < 1:
            raise UsageError(f"--workers {self.workers}: expected at least 1")
        if self.interval_subjects < 1 or self.batch_rows < 1:
            raise UsageError("interval_subjects and batch_rows must be at least 1")

    def buckets(self, workers: int, rows: int, per_bucket: int = 0) -> int:
        """The bucket count: as given, else 4 per worker and at most about `per_bucket`
        (default `BUCKET_ROWS`) input rows per bucket, so one bucket's screening fits a
        worker."""
        per_bucket = per_bucket or BUCKET_ROWS
        return self.partitions or max(4 * workers, math.ceil(rows / per_bucket))


def _key_hashes(ids: pa.ChunkedArray | pa.Array) -> tuple[pa.DictionaryArray, np.ndarray]:
    """The keys trimmed and dictionary-encoded, and a SipHash (pandas' fixed key) of each
    distinct key: every distinct key is hashed once."""
    text = pc.utf8_trim_whitespace(ids.cast(pa.string()))
    encoded = pc.dictionary_encode(text)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    keys = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
    return encoded, pd.util.hash_array(keys, categorize=False)


def bucket_of(ids: pa.ChunkedArray | pa.Array, buckets: int) -> np.ndarray:
    """Stable bucket number per row: SipHash of the trimmed key text, mod `buckets`.
    Rows without a key go to bucket 0."""
    encoded, hashes = _key_hashes(ids)
    return _per_row(encoded, (hashes % np.uint64(buckets)).astype(np.int64))


def _per_row(encoded: pa.DictionaryArray, per_key: np.ndarray) -> np.ndarray:
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    valid = ~np.asarray(encoded.indices.is_null().to_numpy(zero_copy_only=False))
    out = np.zeros(len(encoded), np.int64)
    out[valid] = per_key[codes[valid].astype(np.int64)]
    return out


def route(source: SourceTable, buckets: int, sample_every: int) -> tuple[np.ndarray, list[str]]:
    """Bucket per row, and the keys (as validation reads them) sampled from this piece:
    those whose hash's high bits are 0 mod `sample_every`. Without a readable key column
    every row goes to bucket 0 (validation reports the column)."""
    ids = source.key_text()
    if ids is None:
        return np.zeros(source.table.num_rows, np.int64), []
    encoded, hashes = _key_hashes(ids)
    bucket = _per_row(encoded, (hashes % np.uint64(buckets)).astype(np.int64))
    chosen = (hashes >> np.uint64(32)) % np.uint64(sample_every) == 0
    sample = text_as_read(encoded.dictionary.filter(pa.array(chosen)))
    return bucket, [k for k in sample.to_pylist() if k is not None]


def boundaries(sample: set[str], interval_subjects: int, sample_every: int) -> list[str]:
    """Keys that cut the sorted key space into intervals of about `interval_subjects`
    subjects: each sampled key stands for about `sample_every` subjects."""
    step = max(1, interval_subjects // sample_every)
    return sorted(sample)[step::step]


def _sample_rate(options: DaskOptions) -> int:
    return max(1, min(SAMPLE_EVERY, options.interval_subjects))


# --------------------------------------------------------------------------- on the workers


def _joined(pieces: list[SourceTable]) -> SourceTable:
    """A bucket's pieces (in file order) as one table."""
    if len(pieces) == 1:
        return pieces[0]
    table = pa.concat_tables([p.table for p in pieces]).combine_chunks()
    return replace(pieces[0], table=table, lines=np.concatenate([p.lines for p in pieces]))


def _cut(table: pa.Table, cuts: list[str]) -> list[pa.RecordBatch]:
    """A table sorted by subject_id cut into the intervals (-inf, cuts[0]), [cuts[0],
    cuts[1]), ..., [cuts[-1], inf): one record batch each (slices of one batch, so
    they share their dictionaries), some perhaps of no rows."""
    batches = table.combine_chunks().to_batches()
    batch = batches[0] if batches else pa.RecordBatch.from_pylist([], schema=table.schema)
    ids = batch.column("subject_id").to_numpy(zero_copy_only=False).astype(object)
    ends = np.concatenate([[0], np.searchsorted(ids, np.asarray(cuts, object)), [len(ids)]])
    return [batch.slice(a, b - a) for a, b in pairwise(ends)]


_IPC = pa.ipc.IpcWriteOptions(compression="lz4")


@dataclass(frozen=True)
class Pieces:
    """Where a bucket's tables wait for the merge: on its worker's local disk, one Arrow
    IPC file per table with one record batch per interval (so fetching an interval
    reads and decompresses that batch only)."""

    worker: str  # the address of the worker holding the files
    files: dict[str, str]  # table stem -> path on that worker


def _scratch(token: str, worker=None) -> Path:
    """The run's folder on a worker's local disk (this task's worker by default)."""
    if worker is None:
        from distributed import get_worker

        worker = get_worker()
    return Path(worker.local_directory) / f"trdscreen-{token}"


def decide_bucket(
    courses: list[SourceTable],
    people: list[SourceTable],
    screening: Screening,
    cuts: list[str],
    token: str,
    bucket: int,
) -> tuple[PartSummary, Pieces | None]:
    """One bucket on a worker: validate and screen it, and write its tables cut at the
    interval boundaries to the worker's local disk. Returns its summary and where the
    pieces are (None when its own errors stopped it)."""
    from distributed import get_worker

    part = decide_part(_joined(courses), _joined(people) if people else None, screening)
    del courses, people
    summary = PartSummary.of(part)
    if part.result is None:
        return summary, None
    tables = part.result.tables()
    del part
    folder = _scratch(token)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for stem in STREAMED:
        table = to_arrow(tables.pop(stem))
        path = folder / f"{bucket}-{stem}.arrow"
        with pa.ipc.new_file(path, table.schema, options=_IPC) as writer:
            for piece in _cut(table, cuts):
                writer.write_batch(piece)
        files[stem] = str(path)
    return summary, Pieces(get_worker().address, files)


def read_interval(placed: list[Pieces], interval: int) -> dict[str, pa.Table]:
    """One interval's rows of each table from the buckets whose pieces are on this
    worker, in key order."""
    pieces = []
    for bucket in placed:
        piece = {}
        for stem, path in bucket.files.items():
            with pa.OSFile(path) as source:  # reads this batch only, into fresh memory
                reader = pa.ipc.open_file(source)
                piece[stem] = pa.Table.from_batches([reader.get_batch(interval)], reader.schema)
        pieces.append(piece)
    return _merged_interval(pieces)


def remove_scratch(token: str, dask_worker=None) -> None:
    """Remove a run's files from a worker's local disk (`Client.run` on every worker,
    which passes the worker as `dask_worker`)."""
    import shutil

    shutil.rmtree(_scratch(token, dask_worker), ignore_errors=True)


# --------------------------------------------------------------------------- on the client


def _in_key_order(pieces: list[pa.Table]) -> pa.Table:
    """One interval's pieces of a table, from different buckets, as one table in key
    order: a stable sort by subject_id, since each subject's rows are in one piece
    and already in order."""
    rows = [p for p in pieces if p.num_rows] or pieces[:1]
    if len(rows) == 1:
        return rows[0]
    table = pa.concat_tables(rows, promote_options="permissive").unify_dictionaries()
    return table.take(pc.sort_indices(table["subject_id"]))


def _merged_interval(pieces: list[dict[str, pa.Table]]) -> dict[str, pa.Table]:
    return {stem: _in_key_order([p[stem] for p in pieces]) for stem in STREAMED}


@contextmanager
def connect(options: DaskOptions) -> Iterator:
    """A Dask client: to the scheduler given, or to a local cluster on 127.0.0.1."""
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
            yield client
    finally:
        if cluster is not None:
            cluster.close()


def _input_rows(source: InputFile) -> int:
    """About how many rows an input has, before reading it (for the bucket count)."""
    if source.fmt == "parquet":
        import pyarrow.parquet as pq

        files = sorted(source.local.rglob("*.parquet")) if source.local.is_dir() else [source.local]
        return sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return max(0, source.total_lines - 1)


class DaskOutcome(NamedTuple):
    """What a Dask run ends with: a streamed run's outcome, and the inputs as read (with
    their row counts, which the manifest records)."""

    validated: ValidatedInputs
    outputs: list[OutputFile] | None
    result: StreamedResult | None
    read: tuple[InputFile, InputFile | None]


@dataclass
class _Scattered:
    pieces: list[list]  # per bucket: futures of its pieces, in file order
    template: SourceTable  # no rows: the table's columns, for a bucket without rows
    source: InputFile  # with its row count


def _scatter(
    client, source: InputFile, buckets: int, homes: list[str], options: DaskOptions
) -> tuple[_Scattered, set[str]]:
    """Read `source` a batch at a time and hand each bucket's rows to its worker, with a
    sample of the keys seen."""
    rate = _sample_rate(options)
    for exact in (False, True):
        pieces: list[list] = [[] for _ in range(buckets)]
        sample: set[str] = set()
        template = None
        rows = 0
        try:
            for batch in source.batches(options.batch_rows, exact_lines=exact):
                rows += batch.table.num_rows
                if template is None:
                    template = batch.take(np.zeros(0, np.int64))
                bucket, keys = route(batch, buckets, rate)
                sample.update(keys)
                by_home: dict[str, list[tuple[int, SourceTable]]] = {}
                for b, where in enumerate(partition_rows(bucket, buckets)):
                    if len(where):
                        by_home.setdefault(homes[b], []).append((b, batch.take(where)))
                del batch
                for home, found in by_home.items():
                    futures = client.scatter([p for _, p in found], workers=[home], hash=False)
                    for (b, _), future in zip(found, futures, strict=True):
                        pieces[b].append(future)
                del by_home
        except LinesNotCounted:  # quoted line breaks: number the lines exactly, again
            client.cancel([f for futures in pieces for f in futures])
            continue
        assert template is not None  # a file without rows is refused before reading
        return _Scattered(pieces, template, replace(source, rows=rows)), sample
    raise AssertionError("unreachable: exact line numbers are always counted")


def write_on_dask(
    treatments: InputFile,
    subjects: InputFile | None,
    screening: Screening,
    folder: Path,
    destination: Destination,
    options: DaskOptions,
    on_read: Callable[[InputFile], None] = lambda source: None,
    on_validated: Callable[[ValidatedInputs], None] = lambda validated: None,
) -> DaskOutcome:
    """Validate and screen bucket by bucket on a Dask cluster, and write the tables to
    `folder` an interval of subjects at a time (see the module's docstring).

    Returns what `stream.write_streamed` returns, and the inputs with their row counts.
    `on_read` is called when an input has been read and handed to the workers,
    `on_validated` when every bucket has been validated and screened.
    """
    with connect(options) as client:
        homes = sorted(client.scheduler_info(n_workers=-1)["workers"]) or [None]
        rows = _input_rows(treatments) + (_input_rows(subjects) if subjects else 0)
        buckets = options.buckets(len(homes), rows, ledger_bounded(BUCKET_ROWS, screening))
        home_of = [homes[b % len(homes)] for b in range(buckets)]
        courses, sample = _scatter(client, treatments, buckets, home_of, options)
        on_read(courses.source)
        people = None
        if subjects is not None:
            people, more = _scatter(client, subjects, buckets, home_of, options)
            sample |= more
            on_read(people.source)
        cuts = boundaries(sample, options.interval_subjects, _sample_rate(options))
        del sample
        token = uuid.uuid4().hex
        try:
            plan = _Plan(
                buckets=buckets, home_of=home_of, screening=screening, cuts=cuts, token=token
            )
            return _decide_and_merge(
                client, courses, people, plan, folder, destination, on_validated
            )
        finally:
            with suppress(Exception):  # a lost worker must not hide the run's own error
                client.run(remove_scratch, token)


@dataclass(frozen=True)
class _Plan:
    """How a Dask run is cut: buckets, the worker each lives on, how each is screened,
    and the key boundaries of the intervals its tables are merged in."""

    buckets: int
    home_of: list[str]
    screening: Screening
    cuts: list[str]
    token: str  # names the run's scratch files on the workers


def _decide_and_merge(
    client,
    courses: _Scattered,
    people: _Scattered | None,
    plan: _Plan,
    folder: Path,
    destination: Destination,
    on_validated: Callable[[ValidatedInputs], None],
) -> DaskOutcome:
    buckets, home_of, screening, cuts, token = (
        plan.buckets, plan.home_of, plan.screening, plan.cuts, plan.token
    )  # fmt: skip
    futures = []
    for b in range(buckets):
        theirs = people.pieces[b] if people is not None else []
        if not courses.pieces[b] and not theirs:
            continue
        home = [home_of[b]]
        ours = courses.pieces[b] or [client.scatter(courses.template, workers=home, hash=False)]
        if people is not None and not theirs:  # a subjects table, no rows here
            theirs = [client.scatter(people.template, workers=home, hash=False)]
        futures.append(
            client.submit(
                decide_bucket,
                ours,
                theirs,
                screening,
                cuts,
                token,
                b,
                key=f"trdscreen-bucket-{b}-of-{buckets}",
                pure=False,
                workers=home,
                allow_other_workers=True,
            )
        )
    read = (courses.source, people.source if people is not None else None)
    courses.pieces = []  # the bucket tasks hold their inputs; done, the workers drop them
    if people is not None:
        people.pieces = []
    collector = Collector()
    placed = []
    for summary, pieces in client.gather(futures):
        collector.add(summary)
        placed.append(pieces)
    del futures
    on_validated(collector.validated())
    sinks = sinks_for(folder, destination)
    if not collector.stopped:
        _merge_intervals(client, placed, len(cuts) + 1, sinks)
    validated, records, result = collector.finish(sinks, folder, destination, screening.on_invalid)
    return DaskOutcome(validated, records, result, read)


def _merge_intervals(client, placed: list[Pieces], intervals: int, sinks: dict) -> None:
    """Fetch the buckets' pieces an interval at a time (each worker merges its own
    buckets' pieces into key order, the client the workers'), and append each interval
    to the sinks while the next one is read on the workers."""

    on: dict[str, list[Pieces]] = {}  # one read task per worker and interval
    for pieces in placed:
        on.setdefault(pieces.worker, []).append(pieces)

    def fetch(interval: int) -> list:
        return [
            client.submit(
                read_interval,
                theirs,
                interval,
                key=f"trdscreen-read-{interval}-{worker}",
                pure=False,
                workers=[worker],
                allow_other_workers=False,
            )
            for worker, theirs in sorted(on.items())
        ]

    def merged() -> Iterator[dict[str, pa.Table]]:
        ahead = fetch(0) if intervals else []
        for i in range(intervals):
            current, ahead = ahead, fetch(i + 1) if i + 1 < intervals else []
            yield _merged_interval(client.gather(current))

    write_behind(sinks, merged())
