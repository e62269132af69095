"""`--engine dask` against the default engine on a real 2-worker local cluster (127.0.0.1).

The claim under test: screening a cohort bucket by bucket and merging gives the
same bytes as screening it whole, because every check and decision depends on
one subject's rows only. Each case writes both run folders and compares every
table file byte for byte; none of the expected tables is written by hand,
because the default engine's own correctness is what the rest of the suite
tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import SAMPLE, assert_same_tables, screen_streamed, screen_whole, table_files
from typer.testing import CliRunner

from trdscreen import api
from trdscreen.cli import app
from trdscreen.engine import DaskOptions, bucket_of
from trdscreen.errors import ExitCode, InputError, InvalidInputData

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as local:
        yield local.scheduler_address


def _pair(tmp_path, cluster, partitions: int, **options) -> tuple:
    default = screen_whole(tmp_path, "pandas", api.ScreenRequest(**options))
    dask = screen_streamed(
        tmp_path,
        "dask",
        api.ScreenRequest(**options, dask=DaskOptions(scheduler=cluster, partitions=partitions)),
    )
    return default, dask


def same_report(a: Path, b: Path) -> None:
    """The two runs' report.html are the same page but for the run id and times."""

    def page(folder: Path) -> str:
        manifest = json.loads((folder / "manifest.json").read_text())
        text = (folder / "report.html").read_text()
        for key in ("run_id", "started_at", "finished_at"):
            text = text.replace(manifest[key], key.upper())
        return text

    assert page(a) == page(b)


def test_synthetic_cohort_is_byte_identical(tmp_path, cluster, cohort):
    (a, result), (b, _) = _pair(tmp_path, cluster, 7, input=cohort)
    assert_same_tables(a, b)
    same_report(a, b)
    # Not a trivial cohort: every decision occurs, and courses are many per subject.
    assert set(result.decisions["decision"]) == {"eligible", "excluded", "needs_review"}
    assert len(result.courses) > 3 * len(result.decisions)
    manifest = json.loads((b / "manifest.json").read_text())
    assert manifest["options"]["engine"] == {"name": "dask", "scheduler": cluster, "partitions": 7}
    assert (
        manifest["decisions_content_sha256"]
        == json.loads((a / "manifest.json").read_text())["decisions_content_sha256"]
    )


def test_more_buckets_than_subjects_per_bucket_and_as_of_and_report(tmp_path, cluster, cohort):
    # 64 buckets leave some with few subjects; --as-of and a reported staging model
    # take the other paths through the kernel (censoring, a second rule set).
    from datetime import date

    (a, _), (b, _) = _pair(
        tmp_path,
        cluster,
        64,
        input=cohort,
        rules="mgh-atrq",
        as_of=date(2016, 6, 30),
        reports=("maudsley-2009",),
    )
    assert_same_tables(a, b)


def test_quarantine_is_byte_identical(tmp_path, cluster, damaged):
    (a, result), (b, _) = _pair(tmp_path, cluster, 5, input=damaged, on_invalid="quarantine")
    assert_same_tables(a, b)
    same_report(a, b)
    # 25 damaged rows (distinct rows, possibly shared subjects): each is rejected once.
    assert result.quarantine.counts()["treatment_rows_rejected"] == 25
    assert "quarantine_treatments.parquet" in table_files(b)


def test_invalid_input_fails_the_same_way(tmp_path, cluster, damaged):
    (a, error_a), (b, error_b) = _pair(tmp_path, cluster, 5, input=damaged)
    assert isinstance(error_a, InvalidInputData) and isinstance(error_b, InvalidInputData)
    assert str(error_a) == str(error_b)
    assert table_files(b) == ["validation_issues.csv", "validation_issues.parquet"]
    assert_same_tables(a, b)


def test_many_batches_intervals_and_buckets(tmp_path, cluster, cohort):
    # Batches of 500 rows (26 batches of courses, each routed to 16 buckets) and merge
    # intervals of about 50 subjects (about 60 intervals, each gathered from every
    # bucket): the pieces must come back together in key order.
    dask = DaskOptions(scheduler=cluster, partitions=16, interval_subjects=50, batch_rows=500)
    (a, _) = screen_whole(tmp_path, "pandas", api.ScreenRequest(input=cohort))
    (b, _) = screen_streamed(tmp_path, "dask", api.ScreenRequest(input=cohort, dask=dask))
    assert_same_tables(a, b)
    manifest = json.loads((b / "manifest.json").read_text())
    rows = {i["role"]: i["rows"] for i in manifest["inputs"]}
    # Counted as the batches are read: the data lines of each file (no quoted breaks).
    lines = {f: (cohort / f"{f}.csv").read_text().count("\n") - 1 for f in rows}
    assert rows == lines and lines["subjects"] == 3000


def test_quoted_line_breaks_are_numbered_exactly(tmp_path, cluster, cohort):
    # A subject's diagnosis holds a quoted line break, so every later row starts one
    # line further down than its row number says. The Dask engine reads in batches,
    # finds that at the end, and reads the file again numbering lines exactly; the
    # issues (with their line numbers) and quarantine tables must match the default.
    folder = tmp_path / "quoted"
    folder.mkdir()
    subjects = (cohort / "subjects.csv").read_text().splitlines()
    assert '"MDD, ' in subjects[5]
    subjects[5] = subjects[5].replace('"MDD, ', '"MDD,\n')
    key, birth, rest = subjects[900].split(",", 2)
    subjects[900] = f"{key},someday,{rest}"  # a birth date that is not a date: an error
    (folder / "subjects.csv").write_text("\n".join(subjects) + "\n")
    (folder / "treatments.csv").write_bytes((cohort / "treatments.csv").read_bytes())
    (a, result), (b, _) = _pair(tmp_path, cluster, 3, input=folder, on_invalid="quarantine")
    assert_same_tables(a, b)
    issues = result.issues
    bad = issues[(issues["file"] == "subjects.csv") & (issues["column"] == "birth_date")]
    assert bad["line"].tolist() == [902]  # row 900 of the list, plus the header, plus one


def test_a_bucket_with_courses_but_no_subject_rows(tmp_path, cluster):
    # 39 sample subjects in 64 buckets: most buckets hold one subject or none. Three
    # subjects lose their subject row, so some bucket has courses and no subject rows:
    # it must be validated as a bucket of an input that has a subjects table (each
    # such course is warned about as a subject missing from that table), not as a run
    # without a subjects table.
    folder = tmp_path / "orphans"
    folder.mkdir()
    lines = (SAMPLE / "subjects.csv").read_text().splitlines()
    kept = [line for line in lines if not line.startswith(("S003,", "S010,", "S021,"))]
    assert len(kept) == len(lines) - 3
    (folder / "subjects.csv").write_text("\n".join(kept) + "\n")
    (folder / "treatments.csv").write_bytes((SAMPLE / "treatments.csv").read_bytes())
    (a, result), (b, _) = _pair(tmp_path, cluster, 64, input=folder)
    assert_same_tables(a, b)
    # One warning per course row whose subject has no subject row (the sample has a
    # few such subjects of its own, besides the three).
    known = {line.split(",")[0].strip() for line in kept[1:]}
    courses = (SAMPLE / "treatments.csv").read_text().splitlines()[1:]
    orphans = [line.split(",")[0].strip() for line in courses]
    orphans = [key for key in orphans if key not in known]
    assert {"S003", "S010", "S021"} <= set(orphans)
    warned = result.issues[result.issues["check"] == "subject_not_in_subjects_table"]
    assert sorted(warned["subject_id"]) == sorted(orphans)


def test_spilled_inputs_and_disk_pieces_come_back_the_same(tmp_path, cohort):
    # Workers whose memory target is a few kilobytes keep almost every input piece the
    # client sent on disk (Dask's spilling), and every bucket writes its tables to the
    # worker's local disk for the merge: the two mechanisms that let a cohort larger
    # than the workers' memory complete. What comes back from disk must give the same
    # bytes, and the run's files must be gone from the workers afterwards.
    import dask

    with (
        dask.config.set({"distributed.worker.memory.target": 1e-5}),
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="1GiB",
        ) as local,
    ):
        dask_options = DaskOptions(scheduler=local.scheduler_address, partitions=6)
        (a, _) = screen_whole(tmp_path, "pandas", api.ScreenRequest(input=cohort))
        request = api.ScreenRequest(input=cohort, dask=dask_options)
        (b, _) = screen_streamed(tmp_path, "dask", request)
        with distributed.Client(local) as client:
            written = client.run(
                lambda dask_worker: dask_worker.data.cumulative_metrics[("disk-write", "count")]
            )
            left = client.run(
                lambda dask_worker: [
                    str(p) for p in Path(dask_worker.local_directory).glob("trdscreen-*")
                ]
            )
    assert_same_tables(a, b)
    assert all(count > 0 for count in written.values()), written
    assert all(files == [] for files in left.values()), left


def test_cli_starts_a_local_cluster_and_verify_accepts_thescreen_whole(tmp_path, cohort):
    runner = CliRunner()
    a, b = tmp_path / "a", tmp_path / "b"
    first = runner.invoke(app, ["screen", str(cohort), "--out", str(a), "--json"])
    second = runner.invoke(
        app,
        ["screen", str(cohort), "--out", str(b), "--engine", "dask", "--workers", "2", "--json"],
    )
    assert first.exit_code == second.exit_code == ExitCode.OK, second.output
    assert_same_tables(a, b)
    # verify re-runs a Dask run with the default engine: the same hashes must come out.
    checked = runner.invoke(app, ["verify", str(b), "--json"])
    assert checked.exit_code == ExitCode.OK, checked.output


def test_dask_options_need_the_dask_engine(tmp_path):
    result = CliRunner().invoke(
        app, ["screen", "sample_data", "--out", str(tmp_path / "x"), "--partitions", "4"]
    )
    assert result.exit_code == ExitCode.USAGE
    assert "--engine dask" in result.output


# --------------------------------------------------------------------------- buckets


def test_bucket_is_stable_across_processes_and_hash_seeds():
    ids = [f"S{i:04d}" for i in range(200)]
    here = bucket_of(pa.array(ids), 16).tolist()
    code = (
        "import pyarrow as pa, json; from trdscreen.engine import bucket_of; "
        f"print(json.dumps(bucket_of(pa.array({ids!r}), 16).tolist()))"
    )
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert json.loads(out.stdout) == here
    # Spread over the buckets, not all in one (200 keys, 16 buckets).
    assert len(set(here)) == 16


def test_bucket_follows_the_key_as_validation_reads_it():
    # Validation reads an integer Parquet key 7 and the text " 7 " as the subject "7":
    # their rows must meet in one bucket.
    as_int = bucket_of(pa.array([7, 8]), 32)
    as_text = bucket_of(pa.array([" 7 ", "8"]), 32)
    assert as_int.tolist() == as_text.tolist()
    assert bucket_of(pa.array([None, "x"], pa.string()), 32)[0] == 0


def test_a_site_export_with_its_map_and_adjudications_is_byte_identical(tmp_path, cluster):
    # The site map's conventions travel with the inputs to the workers, and the
    # reviewers' decisions with the screening: the European example export, screened
    # bucket by bucket, gives the tables of the whole run, final decisions included.
    # S003's eligible was given when its computed decision was needs_review; it is
    # excluded (sample_data/README.md), so the answer is held in every engine.
    adjudications = tmp_path / "adjudications.csv"
    adjudications.write_text(
        "subject_id,computed_decision,decision,reason,reviewer,date\n"
        "S020,,eligible,chart review,Dr. W,2024-06-10\n"
        "S003,needs_review,eligible,chart review,Dr. W,2024-06-10\n"
    )
    options = {
        "input": SAMPLE.parent / "examples" / "site-export",
        "column_map": SAMPLE.parent / "examples" / "site-map.yaml",
        "adjudications": adjudications,
    }
    (a, result), (b, _) = _pair(tmp_path, cluster, 5, **options)
    assert_same_tables(a, b)
    assert result.counts()["adjudicated"] == {"subjects": 2, "changed": 2, "held": 1}
    # and the chunked default engine too
    streamed, _ = screen_streamed(tmp_path, "chunks", api.ScreenRequest(**options, chunk_rows=40))
    assert_same_tables(a, streamed)


def test_an_adjudicated_subject_no_bucket_holds_is_an_error(tmp_path, cluster):
    adjudications = tmp_path / "adjudications.csv"
    adjudications.write_text(
        "subject_id,decision,reason,reviewer,date\nS999,eligible,chart review,Dr. W,2024-06-10\n"
    )
    request = api.ScreenRequest(
        input=SAMPLE, adjudications=adjudications, dask=DaskOptions(scheduler=cluster, partitions=3)
    )
    out = tmp_path / "run"
    with pytest.raises(InputError) as caught:  # found once the buckets are screened
        api.run_to_folder(api.load(request, ["test"]), api.Destination(out))
    assert "S999 is in neither the treatments nor the subjects table" in " ".join(
        getattr(caught.value, "problems", [])
    )
    assert not out.exists()  # nothing half-written
