"""Progress (issue 21): a display on stderr when it is a terminal, nothing when piped;
`--log-format json` gives one JSON object per stage. Real processes, a real pty."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLE


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("progress") / "cohort"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "trdscreen",
            "synth",
            "--n-subjects",
            "12000",
            "--out",
            str(folder),
            "--format",
            "csv",
        ],  # fmt: skip
        check=True,
        capture_output=True,
    )
    return folder


def screen_args(cohort: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "trdscreen", "screen", str(cohort), "--out", str(out),
            "--chunk-rows", "10000", *more]  # fmt: skip


def test_progress_shows_on_a_terminal(cohort, tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        screen_args(cohort, tmp_path / "run"),
        stdout=subprocess.PIPE,
        stderr=slave,
        stdin=subprocess.DEVNULL,
    )
    os.close(slave)
    shown = b""
    while True:
        try:
            data = os.read(master, 1 << 16)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        shown += data
    proc.communicate()
    os.close(master)
    assert proc.returncode == 0
    text = shown.decode("utf-8", "replace")
    assert "screening" in text and "rows" in text  # the stage and the rows bar
    assert "/50" in text or "/5" in text  # done/total rows: the total is known


def test_nothing_on_stderr_when_piped(cohort, tmp_path):
    done = subprocess.run(screen_args(cohort, tmp_path / "run"), capture_output=True)
    assert done.returncode == 0
    assert done.stderr == b""


def test_log_format_json_gives_one_object_per_stage(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trdscreen",
            "screen",
            str(SAMPLE),
            "--out",
            str(tmp_path / "r"),
            "--log-format",
            "json",
            "--json",
        ],  # fmt: skip
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0
    events = [json.loads(line) for line in done.stderr.splitlines()]
    names = [e["event"] for e in events]
    assert names[0] == "run_started" and names[-1] == "run_finished"
    assert {"rules_loaded", "input_read", "inputs_validated", "decisions_computed"} <= set(names)
    stages = [e for e in events if e["event"] != "rows_screened"]
    assert all(e["duration_s"] >= 0 and e["elapsed_s"] >= 0 for e in stages)
    assert [e["elapsed_s"] for e in stages] == sorted(e["elapsed_s"] for e in stages)
    read = [e for e in events if e["event"] == "input_read"]
    assert {e["role"]: e["rows"] for e in read} == {"treatments": 136, "subjects": 66}
    # stdout still holds the one JSON summary and nothing else
    assert json.loads(done.stdout)["status"] == "ok"
    # no patient value reaches the log: no subject key, no drug name
    assert "S001" not in done.stderr and "sertraline" not in done.stderr
