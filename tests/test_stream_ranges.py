"""A streamed run reads one Parquet or CSV file of treatments a chunk at a time
(`InputFile.ranges`).

The claim under test: when the file's keys are in order, the run reads the key column
to cut it and then each chunk's rows in file order, never the whole file, and writes
the bytes the whole-cohort run writes; when they are not in order, it reads the file
whole and cuts it by key as before. The ranges themselves are compared with `read`,
row for row and line for line, across Parquet row groups and read batches. A CSV
whose rows are not one line each (quoted line breaks, blank lines) is read whole, its
lines counted exactly; a CSV that cannot be read fails as when it is read whole.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import BOTH, SAMPLE, assert_same_tables, screen_streamed, screen_whole
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from trdscreen import api, output, partition, stream
from trdscreen.errors import InputError, InvalidInputData
from trdscreen.io import CsvOptions, InputFile, SourceTable, open_source
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
def csv_cohort(tmp_path_factory) -> Path:
    """The same 600 subjects as CSV, sorted by subject."""
    folder = tmp_path_factory.mktemp("ranges-csv") / "cohort"
    write_synthetic(synthesize(600, seed=4), folder, "csv")
    return folder


@pytest.fixture(params=["parquet", "csv"])
def sorted_cohort(request, cohort, csv_cohort) -> Path:
    return cohort if request.param == "parquet" else csv_cohort


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


def _treatments(folder: Path) -> Path:
    return next(folder.glob("treatments.*"))


def test_ranges_give_the_rows_and_lines_read_gives(sorted_cohort):
    # Bounds that cut inside read batches (64 rows) and across row groups (300 rows),
    # one range of a single row, one of several row groups. A Parquet row's line is its
    # row number; a CSV's, its line in the file (the header is line 1).
    source = _opened(_treatments(sorted_cohort))
    whole = source.read()
    n = whole.rows
    counted = source.counted()
    assert isinstance(counted, InputFile) and counted.rows == n
    cuts = [0, 1, 2, 65, 299, 300, 301, 777, 1500, n - 1, n]
    pieces = list(counted.ranges(list(zip(cuts[:-1], cuts[1:], strict=True)), rows=64))
    assert [p.rows for p in pieces] == [b - a for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    lines = np.concatenate([p.lines for p in pieces])
    header = 1 if source.fmt == "csv" else 0
    assert np.array_equal(lines, whole.lines)
    assert lines[0] == 1 + header and lines[-1] == n + header
    assert np.array_equal(counted.keys().lines, whole.lines)
    plain = [pa.concat_tables(p.table for p in pieces), whole.table]
    plain = [t.cast(pa.schema([f.with_type(_value_type(f.type)) for f in t.schema])) for t in plain]
    assert plain[0].equals(plain[1])  # the same values; dictionaries may be cut otherwise


def _value_type(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def test_a_file_with_fewer_rows_than_the_cuts_is_an_input_error(sorted_cohort):
    # The file shrank after it was opened and its keys were read: a clear error naming
    # it, not a StopIteration deep in the run.
    source = _opened(_treatments(sorted_cohort)).counted()
    assert isinstance(source, InputFile) and source.rows is not None
    n = source.rows
    with pytest.raises(InputError, match="changed while it was read"):
        list(source.ranges([(0, n), (n, n + 5)]))


def _refuse_reading_treatments_whole(monkeypatch) -> None:
    read = InputFile.read

    def refuse_treatments(self: InputFile):
        assert self.name != "treatments", "a sorted file of treatments was read whole"
        return read(self)

    monkeypatch.setattr(InputFile, "read", refuse_treatments)


@pytest.mark.parametrize("chunk_rows", [53, 700])
def test_a_sorted_file_is_never_read_whole_and_gives_the_whole_runs_bytes(
    tmp_path, sorted_cohort, chunk_rows, monkeypatch
):
    # 53 rows: about fifty chunks, most inside one read batch; 700: chunks spanning row
    # groups. Reading the treatments whole would be a regression in memory: refuse it.
    cohort = sorted_cohort
    monkeypatch.setattr(output, "ROW_GROUP_ROWS", 1000)
    whole, expected = screen_whole(tmp_path, "whole", api.ScreenRequest(input=cohort))
    _refuse_reading_treatments_whole(monkeypatch)
    request = api.ScreenRequest(input=cohort, chunk_rows=chunk_rows)
    streamed, result = screen_streamed(tmp_path, "streamed", request)
    assert_same_tables(whole, streamed)
    assert list(result.counts().items()) == list(expected.counts().items())
    manifests = [json.loads((f / "manifest.json").read_text()) for f in (whole, streamed)]
    assert manifests[0]["inputs"] == manifests[1]["inputs"]  # rows as counted when opened
    audit = [json.loads(line) for line in (streamed / "audit.jsonl").read_text().splitlines()]
    read_events = [e for e in audit if e["event"] == "input_read"]
    assert [e["rows"] for e in read_events] == [i["rows"] for i in manifests[0]["inputs"]]


@pytest.fixture(scope="module")
def csv_shuffled(csv_cohort, tmp_path_factory) -> Path:
    """The CSV cohort with its treatment rows in a random order and a few without a key
    (validation reports them; they lead the first chunk)."""
    folder = tmp_path_factory.mktemp("ranges-csv-shuffled")
    (folder / "subjects.csv").write_bytes((csv_cohort / "subjects.csv").read_bytes())
    header, *rows = (csv_cohort / "treatments.csv").read_bytes().rstrip(b"\n").split(b"\n")
    rows = [rows[i] for i in np.random.default_rng(9).permutation(len(rows))]
    for at in (5, 900, 2000):  # the key cell emptied
        rows[at] = b"," + rows[at].split(b",", 1)[1]
    (folder / "treatments.csv").write_bytes(b"\n".join([header, *rows]) + b"\n")
    return folder


@pytest.fixture(params=["parquet", "csv"])
def unsorted_cohort(request, shuffled, csv_shuffled) -> Path:
    return shuffled if request.param == "parquet" else csv_shuffled


def test_an_unsorted_file_is_cut_on_disk_never_read_whole(tmp_path, unsorted_cohort, monkeypatch):
    # The rows of each chunk are written to the run's draft, a file per piece read, and
    # read back chunk by chunk: the bytes of the whole run, the spill folder gone after.
    monkeypatch.setattr(partition, "PIECE_ROWS", 500)  # several pieces, each in every chunk
    whole, expected = screen_whole(tmp_path, "whole", api.ScreenRequest(input=unsorted_cohort))
    spills: list[Path] = []
    spilled = partition.spilled

    def watched(file, keys, subjects, chunk_rows, folder):
        for chunk in spilled(file, keys, subjects, chunk_rows, folder):
            spills.append(folder) if folder.is_dir() and any(folder.iterdir()) else None
            yield chunk

    monkeypatch.setattr(stream, "spilled", watched)
    _refuse_reading_treatments_whole(monkeypatch)
    request = api.ScreenRequest(input=unsorted_cohort, chunk_rows=97)
    streamed, result = screen_streamed(tmp_path, "streamed", request)
    assert_same_tables(whole, streamed)
    if isinstance(expected, InvalidInputData):  # the CSV's rows without a key: a failed
        assert isinstance(result, InvalidInputData)  # run's folder, every chunk validated
    else:
        assert list(result.counts().items()) == list(expected.counts().items())
    assert len(spills) > 20  # about thirty chunks, each read back from the spill folder
    assert not spills[0].exists() and spills[0].parent.name != streamed.name  # the draft
    assert sorted(p.name for p in streamed.iterdir()) == sorted(p.name for p in whole.iterdir())


def _plain(table: pa.Table) -> pa.Table:
    return table.cast(pa.schema([f.with_type(_value_type(f.type)) for f in table.schema]))


def test_spilled_chunks_are_the_chunks_of_the_file_read_whole(tmp_path, csv_shuffled):
    # Row for row and line for line, rows without a key first, each key's rows in file
    # order: what the kernel is given does not depend on how the file was cut.
    file = _opened(csv_shuffled / "treatments.csv").counted()
    assert isinstance(file, InputFile)
    subjects = open_source(csv_shuffled / "subjects.csv", "subjects", {}, {"subject_id"}).read()
    spill = list(partition.spilled(file, file.keys(), subjects, 300, tmp_path / "spill"))
    whole = list(partition.cut_whole(file.read(), subjects, 300))
    assert len(spill) == len(whole) > 10 and not (tmp_path / "spill").exists()
    for (courses, people), (expected, expected_people) in zip(spill, whole, strict=True):
        assert np.array_equal(courses.lines, expected.lines)
        assert courses.lines.dtype == expected.lines.dtype == np.int64  # written as read
        assert _plain(courses.table).equals(_plain(expected.table))
        assert people is not None and expected_people is not None
        assert people.table.equals(expected_people.table)
    assert (
        list(spill[0][0].lines[:3])
        == sorted(  # the three rows without a key lead
            int(line) for line in whole[0][0].lines[:3]
        )
        and spill[0][0].table["subject_id"][:3].null_count == 3
    )


def test_a_spilled_file_that_changed_while_it_was_read_is_an_input_error(tmp_path, csv_shuffled):
    folder = tmp_path / "cohort"
    folder.mkdir()
    data = (csv_shuffled / "treatments.csv").read_bytes()
    (folder / "treatments.csv").write_bytes(data)
    file = _opened(folder / "treatments.csv").counted()
    assert isinstance(file, InputFile)
    keys = file.keys()
    (folder / "treatments.csv").write_bytes(data[: len(data) // 2].rsplit(b"\n", 1)[0] + b"\n")
    with pytest.raises(InputError, match="changed while it was read"):
        list(partition.spilled(file, keys, None, 300, tmp_path / "spill"))
    assert not (tmp_path / "spill").exists()


def test_adjudications_are_checked_against_a_file_read_a_chunk_at_a_time(tmp_path, sorted_cohort):
    # No subjects table: a reviewed subject is known only from the treatments' keys,
    # which are read when the adjudications are loaded (before any chunk). A subject in
    # neither input is refused then, as when the file is read whole.
    folder = tmp_path / "treatments-only"
    folder.mkdir()
    source = _treatments(sorted_cohort)
    (folder / source.name).write_bytes(source.read_bytes())
    first = _opened(folder / source.name).read().key_text()[0].as_py()
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


def _edited_csv(cohort: Path, folder: Path, edit) -> Path:
    """A copy of the CSV cohort with its treatments' data lines edited by `edit`."""
    folder.mkdir()
    (folder / "subjects.csv").write_bytes((cohort / "subjects.csv").read_bytes())
    lines = (cohort / "treatments.csv").read_bytes().split(b"\n")
    (folder / "treatments.csv").write_bytes(b"\n".join(edit(lines)))
    return folder


def _cell(lines: list[bytes], line: int, column: int, value: bytes) -> list[bytes]:
    """Line `line` (1-based, as issues number them) with field `column` replaced."""
    fields = lines[line - 1].split(b",")
    fields[column] = value
    return [*lines[: line - 1], b",".join(fields), *lines[line:]]


NOT_ONE_LINE_A_ROW = {
    # A quoted drug name over two lines: every later row's line is one more than its
    # row number says. A blank line (skipped by the parser) moves them the same way.
    "quoted line break": lambda lines: _cell(lines, 1200, 1, b'"Sertra\nline"'),
    "blank line": lambda lines: [*lines[:1200], b"", *lines[1200:]],
}


@pytest.mark.parametrize("edit", NOT_ONE_LINE_A_ROW)
def test_a_csv_whose_rows_are_not_one_line_each_is_read_whole(tmp_path, csv_cohort, edit):
    cohort = _edited_csv(csv_cohort, tmp_path / "cohort", NOT_ONE_LINE_A_ROW[edit])
    opened = _opened(cohort / "treatments.csv")
    counted = opened.counted()
    assert isinstance(counted, SourceTable)  # read whole: its lines counted exactly
    # The last row is on the file's last line, one line further than the header and one
    # line a row would put it.
    assert counted.lines[-1] == opened.total_lines == counted.rows + 2
    whole, _ = screen_whole(tmp_path, "whole", api.ScreenRequest(input=cohort))
    streamed, _ = screen_streamed(
        tmp_path, "streamed", api.ScreenRequest(input=cohort, chunk_rows=53)
    )
    assert_same_tables(whole, streamed)


UNREADABLE = {
    # A drug cell that is not UTF-8, far down the file: only converting that column finds
    # it, which a run reading a chunk at a time does when the chunk's turn comes.
    "drug not UTF-8": (lambda lines: _cell(lines, 1800, 1, b"caf\xe9"), "line 1800"),
    # A key that is not UTF-8, and a row short of a field: reading the key column at
    # load finds them, as reading the whole file does.
    "key not UTF-8": (lambda lines: _cell(lines, 1800, 0, b"SYN\xff"), "line 1800"),
    "missing field": (
        lambda lines: [*lines[:1799], lines[1799].rsplit(b",", 1)[0], *lines[1800:]],
        "line 1800",
    ),
}


@pytest.mark.parametrize("problem", UNREADABLE)
def test_an_unreadable_csv_fails_as_when_it_is_read_whole(tmp_path, csv_cohort, problem):
    edit, where = UNREADABLE[problem]
    cohort = _edited_csv(csv_cohort, tmp_path / "cohort", edit)
    messages = []
    for name, chunk_rows in (("whole", None), ("streamed", 53)):
        out = tmp_path / name
        with pytest.raises(InputError) as raised:
            loaded = api.load(api.ScreenRequest(input=cohort, chunk_rows=chunk_rows), ["t"])
            api.run_to_folder(loaded, api.Destination(out, BOTH))
        messages.append(str(raised.value))
        assert not out.exists()  # a failed run leaves no half-written folder
    assert messages[0] == messages[1] and where in messages[0]
    assert b"caf" not in messages[0].encode() and "SYN" not in messages[0]  # no cell shown


@pytest.mark.parametrize("order", ["sorted", "unsorted"])
def test_a_file_written_to_during_the_run_stops_it(tmp_path, sorted_cohort, order, request):
    # The manifest records the hash taken when the file was opened; a file read a chunk
    # at a time is read until the run's end. Written to in between (here: its bytes
    # rewritten as they were, its modification time moved on), the rows read cannot be
    # shown to be the rows hashed: the run stops, leaving no folder.
    csv = _treatments(sorted_cohort).suffix == ".csv"
    unsorted = "csv_shuffled" if csv else "shuffled"
    source = sorted_cohort if order == "sorted" else request.getfixturevalue(unsorted)
    folder = tmp_path / "cohort"
    folder.mkdir()
    for path in source.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    loaded = api.load(api.ScreenRequest(input=folder, chunk_rows=97), ["test"])
    assert isinstance(loaded.treatments, InputFile)  # not read yet
    treatments = _treatments(folder)
    treatments.write_bytes(treatments.read_bytes())
    later = treatments.stat().st_mtime_ns + 1_000_000_000
    os.utime(treatments, ns=(later, later))
    out = tmp_path / "run"
    with pytest.raises(InputError, match="changed while it was read"):
        api.run_to_folder(loaded, api.Destination(out, BOTH))
    assert not out.exists() and list(tmp_path.iterdir()) == [folder]


def test_a_file_written_to_between_open_and_read_is_refused(tmp_path, csv_cohort):
    opened = _opened(csv_cohort / "treatments.csv")
    opened.read()  # unchanged: read
    stamp = (csv_cohort / "treatments.csv").stat()
    os.utime(csv_cohort / "treatments.csv", ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))
    try:
        with pytest.raises(InputError, match="changed while it was read"):
            opened.read()
    finally:  # the module's cohort, as it was
        os.utime(csv_cohort / "treatments.csv", ns=(stamp.st_atime_ns, stamp.st_mtime_ns))


def test_validate_cuts_an_unsorted_file_on_disk_and_finds_the_same_issues(
    tmp_path, csv_shuffled, monkeypatch
):
    # `validate` has no run folder: an unsorted file is cut in a private scratch folder.
    # One chunk (the file read whole) and about thirty chunks report the same issues,
    # the three rows without a key among them, at their lines.
    whole = api.load_and_validate(api.ScreenRequest(input=csv_shuffled, chunk_rows=10**9))
    _refuse_reading_treatments_whole(monkeypatch)
    cut = api.load_and_validate(api.ScreenRequest(input=csv_shuffled, chunk_rows=97))
    issues = [run.checked().issues.reset_index(drop=True) for run in (whole, cut)]
    assert issues[0].equals(issues[1])
    missing = issues[0][issues[0]["check"] == "required_value_missing"]
    assert len(missing[missing["column"] == "subject_id"]) == 3


def test_a_csv_without_a_key_column_is_counted_and_reported_as_when_read_whole(
    tmp_path, csv_cohort
):
    # No `subject_id` header: counting parses every row but converts no column (Arrow
    # would convert every column if asked for none), and the run reports the missing
    # column as the whole read does, in a failed run's folder.
    folder = _edited_csv(csv_cohort, tmp_path / "cohort",
                         lambda lines: [lines[0].replace(b"subject_id", b"patient"), *lines[1:]])  # fmt: skip
    counted = _opened(folder / "treatments.csv").counted()
    assert isinstance(counted, InputFile) and counted.key_column is not None
    assert counted.key_column.num_columns == 0 and counted.rows == counted.total_lines - 1
    whole, expected = screen_whole(tmp_path, "whole", api.ScreenRequest(input=folder))
    streamed, result = screen_streamed(
        tmp_path, "streamed", api.ScreenRequest(input=folder, chunk_rows=97)
    )
    assert isinstance(expected, InvalidInputData) and isinstance(result, InvalidInputData)
    assert_same_tables(whole, streamed)


def _sample_as(folder: Path, variant: str) -> tuple[Path, dict]:
    """The sample cohort written as a site might export it; the options that read it."""
    folder.mkdir()
    treatments, subjects = ((SAMPLE / f"{n}.csv").read_text() for n in ("treatments", "subjects"))
    if variant == "utf-16":  # with its byte-order mark
        (folder / "treatments.csv").write_bytes(treatments.encode("utf-16"))
        (folder / "subjects.csv").write_bytes(subjects.encode("utf-16"))
        return folder, {"csv": CsvOptions(encoding="utf-16")}
    if variant == "semicolons, no last line break":
        (folder / "treatments.csv").write_text(treatments.replace(",", ";").rstrip("\n"))
        (folder / "subjects.csv").write_text(subjects.replace(",", ";"))
        return folder, {"csv": CsvOptions(delimiter=";")}
    # gzip-compressed, CRLF line ends, rows shuffled: cut on disk from the local copy
    head, *rows = treatments.splitlines()
    rows = [rows[i] for i in np.random.default_rng(2).permutation(len(rows))]
    (folder / "treatments.csv.gz").write_bytes(
        gzip.compress("\r\n".join([head, *rows, ""]).encode())
    )
    (folder / "subjects.csv").write_text(subjects)
    return folder, {}


@pytest.mark.parametrize(
    "variant", ["utf-16", "semicolons, no last line break", "gzip, CRLF, shuffled"]
)
def test_site_csv_variants_read_a_chunk_at_a_time_give_the_whole_runs_bytes(
    tmp_path, variant, monkeypatch
):
    folder, options = _sample_as(tmp_path / "cohort", variant)
    whole, _ = screen_whole(tmp_path, "whole", api.ScreenRequest(input=folder, **options))
    _refuse_reading_treatments_whole(monkeypatch)
    request = api.ScreenRequest(input=folder, chunk_rows=20, **options)
    streamed, _ = screen_streamed(tmp_path, "streamed", request)
    assert_same_tables(whole, streamed)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-32-le"])
def test_utf16_and_utf32_lines_are_counted_by_code_unit(tmp_path, encoding):
    # "utf-16" and "utf-32" carry a byte-order mark (little-endian here), the others none.
    # Line 10's drug is "ਊmitriptyline": U+0A0A, whose UTF-16 bytes are 0A 0A either way,
    # "\n" bytes that are no line break. Line 30's dose is "abc". By hand: the drug is not
    # in the formulary and is reported
    # at line 10 and the dose at line 30, and the file is read a chunk at a time (one
    # line a row, so no exact recount is needed).
    lines = (SAMPLE / "treatments.csv").read_text().splitlines()
    lines[9] = _cell_text(lines[9], 1, "\u0a0amitriptyline")
    lines[29] = _cell_text(lines[29], 2, "abc")
    folder = tmp_path / "cohort"
    folder.mkdir()
    (folder / "treatments.csv").write_bytes(("\n".join(lines) + "\n").encode(encoding))
    (folder / "subjects.csv").write_bytes((SAMPLE / "subjects.csv").read_text().encode(encoding))
    options = CsvOptions(encoding=encoding)
    opened = open_source(folder / "treatments.csv", "treatments", {}, set(TREATMENT_COLUMNS),
                         options)  # fmt: skip
    assert opened.total_lines == len(lines)
    assert isinstance(opened.counted(), InputFile)  # one line a row: read in ranges
    run = api.load_and_validate(api.ScreenRequest(input=folder, chunk_rows=20, csv=options))
    issues = run.checked().issues
    found = {(c, int(line)) for c, line in zip(issues["column"], issues["line"], strict=True)}
    assert ("drug", 10) in found and ("daily_dose_mg", 30) in found


def _cell_text(line: str, column: int, value: str) -> str:
    fields = line.split(",")
    fields[column] = value
    return ",".join(fields)


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_a_lone_carriage_return_and_a_blank_line_do_not_cancel_out(tmp_path, encoding):
    # Line 2 ends in a carriage return alone (a row break to the CSV parser: B's row
    # starts line 3, as an editor shows it), line 4 is blank, C is on line 5 and D on 6.
    # Counted by `\n` the file has as many lines as rows and a header, so numbering the
    # rows one line each put B on 3 (right by luck), C on 4 and D on 5 (wrong).
    rows = "A,sertraline,100,2023-02-01,2023-03-28\rB,sertraline,100,2023-02-01,2023-03-28\n"
    rows += "\nC,sertraline,abc,2023-02-01,2023-03-28\nD,sertraline,xyz,2023-02-01,2023-03-28\n"
    folder = tmp_path / "cohort"
    folder.mkdir()
    text = "subject_id,drug,daily_dose_mg,start_date,end_date\n" + rows
    (folder / "treatments.csv").write_bytes(text.encode(encoding))
    options = CsvOptions(encoding=encoding)
    for chunk_rows in (None, 1):
        run = api.load_and_validate(
            api.ScreenRequest(input=folder, chunk_rows=chunk_rows, csv=options)
        )
        issues = run.checked().issues
        bad = issues[issues["column"] == "daily_dose_mg"]
        assert dict(zip(bad["subject_id"], bad["line"], strict=True)) == {"C": 5, "D": 6}


_BYTES = st.sampled_from([b",", b'"', b"\n", b"\r", b"\xff", b"\x00", b"9", b"a", b" "])


@pytest.mark.slow("60 hypothesis examples, each the sample screened whole and in chunks")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.floats(0, 1), _BYTES, st.booleans()), min_size=1, max_size=5),
    shuffle=st.booleans(),
)
# Two rows of different chunks with two different unknown stop reasons ('nonre"ponse',
# 'nonrespon"e'): the whole read listed both values in each row's message, a chunk only its
# own, so validation_issues differed. Each row now names its own value.
@example(
    edits=[(1.0, b",", False), (0.625, b'"', False), (1.0, b",", False), (1.0, b'"', False),
           (0.171875, b'"', False)],
    shuffle=True,
)  # fmt: skip
def test_a_mutated_csv_read_in_chunks_gives_what_the_whole_read_gives(edits, shuffle):
    """Random byte edits of the sample's treatments (rows shuffled or not): read a chunk
    at a time (in ranges, or cut on disk) and read whole, the run gives the same error
    message, or the same tables byte for byte."""
    head, *rows = (SAMPLE / "treatments.csv").read_bytes().rstrip(b"\n").split(b"\n")
    if shuffle:
        rows = [rows[i] for i in np.random.default_rng(len(edits)).permutation(len(rows))]
    data = bytearray(b"\n".join([head, *rows]) + b"\n")
    for where, byte, insert in edits:
        at = int(where * (len(data) - 1))
        data[at : at if insert else at + 1] = byte
    with tempfile.TemporaryDirectory() as folder:
        cohort = Path(folder) / "cohort"
        cohort.mkdir()
        (cohort / "treatments.csv").write_bytes(bytes(data))
        (cohort / "subjects.csv").write_bytes((SAMPLE / "subjects.csv").read_bytes())
        outcomes = []
        for name, chunk_rows in (("whole", None), ("chunks", 20)):
            out = Path(folder) / name
            try:
                loaded = api.load(api.ScreenRequest(input=cohort, chunk_rows=chunk_rows), ["t"])
                api.run_to_folder(loaded, api.Destination(out, BOTH))
            except (InputError, InvalidInputData) as exc:
                outcomes.append((type(exc).__name__, str(exc)))
                continue
            outcomes.append(("ran", ""))
        assert outcomes[0] == outcomes[1]
        if outcomes[0][0] != "InputError":  # a run's folder, or a failed run's: the same
            assert_same_tables(Path(folder) / "whole", Path(folder) / "chunks")


@pytest.mark.parametrize("kind", ["folder", "symlink"])
def test_the_spill_folder_is_made_new_and_only_it_is_removed(tmp_path, csv_shuffled, kind):
    # A `.chunks` already in the folder (a library caller's own, or a link to a folder of
    # theirs) is not the run's: the run refuses to cut into it and leaves it and its
    # file, or the linked folder and its file, as they were.
    folder = tmp_path / "out"
    folder.mkdir()
    theirs = tmp_path / "theirs" if kind == "symlink" else folder / partition.SPILL
    theirs.mkdir()
    (theirs / "mine.txt").write_text("kept")
    if kind == "symlink":
        (folder / partition.SPILL).symlink_to(theirs, target_is_directory=True)
    loaded = api.load(api.ScreenRequest(input=csv_shuffled, chunk_rows=97), ["test"])
    with pytest.raises(FileExistsError):
        api.stream_to(loaded, folder, api.Destination(folder, BOTH))
    assert (theirs / "mine.txt").read_text() == "kept"
    assert (folder / partition.SPILL).is_symlink() == (kind == "symlink")


def test_a_run_stopped_while_writing_removes_its_spill_folder(tmp_path, shuffled, monkeypatch):
    # The writer fails on the second chunk; the chunks still on disk go with the error,
    # not when the generator that made them is collected.
    written = []

    def failing(sinks, piece):
        written.append(piece)
        if len(written) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(stream, "write_pieces", failing)
    folder = tmp_path / "out"
    folder.mkdir()
    loaded = api.load(api.ScreenRequest(input=shuffled, chunk_rows=97), ["test"])
    with pytest.raises(OSError, match="disk full"):
        api.stream_to(loaded, folder, api.Destination(folder, BOTH))
    assert not (folder / partition.SPILL).exists()


@pytest.mark.parametrize(
    ("text", "lone"),
    [
        (b"ab\r\ncd\r\n", False),  # Windows line ends, the pair cut by the block edge
        (b"abc\r\nd\r\n", False),  # the pair whole inside a block
        (b"ab\rxcd\r\n", True),  # a return alone at the block's end
        (b"ab\ncd\n\r", True),  # a return alone at the file's end
    ],
)
def test_a_lone_carriage_return_is_found_across_read_blocks(tmp_path, monkeypatch, text, lone):
    from trdscreen import io

    monkeypatch.setattr(io, "READ_BLOCK", 3)  # blocks "ab\r", "\ncd", ...
    path = tmp_path / "t.csv"
    path.write_bytes(text)
    _sha, _size, breaks = io._hash_and_count_newlines(path)
    assert (breaks.lone_cr, breaks.newlines) == (lone, text.count(b"\n"))
