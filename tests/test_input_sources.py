"""Inputs as pipelines hand them over (issue 21): standard input, compressed CSV, a folder
of Parquet files, an object-store URL. Each gives the decisions of the plain files, is
named as given in messages and the manifest, and is recorded with the SHA-256 of its
bytes as given."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from tests.conftest import SAMPLE
from trdscreen.cli import app
from trdscreen.verify import verify_run

DECIDING = ("decisions.csv", "criteria_ledger.csv", "attrition.csv")


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "run"
    result = CliRunner().invoke(app, ["screen", str(SAMPLE), "--out", str(out)])
    assert result.exit_code == 0
    return out


def same_decisions(run: Path, plain: Path) -> None:
    # to_resolve names the input as given: `treatments.csv.gz line 23 (olanzapine from
    # 2023-06-05):`, `stdin line 23 (...):`.
    def unnamed(text: str) -> str:
        return re.sub(r'"[^",]* (line|row) (\d+)( \([^)]*\))?:', r'"FILE \1 \2\3:', text)

    for name in DECIDING:
        assert unnamed((run / name).read_text()) == unnamed((plain / name).read_text()), name


def manifest_inputs(run: Path) -> dict[str, dict]:
    return {i["role"]: i for i in json.loads((run / "manifest.json").read_text())["inputs"]}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_treatments_from_standard_input(tmp_path, plain):
    out = tmp_path / "run"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trdscreen",
            "screen",
            "-",
            "--subjects",
            str(SAMPLE / "subjects.csv"),
            "--out",
            str(out),
        ],  # fmt: skip
        input=(SAMPLE / "treatments.csv").read_bytes(),
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    same_decisions(out, plain)
    recorded = manifest_inputs(out)["treatments"]
    assert recorded["path"] == "-" and recorded["sha256"] == sha(SAMPLE / "treatments.csv")
    # verify finds a copy of what was piped in, by name, with --inputs
    copies = tmp_path / "copies"
    copies.mkdir()
    (copies / "stdin.csv").write_bytes((SAMPLE / "treatments.csv").read_bytes())
    (copies / "subjects.csv").write_bytes((SAMPLE / "subjects.csv").read_bytes())
    assert verify_run(out, copies).ok


@pytest.mark.parametrize("suffix", [".gz", ".zst", ".bz2"])
def test_compressed_csv(tmp_path, plain, suffix):
    import pyarrow as pa

    folder = tmp_path / "in"
    folder.mkdir()
    target = folder / f"treatments.csv{suffix}"
    codec = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}[suffix]
    with pa.output_stream(str(target), compression=codec) as out:
        out.write((SAMPLE / "treatments.csv").read_bytes())
    (folder / "subjects.csv").write_bytes((SAMPLE / "subjects.csv").read_bytes())
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["screen", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    same_decisions(out, plain)
    recorded = manifest_inputs(out)["treatments"]
    assert recorded["path"].endswith(f"treatments.csv{suffix}")
    assert recorded["sha256"] == sha(target)  # the compressed bytes, as an auditor has them
    assert verify_run(out).ok


def test_a_problem_in_a_compressed_csv_names_it_and_its_line(tmp_path):
    text = (
        (SAMPLE / "treatments.csv")
        .read_text()
        .replace("S001,sertraline,100,", "S001,sertraline,lots,", 1)
    )
    target = tmp_path / "treatments.csv.gz"
    target.write_bytes(gzip.compress(text.encode()))
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["screen", str(target), "--subjects", str(SAMPLE / "subjects.csv"), "--out", str(out)]
    )
    assert result.exit_code == 4
    assert "treatments.csv.gz:2" in result.output and "trdscreen-input" not in result.output


def test_a_broken_gzip_is_a_clear_error(tmp_path):
    target = tmp_path / "treatments.csv.gz"
    target.write_bytes(b"this is not gzip")
    result = CliRunner().invoke(app, ["validate", str(target), "--as-of", "2024-06-01"])
    assert result.exit_code == 4
    assert "cannot be decompressed as gzip" in result.output


def test_a_folder_of_parquet_files(tmp_path, plain):
    # Spark writes a table as part files: split the treatments into three, in name order.
    folder = tmp_path / "in"
    (folder / "treatments").mkdir(parents=True)
    table = pacsv.read_csv(SAMPLE / "treatments.csv")
    for index, start in enumerate(range(0, table.num_rows, 50)):
        pq.write_table(table.slice(start, 50), folder / "treatments" / f"part-{index:05d}.parquet")
    (folder / "treatments" / "_SUCCESS").write_text("")
    pq.write_table(pacsv.read_csv(SAMPLE / "subjects.csv"), folder / "subjects.parquet")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["screen", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("decisions.csv", "attrition.csv"):
        plain_table = (plain / name).read_text()
        # to_resolve names the row of the dataset (a Parquet row), not the CSV line
        if name == "decisions.csv":
            plain_table = re.sub(
                r"treatments\.csv line (\d+)",
                lambda m: f"treatments row {int(m.group(1)) - 1}",
                plain_table,
            )
        assert (out / name).read_text() == plain_table, name
    recorded = manifest_inputs(out)["treatments"]
    assert recorded["path"].endswith("treatments")
    assert verify_run(out).ok
    # the dataset's hash covers every part: changing one byte of one part is caught
    part = folder / "treatments" / "part-00001.parquet"
    part.write_bytes(part.read_bytes()[:-1] + b"\0")
    assert not verify_run(out).ok


def test_an_object_store_url_through_fsspec(tmp_path, plain):
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    memory.pipe("/site/treatments.csv", (SAMPLE / "treatments.csv").read_bytes())
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "screen",
            "memory://site/treatments.csv",
            "--subjects",
            str(SAMPLE / "subjects.csv"),
            "--out",
            str(out),
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    same_decisions(out, plain)
    recorded = manifest_inputs(out)["treatments"]
    assert recorded["path"] == "memory://site/treatments.csv"
    assert recorded["sha256"] == sha(SAMPLE / "treatments.csv")


def test_a_file_url_through_pyarrow(tmp_path, plain):
    out = tmp_path / "run"
    url = (SAMPLE / "treatments.csv").resolve().as_uri()
    result = CliRunner().invoke(
        app, ["screen", url, "--subjects", str(SAMPLE / "subjects.csv"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    same_decisions(out, plain)


def test_a_missing_object_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(
        app, ["validate", (tmp_path / "nothing.csv").as_uri(), "--as-of", "2024-06-01"]
    )
    assert result.exit_code == 4 and "no such object" in result.output


def test_a_file_level_problem_names_the_compressed_file_as_given(tmp_path):
    # The header check reads the local copy (`treatments.csv`): its message must name
    # `treatments.csv.gz` once, not the copy and not `treatments.csv.gz.gz`.
    target = tmp_path / "treatments.csv.gz"
    target.write_bytes(gzip.compress(b"1,2,3\n4,5,6\n"))
    result = CliRunner().invoke(app, ["validate", str(target), "--as-of", "2024-06-01"])
    assert result.exit_code == 4
    assert f"{target}: line 1 looks like data" in result.output
    assert ".gz.gz" not in result.output and "trdscreen-input" not in result.output


def test_copies_live_in_trdscreens_own_scratch_folder_and_inputs_are_untouched(tmp_path):
    # What trdscreen removes at exit is the folder it made for its copies: never the
    # input, its folder, or anything a path in the input points at.
    import tempfile

    from trdscreen.sources import locate

    target = tmp_path / "treatments.csv.gz"
    payload = gzip.compress((SAMPLE / "treatments.csv").read_bytes())
    target.write_bytes(payload)
    located = locate(target)
    scratch = located.data.parents[1]
    assert scratch.name.startswith("trdscreen-input-")
    assert scratch.parent == Path(tempfile.gettempdir())
    assert tmp_path not in located.data.parents
    assert target.read_bytes() == payload  # read, never moved or changed
