"""The project's own rules: layering, docs that cannot drift, CI running the README's test command."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from trdscreen.cli import app

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "trdscreen"


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module.split(".")[0] if node.level == 0 else node.module)
            if node.module.startswith("trdscreen"):
                names.add(node.module)
    return names


def test_layering():
    for path in PACKAGE.glob("*.py"):
        found = imports_of(path)
        if not path.name.startswith("cli") and path.name != "__main__.py":  # the entry points
            assert "typer" not in found, f"{path.name} imports typer"
            assert not any(n.startswith("trdscreen.cli") for n in found), f"{path.name}: the CLI"
        if path.name not in ("render.py", "render_progress.py"):  # rich: the terminal faces
            assert "rich" not in found, f"{path.name} imports rich"


LAYERS = (
    ("foundation", "__init__ errors printable progress coded tristate keys reasons tuning audit ages asof "
     "vocabulary columns "
     "diagnoses history sniff segments"),
    ("read", "csvfile sources criterion sitemap buildrules buildcodes io issues ruleset rulefile "
     "drugnames formulary drugs doses evidence"),
    ("validate", "conventions adjudication schemas convert subjectcolumns validate quarantine records omop"),
    ("assess", "episode outcome trials checks roles courses subjects staging buildcourses "
     "buildratings buildtables buildprocedures buildepisodes build buildgiven"),
    ("decide", "criteria toresolve pipeline merge protocol resolve tables"),
    ("write", "output outdir runs explain reportdata report partition stream engine manifest "
     "summarytext "
     "api buildrun buildtrace"),
    ("read back", "rundiff verify buildverify"),
    ("faces", "render render_progress synthrecords synth mapinit cliapp cli_audit cli_rules cli_build cli __main__"),
)  # fmt: skip
"""The package's layers, lowest first: a module imports only from its own layer or below."""


def package_imports(path: Path) -> set[str]:
    """The trdscreen modules a file imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trdscreen"):
            if "." in node.module:
                found.add(node.module.split(".")[1])
            else:  # from trdscreen import __version__ / a module
                found |= {a.name if (PACKAGE / f"{a.name}.py").exists() else "__init__"
                          for a in node.names}  # fmt: skip
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("trdscreen.")}
    return found


def test_imports_go_down_the_layers_without_loops():
    layer = {name: i for i, (_, names) in enumerate(LAYERS) for name in names.split()}
    modules = {path.stem: package_imports(path) for path in PACKAGE.glob("*.py")}
    unplaced = sorted(set(modules) - set(layer))
    assert not unplaced, f"place each module in a layer of LAYERS: {unplaced}"
    upward = [
        f"{name} ({LAYERS[layer[name]][0]}) imports {dep} ({LAYERS[layer[dep]][0]})"
        for name, deps in modules.items()
        for dep in deps
        if layer[dep] > layer[name]
    ]
    assert not upward, upward
    # No loop, within a layer either: a depth-first walk never meets a module on its path.
    state: dict[str, str] = {}

    def walk(name: str, path: tuple[str, ...]) -> None:
        state[name] = "open"
        for dep in sorted(modules[name] - {name}):
            assert state.get(dep) != "open", f"import loop: {' -> '.join((*path, dep))}"
            if dep not in state:
                walk(dep, (*path, dep))
        state[name] = "done"

    for name in sorted(modules):
        if name not in state:
            walk(name, (name,))


def readme() -> str:
    return (ROOT / "README.md").read_text()


def test_every_command_has_help_and_is_in_the_readme():
    group = get_command(app)
    for name, command in group.commands.items():
        assert command.help, f"command {name} has no help"
        assert f"trdscreen {name}" in readme(), f"command {name} is not in the README"


def first_commands() -> list[str]:
    lines = readme().splitlines()
    start = lines.index("```sh")
    end = lines.index("```", start + 1)
    return [line for line in lines[start + 1 : end] if line.strip()]


def test_readme_opens_with_two_commands_and_ci_runs_the_second():
    commands = first_commands()
    assert len(commands) == 2
    assert "trdscreen screen sample_data" in commands[0]
    assert "pytest" in commands[1]
    assert commands[1] in (ROOT / ".ci" / "run").read_text()


def test_readme_lists_every_reason_code():
    from trdscreen.courses import REASONS

    text = readme()
    missing = [code for code in REASONS if f"`{code}`" not in text]
    assert not missing


def test_the_cli_tuning_gives_arrow_jemalloc_where_the_build_has_it():
    import pyarrow as pa

    from trdscreen.tuning import tune_for_large_tables

    before = pa.default_memory_pool()
    try:
        tune_for_large_tables()
        try:
            pa.jemalloc_memory_pool()
        except NotImplementedError:  # this build has no jemalloc: the default is kept
            assert pa.default_memory_pool().backend_name == before.backend_name
        else:
            assert pa.default_memory_pool().backend_name == "jemalloc"
    finally:
        pa.set_memory_pool(before)


RELEASE_CHECK = """
import sys
import numpy as np
from trdscreen import tuning

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 >> 20

if sys.argv[1] == "tuned":
    tuning.tune_for_large_tables()
blocks = [np.ones(1 << 20) for _ in range(100)]  # 100 blocks of 8 MiB: the heap, once tuned
del blocks
held = rss()
tuning.release_freed()
print(held, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_a_tuned_process_gives_freed_memory_back_and_an_untuned_one_is_left_alone():
    # Tuned, freed blocks stay in the heap (800 MiB here) until release_freed; a
    # library caller's untuned process is not touched (glibc gave its blocks back anyway).
    def run(mode: str) -> tuple[int, int]:
        done = subprocess.run(
            [sys.executable, "-c", RELEASE_CHECK, mode], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        held, after = map(int, done.stdout.split())
        return held, after

    held, after = run("tuned")
    assert held > 700 and after < held - 600, (held, after)
    held, after = run("untuned")
    assert held < 200 and after <= held + 5, (held, after)


def test_the_package_type_checks():
    """mypy, as configured in pyproject.toml ([tool.mypy]), finds nothing in trdscreen/:
    a wrong argument type is caught before it is run. About 15 s from a cold cache."""
    from mypy import api as mypy_api

    config = str(ROOT / "pyproject.toml")
    stdout, stderr, status = mypy_api.run([str(PACKAGE), "--config-file", config])
    assert status == 0, stdout + stderr


def test_the_readme_prints_the_table_catalogue():
    """The README's column and reason-code reference is the catalogue, printed."""
    from trdscreen.tables import markdown

    text = readme()
    begin, end = "<!-- tables:begin -->\n", "<!-- tables:end -->"
    shown = text[text.index(begin) + len(begin) : text.index(end)]
    assert shown == markdown(), "regenerate it: python -c 'from trdscreen.tables import markdown'"


def test_every_written_table_has_the_catalogued_columns(tmp_path):
    """Each table a run writes has exactly the catalogue's columns, in order (decisions and
    its splits: then the staging model's columns)."""
    import pandas as pd

    from trdscreen.ruleset import STAGING_COLUMNS
    from trdscreen.tables import SPLITS, TABLES

    out = tmp_path / "run"
    for preset in ("sforzini-2021", "maudsley-2009"):
        result = CliRunner().invoke(
            app, ["screen", str(ROOT / "sample_data"), "--rules", preset, "--out", str(out),
                  "--force", "--format", "parquet"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        staging = list(STAGING_COLUMNS["maudsley"]) if preset == "maudsley-2009" else []
        for name, table in TABLES.items():
            columns = list(pd.read_parquet(out / f"{name}.parquet").columns)
            extra = staging if name == "decisions" else []
            assert columns == [*table.columns, *extra], name
        for name in SPLITS:
            columns = list(pd.read_parquet(out / f"{name}.parquet").columns)
            assert columns == [*TABLES["decisions"].columns, *staging], name


def _documented_invocations() -> list[tuple[str, str]]:
    """(file, command line) of every `trdscreen ...` line in a code block of the README
    and docs/, continuation lines joined."""
    found = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        inside, pending = False, ""
        for line in path.read_text().splitlines():
            if line.strip().startswith("```"):
                inside, pending = not inside, ""
                continue
            if not inside:
                continue
            pending += " " + line.strip().rstrip("\\")
            if line.rstrip().endswith("\\"):
                continue
            text, pending = pending.strip(), ""
            match = re.search(r"(?:^|[\s/])trdscreen ([a-z].*)", text.split("#")[0])
            if match:
                found.append((path.name, match.group(1)))
    return found


def test_every_documented_option_exists():
    """Docs cannot drift from the CLI: each `trdscreen COMMAND --option` in a README or
    docs/ code block names an option that command has."""
    import typer.main

    from trdscreen.cli import app

    root = typer.main.get_command(app)
    invocations = _documented_invocations()
    assert len(invocations) > 15
    wrong = []
    for file, line in invocations:
        words = line.split()
        command = root  # typer's own click: groups are told by their `commands`
        while words and words[0] in getattr(command, "commands", {}):
            command = command.commands[words.pop(0)]
        known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
        wrong += [
            f"{file}: `{line}`: {option}"
            for option in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", " ".join(words))
            if option.split("=")[0] not in known and option not in ("-", "--help", "-h")
        ]
    assert not wrong, wrong
