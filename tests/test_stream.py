"""The default engine's streamed run (`trdscreen.stream`) against screening the cohort whole.

The claim under test: validating, screening and writing a chunk of subjects at a
time gives the same bytes as doing it for the whole cohort at once, wherever the
chunks are cut, because every check and decision depends on one subject's rows
only and the writer's row groups do not depend on the pieces it is given. Each
case writes both run folders and compares every table file byte for byte; the
whole-cohort tables are what the rest of the suite checks by hand.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE, assert_same_tables, screen_streamed, screen_whole, table_files
from typer.testing import CliRunner

from trdscreen import api, output
from trdscreen.cli import app
from trdscreen.errors import ExitCode, InvalidInputData
from trdscreen.io import InputFile, SourceTable
from trdscreen.partition import chunk_numbers, sorted_cuts
from trdscreen.stream import chunks
from trdscreen.synth import synthesize, write_synthetic

FORMATS = ("csv", "parquet")


def _streamed(tmp: Path, name: str, chunk_rows: int, **options) -> tuple[Path, object]:
    return screen_streamed(tmp, name, api.ScreenRequest(**options, chunk_rows=chunk_rows))


def _chunk_count(folder: Path, chunk_rows: int, in_order: bool = True) -> int:
    loaded = api.load(api.ScreenRequest(input=folder, chunk_rows=chunk_rows), ["test"])
    # The inputs are cut by rows (sorted) or by each row's chunk number (shuffled).
    treatments = loaded.treatments  # a file read a chunk at a time is cut by its keys
    keyed = treatments.keys() if isinstance(treatments, InputFile) else treatments
    cuts = sorted_cuts(keyed, loaded.subjects, chunk_rows)
    assert (cuts is not None) == in_order
    return len(list(chunks(loaded.treatments, loaded.subjects, chunk_rows)))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    """800 synthetic subjects (about 3,400 courses): enough for chunks cut inside and
    between subjects, small enough to screen in a hundred chunks in a few seconds."""
    folder = tmp_path_factory.mktemp("small") / "cohort"
    write_synthetic(synthesize(800, seed=11), folder, "csv")
    return folder


@pytest.fixture(scope="module")
def shuffled(small, tmp_path_factory) -> Path:
    """The small cohort with the rows of both files in a random order."""
    folder = tmp_path_factory.mktemp("shuffled")
    rng = np.random.default_rng(5)
    for name in ("treatments.csv", "subjects.csv"):
        header, *rows = (small / name).read_text().splitlines()
        rows = [rows[i] for i in rng.permutation(len(rows))]
        (folder / name).write_text("\n".join([header, *rows]) + "\n")
    return folder


@pytest.mark.parametrize("chunk_rows", [71, 900])
@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_chunks_give_the_whole_cohorts_bytes(
    tmp_path, small, shuffled, chunk_rows, order, monkeypatch
):
    # 71 rows: chunks of a few subjects (about fifty chunks, each row group made of
    # many pieces); 900 rows: a few chunks, each cut across the 1,000-row output row
    # groups this test writes. A chunk's row count lands inside a subject's rows and
    # is moved to the subject's edge. The synthetic files are sorted by subject (row
    # ranges); shuffled, every row is given its chunk and taken.
    monkeypatch.setattr(output, "ROW_GROUP_ROWS", 1000)
    cohort = small if order == "sorted" else shuffled
    assert _chunk_count(cohort, chunk_rows, in_order=order == "sorted") > 3
    whole, expected = screen_whole(tmp_path, "whole", api.ScreenRequest(input=cohort))
    streamed, result = _streamed(tmp_path, "streamed", chunk_rows, input=cohort)
    assert_same_tables(whole, streamed)
    # The counts the CLI prints and the manifest records, in the same order.
    assert list(result.counts().items()) == list(expected.counts().items())
    assert result.near_misses() == expected.near_misses()
    assert result.attrition.equals(expected.attrition)
    manifest = json.loads((streamed / "manifest.json").read_text())
    assert manifest["options"]["engine"] == {"name": "pandas", "chunk_rows": chunk_rows}
    assert (
        manifest["decisions_content_sha256"]
        == json.loads((whole / "manifest.json").read_text())["decisions_content_sha256"]
    )


@pytest.mark.parametrize("threads", [1, 3])
def test_chunks_screened_in_threads_give_the_same_bytes(tmp_path, small, damaged, threads):
    # --threads: chunks are screened `threads` at a time and written in chunk order;
    # every chunk is a pure function of its rows, so the bytes are the whole cohort's
    # (the default, 2 threads on this machine, is what the other tests run). An invalid
    # chunk among them still fails the run with every chunk's issues.
    whole, _ = screen_whole(tmp_path, "whole", api.ScreenRequest(input=small))
    streamed, _ = _streamed(tmp_path, "streamed", 71, input=small, threads=threads)
    assert_same_tables(whole, streamed)
    manifest = json.loads((streamed / "manifest.json").read_text())
    assert manifest["options"]["engine"]["threads"] == threads
    bad_whole, error_whole = screen_whole(tmp_path, "bad-whole", api.ScreenRequest(input=damaged))
    bad, error = _streamed(tmp_path, "bad", 97, input=damaged, threads=threads)
    assert isinstance(error, InvalidInputData) and str(error) == str(error_whole)
    assert_same_tables(bad_whole, bad)


def test_a_run_that_writes_no_ledger_builds_none_and_writes_the_same_bytes(
    tmp_path, small, monkeypatch
):
    # --tables without criteria_ledger (a pipeline that needs less): its chunks skip the
    # ledger, and every table it does write (courses and the splits too) is the full
    # run's, byte for byte, in 30 chunks of 2 threads.
    from trdscreen import pipeline

    built = []
    real = pipeline.ledger
    monkeypatch.setattr(pipeline, "ledger", lambda *a: built.append(1) or real(*a))
    full, _ = _streamed(tmp_path, "full", 113, input=small)
    assert len(built) == _chunk_count(small, 113) >= 30  # a ledger a chunk
    built.clear()
    loaded = api.load(api.ScreenRequest(input=small, chunk_rows=113), ["test"])
    tables = ("decisions", "included", "excluded", "needs_review", "courses", "attrition",
              "validation_issues")  # fmt: skip
    part = tmp_path / "part"
    api.run_to_folder(loaded, api.Destination(part, ("csv", "parquet"), tables=tables))
    assert built == []
    names = table_files(part)
    assert names == [n for n in table_files(full) if not n.startswith("criteria_ledger")]
    for name in names:
        assert (part / name).read_bytes() == (full / name).read_bytes(), name


def test_the_hand_worked_sample_streams_the_same_a_subject_or_two_per_chunk(tmp_path):
    # sample_data holds the suite's hand-worked cases (S028 and S036 have no courses,
    # S038 has courses but no subject row,
    # drugs counted once, early stops, unknown doses...); chunks of 2 input rows put
    # one or two subjects in each.
    assert _chunk_count(SAMPLE, 2) > 10
    whole, expected = screen_whole(tmp_path, "whole", api.ScreenRequest(input=SAMPLE))
    streamed, result = _streamed(tmp_path, "streamed", 2, input=SAMPLE)
    assert_same_tables(whole, streamed)
    assert list(result.counts().items()) == list(expected.counts().items())


def test_as_of_and_a_reported_staging_model_stream_the_same(tmp_path, small):
    # --as-of (censoring) and a second rule set take other paths through the kernel.
    options = {
        "input": small,
        "rules": "mgh-atrq",
        "as_of": date(2016, 6, 30),
        "reports": ("maudsley-2009",),
    }
    whole, _ = screen_whole(tmp_path, "whole", api.ScreenRequest(**options))
    streamed, _ = _streamed(tmp_path, "streamed", 101, **options)
    assert_same_tables(whole, streamed)


def test_quarantine_streams_the_same(tmp_path, damaged):
    whole, expected = screen_whole(
        tmp_path, "whole", api.ScreenRequest(input=damaged, on_invalid="quarantine")
    )
    streamed, result = _streamed(tmp_path, "streamed", 500, input=damaged, on_invalid="quarantine")
    assert_same_tables(whole, streamed)
    # 25 damaged rows, each rejected once, whichever chunk holds it; the quarantine
    # step of the attrition is counted once, not once per chunk.
    assert result.counts()["quarantine"] == expected.counts()["quarantine"]
    assert result.counts()["quarantine"]["treatment_rows_rejected"] == 25
    assert "quarantine_treatments.parquet" in table_files(streamed)


def test_an_invalid_input_fails_with_every_issue_and_no_tables(tmp_path, damaged):
    whole, error_whole = screen_whole(tmp_path, "whole", api.ScreenRequest(input=damaged))
    streamed, error = _streamed(tmp_path, "streamed", 500, input=damaged)
    assert isinstance(error_whole, InvalidInputData) and isinstance(error, InvalidInputData)
    # The message counts the errors of every chunk, not of the first failing one.
    assert str(error) == str(error_whole)
    assert table_files(streamed) == ["validation_issues.csv", "validation_issues.parquet"]
    assert_same_tables(whole, streamed)


def test_treatments_without_a_subjects_table_stream_the_same(tmp_path, cohort):
    # No subjects table: chunks are cut on the treatment rows alone, and the checks
    # that need subject columns report the same issues (file-level ones once).
    options = {"input": cohort / "treatments.csv"}
    whole, expected = screen_whole(tmp_path, "whole", api.ScreenRequest(**options))
    streamed, result = _streamed(tmp_path, "streamed", 200, **options)
    if isinstance(expected, InvalidInputData):
        assert isinstance(result, InvalidInputData) and str(result) == str(expected)
    else:
        assert result.counts() == expected.counts()
    assert_same_tables(whole, streamed)


def test_cli_streams_by_default_and_verify_reproduces_the_run(tmp_path, small):
    # verify re-runs chunk by chunk with the recorded --chunk-rows: the streamed
    # run's hashes must come out again.
    runner = CliRunner()
    out = tmp_path / "run"
    ran = runner.invoke(app, ["screen", str(small), "--out", str(out), "--chunk-rows", "300"])
    assert ran.exit_code == ExitCode.OK, ran.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["engine"] == {"name": "pandas", "chunk_rows": 300}
    checked = runner.invoke(app, ["verify", str(out), "--json"])
    assert checked.exit_code == ExitCode.OK, checked.output


def test_chunk_rows_is_not_a_dask_option(tmp_path):
    result = CliRunner().invoke(
        app,
        ["screen", "sample_data", "--out", str(tmp_path / "x"), "--engine", "dask"]
        + ["--chunk-rows", "10"],
    )
    assert result.exit_code == ExitCode.USAGE
    assert "--chunk-rows" in result.output


# --------------------------------------------------------------------------- chunks


def _source(name: str, ids: list[str | None]) -> SourceTable:
    table = pa.table({"subject_id": pa.array(ids, pa.string())})
    lines = np.arange(2, len(ids) + 2, dtype=np.int64)
    return SourceTable(name, Path(f"{name}.csv"), "csv", table, lines, "", 0)


def test_chunks_are_ranges_of_sorted_keys_as_validation_reads_them():
    courses = _source("treatments", ["S3", " S1", "S2", "S1 ", "S3", "S2", None, "", "S4"])
    people = _source("subjects", ["S1", "S2", "S3", "S4", "S5"])
    # Rows per key, both tables: S1 3, S2 3, S3 3, S4 2, S5 1 (" S1" and "S1 " are
    # S1 once trimmed; None and "" have no key). With 4 rows per chunk a key's chunk is
    # (rows of the keys sorted before it) // 4: S1 0 // 4 = 0, S2 3 // 4 = 0,
    # S3 6 // 4 = 1, S4 9 // 4 = 2, S5 11 // 4 = 2.
    course_chunks, subject_chunks = chunk_numbers(courses, people, 4)
    assert course_chunks.tolist() == [1, 0, 0, 0, 1, 0, 0, 0, 2]  # no key: chunk 0
    assert subject_chunks.tolist() == [0, 0, 1, 2, 2]

    # The unsorted file's chunks, as taken: each chunk's rows grouped by key in key
    # order, a key's rows in file order (lines are file rows + 1): chunk 0 holds the
    # rows without a key (lines 8 and 9) first, then S1 (lines 3, 5: " S1", "S1 ")
    # and S2 (lines 4, 7); chunk 1 S3 (lines 2, 6); chunk 2 S4 (line 10).
    parts = list(chunks(courses, people, 4))
    assert [c.lines.tolist() for c, _ in parts] == [[8, 9, 3, 5, 4, 7], [2, 6], [10]]
    assert [p.table["subject_id"].to_pylist() for _, p in parts] == [
        ["S1", "S2"],
        ["S3"],
        ["S4", "S5"],
    ]


def test_sorted_inputs_are_cut_into_row_ranges_where_the_key_changes():
    # Keys as validation reads them: "S1 " and " S1" are both S1, so the file is in
    # order although its raw text is not.
    courses = _source("treatments", ["S1 ", " S1", "S2", "S3", "S3", "S3", "S4"])
    people = _source("subjects", ["S0", "S1", "S2", "S2a", "S3", "S5"])
    # 7 course rows of 13: 4 rows per chunk are 4 * 7 // 13 = 2 course rows. The keys
    # change at rows 2 (S2), 3 (S3) and 6 (S4). Cuts wanted at rows 2, 4 and 6 move to
    # the next change: 2, 6 (row 4 is inside S3's rows) and 6 again. Subjects are cut
    # before the first key of the next chunk: 2 keys sort before S2 (S0, S1), 5 before
    # S4 (S0, S1, S2, S2a, S3); S5, after every course key, joins the last chunk.
    assert sorted_cuts(courses, people, 4) == [(0, 2, 0, 2), (2, 6, 2, 5), (6, 7, 5, 6)]
    parts = list(chunks(courses, people, 4))
    assert [c.lines.tolist() for c, _ in parts] == [[2, 3], [4, 5, 6, 7], [8]]
    assert [p.table["subject_id"].to_pylist() for _, p in parts] == [
        ["S0", "S1"],
        ["S2", "S2a", "S3"],
        ["S5"],
    ]
    # Without a subjects table: 4 course rows per chunk, cut at rows 6 (after 4, inside
    # S3) and nowhere else (no change after row 6).
    assert sorted_cuts(courses, None, 4) == [(0, 6, 0, 0), (6, 7, 0, 0)]


@pytest.mark.parametrize(
    "ids",
    [["S1", "S3", "S2"], ["S1", None, "S2"], ["S1", "", "S2"]],
    ids=["out of order", "null key", "empty key"],
)
def test_inputs_out_of_order_or_with_rows_without_a_key_are_not_cut_by_rows(ids):
    # Rows without a key go to the first chunk (chunk_numbers), wherever they are.
    assert sorted_cuts(_source("treatments", ids), None, 1) is None
    assert sorted_cuts(_source("treatments", ["S1"]), _source("subjects", ids), 1) is None


def test_a_key_column_that_cannot_be_read_as_text_gives_one_chunk():
    table = pa.table({"subject_id": pa.array([[1], [2]], pa.list_(pa.int64()))})
    source = SourceTable("treatments", Path("t.parquet"), "parquet", table, np.arange(1, 3), "", 0)
    assert chunk_numbers(source, None, 1) is None  # validation reports the column


# --------------------------------------------------------------------------- the writer


def test_a_table_written_in_pieces_has_the_bytes_of_the_whole(tmp_path, monkeypatch):
    # Row groups of 4 rows; the pieces cut across them and carry categoricals with
    # different categories each, as chunks of subjects do.
    monkeypatch.setattr(output, "ROW_GROUP_ROWS", 4)
    frame = pd.DataFrame(
        {
            "subject_id": pd.array([f"S{i:02d}" for i in range(11)], dtype="str"),
            "n": np.arange(11),
            "outcome": pd.Categorical(list("aabbcabcc=a"), categories=sorted(set("aabbcabcc=a"))),
        }
    )
    whole = output.write_whole(output.TableSink("t", tmp_path, FORMATS, True), frame)
    pieces_dir = tmp_path / "pieces"
    pieces_dir.mkdir()
    sink = output.TableSink("t", pieces_dir, FORMATS, True)
    for start, stop in [(0, 3), (3, 3), (3, 9), (9, 11)]:
        piece = frame.iloc[start:stop].copy()
        piece["outcome"] = piece["outcome"].cat.remove_unused_categories()
        sink.write(piece)
    pieces = sink.close()
    assert [r.sha256 for r in pieces] == [r.sha256 for r in whole]
    assert pq.ParquetFile(pieces_dir / "t.parquet").metadata.num_row_groups == 3  # 4 + 4 + 3
    # Each row group's dictionary holds the values its rows use, sorted: rows 8-10
    # are c, =, a.
    read = pq.ParquetFile(pieces_dir / "t.parquet", read_dictionary=["outcome"])
    last = read.read_row_group(2, columns=["outcome"]).column(0).chunk(0)
    assert last.to_pylist() == ["c", "=", "a"]
    assert last.dictionary.to_pylist() == ["=", "a", "c"]
    # The CSV cell that starts with = is escaped; the Parquet value is not.
    assert "'=" in (pieces_dir / "t.csv").read_text()


def test_an_aborted_table_leaves_no_file(tmp_path):
    sink = output.TableSink("t", tmp_path, FORMATS, True)
    sink.write(pd.DataFrame({"n": np.arange(3)}))
    sink.abort()
    assert list(tmp_path.iterdir()) == []


def test_a_column_read_in_many_pieces_becomes_one_and_keeps_its_values():
    from trdscreen.io import _FEW_PIECES, _one_piece

    many = pa.chunked_array([[f"S{i}", None] for i in range(_FEW_PIECES + 1)])
    few = pa.chunked_array([list(range(20)), list(range(20, 2 * (_FEW_PIECES + 1)))])
    table = _one_piece(pa.table({"subject_id": many, "n": few}))
    assert table["subject_id"].num_chunks == 1
    assert table["subject_id"].to_pylist() == many.to_pylist()
    assert table["n"].num_chunks == 2  # a Parquet file's few row groups are kept as read
