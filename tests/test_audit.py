"""The audit record: manifest schema, hash-chained audit log, determinism, and `verify`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from conftest import SAMPLE
from test_cli import TABLES, invoke

from trdscreen.audit import EVENTS, GENESIS
from trdscreen.errors import ExitCode
from trdscreen.verify import verify_run

SCHEMA = json.loads(
    (Path(__file__).resolve().parent.parent / "trdscreen/data/manifest.schema.json").read_text()
)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory) -> Path:
    """One screening of a private copy of the sample (CSV and Parquet outputs)."""
    root = tmp_path_factory.mktemp("audit")
    shutil.copytree(SAMPLE, root / "data")
    result = invoke("screen", root / "data", "--out", root / "run", "--format", "both")
    assert result.exit_code == 0, result.output
    return root / "run"


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- run record


def test_manifest_follows_the_published_schema(sample_run, tmp_path):
    manifest = json.loads((sample_run / "manifest.json").read_text())
    jsonschema.validate(manifest, SCHEMA)
    assert manifest["user"] and manifest["host"]
    assert manifest["options"]["formats"] == ["csv", "parquet"]
    # An invalid-input run's manifest follows the same schema.
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    text = (data / "treatments.csv").read_text().replace("2023-03-28", "28/03/2023", 1)
    (data / "treatments.csv").write_text(text)
    assert invoke("screen", data, "--out", tmp_path / "bad").exit_code == ExitCode.INVALID_INPUT
    jsonschema.validate(json.loads((tmp_path / "bad" / "manifest.json").read_text()), SCHEMA)


def test_manifest_records_every_input_and_output_hash(sample_run):
    manifest = json.loads((sample_run / "manifest.json").read_text())
    for record in manifest["inputs"]:
        path = Path(record["resolved_path"])
        assert sha(path.read_bytes()) == record["sha256"]
        assert record["size"] == path.stat().st_size
    written = {o["path"] for o in manifest["outputs"]}
    assert written == {f"{t}{s}" for t in TABLES for s in (".csv", ".parquet")}
    for record in manifest["outputs"]:
        assert sha((sample_run / record["path"]).read_bytes()) == record["sha256"]


def test_content_hash_is_the_same_for_csv_and_parquet(sample_run):
    manifest = json.loads((sample_run / "manifest.json").read_text())
    by_table: dict[str, set[str]] = {}
    for record in manifest["outputs"]:
        by_table.setdefault(record["table"], set()).add(record["content_sha256"])
        if record["format"] == "csv":  # the canonical form is the CSV file itself
            assert record["content_sha256"] == record["sha256"]
    assert all(len(hashes) == 1 for hashes in by_table.values())
    assert manifest["decisions_content_sha256"] == sha((sample_run / "decisions.csv").read_bytes())


def test_parquet_outputs_read_back_as_the_csv_values_with_plain_types(sample_run):
    """Categorical columns reach the Parquet writer dictionary-encoded (trdscreen.output);
    a reader must still see plain text, and the same cells as the CSV file."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    for table in TABLES:
        parquet = pq.read_table(sample_run / f"{table}.parquet")
        assert not any(pa.types.is_dictionary(f.type) for f in parquet.schema), table
        assert parquet.schema.metadata is None  # no stored Arrow schema to override them
        csv = pacsv.read_csv(
            sample_run / f"{table}.csv",
            convert_options=pacsv.ConvertOptions(
                column_types=parquet.schema,
                strings_can_be_null=True,  # the writer leaves a null cell empty and
                quoted_strings_can_be_null=False,  # quotes every text, "" included
            ),
        )
        # The CSV escapes formula-like text; the sample's tables hold none.
        assert csv.equals(parquet), table
    decisions = pq.read_table(sample_run / "decisions.parquet")
    assert decisions.schema.field("decision").type == pa.string()


def test_audit_log_is_a_hash_chain_of_the_run_steps(sample_run):
    raw = lines(sample_run / "audit.jsonl")
    events = [json.loads(line) for line in raw]
    # Worked out from the format: each line records the SHA-256 of the line before.
    expected_prev = [GENESIS] + [sha(line) for line in raw[:-1]]
    assert [e["prev_sha256"] for e in events] == expected_prev
    assert [e["seq"] for e in events] == list(range(len(events)))
    codes = [e["event"] for e in events]
    assert codes[:3] == ["run_started", "rules_loaded", "formulary_loaded"]
    assert codes.count("input_read") == 2  # treatments and subjects
    assert codes.count("output_written") == 16  # 8 tables x 2 formats
    assert codes[-1] == "run_finished"
    assert set(codes) <= set(EVENTS)
    assert events[-1]["manifest_sha256"] == sha((sample_run / "manifest.json").read_bytes())
    assert len({e["run_id"] for e in events}) == 1
    assert events[0]["user"] and events[0]["host"]


def test_json_summary_prints_the_audit_head(tmp_path):
    result = invoke("screen", SAMPLE, "--out", tmp_path / "run", "--json")
    summary = json.loads(result.stdout)
    last = lines(tmp_path / "run" / "audit.jsonl")[-1]
    assert summary["audit_head_sha256"] == sha(last)
    assert invoke("verify", tmp_path / "run", "--head", sha(last)).exit_code == 0
    wrong = "0" * 64
    result = invoke("verify", tmp_path / "run", "--head", wrong, "--no-rerun")
    assert result.exit_code == ExitCode.NOT_VERIFIED


def test_two_runs_give_identical_output_bytes(sample_run, tmp_path):
    again = tmp_path / "again"
    data = sample_run.parent / "data"
    assert invoke("screen", data, "--out", again, "--format", "both").exit_code == 0
    for name in (f"{t}{s}" for t in TABLES for s in (".csv", ".parquet")):
        assert (again / name).read_bytes() == (sample_run / name).read_bytes(), name
    first = json.loads((sample_run / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert first["run_id"] != second["run_id"]
    assert first["outputs"] == second["outputs"]


# --------------------------------------------------------------------------- verify


def test_verify_passes_on_an_untouched_run(sample_run):
    result = invoke("verify", sample_run, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, report["problems"]
    assert report["status"] == "verified" and report["reran"]
    assert report["problems"] == []
    reran = [c for c in report["checks"] if c["subject"].startswith("re-run ")]
    assert len(reran) == 16 and all(c["ok"] for c in reran)


def test_verify_names_an_output_changed_by_one_byte(sample_run, tmp_path):
    run = copy_run(sample_run, tmp_path)
    data = bytearray((run / "decisions.parquet").read_bytes())
    data[len(data) // 2] ^= 0x01
    (run / "decisions.parquet").write_bytes(bytes(data))
    result = invoke("verify", run)
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert "FAIL decisions.parquet: differs from the SHA-256 in manifest.json" in result.stdout
    assert "NOT verified: 1 problem(s)" in result.stdout


def test_verify_names_an_edited_audit_line(sample_run, tmp_path):
    run = copy_run(sample_run, tmp_path)
    raw = lines(run / "audit.jsonl")
    raw[4] = raw[4].replace(b'"seq":4', b'"seq": 4')  # same meaning, other bytes
    (run / "audit.jsonl").write_bytes(b"\n".join(raw) + b"\n")
    report = json.loads(invoke("verify", run, "--json", "--no-rerun").stdout)
    assert report["status"] == "not_verified"
    assert any("audit.jsonl line 6: chain broken" in p for p in report["problems"])


def test_verify_notices_a_deleted_or_cut_audit_line(sample_run, tmp_path):
    run = copy_run(sample_run, tmp_path)
    raw = lines(run / "audit.jsonl")
    (run / "audit.jsonl").write_bytes(b"\n".join(raw[:3] + raw[4:]) + b"\n")
    problems = verify_run(run, rerun=False).problems
    assert any("line 4: chain broken" in p for p in problems)
    (run / "audit.jsonl").write_bytes(b"\n".join(raw[:-1]) + b"\n")
    problems = verify_run(run, rerun=False).problems
    assert any("not run_finished or run_aborted" in p for p in problems)


def test_verify_names_a_changed_manifest(sample_run, tmp_path):
    run = copy_run(sample_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["user"] = "someone-else"
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    problems = verify_run(run, rerun=False).problems
    assert problems == [
        "manifest.json: SHA-256 differs from the one recorded at the end of the audit log: "
        "the manifest was changed"
    ]


def test_verify_refuses_to_rerun_on_a_changed_input_and_names_it(sample_run, tmp_path):
    run = copy_run(sample_run, tmp_path)
    data = tmp_path / "moved"
    shutil.copytree(sample_run.parent / "data", data)
    # --inputs finds the archived copy by file name: everything still matches.
    assert invoke("verify", run, "--inputs", data).exit_code == 0
    treatments = data / "treatments.csv"
    treatments.write_bytes(
        treatments.read_bytes().replace(b"S001,sertraline,100", b"S001,sertraline,150", 1)
    )
    result = invoke("verify", run, "--inputs", data, "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert report["reran"] is False
    assert any(
        p.startswith("input treatments: ") and "refusing to re-run" in p for p in report["problems"]
    )
    assert (
        "re-run: not attempted: the recorded inputs or rules are not available"
        in report["problems"]
    )


def rechain(run: Path) -> None:
    """Forge a consistent folder after editing outputs: fix the manifest and the audit chain."""
    manifest = json.loads((run / "manifest.json").read_text())
    for record in manifest["outputs"]:
        data = (run / record["path"]).read_bytes()
        record["sha256"], record["size"] = sha(data), len(data)
    (run / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    files = {o["path"]: o for o in manifest["outputs"]}
    prev, out = GENESIS, []
    for line in lines(run / "audit.jsonl"):
        event = json.loads(line)
        event["prev_sha256"] = prev
        if event["event"] == "output_written":
            event["sha256"], event["size"] = (
                files[event["path"]]["sha256"],
                files[event["path"]]["size"],
            )
        if event["event"] == "run_finished":
            event["manifest_sha256"] = sha((run / "manifest.json").read_bytes())
        encoded = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        out.append(encoded)
        prev = sha(encoded)
    (run / "audit.jsonl").write_bytes(b"\n".join(out) + b"\n")


def test_rerun_catches_a_consistently_forged_decision(sample_run, tmp_path):
    run = copy_run(sample_run, tmp_path)
    for suffix in (".csv", ".parquet"):
        (run / f"decisions{suffix}").unlink()
    # Only the CSV table is forged (S028, who has no courses, marked eligible).
    csv = (sample_run / "decisions.csv").read_text()
    forged = csv.replace('"S028","excluded"', '"S028","eligible"', 1)
    assert forged != csv
    (run / "decisions.csv").write_text(forged)
    shutil.copy(sample_run / "decisions.parquet", run / "decisions.parquet")
    rechain(run)
    assert verify_run(run, rerun=False).ok  # the hashes alone are now consistent
    problems = verify_run(run).problems
    assert problems == [
        "re-run decisions.csv: different bytes; 1 subject(s) now get another decision: S028"
    ]


def test_rerun_of_a_csv_only_run_names_the_forged_decision(tmp_path):
    # A CSV-only run is re-run chunk by chunk (as the CLI ran it) and the re-run's
    # decisions are read back from its CSV, formula escaping undone.
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    assert invoke("screen", data, "--out", tmp_path / "run", "--chunk-rows", "5").exit_code == 0
    run = tmp_path / "run"
    csv = (run / "decisions.csv").read_text()
    forged = csv.replace('"S028","excluded"', '"S028","eligible"', 1)
    assert forged != csv
    (run / "decisions.csv").write_text(forged)
    rechain(run)
    # The forger re-hashed the decisions, but report.html still shows S028 excluded: it no
    # longer renders from the folder's tables, a second trace of the same forgery.
    assert verify_run(run).problems == [
        "report.html: differs from what the folder's tables render to",
        "re-run decisions.csv: different bytes; 1 subject(s) now get another decision: S028",
    ]


def test_verify_passes_on_an_invalid_input_run(tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    text = (data / "treatments.csv").read_text().replace("2023-03-28", "28/03/2023", 1)
    (data / "treatments.csv").write_text(text)
    assert invoke("screen", data, "--out", tmp_path / "run").exit_code == ExitCode.INVALID_INPUT
    events = [json.loads(line) for line in lines(tmp_path / "run" / "audit.jsonl")]
    assert events[-1]["event"] == "run_aborted"
    assert events[-1]["exit_code"] == ExitCode.INVALID_INPUT
    result = invoke("verify", tmp_path / "run")
    assert result.exit_code == 0, result.stdout
    result = invoke("explain", tmp_path / "run", "S001")
    assert result.exit_code == ExitCode.USAGE
    assert "has no decisions table (status 'invalid_input'" in result.stderr


def test_verify_reports_an_unexpected_file(sample_run, tmp_path):
    run = copy_run(sample_run, tmp_path)
    (run / "notes.txt").write_text("added later")
    assert verify_run(run, rerun=False).problems == [
        "notes.txt: not part of the run (not listed in manifest.json)"
    ]


def test_verify_of_a_folder_that_is_not_a_run(tmp_path):
    result = invoke("verify", tmp_path)
    assert result.exit_code == ExitCode.USAGE
    assert "not a trdscreen run folder" in result.stderr
