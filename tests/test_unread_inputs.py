"""Nothing in an input folder is passed over without a word.

A site that puts `assessments.csv` beside its treatments and subjects expects the
screen to use the ratings; it does not (course and screening scores are read from
their columns only), so the run names every table of the folder it did not read: a
warning on stderr, a line in summary.txt and a row in report.html, an
`inputs_not_read` audit event and manifest key, and a key in the --json result. `trdscreen build` names the tables of a records folder it
does not read (a `diagnosis.csv` for `diagnoses.csv`) the same way, in its manifest.
What a run reads, hidden and `_` files, a README and build's own account of a built
folder are never named.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from tests.conftest import ROOT, SAMPLE
from trdscreen.cli import app

RECORDS = ROOT / "examples" / "records"
RATINGS = "subject_id,date,instrument,total\nS001,2023-08-20,HAMD17,25\n"


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _screen(*args: str):
    return CliRunner().invoke(app, ["screen", *args], terminal_width=400)


def test_screen_names_an_assessments_table_it_does_not_read(tmp_path):
    data = tmp_path / "export"
    shutil.copytree(SAMPLE, data)
    (data / "assessments.csv").write_text(RATINGS)
    result = _screen(str(data), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "warning: Not read: assessments.csv in the input folder" in result.stderr
    summary = (tmp_path / "run" / "summary.txt").read_text()
    assert "Not read: assessments.csv in the input folder" in summary
    events = [
        e for e in _events(tmp_path / "run" / "audit.jsonl") if e["event"] == "inputs_not_read"
    ]
    assert [e["files"] for e in events] == [["assessments.csv"]]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs_not_read"] == ["assessments.csv"]
    jsonschema.validate(
        manifest, json.loads((ROOT / "trdscreen/data/manifest.schema.json").read_text())
    )
    report = (tmp_path / "run" / "report.html").read_text()
    assert "<th>Not read</th><td><code>assessments.csv</code>" in report
    verified = CliRunner().invoke(app, ["verify", str(tmp_path / "run")])
    assert verified.exit_code == 0, verified.output  # the report re-renders the same
    # The file is named, not read: the decisions are those of the folder without it.
    plain = _screen(str(SAMPLE), "--out", str(tmp_path / "plain"))
    assert plain.exit_code == 0 and "Not read" not in plain.stderr
    assert (tmp_path / "run" / "decisions.csv").read_bytes() == (
        tmp_path / "plain" / "decisions.csv"
    ).read_bytes()
    assert "Not read" not in (tmp_path / "plain" / "summary.txt").read_text()
    assert "Not read" not in (tmp_path / "plain" / "report.html").read_text()
    assert "inputs_not_read" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())
    assert not [
        e for e in _events(tmp_path / "plain" / "audit.jsonl") if e["event"] == "inputs_not_read"
    ]


def test_json_result_lists_them_and_validate_warns_too(tmp_path):
    data = tmp_path / "export"
    shutil.copytree(SAMPLE, data)
    (data / "diagnoses.csv").write_text("subject_id,code\nS001,F31.4\n")
    # A folder of Parquet files is a table too.
    (data / "assessments").mkdir()
    pq.write_table(pa.table({"subject_id": ["S001"]}), data / "assessments" / "part-0.parquet")
    result = _screen(str(data), "--out", str(tmp_path / "run"), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["inputs_not_read"] == ["assessments", "diagnoses.csv"]
    plain = _screen(str(SAMPLE), "--out", str(tmp_path / "plain"), "--json")
    assert "inputs_not_read" not in json.loads(plain.stdout)
    checked = CliRunner().invoke(app, ["validate", str(data)], terminal_width=400)
    assert "warning: Not read: assessments, diagnoses.csv" in checked.stderr


def test_a_subjects_file_beside_another_given_with_subjects_is_named(tmp_path):
    data = tmp_path / "export"
    shutil.copytree(SAMPLE, data)
    other = shutil.copy(data / "subjects.csv", tmp_path / "patients.csv")
    result = _screen(str(data), "--subjects", str(other), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "Not read: subjects.csv in the input folder" in result.stderr
    # Given explicitly, the folder's own subjects file is read: nothing to name.
    given = _screen(
        str(data), "--subjects", str(data / "subjects.csv"), "--out", str(tmp_path / "r2")
    )
    assert given.exit_code == 0 and "Not read" not in given.stderr


def test_what_is_read_hidden_files_and_a_built_folder_are_not_named(tmp_path):
    data = tmp_path / "export"
    shutil.copytree(SAMPLE, data)  # holds a README.md: not a table
    (data / ".assessments.csv").write_text(RATINGS)
    (data / "_assessments.csv").write_text(RATINGS)
    (data / "site-map.yaml").write_text("treatments: {}\n")
    result = _screen(str(data), "--out", str(tmp_path / "run"))
    assert result.exit_code == 0 and "Not read" not in result.stderr
    # `build` writes course_events and event_attrition beside what it built.
    built = CliRunner().invoke(app, ["build", str(RECORDS), "--out", str(tmp_path / "built")])
    assert built.exit_code == 0 and "Not read" not in built.stderr
    assert (tmp_path / "built" / "course_events.parquet").exists()
    screened = _screen(str(tmp_path / "built"), "--out", str(tmp_path / "run2"))
    assert screened.exit_code == 0 and "Not read" not in screened.stderr
    # A folder that is itself a dataset of treatments has nothing beside them.
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    shutil.copy(tmp_path / "built" / "treatments.parquet", dataset / "part-0.parquet")
    subjects = str(tmp_path / "built" / "subjects.parquet")
    alone = _screen(str(dataset), "--subjects", subjects, "--out", str(tmp_path / "run3"))
    assert alone.exit_code == 0, alone.output
    assert "Not read" not in alone.stderr


def test_build_names_a_misspelt_records_table(tmp_path):
    records = tmp_path / "records"
    shutil.copytree(RECORDS, records)
    # `diagnosis.csv` is not `diagnoses.csv`: without a word, every subject's bipolar
    # status would come from the subjects table alone.
    (records / "diagnosis.csv").write_text("subject_id,date,code\nP1,2022-01-01,F31.4\n")
    result = CliRunner().invoke(app, ["build", str(records), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "warning: Not read: diagnosis.csv in the records folder" in result.stderr
    assert "diagnoses" in result.stderr  # the name it would read
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["inputs_not_read"] == ["diagnosis.csv"]
    # The same through `screen --profile events`.
    screened = _screen(str(records), "--profile", "events", "--out", str(tmp_path / "s"))
    assert screened.exit_code == 0, screened.output
    assert "Not read: diagnosis.csv in the records folder" in screened.stderr
    # A records folder holding only what build reads: no key, no warning.
    clean = CliRunner().invoke(app, ["build", str(RECORDS), "--out", str(tmp_path / "c")])
    assert "Not read" not in clean.stderr
    assert "inputs_not_read" not in json.loads((tmp_path / "c" / "manifest.json").read_text())
