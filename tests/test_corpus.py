"""The broken-input corpus (tests/corpus/cases.yaml): every case gives its documented exit
code and message, never a traceback, and a failed run leaves no decision tables. The README's
"Bad input" table must list exactly these cases with the same exit codes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT
from typer.testing import CliRunner

from trdscreen.cli import app

CORPUS = ROOT / "tests" / "corpus"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())["cases"]
runner = CliRunner()


def screen(case: dict, out: Path):
    args = [
        "screen",
        str(CORPUS / case.get("treatments", "base/treatments.csv")),
        "--subjects",
        str(CORPUS / case.get("subjects", "base/subjects.csv")),
        "--out",
        str(out),
        *case.get("args", []),
    ]
    if "rules" in case:
        args += ["--rules", str(CORPUS / case["rules"])]
    # catch_exceptions=False: anything but a clean exit (a traceback) fails the test.
    return runner.invoke(app, args, catch_exceptions=False)


@pytest.fixture(scope="module")
def base_decisions(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("base") / "run"
    result = screen({}, out)
    assert result.exit_code == 0, result.stderr
    return (out / "decisions.csv").read_bytes()


def test_base_cohort_decisions_are_the_hand_worked_ones(base_decisions):
    """Sforzini 2021 on the base cohort (sample S001-S004, screened 2024-06-01, age 44, HAM-D 24):
    S001 two failed adequate trials (sertraline 100 mg and escitalopram 20 mg, 8 weeks each,
    8-9 % improvement) -> TRD, eligible; S002 three -> TRD, eligible; S003 remitted on its only
    course -> not resistant, excluded by TRD-MIN; S004 one failure (fluoxetine 5 %) and one
    partial response (sertraline 24 -> 16 = 33 %) -> PRD, excluded by TRD-MIN."""
    rows = [line.split(",")[:3] for line in base_decisions.decode().splitlines()[1:]]
    assert rows == [
        ['"S001"', '"eligible"', '"TRD"'],
        ['"S002"', '"eligible"', '"TRD"'],
        ['"S003"', '"excluded"', '"not_resistant"'],
        ['"S004"', '"excluded"', '"PRD"'],
    ]


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_corpus_case(case, tmp_path, base_decisions):
    out = tmp_path / "run"
    result = screen(case, out)
    assert result.exit_code == case["exit"], result.stderr
    said = result.stdout + result.stderr
    issues = out / "validation_issues.csv"
    if issues.exists():
        said += issues.read_text()
    assert case["says"] in said
    assert "Traceback" not in said
    if case["exit"] != 0:
        assert not (out / "decisions.csv").exists()  # a failed run writes no decisions
    if case.get("same_decisions_as_base"):
        assert (out / "decisions.csv").read_bytes() == base_decisions


def test_readme_table_lists_every_corpus_case():
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9_]+)` \|[^|]*\| (\d+) \|", readme, flags=re.M)
    assert rows, "README has no bad-input table"
    assert {case: int(code) for case, code in rows} == {c["id"]: c["exit"] for c in CASES}
    assert len(rows) == len(CASES)
