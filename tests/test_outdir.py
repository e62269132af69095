"""The output folder never costs the user data: --force replaces only a folder trdscreen
wrote, --out may not overlap the inputs, two runs racing for one --out cannot both win,
and the drafts of killed runs are cleaned up by the next run."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SAMPLE
from typer.testing import CliRunner

from trdscreen import outdir
from trdscreen.cli import app
from trdscreen.errors import ExitCode, Interrupted, OutputExistsError

runner = CliRunner()


def invoke(*args: object, **kwargs):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def screen(out: Path, *extra: object):
    return invoke("screen", SAMPLE, "--out", out, *extra)


def test_force_refuses_a_folder_of_unrelated_files(tmp_path):
    folder = tmp_path / "thesis"
    (folder / "chapters").mkdir(parents=True)
    (folder / "chapters" / "one.tex").write_text("years of work")
    (folder / "notes.txt").write_text("more")
    before = tree(folder)
    result = screen(folder, "--force")
    assert result.exit_code == ExitCode.OUTPUT_EXISTS
    assert "not written by trdscreen" in result.stderr and "no manifest.json" in result.stderr
    assert tree(folder) == before


def test_force_refuses_a_folder_with_a_forged_or_partial_manifest(tmp_path):
    """A manifest that is not trdscreen's, or one that does not list every entry, does not
    make a folder replaceable."""
    for name, manifest in (
        ("other_tool", '{"tool": "other", "outputs": []}'),
        ("not_json", "{"),
        ("no_outputs", '{"tool": "trdscreen"}'),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text(manifest)
        (folder / "data.csv").write_text("x")
        assert screen(folder, "--force").exit_code == ExitCode.OUTPUT_EXISTS, name
        assert (folder / "data.csv").read_text() == "x"


def test_force_replaces_its_own_run_folder_but_not_after_a_file_was_added(tmp_path):
    out = tmp_path / "run"
    assert screen(out).exit_code == 0
    assert screen(out, "--force").exit_code == 0  # a trdscreen folder: replaced
    (out / "my-notes.txt").write_text("mine")
    result = screen(out, "--force")
    assert result.exit_code == ExitCode.OUTPUT_EXISTS
    assert "manifest does not list" in result.stderr
    assert (out / "my-notes.txt").read_text() == "mine"
    (out / "my-notes.txt").unlink()
    (out / "sub").mkdir()  # a folder is never part of a run folder
    assert screen(out, "--force").exit_code == ExitCode.OUTPUT_EXISTS
    assert (out / "sub").is_dir()


def test_an_empty_existing_folder_is_used_without_force(tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    assert screen(out).exit_code == 0
    assert (out / "decisions.csv").exists()


@pytest.mark.parametrize("where", ["input", "parent", "inside", "above_file"])
def test_out_may_not_overlap_an_input(tmp_path, where):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("treatments.csv", "subjects.csv"):
        (data / name).write_bytes((SAMPLE / name).read_bytes())
    before = tree(tmp_path)
    source, out = {
        "input": (data, data),
        "parent": (data, tmp_path),
        "inside": (data, data / "run"),
        "above_file": (data / "treatments.csv", data),
    }[where]
    result = invoke("screen", source, "--out", out, "--force")
    assert result.exit_code == ExitCode.OUTPUT_EXISTS, result.stderr
    assert "input" in result.stderr
    assert tree(tmp_path) == before


def test_out_beside_an_input_file_is_fine(tmp_path):
    """The input's own folder is not refused for a sibling: `screen treatments.csv --out run`."""
    for name in ("treatments.csv", "subjects.csv"):
        (tmp_path / name).write_bytes((SAMPLE / name).read_bytes())
    result = invoke(
        "screen", tmp_path / "treatments.csv", "--subjects", tmp_path / "subjects.csv",
        "--out", tmp_path / "run",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr


def test_dot_root_and_home_are_refused_before_any_work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("keep")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    for out in (".", "/", str(tmp_path / "home"), "./"):
        result = invoke("screen", SAMPLE, "--out", out, "--force")
        assert result.exit_code == ExitCode.OUTPUT_EXISTS, out
    assert (tmp_path / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "keep.txt"]


def test_a_symlinked_out_is_refused_and_its_target_kept(tmp_path):
    target = tmp_path / "real"
    assert screen(target).exit_code == 0
    link = tmp_path / "link"
    link.symlink_to(target)
    before = tree(target)
    for extra in ((), ("--force",)):
        result = screen(link, *extra)
        assert result.exit_code == ExitCode.OUTPUT_EXISTS
        assert "symbolic link" in result.stderr
    assert link.is_symlink() and tree(target) == before


def test_synth_force_replaces_only_a_synthetic_cohort(tmp_path):
    out = tmp_path / "cohort"
    assert invoke("synth", "--n-subjects", "5", "--out", out).exit_code == 0
    assert invoke("synth", "--n-subjects", "5", "--out", out, "--force").exit_code == 0
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "a.txt").write_text("a")
    result = invoke("synth", "--n-subjects", "5", "--out", foreign, "--force")
    assert result.exit_code == ExitCode.OUTPUT_EXISTS
    assert (foreign / "a.txt").read_text() == "a"


def test_the_final_rename_never_replaces_a_folder_that_appeared_meanwhile(tmp_path):
    """Two writers of one new --out: the one that finishes first keeps the folder, the other
    gets OutputExistsError and leaves no draft."""
    out = tmp_path / "run"
    with pytest.raises(OutputExistsError, match="another run wrote this folder"):
        with outdir.atomic_folder(out, force=False) as first:
            (first / "manifest.json").write_text('{"tool": "trdscreen", "outputs": []}')
            with outdir.atomic_folder(out, force=False) as second:
                (second / "manifest.json").write_text(
                    '{"tool": "trdscreen", "outputs": [], "w": 2}'
                )
    assert '"w": 2' in (out / "manifest.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_two_processes_racing_for_one_out(tmp_path):
    """Real processes: exactly one exits 0; the other exits OUTPUT_EXISTS (before or after
    its work, depending on timing); the folder is the winner's, complete."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "trdscreen", "screen", str(SAMPLE), "--out", str(out)]
    children = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    codes = sorted(child.wait(timeout=120) for child in children)
    assert codes == [0, ExitCode.OUTPUT_EXISTS]
    assert (out / "manifest.json").exists() and (out / "decisions.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _stale(parent: Path, target: str, kind: str, pid: int, start: str = "1") -> Path:
    host = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
    path = parent / f".{target}.trdscreen-{kind}-{host}-{pid}-{start}-{'a' * 12}.tmp"
    path.mkdir()
    return path


def test_drafts_of_dead_runs_are_removed_and_a_killed_swap_restored(tmp_path):
    parent = tmp_path / "outs"
    parent.mkdir()
    assert screen(parent / "old").exit_code == 0
    kept = tree(parent / "old")
    pid = _dead_pid()
    draft = _stale(parent, "run", "draft", pid)
    (draft / "courses.csv").write_text("patient tables")
    moved = _stale(parent, "old", "old", pid)
    (parent / "old").rename(moved)  # a --force swap killed between its two renames
    alive = _stale(parent, "busy", "draft", os.getpid(), outdir._process_start(os.getpid()))
    lookalike = parent / ".run.trdscreen-draft-mine"  # not a draft name: never touched
    lookalike.mkdir()
    precious = tmp_path / "precious"  # a link with a dead run's draft name: never followed
    precious.mkdir()
    (precious / "data.txt").write_text("keep")
    linked = _stale(parent, "linked", "draft", pid)
    linked.rmdir()
    linked.symlink_to(precious)
    result = screen(parent / "run")
    assert result.exit_code == 0, result.stderr
    assert f"removed {draft}" in result.stderr
    assert "restored" in result.stderr and str(parent / "old") in result.stderr
    assert tree(parent / "old") == kept
    assert alive.is_dir() and lookalike.is_dir() and not draft.exists()
    assert linked.is_symlink() and (precious / "data.txt").read_text() == "keep"


def test_kill_9_leaves_a_draft_that_the_next_run_removes(tmp_path):
    rows = (SAMPLE / "treatments.csv").read_text().splitlines()
    inputs = tmp_path / "in"
    inputs.mkdir()
    body = [line.replace("S0", f"S{n}-") for n in range(3000) for line in rows[1:]]
    (inputs / "treatments.csv").write_text("\n".join([rows[0], *body]) + "\n")
    parent = tmp_path / "outs"
    parent.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-m", "trdscreen", "screen", str(inputs), "--out", str(parent / "run")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if any(p.name.endswith(".tmp") for p in parent.iterdir()):
            child.kill()
            break
        time.sleep(0.002)
    child.wait(timeout=60)
    if child.returncode != -signal.SIGKILL:
        pytest.skip("the run finished before it could be killed")
    assert [p.name for p in parent.iterdir() if p.name.endswith(".tmp")]
    result = screen(parent / "other")
    assert result.exit_code == 0, result.stderr
    assert "its unfinished draft" in result.stderr
    assert sorted(p.name for p in parent.iterdir()) == ["other"]


def test_a_signal_during_the_swap_waits_and_then_says_the_folder_is_in_place(tmp_path, monkeypatch):
    """SIGTERM sent while the draft is being renamed into place is held until the rename is
    done; the error then says the folder is complete, which is what is on disk."""
    out = tmp_path / "run"
    assert screen(out).exit_code == 0
    real = outdir.rename_no_replace

    def rename_then_signal(source, target):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-swap
        real(source, target)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(outdir, "rename_no_replace", rename_then_signal)
    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with pytest.raises(Interrupted, match="complete and in place"):
            with outdir.atomic_folder(out, force=True) as draft:
                (draft / "manifest.json").write_text('{"tool": "trdscreen", "outputs": []}')
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]  # the new folder


def test_the_folder_of_a_failed_run_is_replaced_without_force(tmp_path):
    """A run whose input failed validation leaves a folder of issues (exit 4). Once the
    input is fixed, the next run may replace that folder without --force; a finished run's
    folder, or one trdscreen did not write, still needs --force or is refused."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    good = (data / "treatments.csv").read_text()
    lines = good.splitlines()
    fields = lines[1].split(",")
    fields[2] = "lots"  # daily_dose_mg: not a number
    (data / "treatments.csv").write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    out = tmp_path / "run"
    assert invoke("screen", data, "--out", out).exit_code == ExitCode.INVALID_INPUT
    assert outdir.failed_run(out)
    (data / "treatments.csv").write_text(good)
    assert invoke("screen", data, "--out", out).exit_code == ExitCode.OK  # no --force
    assert (out / "decisions.csv").exists() and not outdir.failed_run(out)
    # a finished run's folder is not replaced without --force
    assert invoke("screen", data, "--out", out).exit_code == ExitCode.OUTPUT_EXISTS
    # a folder of a failed run with a file added is not trdscreen's any more
    (data / "treatments.csv").write_text("\n".join([lines[0], ",".join(fields), *lines[2:]]) + "\n")
    other = tmp_path / "other"
    assert invoke("screen", data, "--out", other).exit_code == ExitCode.INVALID_INPUT
    (other / "notes.txt").write_text("mine")
    assert not outdir.failed_run(other)
    (data / "treatments.csv").write_text(good)
    assert invoke("screen", data, "--out", other).exit_code == ExitCode.OUTPUT_EXISTS
    assert (other / "notes.txt").read_text() == "mine"
