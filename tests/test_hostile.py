"""Hostile input and hostile conditions: quarantine, formula escaping, privacy of messages,
byte mutations, and runs that cannot finish (full disk, unwritable folder, Ctrl-C)."""

from __future__ import annotations

import csv
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SAMPLE, write_cohort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from trdscreen.cli import app
from trdscreen.errors import ExitCode
from trdscreen.printable import FORMULA_TRIGGERS
from trdscreen.synth import synthesize, write_synthetic

CORPUS = ROOT / "tests" / "corpus"
BASE = CORPUS / "base"
FILES = CORPUS / "files"
SENTINEL = "ZZSENTINEL4711"
runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_process(*args: object, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """The real executable in a child process: what a pipeline sees, tracebacks included."""
    return subprocess.run(
        [sys.executable, "-m", "trdscreen", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def read_csv_cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


# --------------------------------------------------------------------------- quarantine


def test_quarantine_holds_the_subject_with_a_rejected_row(tmp_path):
    """hamd_above_52.csv: line 6 (S002's venlafaxine course) has hamd_end 99 > 52. Under
    quarantine S002 is held: decision needs_review, classification undetermined, no counts,
    its three courses (lines 4-6) and its subject row in the quarantine tables. The other
    subjects keep the base decisions worked out in test_corpus (S001 eligible TRD, S003
    excluded not_resistant, S004 excluded PRD). Every input course is in exactly one of
    courses / quarantine_treatments."""
    out = tmp_path / "run"
    result = invoke(
        "screen", FILES / "hamd_above_52.csv", "--subjects", BASE / "subjects.csv",
        "--out", out, "--on-invalid", "quarantine", "--format", "both",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    decisions = pd.read_parquet(out / "decisions.parquet")
    assert decisions[["subject_id", "decision", "classification"]].values.tolist() == [
        ["S001", "eligible", "TRD"],
        ["S002", "needs_review", "undetermined"],
        ["S003", "excluded", "not_resistant"],
        ["S004", "excluded", "PRD"],
    ]
    s002 = decisions.set_index("subject_id").loc["S002"]
    assert (
        s002["reason"] == "quarantined: 1 rejected row(s): hamd_above_52.csv line 6 (out_of_range)"
    )
    assert pd.isna(s002["n_failed_trials"]) and s002["n_courses"] == 3

    held = pd.read_parquet(out / "quarantine_treatments.parquet")
    assert held[["source_line", "status", "checks"]].values.tolist() == [
        [4, "held", ""],
        [5, "held", ""],
        [6, "rejected", "out_of_range"],
    ]
    assert held["hamd_end"].tolist() == ["22", "20", "60"]  # the values as read
    assert pd.read_parquet(out / "quarantine_subjects.parquet")["source_line"].tolist() == [3]

    courses = pd.read_parquet(out / "courses.parquet")
    assert sorted(courses["source_line"].tolist() + held["source_line"].tolist()) == list(
        range(2, 10)
    )
    assert "S002" not in set(pd.read_parquet(out / "criteria_ledger.parquet")["subject_id"])
    attrition = pd.read_parquet(out / "attrition.parquet")
    assert attrition[["step", "title", "excluded_at_step", "remaining"]].values.tolist()[:2] == [
        [0, "screened", 0, 4],
        [1, "quarantined: rows rejected by validation (decision needs_review)", 1, 3],
    ]
    assert invoke("verify", out).exit_code == 0
    explained = invoke("explain", out, "S002")
    assert "hamd_above_52.csv line 6: rejected: hamd_end out_of_range" in explained.stdout


def test_quarantine_of_a_subjects_table_row(tmp_path):
    """duplicate_subject.csv repeats S002's subject row (lines 3 and 6): both are rejected, so
    S002 is held and its courses are set aside; the others are screened as usual."""
    out = tmp_path / "run"
    result = invoke(
        "screen", BASE / "treatments.csv", "--subjects", FILES / "duplicate_subject.csv",
        "--out", out, "--on-invalid", "quarantine",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    subjects = pd.read_csv(out / "quarantine_subjects.csv", dtype=str)
    assert subjects[["source_line", "status"]].values.tolist() == [
        ["3", "rejected"],
        ["6", "rejected"],
    ]
    decisions = pd.read_csv(out / "decisions.csv", dtype=str)
    assert decisions.set_index("subject_id")["decision"].to_dict() == {
        "S001": "eligible",
        "S002": "needs_review",
        "S003": "excluded",
        "S004": "excluded",
    }


def test_fail_is_the_default_and_writes_only_the_issues(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "screen", FILES / "hamd_above_52.csv", "--subjects", BASE / "subjects.csv", "--out", out
    )
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert sorted(p.name for p in out.iterdir()) == [
        "audit.jsonl",
        "manifest.json",
        "report.html",
        "summary.txt",
        "validation_issues.csv",
    ]


# --------------------------------------------------------------------------- formula escaping

_text = st.text(
    alphabet=st.sampled_from(list("=+-@\t'abcXYZ019 ,\"|!")), min_size=1, max_size=12
).filter(lambda s: s.strip() != "")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=st.lists(_text, min_size=1, max_size=4, unique_by=lambda s: s.strip()), drug=_text)
def test_no_csv_text_cell_starts_with_a_formula_trigger(ids, drug):
    """Subject ids and drug names that start with = + - @ tab or CR (or ') are written to CSV
    with a leading ', never as a live formula, and the escaping is exactly undone by reading
    back: every CSV text cell equals the Parquet value with the mark added where needed."""
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rows = [
            {"subject_id": sid, "drug": drug, "daily_dose_mg": 100, "start_date": "2023-02-01"}
            for sid in ids
        ]
        write_cohort(folder / "in", rows, [{"subject_id": sid} for sid in ids])
        out = folder / "run"
        result = invoke("screen", folder / "in", "--out", out, "--format", "both")
        assert result.exit_code == 0, result.stderr
        for parquet in out.glob("*.parquet"):
            table = pq.read_table(parquet)
            cells = read_csv_cells(parquet.with_suffix(".csv"))
            header, body = cells[0], cells[1:]
            for column in table.column_names:
                if not str(table.schema.field(column).type) == "string":
                    continue
                index = header.index(column)
                for raw, written in zip(table.column(column).to_pylist(), body, strict=True):
                    cell = written[index]
                    assert not cell.startswith(FORMULA_TRIGGERS)
                    if raw is not None and raw.startswith((*FORMULA_TRIGGERS, "'")):
                        assert cell == "'" + raw
                    elif raw is not None:
                        assert cell == raw


def test_no_escape_formulas_writes_raw_csv(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "screen", FILES / "formula_cells.csv", "--subjects", BASE / "subjects.csv",
        "--out", out, "--no-escape-formulas",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    cells = read_csv_cells(out / "courses.csv")
    drug = cells[0].index("drug")
    drugs = {row[drug] for row in cells[1:]}
    assert '=HYPERLINK("http://x","y")' in drugs and "+sertraline" in drugs
    escaped = tmp_path / "escaped"
    invoke("screen", FILES / "formula_cells.csv", "--subjects", BASE / "subjects.csv",
           "--out", escaped)  # fmt: skip
    drugs = {row[drug] for row in read_csv_cells(escaped / "courses.csv")[1:]}
    assert '\'=HYPERLINK("http://x","y")' in drugs and "'+sertraline" in drugs
    # explain reads the escaped CSV back to the raw values
    assert "@S005" in invoke("explain", escaped, "@S005").stdout


# --------------------------------------------------------------------------- privacy


def _sentinel_inputs(folder: Path) -> dict[str, Path]:
    """Files that carry the sentinel in the row that is wrong, one per failure class."""
    folder.mkdir()
    base = (BASE / "treatments.csv").read_text().splitlines(keepends=True)
    files = {
        "bad_cells": FILES / "sentinel_everywhere.csv",
        "ragged": folder / "ragged.csv",
        "quote": folder / "quote.csv",
        "encoding": folder / "encoding.csv",
        "long": folder / "long.csv",
    }
    files["ragged"].write_text("".join(base[:3]) + base[3].rstrip() + f",{SENTINEL}\n")
    files["quote"].write_text("".join(base[:3]) + f'S002,"{SENTINEL},100\n' + "".join(base[4:]))
    files["encoding"].write_bytes(
        "".join(base[:3]).encode() + f"S002,{SENTINEL}\xe9,100".encode("latin-1") + b"\n"
    )
    files["long"].write_text(
        "".join(base[:3]) + base[3].replace("sertraline", SENTINEL * 200) + "".join(base[4:])
    )
    return files


def test_sentinel_never_reaches_stdout_stderr_or_logs(tmp_path, monkeypatch):
    """The sentinel sits in the bad cell or row of each failure class; it must appear nowhere
    the tool prints or logs: plain, --json or quarantine mode, validate, with TRDSCREEN_DEBUG
    on (tracebacks), in process and in a real child process."""
    monkeypatch.setenv("TRDSCREEN_DEBUG", "1")
    files = _sentinel_inputs(tmp_path / "in")
    subjects = BASE / "subjects.csv"
    for name, path in files.items():
        for extra in ([], ["--json"], ["--on-invalid", "quarantine"]):
            out = tmp_path / f"out-{name}-{len(extra)}"
            result = invoke("screen", path, "--subjects", subjects, "--out", out, *extra)
            assert result.exit_code in (0, ExitCode.INVALID_INPUT), (name, result.stderr)
            assert SENTINEL not in result.stdout + result.stderr, (name, extra)
            for log in ("validation_issues.csv", "manifest.json", "audit.jsonl"):
                if (out / log).exists():
                    assert SENTINEL not in (out / log).read_text(), (name, log)
        result = invoke("validate", path, "--subjects", subjects, "--json")
        assert SENTINEL not in result.stdout + result.stderr, name
        done = run_process("screen", path, "--subjects", subjects, "--out", tmp_path / name)
        assert done.returncode == ExitCode.INVALID_INPUT, (name, done.stderr)
        assert SENTINEL not in done.stdout + done.stderr, name


# --------------------------------------------------------------------------- byte mutations

_SAMPLE_FILES = {
    "treatments": (SAMPLE / "treatments.csv").read_bytes(),
    "subjects": (SAMPLE / "subjects.csv").read_bytes(),
}
_BYTES = st.sampled_from(
    [b",", b'"', b"\n", b"\r", b"\xff", b"\xe9", b"\x00", b"-", b"=", b"9", b"a", b" ", b";"]
)


@pytest.mark.slow("60 hypothesis examples x 2 policies, each a real CLI run of the sample")
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(["treatments", "subjects"]),
    edits=st.lists(st.tuples(st.floats(0, 1), _BYTES, st.booleans()), min_size=1, max_size=6),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_byte_mutations_give_a_clean_error_or_a_valid_run(which, edits, cut):
    """Random byte replacements, insertions and truncations of the sample CSVs: the run either
    succeeds or fails with the input-error code and a message; never a traceback (the runner
    re-raises any exception) and never the internal-error code."""
    data = bytearray(_SAMPLE_FILES[which])
    for where, byte, insert in edits:
        at = int(where * (len(data) - 1))
        if insert:
            data[at:at] = byte
        else:
            data[at : at + 1] = byte
    if cut is not None:
        data = data[: int(cut * len(data))]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        inputs = folder / "in"  # an --out inside the input folder is refused
        inputs.mkdir()
        for name, content in _SAMPLE_FILES.items():
            (inputs / f"{name}.csv").write_bytes(bytes(data) if name == which else content)
        for policy in ("fail", "quarantine"):
            result = invoke("screen", inputs, "--out", folder / policy, "--on-invalid", policy)
            assert result.exit_code in (ExitCode.OK, ExitCode.INVALID_INPUT), result.stderr
            if result.exit_code:
                assert result.stderr.startswith("error:")
                assert not (folder / policy / "decisions.csv").exists()


# --------------------------------------------------------------------------- runs that cannot finish


def test_output_under_a_file_is_an_output_failure(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = invoke("screen", SAMPLE, "--out", blocker / "run")
    assert result.exit_code == ExitCode.OUTPUT_FAILED
    assert "is a file, not a folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _limit_file_size() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


def test_a_write_failure_leaves_no_run_folder(tmp_path):
    """The kernel refuses writes past 4 KiB (RLIMIT_FSIZE): the same OSError path as a full
    disk. The run exits OUTPUT_FAILED and leaves neither the folder nor its hidden draft."""
    out = tmp_path / "run"
    done = run_process("screen", SAMPLE, "--out", out, preexec_fn=_limit_file_size)
    assert done.returncode == ExitCode.OUTPUT_FAILED, done.stderr
    assert "writing the run folder failed" in done.stderr and "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_write_failure_while_an_unsorted_file_is_cut_is_an_output_failure(tmp_path):
    """An unsorted file's rows are written to the run's draft before any table: a write
    refused there is the run folder's failure (OUTPUT_FAILED), not an unreadable input."""
    cohort = tmp_path / "cohort"
    write_synthetic(synthesize(300, seed=2), cohort, "parquet")
    table = pq.read_table(cohort / "treatments.parquet")
    order = np.random.default_rng(1).permutation(table.num_rows)
    pq.write_table(table.take(pa.array(order)), cohort / "treatments.parquet")
    out = tmp_path / "run"
    done = run_process("screen", cohort, "--out", out, "--chunk-rows", "200",
                       preexec_fn=_limit_file_size)  # fmt: skip
    assert done.returncode == ExitCode.OUTPUT_FAILED, done.stderr
    assert "writing the run folder failed" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def _big_cohort(folder: Path, copies: int) -> Path:
    """The sample cohort repeated under new subject ids (for a run that takes a while)."""
    folder.mkdir()
    treatments = pd.read_csv(SAMPLE / "treatments.csv", dtype=str)
    subjects = pd.read_csv(SAMPLE / "subjects.csv", dtype=str)
    for frame, name in ((treatments, "treatments"), (subjects, "subjects")):
        many = pd.concat([frame] * copies, ignore_index=True)
        block = len(frame)
        many["subject_id"] = many["subject_id"] + "-" + (many.index // block).astype(str)
        many.to_csv(folder / f"{name}.csv", index=False)
    return folder


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_writing_leaves_no_run_folder(tmp_path, sig):
    """A signal that arrives while the run folder is being written (its hidden draft exists)
    stops the run with INTERRUPTED, and neither the folder nor the draft is left."""
    cohort = _big_cohort(tmp_path / "in", 4000)  # ~300k courses
    parent = tmp_path / "outs"
    parent.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-m", "trdscreen", "screen", str(cohort), "--out",
         str(parent / "run"), "--format", "both"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if any(p.name.endswith(".tmp") for p in parent.iterdir()):
            child.send_signal(sig)
            break
        time.sleep(0.002)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == ExitCode.INTERRUPTED, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    assert list(parent.iterdir()) == []


def test_exit_codes_are_stable():
    """Pipelines branch on these numbers; the README documents each."""
    assert {c.name: int(c) for c in ExitCode} == {
        "OK": 0,
        "INTERNAL_ERROR": 1,
        "USAGE": 2,
        "INVALID_RULES": 3,
        "INVALID_INPUT": 4,
        "OUTPUT_EXISTS": 5,
        "NOT_VERIFIED": 6,
        "OUTPUT_FAILED": 7,
        "INTERRUPTED": 130,
    }
    readme = (ROOT / "README.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} |" in readme, code


def test_one_exit_code_per_failure_class(tmp_path):
    """Each class through the CLI: usage, rules, input, output exists, output failed
    (NOT_VERIFIED is exercised in test_audit, INTERRUPTED above)."""
    assert invoke("screen", SAMPLE, "--out", tmp_path / "a", "--as-of", "June").exit_code == 2
    assert invoke("screen", SAMPLE, "--out", tmp_path / "b", "--rules", "nope").exit_code == 3
    assert invoke("screen", FILES / "empty.csv", "--out", tmp_path / "c").exit_code == 4
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_text("")
    assert invoke("screen", SAMPLE, "--out", tmp_path / "d").exit_code == 5
    (tmp_path / "e").write_text("")
    assert invoke("screen", SAMPLE, "--out", tmp_path / "e" / "run").exit_code == 7
    assert invoke("screen", SAMPLE, "--out", tmp_path / "ok").exit_code == 0


def test_stderr_reader_going_away_keeps_the_exit_code(tmp_path):
    """`trdscreen screen ... 2>&1 | head -1`: the closed pipe must not turn an input error into
    an internal error."""
    child = subprocess.Popen(
        [sys.executable, "-m", "trdscreen", "screen", str(FILES / "mixed_date_formats.csv"),
         "--subjects", str(BASE / "subjects.csv"), "--out", str(tmp_path / "run")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    child.stderr.readline()
    child.stderr.close()
    assert child.wait(timeout=60) == ExitCode.INVALID_INPUT


def test_corpus_files_are_what_the_generator_makes(tmp_path):
    """The committed corpus is reproducible from make_corpus.py (nobody hand-edited a case)."""
    subprocess.run([sys.executable, str(CORPUS / "make_corpus.py"), str(tmp_path)], check=True)
    made = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    committed = {
        p.relative_to(CORPUS) for folder in (FILES, BASE) for p in folder.rglob("*") if p.is_file()
    }
    assert made == committed
    for name in made:
        assert (tmp_path / name).read_bytes() == (CORPUS / name).read_bytes(), name


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_unwritable_output_folder_is_an_output_failure(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = invoke("screen", SAMPLE, "--out", locked / "run")
    finally:
        locked.chmod(0o700)
    assert result.exit_code == ExitCode.OUTPUT_FAILED
    assert "is not writable" in result.stderr
    assert list(locked.iterdir()) == []


def test_csv_reading_options_are_recorded_and_verified(tmp_path):
    """A run read with --encoding and --delimiter re-runs with the same options under verify."""
    out = tmp_path / "run"
    result = invoke(
        "screen", FILES / "semicolon.csv", "--subjects", FILES / "semicolon_subjects.csv",
        "--delimiter", ";", "--out", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    options = json.loads((out / "manifest.json").read_text())["options"]
    assert (options["delimiter"], options["encoding"], options["on_invalid"]) == (
        ";",
        "utf-8",
        "fail",
    )
    assert invoke("verify", out).exit_code == 0


def test_json_summary_counts_the_quarantine(tmp_path):
    result = invoke(
        "screen", FILES / "hamd_above_52.csv", "--subjects", BASE / "subjects.csv",
        "--out", tmp_path / "run", "--on-invalid", "quarantine", "--json",
    )  # fmt: skip
    summary = json.loads(result.stdout)
    assert summary["counts"]["quarantine"] == {
        "subjects_held": 1,
        "treatment_rows_rejected": 1,
        "treatment_rows_held": 2,
        "subject_rows_rejected": 0,
        "subject_rows_held": 1,
    }


def test_version_2_runs_are_still_explained(tmp_path):
    """A run folder written before manifest version 3 (no CSV options, no escaping) is read
    as unescaped CSV: explain gives the same trace as for the version 3 run."""
    out = tmp_path / "run"
    assert invoke("screen", SAMPLE, "--out", out, "--no-escape-formulas").exit_code == 0
    now = invoke("explain", out, "S020", "--json").stdout
    path = out / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["manifest_schema_version"] = 2
    for key in ("encoding", "delimiter", "on_invalid", "escape_formulas"):
        del manifest["options"][key]
    path.write_text(json.dumps(manifest))
    assert invoke("explain", out, "S020", "--json").stdout == now


@pytest.mark.parametrize(
    ("limit", "code"),
    [("1", 4), ("2", 0), ("2%", 4), ("3%", 0), ("0", 4)],
)
def test_max_quarantine_stops_a_run_that_would_hold_too_many(tmp_path, limit, code):
    # Two subjects (S001, S002) get an unreadable dose: the quarantine holds 2 of the
    # sample's 67 subjects, 2.99 %. A limit of 1 subject, 2 % or 0 is exceeded (exit 4,
    # the folder of an invalid input); 2 subjects or 3 % is not (exit 0).
    data = tmp_path / "data"
    data.mkdir()
    lines = (SAMPLE / "treatments.csv").read_text().splitlines()
    lines[1] = lines[1].replace("S001,sertraline,100,", "S001,sertraline,lots,")
    lines[3] = lines[3].replace("S002,sertraline,100,", "S002,sertraline,many,")
    (data / "treatments.csv").write_text("\n".join(lines) + "\n")
    (data / "subjects.csv").write_bytes((SAMPLE / "subjects.csv").read_bytes())
    out = tmp_path / "run"
    result = invoke(
        "screen", data, "--out", out, "--on-invalid", "quarantine", "--max-quarantine", limit
    )
    assert result.exit_code == code, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["max_quarantine"] == limit
    if code:
        assert manifest["status"] == "invalid_input"
        assert "2 of 67 subject(s) (3.0%)" in result.output
        assert not (out / "decisions.csv").exists()
    else:
        assert manifest["counts"]["quarantine"]["subjects_held"] == 2


@pytest.mark.parametrize("limit", ["abc", "-1", "101%", "1.5"])
def test_a_malformed_max_quarantine_is_a_usage_error(tmp_path, limit):
    result = invoke(
        "screen", SAMPLE, "--out", tmp_path / "r", "--on-invalid", "quarantine",
        "--max-quarantine", limit,
    )  # fmt: skip
    assert result.exit_code == 2 and "--max-quarantine" in result.output
