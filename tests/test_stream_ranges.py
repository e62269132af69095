"""A streamed run reads one Parquet file of treatments a chunk at a time (`InputFile.ranges`).

The claim under test: when the file's keys are in order, the run reads the key column
to cut it and then each chunk's rows in file order, never the whole file, and writes
the bytes the whole-cohort run writes; when they are not in order, it reads the file
whole and cuts it by key as before. The ranges themselves are compared with `read`,
row for row and line for line, across Parquet row groups and read batches.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_same_tables, screen_streamed, screen_whole

from trdscreen import api, output
from trdscreen.errors import InputError
from trdscreen.io import InputFile, open_source
from trdscreen.schemas import TREATMENT_COLUMNS
from trdscreen.synth import synthesize, write_synthetic


def _row_groups(path: Path, rows: int, order: np.ndarray | None = None) -> None:
    """Rewrite a Parquet file with row groups of `rows` (and its rows in `order`)."""
    table = pq.read_table(path)
    if order is not None:
        table = table.take(order)
    pq.write_table(table, path, row_group_size=rows)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """600 synthetic subjects (about 2,500 courses) as Parquet, sorted by subject (as
    `synth` writes them), the treatments in row groups of 300 rows."""
    folder = tmp_path_factory.mktemp("ranges") / "cohort"
    write_synthetic(synthesize(600, seed=4), folder, "parquet")
    _row_groups(folder / "treatments.parquet", 300)
    return folder


@pytest.fixture(scope="module")
def shuffled(cohort, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ranges-shuffled")
    for name in ("treatments.parquet", "subjects.parquet"):
        (folder / name).write_bytes((cohort / name).read_bytes())
    rows = pq.ParquetFile(folder / "treatments.parquet").metadata.num_rows
    _row_groups(folder / "treatments.parquet", 300, np.random.default_rng(8).permutation(rows))
    return folder


def _opened(path: Path) -> InputFile:
    return open_source(path, "treatments", {}, set(TREATMENT_COLUMNS))


def test_ranges_give_the_rows_and_lines_read_gives(cohort):
    # Bounds that cut inside read batches (64 rows) and across row groups (300 rows),
    # one range of a single row, one of several row groups.
    source = _opened(cohort / "treatments.parquet")
    whole = source.read()
    n = whole.rows
    cuts = [0, 1, 2, 65, 299, 300, 301, 777, 1500, n - 1, n]
    pieces = list(source.ranges(list(zip(cuts[:-1], cuts[1:], strict=True)), rows=64))
    assert [p.rows for p in pieces] == [b - a for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    lines = np.concatenate([p.lines for p in pieces])
    assert np.array_equal(lines, whole.lines) and lines[0] == 1 and lines[-1] == n
    plain = [pa.concat_tables(p.table for p in pieces), whole.table]
    plain = [t.cast(pa.schema([f.with_type(_value_type(f.type)) for f in t.schema])) for t in plain]
    assert plain[0].equals(plain[1])  # the same values; dictionaries may be cut otherwise


def _value_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def test_a_file_with_fewer_rows_than_the_cuts_is_an_input_error(cohort):
    # The file shrank after it was opened and its keys were read: a clear error naming
    # it, not a StopIteration deep in the run.
    source = _opened(cohort / "treatments.parquet")
    n = source.read().rows
    with pytest.raises(InputError, match="changed while it was read"):
        list(source.ranges([(0, n), (n, n + 5)]))


@pytest.mark.parametrize("chunk_rows", [53, 700])
def test_a_sorted_file_is_never_read_whole_and_gives_the_whole_runs_bytes(
    tmp_path, cohort, chunk_rows, monkeypatch
):
    # 53 rows: about fifty chunks, most inside one read batch; 700: chunks spanning row
    # groups. Reading the treatments whole would be a regression in memory: refuse it.
    monkeypatch.setattr(output, "ROW_GROUP_ROWS", 1000)
    whole, expected = screen_whole(tmp_path, "whole", api.ScreenRequest(input=cohort))
    read = InputFile.read

    def refuse_treatments(self: InputFile):
        assert self.name != "treatments", "a sorted Parquet file was read whole"
        return read(self)

    monkeypatch.setattr(InputFile, "read", refuse_treatments)
    request = api.ScreenRequest(input=cohort, chunk_rows=chunk_rows)
    streamed, result = screen_streamed(tmp_path, "streamed", request)
    assert_same_tables(whole, streamed)
    assert list(result.counts().items()) == list(expected.counts().items())
    manifests = [json.loads((f / "manifest.json").read_text()) for f in (whole, streamed)]
    assert manifests[0]["inputs"] == manifests[1]["inputs"]  # rows counted from the footer
    audit = [json.loads(line) for line in (streamed / "audit.jsonl").read_text().splitlines()]
    read_events = [e for e in audit if e["event"] == "input_read"]
    assert [e["rows"] for e in read_events] == [i["rows"] for i in manifests[0]["inputs"]]


def test_an_unsorted_file_is_read_whole_and_cut_by_key(tmp_path, shuffled):
    whole, _ = screen_whole(tmp_path, "whole", api.ScreenRequest(input=shuffled))
    streamed, _ = screen_streamed(
        tmp_path, "streamed", api.ScreenRequest(input=shuffled, chunk_rows=97)
    )
    assert_same_tables(whole, streamed)


def test_adjudications_are_checked_against_a_file_read_a_chunk_at_a_time(tmp_path, cohort):
    # No subjects table: a reviewed subject is known only from the treatments' keys,
    # which are read when the adjudications are loaded (before any chunk). A subject in
    # neither input is refused then, as when the file is read whole.
    folder = tmp_path / "treatments-only"
    folder.mkdir()
    (folder / "treatments.parquet").write_bytes((cohort / "treatments.parquet").read_bytes())
    first = pq.read_table(folder / "treatments.parquet", columns=["subject_id"])[0][0].as_py()
    header = "subject_id,decision,reason,reviewer,date,criterion\n"
    known, unknown = tmp_path / "known.csv", tmp_path / "unknown.csv"
    known.write_text(header + f"{first},excluded,chart review,Dr. A,2024-06-10,\n")
    unknown.write_text(header + "NOBODY,excluded,chart review,Dr. A,2024-06-10,\n")
    request = api.ScreenRequest(input=folder, chunk_rows=200, adjudications=known)
    loaded = api.load(request, ["test"])  # no InputError: the subject is in the treatments
    assert isinstance(loaded.treatments, InputFile) and loaded.adjudications is not None
    assert loaded.adjudications.rows == 1
    with pytest.raises(InputError, match="1 adjudicated subject") as refused:
        api.load(api.ScreenRequest(input=folder, chunk_rows=200, adjudications=unknown), ["t"])
    assert any("NOBODY is in neither" in problem for problem in refused.value.problems)
