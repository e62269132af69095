"""The CLI as a user meets it (issue 21): every command's help ends with examples and its
exit codes, names its placeholders (FILE, DIR, PRESET), is not cut to 80 columns when
piped; -q and --json on every command that prints results; shell completion."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from tests.conftest import ROOT as ROOT_DIR
from tests.conftest import SAMPLE
from trdscreen.cli import app

ROOT = typer.main.get_command(app)


def commands() -> list[tuple[str, ...]]:
    found = []
    for name, command in ROOT.commands.items():
        sub = getattr(command, "commands", None)
        if sub:
            found += [(name, child) for child in sub]
        else:
            found.append((name,))
    return found


def command_of(path: tuple[str, ...]):
    command = ROOT
    for word in path:
        command = command.commands[word]
    return command


def help_text(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0
    return result.output


@pytest.mark.parametrize("path", commands(), ids=" ".join)
def test_help_ends_with_examples_that_work_and_the_exit_codes(path):
    text = help_text(path)
    tail = text[text.rindex("Examples:") :]
    examples = [line.strip() for line in tail.splitlines()[1:] if line.startswith("    trdscreen")]
    assert len(examples) >= 2, text
    assert text.rstrip().splitlines()[-1].strip().startswith("Exit codes: 0")
    command = command_of(path)
    known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
    for example in examples:
        assert example.startswith("trdscreen " + " ".join(path)), example
        options = re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", example.split(">")[0])
        assert set(options) <= known, (example, set(options) - known)


@pytest.mark.parametrize("path", commands(), ids=" ".join)
def test_placeholders_are_named_not_typed(path):
    text = help_text(path)
    assert not re.search(r"<(?:path|str|int|float|list)", text), text


def test_help_is_not_cut_to_80_columns_when_piped():
    done = subprocess.run(
        [sys.executable, "-m", "trdscreen", "screen", "--help"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )
    assert max(len(line) for line in done.stdout.splitlines()) > 100


def test_tables_are_not_cut_to_80_columns_when_piped(tmp_path):
    out = tmp_path / "run"
    assert CliRunner().invoke(app, ["screen", str(SAMPLE), "--out", str(out)]).exit_code == 0
    done = subprocess.run(
        [sys.executable, "-m", "trdscreen", "explain", str(out), "S018"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )
    # The full reason and fact fit on their lines: nothing cut with an ellipsis.
    assert "drug 'Setraline' unknown (closest: sertraline" in done.stdout
    assert "…" not in done.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("polish") / "run"
    assert CliRunner().invoke(app, ["screen", str(SAMPLE), "--out", str(out)]).exit_code == 0
    return out


def printing_commands(run: Path, tmp: Path) -> dict[str, list[str]]:
    return {
        "screen": ["screen", str(SAMPLE), "--out", str(tmp / "again")],
        "validate": ["validate", str(SAMPLE)],
        "verify": ["verify", str(run), "--no-rerun"],
        "explain": ["explain", str(run), "S020"],
        "diff": ["diff", str(run), str(run)],
        "summary": ["summary", str(run)],
        "formulary": ["formulary", "Zoloft"],
        "synth": ["synth", "--n-subjects", "5", "--out", str(tmp / "synth")],
        "rules list": ["rules", "list"],
        "rules show": ["rules", "show", "sforzini-2021"],
        "rules check": ["rules", "check", "sforzini-2021"],
        "map init": ["map", "init", str(SAMPLE)],
        "worklist": ["worklist", str(run), "--out", str(tmp / "review.csv"), "--force"],
        "report": ["report", str(run), "--out", str(tmp / "report.html"), "--force"],
        "build": [
            "build",
            str(ROOT_DIR / "examples" / "records"),
            "--out",
            str(tmp / "built"),
            "--force",
        ],
    }


def test_every_printing_command_takes_quiet_and_json(run, tmp_path):
    listed = printing_commands(run, tmp_path)
    assert {" ".join(p) for p in commands()} == set(listed)
    for name, args in listed.items():
        quiet = CliRunner().invoke(app, [*args, "-q"])
        assert quiet.exit_code == 0, (name, quiet.output)
        assert quiet.stdout == "", name
        if name == "synth":  # written again below
            args = [*args[:-1], str(tmp_path / "synth2")]
        if name == "screen":
            args = [*args[:-1], str(tmp_path / "again2")]
        loud = CliRunner().invoke(app, [*args, "--json"])
        assert loud.exit_code == 0, (name, loud.output)
        json.loads(loud.stdout)  # one JSON object and nothing else


def test_rules_show_json_holds_the_protocol_text_and_tags():
    shown = json.loads(CliRunner().invoke(app, ["rules", "show", "sforzini-2021", "--json"]).stdout)
    text = CliRunner().invoke(app, ["rules", "show", "sforzini-2021"]).stdout
    assert shown["protocol_text"] == text
    assert shown["rules"]["id"] == "sforzini-2021" and shown["evidence_tags"]


def test_shell_completion_completes_commands_and_options(monkeypatch):
    def complete(words: str, index: int) -> str:
        env = {**os.environ, "_TRDSCREEN_COMPLETE": "complete_bash", "COMP_WORDS": words,
               "COMP_CWORD": str(index)}  # fmt: skip
        script = Path(sys.executable).parent / "trdscreen"  # the installed command
        return subprocess.run([str(script)], env=env, capture_output=True, text=True).stdout

    assert complete("trdscreen scr", 1).split() == ["screen"]
    assert "--csv-dialect" in complete("trdscreen screen --csv", 2).split()
    # The shell named, not detected: detection finds none when no shell started pytest.
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    script = CliRunner().invoke(app, ["--show-completion", "bash"])
    assert "_trdscreen_completion" in script.output


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_a_reader_that_goes_away_does_not_change_the_exit_code(tmp_path, extra):
    """`trdscreen ... | head`: stdout's reader is gone before anything is printed (the read
    end of the pipe is closed first, so every write fails). The command still did its
    work and exits 0, without an "internal error" or a complaint at exit."""
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run(
        [sys.executable, "-m", "trdscreen", "synth", "--n-subjects", "5",
         "--out", str(tmp_path / "cohort"), *extra],
        stdout=write, stderr=subprocess.PIPE, timeout=120, check=False,
    )  # fmt: skip
    os.close(write)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    assert (tmp_path / "cohort" / "treatments.parquet").exists()
