"""CLI through typer's runner: each command, each exit code, --json, and parity with the library."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pyarrow as pa
from conftest import SAMPLE, run_cohort
from typer.testing import CliRunner

from trdscreen.cli import app
from trdscreen.errors import ExitCode

runner = CliRunner()

TABLES = [
    "decisions",
    "included",
    "excluded",
    "needs_review",
    "criteria_ledger",
    "courses",
    "attrition",
    "validation_issues",
]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_screen_writes_every_table_and_manifest(tmp_path):
    out = tmp_path / "run"
    result = invoke("screen", SAMPLE, "--out", out)
    assert result.exit_code == ExitCode.OK, result.output
    for stem in TABLES:
        assert (out / f"{stem}.csv").is_file(), stem
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "ok"
    assert manifest["rules"]["id"] == "sforzini-2021"
    assert {i["role"] for i in manifest["inputs"]} == {"treatments", "subjects"}
    recorded = {o["path"]: o["sha256"] for o in manifest["outputs"]}
    import hashlib

    for name, digest in recorded.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], (
        "temporary folder left behind"
    )


def test_cli_decisions_equal_library_decisions(tmp_path):
    out = tmp_path / "run"
    assert invoke("screen", SAMPLE, "--out", out, "--format", "parquet").exit_code == 0
    written = pd.read_parquet(out / "decisions.parquet")
    library = run_cohort(SAMPLE)[1].decisions
    assert written["subject_id"].tolist() == library["subject_id"].tolist()
    assert written["decision"].tolist() == library["decision"].astype(str).tolist()
    assert written["classification"].tolist() == library["classification"].astype(str).tolist()
    assert written["n_failed_trials"].tolist() == library["n_failed_trials"].tolist()


def test_json_summary_is_the_only_stdout(tmp_path):
    result = invoke("screen", SAMPLE, "--out", tmp_path / "run", "--json", "--format", "both")
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and payload["exit_code"] == 0
    assert payload["counts"]["decision"] == {"eligible": 17, "excluded": 37, "needs_review": 13}
    # Every eligible subject but S027 (adherence 0.9 and 0.95 given) has a counted failure
    # without adherence, which the preset assumes met; of the needs-review subjects, all but
    # S034 and S038 (no certain failure at all: episode unknown) have one too.
    assert payload["counts"]["assumptions"] == {"eligible": 16, "needs_review": 11}
    assert "decisions.parquet" in payload["outputs"] and "decisions.csv" in payload["outputs"]


def test_reruns_give_identical_tables(tmp_path):
    for name in ("a", "b"):
        assert invoke("screen", SAMPLE, "--out", tmp_path / name, "--format", "both").exit_code == 0
    for stem in TABLES:
        for suffix in (".csv", ".parquet"):
            a = (tmp_path / "a" / f"{stem}{suffix}").read_bytes()
            assert a == (tmp_path / "b" / f"{stem}{suffix}").read_bytes(), stem + suffix


def test_existing_output_folder_is_refused_then_forced(tmp_path):
    out = tmp_path / "run"
    assert invoke("screen", SAMPLE, "--out", out).exit_code == 0
    again = invoke("screen", SAMPLE, "--out", out)
    assert again.exit_code == ExitCode.OUTPUT_EXISTS
    assert "--force" in again.stderr
    assert invoke("screen", SAMPLE, "--out", out, "--force").exit_code == 0


def test_usage_error_exit_code(tmp_path):
    assert invoke("screen", SAMPLE).exit_code == ExitCode.USAGE  # --out missing
    bad_date = invoke("screen", SAMPLE, "--out", tmp_path / "x", "--as-of", "01/02/2024")
    assert bad_date.exit_code == ExitCode.USAGE


def test_invalid_rule_file_names_the_key(tmp_path):
    rules = tmp_path / "bad.yaml"
    text = (SAMPLE.parent / "rules" / "sforzini-2021.yaml").read_text()
    rules.write_text(text.replace("min_weeks: 4", "min_weeks: four"))
    result = invoke("screen", SAMPLE, "--out", tmp_path / "run", "--rules", rules)
    assert result.exit_code == ExitCode.INVALID_RULES
    assert "adequacy.duration.min_weeks" in result.stderr and "bad.yaml" in result.stderr
    assert not (tmp_path / "run").exists()


def test_unknown_preset_lists_presets(tmp_path):
    result = invoke("screen", SAMPLE, "--out", tmp_path / "run", "--rules", "no-such-preset")
    assert result.exit_code == ExitCode.INVALID_RULES
    assert "sforzini-2021" in result.stderr


def test_invalid_input_writes_only_the_issues_report(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    lines = (data / "treatments.csv").read_text().splitlines()
    lines[1] = lines[1].replace("2023-03-28", "28/03/2023")  # an ambiguous date on line 2
    (data / "treatments.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    result = invoke("screen", data, "--out", out)
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert sorted(p.name for p in out.iterdir()) == [
        "audit.jsonl",
        "manifest.json",
        "report.html",
        "summary.txt",
        "validation_issues.csv",
    ]
    issues = pd.read_csv(out / "validation_issues.csv")
    row = issues[issues["check"] == "not_iso_date"].iloc[0]
    assert (row["file"], row["line"], row["column"], row["subject_id"]) == (
        "treatments.csv",
        2,
        "end_date",
        "S001",
    )
    assert json.loads((out / "manifest.json").read_text())["status"] == "invalid_input"


def test_missing_input_file(tmp_path):
    result = invoke("screen", tmp_path / "nope.csv", "--out", tmp_path / "run")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "nope.csv" in result.stderr


def test_validate_reports_and_exits(tmp_path):
    ok = invoke("validate", SAMPLE)
    assert ok.exit_code == 0
    assert "unknown_drug" in ok.stdout
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    text = (data / "subjects.csv").read_text().replace("S002,", "S001,", 1)
    (data / "subjects.csv").write_text(text)
    bad = invoke("validate", data, "--json")
    assert bad.exit_code == ExitCode.INVALID_INPUT
    payload = json.loads(bad.stdout)
    checks = {i["check"] for i in payload["issues"]}
    assert "duplicate_subject" in checks


def test_version_and_help():
    from trdscreen import __version__

    assert invoke("--version").stdout.strip() == f"trdscreen {__version__}"
    for command in ("screen", "validate"):
        assert invoke(command, "--help").exit_code == 0


def test_parquet_and_csv_inputs_agree(tmp_path):
    """The sample converted to Parquet, with the column types pyarrow infers from the CSV
    (dates, integers, floats, booleans), gives the CSV's decisions, courses, ledger and
    attrition: only the courses' source file differs, and their line (a Parquet line is
    the 1-based row, a CSV line counts the header)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    data = tmp_path / "data"
    data.mkdir()
    for stem in ("treatments", "subjects"):
        table = pacsv.read_csv(SAMPLE / f"{stem}.csv")
        assert any(not pa.types.is_string(t) for t in table.schema.types)  # really typed
        pq.write_table(table, data / f"{stem}.parquet")
    parquet = run_cohort(data)[1]
    csv = run_cohort(SAMPLE)[1]
    assert set(parquet.courses["source_file"]) == {"treatments.parquet"}
    assert set(csv.courses["source_file"]) == {"treatments.csv"}
    # to_resolve names where a fact is: `treatments.csv line 23` is `treatments.parquet row 22`.
    where = r"treatments\.(?:csv line|parquet row) \d+"
    assert parquet.decisions["to_resolve"].str.contains("parquet row").any()
    pd.testing.assert_series_equal(
        parquet.decisions["to_resolve"].str.replace(where, "", regex=True),
        csv.decisions["to_resolve"].str.replace(where, "", regex=True),
    )
    pd.testing.assert_frame_equal(
        parquet.decisions.drop(columns="to_resolve"), csv.decisions.drop(columns="to_resolve")
    )
    assert (parquet.courses["source_line"] + 1).tolist() == csv.courses["source_line"].tolist()
    pd.testing.assert_frame_equal(
        parquet.courses.drop(columns=["source_file", "source_line"]),
        csv.courses.drop(columns=["source_file", "source_line"]),
    )
    pd.testing.assert_frame_equal(parquet.ledger, csv.ledger)
    pd.testing.assert_frame_equal(parquet.attrition, csv.attrition)


def test_a_usage_error_under_json_is_one_json_object_and_h_is_help(tmp_path):
    """Through the real entry point: a value outside an option's choices exits 2 (usage)
    with click's message on stderr and, under --json, one JSON object on stdout; -h is
    --help on every command."""
    import json
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "trdscreen", *args], capture_output=True, text=True
        )

    bad = run("screen", str(SAMPLE), "--out", str(tmp_path / "x"), "--format", "xml", "--json")
    assert bad.returncode == 2
    payload = json.loads(bad.stdout)  # exactly one object, nothing else on stdout
    assert payload["status"] == "usage" and payload["exit_code"] == 2
    assert "--format" in payload["message"] and "Error" in bad.stderr
    plain = run("screen", str(SAMPLE), "--out", str(tmp_path / "y"), "--format", "xml")
    assert plain.returncode == 2 and plain.stdout == ""
    for args in (("-h",), ("screen", "-h"), ("rules", "-h"), ("rules", "show", "-h")):
        helped = run(*args)
        assert helped.returncode == 0 and helped.stdout.startswith("Usage:"), args


def test_tables_writes_only_the_named_tables_and_verify_honours_it(tmp_path, damaged):
    """`--tables decisions,attrition` (a pipeline that needs less): those two tables,
    with the same bytes as a full run's, plus summary.txt, the manifest and the audit log;
    no report (it renders from tables not written). The manifest records the choice and
    `verify` re-runs it; commands that need a table not written say so."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert runner.invoke(app, ["screen", str(SAMPLE), "--out", str(full), "-q"]).exit_code == 0
    done = runner.invoke(
        app, ["screen", str(SAMPLE), "--out", str(part), "--tables", "attrition", "-q"]
    )
    assert done.exit_code == 0, done.output
    assert sorted(p.name for p in part.iterdir()) == [
        "attrition.csv", "audit.jsonl", "decisions.csv", "manifest.json", "summary.txt",
    ]  # fmt: skip
    for name in ("decisions.csv", "attrition.csv"):
        assert (part / name).read_bytes() == (full / name).read_bytes()
    manifest = json.loads((part / "manifest.json").read_text())
    assert manifest["options"]["tables"] == ["decisions", "attrition"]
    assert (
        "report" not in manifest
        and "tables" not in json.loads((full / "manifest.json").read_text())["options"]
    )
    verified = runner.invoke(app, ["verify", str(part), "--json"])
    assert verified.exit_code == 0, verified.output
    explained = runner.invoke(app, ["explain", str(part), "S001"])
    assert explained.exit_code == ExitCode.USAGE
    assert "--tables decisions,attrition" in explained.output
    # Names are checked before anything is read; the report needs what it renders from.
    for wrong in ("decision", "report"):
        done = runner.invoke(app, ["screen", str(SAMPLE), "--out", str(tmp_path / wrong),
                                   "--tables", wrong])  # fmt: skip
        assert done.exit_code == ExitCode.USAGE and not (tmp_path / wrong).exists()
    # An invalid input's folder holds its issues whatever --tables says.
    bad = tmp_path / "bad"
    done = runner.invoke(app, ["screen", str(damaged), "--out", str(bad), "--tables", "decisions"])
    assert done.exit_code == ExitCode.INVALID_INPUT
    assert (bad / "validation_issues.csv").exists() and not (bad / "decisions.csv").exists()
