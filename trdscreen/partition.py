"""Cutting the inputs into chunks of subjects (the default engine's streamed run).

Chunks are ranges of subject keys in sorted order (the key as validation reads
it: text, trimmed), cut so that each holds about `chunk_rows` input rows. Exports
usually come sorted by subject: when every row of both tables has a key and the keys
are already in order, a chunk is a range of rows of each file (`sorted_cuts`), read
a range at a time or sliced without copying. Otherwise every row's key is ranked
(`key_ranks`), each row is given its chunk's number (`chunk_numbers`) and each
chunk's rows are taken grouped by key, a key's rows in file order (`_grouped_rows`:
the kernel's sorts by subject then find runs, about a quarter less of its CPU than
on rows in file order).

A treatments file not in key order is not held whole either when the run has a
folder to spare (`spilled`): its key column gives every row's chunk, the file is
read once in file order, and each piece's rows are written to disk a record batch
per chunk (Arrow IPC, LZ4); then each chunk's rows are read back from every
piece's file as the chunk's turn comes. The chunks are those a file read whole
gives, row for row.
"""

from __future__ import annotations

import shutil
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc

from trdscreen.conventions import text_as_read
from trdscreen.errors import InputError
from trdscreen.io import InputFile, SourceTable
from trdscreen.keys import sorted_codes, stable_order

Chunk = tuple[SourceTable, SourceTable | None]
"""One chunk's treatment rows and subject rows (None: the run has no subjects table)."""


def _key_text(source: SourceTable) -> pa.ChunkedArray | None:
    """Each row's key as validation reads it (trimmed text, empty as null; two raw keys
    may read the same), in the column's pieces; None when there is no usable key column
    (validation reports that)."""
    text = source.key_text()
    return None if text is None else pa.chunked_array(text_as_read(text).chunks, pa.string())


def key_ranks(
    treatments: SourceTable, subjects: SourceTable | None
) -> tuple[list[np.ndarray], int] | None:
    """Per table (treatments, then subjects if given) and row: the rank of its key among
    both tables' distinct keys as validation reads them (-1: no key), and how many
    distinct keys there are; None when the keys cannot be read. One hashing pass over
    every row's key (trimmed first, a cheap pass) and one sort of the distinct keys."""
    tables = [treatments] + ([subjects] if subjects is not None else [])
    found = [_key_text(table) for table in tables]
    keys = [k for k in found if k is not None]
    if len(keys) < len(found):
        return None
    pieces = [piece for k in keys for piece in k.chunks]  # both tables, never copied
    per_row, distinct = sorted_codes(pa.chunked_array(pieces, pa.string()))
    per_row = per_row.astype(np.int32)
    ranks, start = [], 0  # per table and row: the rank of its key among all keys
    for k in keys:
        ranks.append(per_row[start : start + len(k)])
        start += len(k)
    return ranks, len(distinct)


def chunk_numbers(
    treatments: SourceTable, subjects: SourceTable | None, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Chunk number per treatment row and per subject row: consecutive ranges of the
    sorted distinct keys holding about `chunk_rows` rows each. Rows without a key go to
    chunk 0. None when the keys cannot be read (the run is then one chunk)."""
    numbering = _numbering(treatments, subjects, chunk_rows)
    return None if numbering is None else numbering.numbers


class _Numbering(NamedTuple):
    ranks: list[np.ndarray]  # per table (treatments, subjects if given) and row: key rank
    numbers: tuple[np.ndarray, np.ndarray]  # per table and row: chunk number
    chunks: int  # how many

    def subject_rows(self, subjects: SourceTable | None) -> list[np.ndarray] | None:
        """Each chunk's subject rows, grouped by key (None without a subjects table)."""
        if subjects is None:
            return None
        return _grouped_rows(self.ranks[1], self.numbers[1], self.chunks)


def _numbering(
    treatments: SourceTable, subjects: SourceTable | None, chunk_rows: int
) -> _Numbering | None:
    """Every row's key rank and chunk number (`key_ranks`, `_chunks_of`); None when the
    keys cannot be read."""
    ranked = key_ranks(treatments, subjects)
    if ranked is None:
        return None
    numbers = _chunks_of(*ranked, chunk_rows)
    return _Numbering(ranked[0], numbers, 1 + max(int(n.max(initial=0)) for n in numbers))


def _chunks_of(
    ranks: list[np.ndarray], distinct: int, chunk_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    rows = sum(np.bincount(r[r >= 0], minlength=distinct) for r in ranks)
    before = np.cumsum(rows) - rows  # rows of the keys sorted before each key
    chunk_of_key = np.append(np.unique(before // max(1, chunk_rows), return_inverse=True)[1], 0)
    chunks = [chunk_of_key[r].astype(np.int32) for r in ranks]  # no key (-1): chunk 0
    return chunks[0], chunks[1] if len(chunks) > 1 else np.zeros(0, np.int32)


def _grouped_rows(ranks: np.ndarray, numbers: np.ndarray, count: int) -> list[np.ndarray]:
    """Each chunk's row positions, in key order (rows of one key in file order): the
    chunks are consecutive key ranges, so one stable sort by key orders the chunks too
    (rows without a key, rank -1, lead chunk 0)."""
    order = stable_order(ranks)
    bounds = np.searchsorted(numbers[order], np.arange(count + 1))
    return [order[bounds[c] : bounds[c + 1]] for c in range(count)]


def _keys_in_order(source: SourceTable) -> pa.Array | None:
    """The keys as validation reads them when every row has one and they never decrease
    down the file (byte order, the order `keys.sorted_codes` sorts in); else None."""
    text = source.key_text()
    if text is None or not _in_order(text_as_read(text.take(_sample(len(text))))):
        return None  # every 64th key out of order already (an unsorted export, at once)
    keys = text_as_read(text).combine_chunks()
    return keys if _in_order(keys) else None


def _sample(rows: int) -> pa.Array:
    return pa.array(np.arange(0, rows, SAMPLE_EVERY, dtype=np.int64))


SAMPLE_EVERY = 64


def _in_order(keys: pa.ChunkedArray | pa.Array) -> bool:
    """No key missing and none smaller than the one before."""
    keys = keys.combine_chunks() if isinstance(keys, pa.ChunkedArray) else keys
    return not keys.null_count and pc.all(pc.less_equal(keys[:-1], keys[1:])).as_py() is not False


def sorted_cuts(
    treatments: SourceTable, subjects: SourceTable | None, chunk_rows: int
) -> list[tuple[int, int, int, int]] | None:
    """For inputs already in key order: each chunk as (first, end) row of the treatments
    and (first, end) row of the subjects, about `chunk_rows` rows of both in all, never
    parting a subject's rows; None when some row has no key or the keys are not in order.

    A chunk ends where a treatments key changes; the subjects are cut before the first
    key of the next chunk. Subject rows after the last course key join the last chunk.
    """
    course_keys = _keys_in_order(treatments)
    subject_keys = _keys_in_order(subjects) if subjects is not None else pa.array([], pa.string())
    if course_keys is None or subject_keys is None:
        return None
    n, m = len(course_keys), len(subject_keys)
    step = max(1, chunk_rows * n // max(1, n + m))  # course rows per chunk
    changes = np.flatnonzero(pc.not_equal(course_keys[1:], course_keys[:-1]).to_numpy(False)) + 1
    at = np.searchsorted(changes, np.arange(step, n, step))  # first change at or after
    cuts = np.unique(changes[at[at < len(changes)]])
    course_bounds = [0, *cuts.tolist(), n]
    # Subject rows before each cut: the keys are sorted, so a binary search finds how
    # many are smaller (Python compares str by code point, the order of UTF-8 bytes).
    subject_bounds = [
        0,
        *(
            bisect_left(subject_keys, course_keys[cut].as_py(), key=pa.StringScalar.as_py)
            for cut in cuts.tolist()
        ),
        m,
    ]
    return [
        (course_bounds[c], course_bounds[c + 1], subject_bounds[c], subject_bounds[c + 1])
        for c in range(len(course_bounds) - 1)
    ]


def cut_whole(
    treatments: SourceTable, subjects: SourceTable | None, chunk_rows: int
) -> Iterator[Chunk]:
    """Inputs read whole and not in key order, a chunk at a time: each chunk's rows taken
    grouped by key (rows without a key lead the first chunk)."""
    numbering = _numbering(treatments, subjects, chunk_rows)
    if numbering is None or numbering.chunks == 1:
        yield treatments, subjects
        return
    course_rows = _grouped_rows(numbering.ranks[0], numbering.numbers[0], numbering.chunks)
    people = numbering.subject_rows(subjects)
    for c in range(numbering.chunks):
        yield treatments.take(course_rows[c]), _taken(subjects, people, c)


def _taken(
    subjects: SourceTable | None, rows: list[np.ndarray] | None, chunk: int
) -> SourceTable | None:
    return subjects.take(rows[chunk]) if subjects is not None and rows is not None else None


SPILL = ".chunks"
"""The hidden folder, in the run's draft, of an unsorted file's rows a file per piece read
(`spilled`); removed when the last chunk is read back."""
PIECE_ROWS = 1 << 18
"""Rows of the unsorted file read (and written to the spill folder) at a time."""
_SPILL_OPTIONS = ipc.IpcWriteOptions(compression="lz4")


def spilled(
    file: InputFile, keys: SourceTable, subjects: SourceTable | None, chunk_rows: int,
    folder: Path,
) -> Iterator[Chunk]:  # fmt: skip
    """A treatments file not in key order (`sorted_cuts` found none), a chunk at a time,
    never held whole: the chunks and rows `cut_whole` gives for the file read whole.

    Every row's chunk comes from its key column (`keys`, ranked by `key_ranks`); the file
    is read once, a piece of `PIECE_ROWS` at a time, and each piece written to `folder`
    as one Arrow IPC file of one record batch per chunk (the piece's rows of that chunk,
    in file order). Then chunk by chunk its batch of every piece is read back and its
    rows grouped by key. `folder` is removed at the end (and when the run stops early).
    """
    numbering = _numbering(keys, subjects, chunk_rows)
    del keys  # the key text: held no longer than needed (the caller let go of it)
    if numbering is None or numbering.chunks == 1:
        yield file.read(), subjects  # one chunk: the file whole
        return
    count, ranks, course_numbers = numbering.chunks, numbering.ranks[0], numbering.numbers[0]
    people = numbering.subject_rows(subjects)
    del numbering
    folder.mkdir()  # never one that is there already: only what this made is removed
    try:
        pieces = _spill(file, course_numbers, count, folder)
        # Each chunk's rows in file order: one stable sort of every row's chunk number.
        by_chunk = stable_order(course_numbers)
        by_chunk = by_chunk.astype(np.int32) if len(by_chunk) < 1 << 31 else by_chunk
        bounds = np.cumsum([0, *np.bincount(course_numbers, minlength=count)])
        del course_numbers
        for c in range(count):
            rows = by_chunk[bounds[c] : bounds[c + 1]]
            table = pa.Table.from_batches(  # the run's own files: an OSError is the run's
                [ipc.open_file(pa.memory_map(str(p))).get_batch(c) for p in pieces]
            )
            order = stable_order(ranks[rows])  # grouped by key, as cut_whole
            yield file.as_read(table.take(order), rows[order]), _taken(subjects, people, c)
            del table
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _spill(file: InputFile, numbers: np.ndarray, count: int, folder: Path) -> list[Path]:
    """Write the file's rows to `folder`, a file per piece read, a batch per chunk. A
    problem reading the file is an InputError naming it; one writing the folder stays
    an OSError (the run's folder could not be written)."""
    paths: list[Path] = []
    read = 0
    for piece in _read(file):
        chunk = numbers[read : read + piece.num_rows]
        if len(chunk) < piece.num_rows:  # more rows than its keys when opened
            raise InputError(f"{file.path}: the file changed while it was read")
        order = stable_order(chunk)
        bounds = np.searchsorted(chunk[order], np.arange(count + 1))
        # One batch, sliced: every chunk's batch (empty ones too) has the piece's
        # dictionaries, as an IPC file needs.
        (taken,) = piece.take(pa.array(order)).combine_chunks().to_batches()
        paths.append(folder / f"{len(paths)}.arrow")
        with ipc.new_file(str(paths[-1]), taken.schema, options=_SPILL_OPTIONS) as out:
            for c in range(count):
                out.write_batch(taken.slice(bounds[c], bounds[c + 1] - bounds[c]))
        read += piece.num_rows
    if read != len(numbers):
        raise InputError(f"{file.path}: the file changed while it was read")
    file.unchanged()
    return paths


def _read(file: InputFile) -> Iterator[pa.Table]:
    """The file's pieces, each read within `InputFile.errors` (and only the reading)."""
    pieces = file.pieces(PIECE_ROWS)
    while True:
        with file.errors():
            piece = next(pieces, None)
        if piece is None:
            return
        yield piece
