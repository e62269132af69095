"""The default engine's run: chunks of subjects, from validation to the written tables.

Every check and decision depends on one subject's rows only (the property the
Dask engine uses too), so a cohort can be validated and screened a chunk of
subjects at a time by `pipeline.decide_part`, and each chunk's tables appended
to the output files while the next chunk is screened. Memory then holds one
chunk's pipeline and one chunk being written, instead of every stage of the
whole cohort at once. A treatments table that is one Parquet or CSV file is not
even held whole: its key column is read to cut it, and each chunk's rows are read
as the chunk's turn comes (`InputFile.ranges`) when its keys are in order, else
taken from the file cut on disk (`partition.spilled`). How the chunks are cut is in
`trdscreen.partition`: either way each chunk's tables come out sorted (decisions by
subject, courses by subject, start and line, the ledger by subject and criterion),
so the chunks' tables appended in key order are the whole cohort's tables. The
written bytes do not depend on where the chunks are cut (`output.TableSink`). What
is not per subject is merged at the end: validation issues (sorted; file-level
issues once), attrition (counts add up), the quarantine tables and the counts.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pyarrow as pa

from trdscreen import progress
from trdscreen.criteria import assumption_counts
from trdscreen.errors import InvalidInputData
from trdscreen.io import InputFile, SourceTable
from trdscreen.issues import issue_counts
from trdscreen.merge import merge_attrition, merge_quarantine, merge_validated
from trdscreen.output import Destination, OutputFile, TableSink, to_arrow, write_tables
from trdscreen.partition import SPILL, Chunk, cut_whole, sorted_cuts, spilled
from trdscreen.pipeline import Part, Screening, ScreenResult, decide_part, refuse_invalid
from trdscreen.quarantine import Quarantine
from trdscreen.tables import SPLITS
from trdscreen.validate import ValidatedInputs

CHUNK_ROWS = 1 << 18
"""Input rows (courses and subject rows) per chunk by default: about 60 k subjects."""
LEDGER_ROWS_PER_PART = 1 << 21
"""Most criteria-ledger rows (subjects x criteria) one chunk or bucket may make: a rule
set with many criteria gets proportionally smaller chunks, so its ledger cannot fill
memory (`ruleset.MAX_CRITERIA` bounds the criteria too)."""


def ledger_bounded(rows: int, screening: Screening) -> int:
    """Input rows per part, lowered so that the part's ledger stays within
    `LEDGER_ROWS_PER_PART` (a part has at most one subject per input row)."""
    criteria = len(screening.rules.criteria) + sum(
        len(rules.criteria) for rules, _ in screening.reports
    )
    return max(1, min(rows, LEDGER_ROWS_PER_PART // max(1, criteria)))


STREAMED = ("decisions", "included", "excluded", "needs_review", "criteria_ledger", "courses")
"""Tables written chunk by chunk; the others are small and written whole at the end."""


def chunks(
    treatments: SourceTable | InputFile,
    subjects: SourceTable | None,
    chunk_rows: int,
    spill: Path | None = None,
) -> Generator[Chunk, None, None]:
    """The inputs a chunk of subjects at a time, in key order (at least one chunk).

    A treatments file not read yet (`InputFile.in_ranges`, one Parquet or CSV file) is cut by
    its key column alone and, when its keys are in order, read a chunk at a time
    (`InputFile.ranges`), so memory never holds the whole file. When they are not, it
    is cut on disk in the folder `spill` (`partition.spilled`), or without one read
    whole and cut."""
    if isinstance(treatments, InputFile):
        keys = treatments.keys()
        cuts = sorted_cuts(keys, subjects, chunk_rows)
        if cuts is None and spill is not None:
            parts = spilled(treatments, keys, subjects, chunk_rows, spill)
            del keys  # the key text goes once the chunks are known
            yield from parts
            return
        del keys
        if cuts is None:
            treatments = treatments.read()
    else:
        cuts = sorted_cuts(treatments, subjects, chunk_rows)
    if cuts is None:
        assert isinstance(treatments, SourceTable)  # read whole above
        yield from cut_whole(treatments, subjects, chunk_rows)
        return
    courses = (
        treatments.ranges([(first, end) for first, end, _, _ in cuts])
        if isinstance(treatments, InputFile)
        else (treatments.slice(first, end) for first, end, _, _ in cuts)
    )
    for (_, _, first_subject, end_subject), piece in zip(cuts, courses, strict=True):
        yield piece, subjects.slice(first_subject, end_subject) if subjects is not None else None


@dataclass(frozen=True)
class StreamedResult:
    """What a streamed run tells the caller besides its files (the decision tables
    themselves are on disk)."""

    attrition: pd.DataFrame
    issues: pd.DataFrame
    quarantine: Quarantine | None
    tallies: dict[str, dict[str, int]]  # subjects, courses, decision, classification
    n_near_misses: int

    def counts(self) -> dict[str, dict[str, int]]:
        counts = {
            **self.tallies,
            "assumptions": assumption_counts(self.attrition),
            "issues": issue_counts(self.issues),
        }
        if self.quarantine is not None:
            counts["quarantine"] = self.quarantine.counts()
        return counts

    def near_misses(self) -> int:
        return self.n_near_misses


class StreamOutcome(NamedTuple):
    """What a streamed run (a chunk at a time, or Dask buckets) ends with."""

    validated: ValidatedInputs  # every part's issues, merged, and the rejected rows
    outputs: list[OutputFile] | None  # None: validation stopped the run, nothing kept
    result: StreamedResult | None


@dataclass(frozen=True)
class PartSummary:
    """What one part (a chunk, or a Dask bucket) gives besides its decision tables: small,
    merged over the parts at the end."""

    issues: pd.DataFrame
    rejections: pd.DataFrame
    screened: bool  # False: the part's own errors stopped it
    attrition: pd.DataFrame | None = None
    quarantine: Quarantine | None = None
    tallies: dict[str, dict[str, int]] | None = None
    near_misses: int = 0

    @classmethod
    def of(cls, part: Part) -> PartSummary:
        result = part.result
        if result is None:
            return cls(part.issues, part.rejections, False)
        return cls(
            part.issues,
            part.rejections,
            True,
            result.attrition,
            result.quarantine,
            result.counts(),
            result.near_misses(),
        )


class Collector:
    """The parts' summaries, in key order, and the run's ending: merged issues, attrition,
    quarantine and counts, the small tables written, or every sink aborted when
    validation stops the run."""

    def __init__(self) -> None:
        self.parts: list[PartSummary] = []
        self._validated: ValidatedInputs | None = None

    @property
    def stopped(self) -> bool:
        return any(not p.screened for p in self.parts)

    def add(self, summary: PartSummary) -> None:
        self.parts.append(summary)
        self._validated = None

    def validated(self) -> ValidatedInputs:
        """Every part's issues (merged) and rejections."""
        if self._validated is None:
            self._validated = merge_validated(
                [p.issues for p in self.parts], [p.rejections for p in self.parts]
            )
        return self._validated

    def finish(
        self,
        sinks: dict[str, TableSink],
        folder: Path,
        destination: Destination,
        on_invalid: str,
    ) -> StreamOutcome:
        """Merge the parts and close the sinks; or, when validation stops the run or
        anything fails, remove every sink's file."""
        try:
            validated = self.validated()
            stopped = self.stopped
            try:
                refuse_invalid(validated, on_invalid)
            except InvalidInputData:
                stopped = True
            if stopped:
                abort(sinks)
                return StreamOutcome(validated, None, None)
            return StreamOutcome(validated, *self._written(sinks, folder, destination, validated))
        except BaseException:
            abort(sinks)
            raise

    def _written(
        self,
        sinks: dict[str, TableSink],
        folder: Path,
        destination: Destination,
        validated: ValidatedInputs,
    ) -> tuple[list[OutputFile], StreamedResult]:
        screened = self.parts
        held = [p.quarantine for p in screened if p.quarantine is not None]
        quarantine = merge_quarantine(held) if held else None
        tallies: dict[str, dict[str, int]] = {}
        for part in screened:
            if part.tallies is not None:  # every part is screened when the run completes
                _add(tallies, part.tallies)
        outcome = StreamedResult(
            merge_attrition(
                [p.attrition for p in screened], [p.quarantine for p in screened], quarantine
            ),
            validated.issues,
            quarantine,
            _sorted_tallies(tallies),
            sum(p.near_misses for p in screened),
        )
        # Each sink writes its last rows and hashes its files: two at a time (the
        # writers release the GIL), records in table order.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="write") as pool:
            closed = list(pool.map(TableSink.close, sinks.values()))
        records = [record for done in closed for record in done]
        rest = {"attrition": outcome.attrition, "validation_issues": outcome.issues}
        if quarantine is not None:
            rest["quarantine_treatments"] = quarantine.treatments
            rest["quarantine_subjects"] = quarantine.subjects
        return records + write_tables(rest, folder, destination), outcome


def _add(total: dict[str, dict[str, int]], part: dict[str, dict[str, int]]) -> None:
    for group in ("subjects", "courses", "decision", "classification", *ADJUDICATED):
        if group not in part:
            continue
        into = total.setdefault(group, {})
        for key, n in part[group].items():
            into[key] = into.get(key, 0) + n


ADJUDICATED = ("final_decision", "adjudicated")
"""Tallies a part has only when a reviewer decided one of its subjects."""


def _sorted_tallies(total: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    # The whole table's tallies list a categorical's values in sorted order.
    return {
        group: dict(sorted(total[group].items()))
        if group in ("decision", "classification", "final_decision")
        else total[group]
        for group in total
    }


def sinks_for(folder: Path, destination: Destination) -> dict[str, TableSink]:
    """A sink per table written piece by piece."""
    return {
        stem: TableSink.of(stem, folder, destination)
        for stem in STREAMED
        if destination.writes(stem)
    }


KERNELS = 2 if (os.cpu_count() or 1) > 1 else 1
"""Chunks screened at once by default (`--threads`), in threads (Arrow, NumPy and pandas
release the GIL for most of a chunk's work): the next chunk's kernel runs beside this
one's instead of leaving the second core to the writer alone. Each one holds a chunk's
pipeline in memory."""


def in_order(
    pieces: Iterator[tuple[SourceTable, SourceTable | None]], screening: Screening,
    threads: int = 1,
) -> Iterator[tuple[int, Part]]:  # fmt: skip
    """(input rows, `decide_part`) of each chunk, in chunk order, `threads` chunks
    screened at a time. Each part is a pure function of its chunk, so the results (and
    the bytes written from them) are those of screening one chunk after another. An
    error in a chunk is raised when its turn comes; the chunks under way are finished or
    cancelled first."""
    if threads == 1:
        for courses, people in pieces:
            yield courses.rows, decide_part(courses, people, screening)
        return
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="screen")
    pending: deque[tuple[int, Future[Part]]] = deque()
    try:
        for courses, people in pieces:
            pending.append((courses.rows, pool.submit(decide_part, courses, people, screening)))
            del courses, people
            if len(pending) == threads:  # no local keeps a part once the consumer lets go
                yield pending[0][0], pending.popleft()[1].result()
        while pending:
            yield pending[0][0], pending.popleft()[1].result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def streamed_tables(result: ScreenResult) -> dict[str, pd.DataFrame | pa.Table]:
    """A part's streamed tables as its sinks take them: the decisions converted to Arrow
    once, and each split (`tables.SPLITS`) filtered from that Arrow table instead of
    from the frame and converted again (the same rows, values and types)."""
    decisions = result.decisions
    whole = to_arrow(decisions)
    final = decisions["final_decision"]
    splits = {
        name: whole.filter(pa.array((final == value).to_numpy(dtype=bool)))
        for name, value in SPLITS.items()
    }
    return {"decisions": whole, **splits, **result.ledger_table(), "courses": result.courses}


Piece = dict[str, pd.DataFrame | pa.Table] | ScreenResult
"""One piece of every streamed table: the tables by stem, or a part's result."""


def write_pieces(sinks: dict[str, TableSink], piece: Piece) -> None:
    """One piece of each streamed table, appended to its sink (a part's result is made
    into its tables here, in the writer's thread)."""
    tables = streamed_tables(piece) if isinstance(piece, ScreenResult) else piece
    for stem, sink in sinks.items():
        sink.write(tables[stem])


def abort(sinks: dict[str, TableSink]) -> None:
    """Remove every sink's file (a run that failed or turned out invalid)."""
    for sink in sinks.values():
        sink.abort()


def write_behind(sinks: dict[str, TableSink], pieces: Iterator[Piece]) -> None:
    """Append each piece of the streamed tables to the sinks, in order, in a writer
    thread while the next piece is made. An error or an interrupt removes the files."""
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="write")
    writing: Future | None = None
    try:
        for piece in pieces:
            if writing is not None:
                writing.result()
            writing = writer.submit(write_pieces, sinks, piece)
            del piece
        if writing is not None:
            writing.result()
    except BaseException:
        writer.shutdown(wait=True, cancel_futures=True)
        abort(sinks)
        raise
    finally:
        writer.shutdown(wait=True)


def write_streamed(
    treatments: SourceTable | InputFile,
    subjects: SourceTable | None,
    screening: Screening,
    folder: Path,
    destination: Destination,
    chunk_rows: int = CHUNK_ROWS,
    threads: int = 1,
) -> StreamOutcome:
    """Validate and screen chunk by chunk, appending each chunk's tables to `folder`.

    Returns the merged validation (issues and rejections) and, unless the errors
    stop the run (`pipeline.refuse_invalid`), the records of every written file in
    table order and the result. When they stop it, the files written so far are
    removed and the caller writes the run of an invalid input instead. One chunk is
    written while the next is screened.
    """
    sinks = sinks_for(folder, destination)
    collector = Collector()
    chunk_rows = ledger_bounded(chunk_rows, screening)

    total = treatments.rows or 0  # a file read a chunk at a time: counted when opened

    pieces = chunks(treatments, subjects, chunk_rows, spill=folder / SPILL)

    def screened() -> Iterator[ScreenResult]:
        done = 0
        for rows, part in in_order(pieces, screening, threads):
            done += rows
            progress.rows(done, total)
            collector.add(PartSummary.of(part))
            if collector.stopped:  # keep validating: the run reports every issue
                continue
            assert part.result is not None  # a part without a result stops the collector
            result = part.result
            del part  # the chunk's pipeline goes while its tables are written
            yield result
            del result

    try:
        write_behind(sinks, screened())
    finally:  # a run stopped early: an unsorted file's chunks on disk are removed now
        pieces.close()
    return collector.finish(sinks, folder, destination, screening.on_invalid)
