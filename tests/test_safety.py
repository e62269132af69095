"""Safety beyond the corpus: control characters never reach a terminal, a lost header never
leaks a patient row, time-zoned Parquet dates keep their calendar day, config files that
are devices or FIFOs are refused, issues are capped with their counts kept, rule files
cannot make `rules check` quadratic, and `verify` names forged or changed records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import ROOT, SAMPLE
from typer.testing import CliRunner

from trdscreen import evidence
from trdscreen.cli import app
from trdscreen.errors import ExitCode
from trdscreen.issues import ISSUE_CAP
from trdscreen.printable import printable, printable_lines
from trdscreen.stream import LEDGER_ROWS_PER_PART, ledger_bounded

BASE = ROOT / "tests" / "corpus" / "base"
runner = CliRunner()
HOSTILE = "S\x1b[2J\x1b]0;pwned\x07\u202eevil\nFAKE\x9b31m"
"""A subject id with a screen-clearing CSI, an OSC title change, a bidi override, a line
break (a forged log line) and a C1 CSI."""


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def assert_printable(text: str) -> None:
    for line in text.split("\n"):
        assert line.isprintable(), repr(line)


def test_printable_escapes_every_control_visibly():
    assert printable("a\x1bb") == "a\\x1bb"
    assert printable("x\u202ey") == "x\\u202ey"
    assert printable("one\ntwo") == "one\\ntwo"
    assert printable("caf\u00e9 \u6771\u4eac") == "caf\u00e9 \u6771\u4eac"  # text stays text
    assert printable_lines("a\x9b\nb") == "a\\x9b\nb"
    assert printable(HOSTILE).isprintable()


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory):
    """The base cohort with S001 renamed to HOSTILE and a drug name with an escape."""
    folder = tmp_path_factory.mktemp("hostile")
    inputs = folder / "in"
    inputs.mkdir()
    treatments = pd.read_csv(BASE / "treatments.csv", dtype=str, keep_default_na=False)
    subjects = pd.read_csv(BASE / "subjects.csv", dtype=str, keep_default_na=False)
    for frame in (treatments, subjects):
        frame.loc[frame["subject_id"] == "S001", "subject_id"] = HOSTILE
    treatments.loc[0, "drug"] = "sertra\x1b[31mline"
    treatments.to_csv(inputs / "treatments.csv", index=False)
    subjects.to_csv(inputs / "subjects.csv", index=False)
    out = folder / "run"
    result = invoke("screen", inputs, "--out", out)
    assert result.exit_code == 0, result.stderr
    return inputs, out


def test_explain_diff_validate_verify_print_no_control_characters(hostile_run):
    inputs, out = hostile_run
    explained = invoke("explain", out, HOSTILE)
    assert explained.exit_code == 0, explained.stderr
    assert "\\x1b[2J" in explained.stdout and "\\u202e" in explained.stdout
    outputs = [explained.stdout, explained.stderr]
    diffed = invoke("diff", out, out)
    outputs += [diffed.stdout, diffed.stderr]
    validated = invoke("validate", inputs)
    outputs += [validated.stdout, validated.stderr]
    verified = invoke("verify", out, "--no-rerun")
    outputs += [verified.stdout, verified.stderr]
    missing = invoke("explain", out, HOSTILE + "x")  # an error message quoting the key
    outputs += [missing.stdout, missing.stderr]
    for text in outputs:
        assert_printable(text)
    assert not any(line.startswith("FAKE") for line in explained.stdout.splitlines())


def test_tables_keep_the_true_values(hostile_run):
    _, out = hostile_run
    decisions = pd.read_csv(out / "decisions.csv", dtype=str, keep_default_na=False)
    assert HOSTILE in set(decisions["subject_id"])


def test_headers_and_rule_titles_are_escaped(tmp_path):
    """A header with an escape sequence (missing-column message) and a rule title with one
    (`rules show`, `rules check`, screen summary errors) print escaped."""
    frame = pd.read_csv(BASE / "treatments.csv", dtype=str, keep_default_na=False)
    frame = frame.rename(columns={"daily_dose_mg": "dose\x1b]8;;http://x\x07"})
    frame.to_csv(tmp_path / "treatments.csv", index=False)
    result = invoke("validate", tmp_path / "treatments.csv", "--subjects", BASE / "subjects.csv")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "dose\\x1b]8;;http://x\\x07" in result.stdout
    assert_printable(result.stdout + result.stderr)
    rules = yaml.safe_load((ROOT / "rules" / "sforzini-2021.yaml").read_text())
    rules["title"] = "Evil\x1b[2J\u202etitle\nsecond line"
    rules["criteria"][0]["title"] = "crit\x1b[5m"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(rules))
    for args in (("rules", "show", path), ("rules", "check", path)):
        shown = invoke(*args)
        assert shown.exit_code == 0, shown.stderr
        assert_printable(shown.stdout)
    assert "Evil\\x1b[2J\\u202etitle\\nsecond line" in invoke("rules", "show", path).stdout


def test_a_lost_header_never_prints_a_patient_row(tmp_path):
    """The first data row must not appear as 'columns are: ...' (nor anywhere else)."""
    rows = (BASE / "treatments.csv").read_text().splitlines()
    (tmp_path / "t.csv").write_text("\n".join(rows[1:]) + "\n")
    result = invoke("screen", tmp_path / "t.csv", "--subjects", BASE / "subjects.csv",
                    "--out", tmp_path / "run")  # fmt: skip
    assert result.exit_code == ExitCode.INVALID_INPUT
    said = result.stdout + result.stderr
    assert "looks like data" in said
    for cell in rows[1].split(","):
        if len(cell) > 2:
            assert cell not in said, cell


def test_tokyo_timestamps_keep_their_calendar_dates(tmp_path):
    """00:00 in Tokyo is 15:00 the day before in UTC; the course dates must be the Tokyo
    ones, equal to the base CSV's."""
    base = invoke("screen", BASE / "treatments.csv", "--subjects", BASE / "subjects.csv",
                  "--out", tmp_path / "base")  # fmt: skip
    zoned = invoke("screen", ROOT / "tests/corpus/files/tokyo_timestamps.parquet",
                   "--subjects", BASE / "subjects.csv", "--out", tmp_path / "tokyo")  # fmt: skip
    assert base.exit_code == zoned.exit_code == 0
    columns = ["start_date", "end_date", "weeks"]
    a = pd.read_csv(tmp_path / "base" / "courses.csv")[columns]
    b = pd.read_csv(tmp_path / "tokyo" / "courses.csv")[columns]
    pd.testing.assert_frame_equal(a, b)


def test_a_berlin_evening_timestamp_keeps_its_day(tmp_path):
    """23:30 on 31 Jan in Berlin is 22:30 UTC: the same day; 00:30 on 1 Feb in Berlin is
    23:30 on 31 Jan in UTC: read as 1 Feb, never 31 Jan."""
    table = pq.read_table(ROOT / "tests/corpus/files/good.parquet")
    local = pa.array(["2023-02-01 00:30:00"] * table.num_rows).cast(pa.timestamp("s"))
    berlin = pc.assume_timezone(local, "Europe/Berlin")
    index = table.schema.get_field_index("start_date")
    pq.write_table(table.set_column(index, "start_date", berlin), tmp_path / "t.parquet")
    result = invoke("screen", tmp_path / "t.parquet", "--subjects", BASE / "subjects.csv",
                    "--out", tmp_path / "run", "--on-invalid", "quarantine")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    courses = pd.read_csv(tmp_path / "run" / "courses.csv")
    assert set(courses["start_date"]) == {"2023-02-01"}


@pytest.mark.parametrize("kind", ["device", "fifo", "folder"])
def test_a_formulary_or_map_that_is_not_a_regular_file_is_refused(tmp_path, kind):
    target = {"device": Path("/dev/zero"), "folder": tmp_path}.get(kind)
    if kind == "fifo":
        target = tmp_path / "pipe"
        os.mkfifo(target)
    rules = yaml.safe_load((ROOT / "rules" / "sforzini-2021.yaml").read_text())
    rules["formulary"]["path"] = str(target)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(rules))
    done = subprocess.run(
        [sys.executable, "-m", "trdscreen", "rules", "check", str(path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == ExitCode.INVALID_RULES, done.stderr
    assert "not a regular file" in done.stderr
    mapped = subprocess.run(
        [sys.executable, "-m", "trdscreen", "validate", str(SAMPLE), "--map", str(target)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert mapped.returncode == ExitCode.INVALID_RULES, mapped.stderr


def test_rules_check_reads_each_line_once(tmp_path, monkeypatch):
    """A one-line list of 8,000 items: the comment of a line is read once, not once per
    item (which made `rules check` quadratic: 38 s at 8k items)."""
    text = (ROOT / "rules" / "sforzini-2021.yaml").read_text()
    text = text.replace(
        "  also_count: []", "  also_count: [" + ", ".join(["ketamine"] * 8000) + "]"
    )
    path = tmp_path / "long.yaml"
    path.write_text(text)
    calls = []
    real = evidence._comment
    monkeypatch.setattr(evidence, "_comment", lambda line: calls.append(1) or real(line))
    assert invoke("rules", "check", path).exit_code == 0
    assert 0 < len(calls) <= len(text.splitlines())  # the patched reader is the one used


def test_a_part_s_ledger_is_bounded_by_its_criteria():
    class Rules:
        criteria = [object()] * 1000

    class Screening:
        rules = Rules()
        reports = ()

    rows = ledger_bounded(1 << 18, Screening())
    assert rows * 1000 <= LEDGER_ROWS_PER_PART
    Rules.criteria = [object()] * 4
    assert ledger_bounded(1 << 18, Screening()) == 1 << 18  # the presets' chunks unchanged


def test_issues_are_capped_per_check_with_every_count_kept(tmp_path):
    """2,500 undecodable doses: validate --json lists the first ISSUE_CAP (lowest lines)
    and one summary row for the rest; the counts and the exit code see all 2,500; a
    screen's validation_issues table holds the same rows."""
    frame = pd.read_csv(BASE / "treatments.csv", dtype=str, keep_default_na=False)
    many = pd.concat([frame] * 313, ignore_index=True)  # 8 rows each
    many["subject_id"] = many["subject_id"] + "-" + (many.index // len(frame)).astype(str)
    many = many.head(2500)
    many["daily_dose_mg"] = "twenty"
    many.to_csv(tmp_path / "t.csv", index=False)
    result = invoke("validate", tmp_path / "t.csv", "--json")
    assert result.exit_code == ExitCode.INVALID_INPUT
    payload = json.loads(result.stdout)
    doses = [i for i in payload["issues"] if i["check"] == "not_a_number"]
    listed = [i for i in doses if not i["message"].startswith("not listed")]
    summary = [i for i in doses if i["message"].startswith("not listed")]
    assert len(listed) == ISSUE_CAP
    assert [i["line"] for i in listed] == list(range(2, ISSUE_CAP + 2))  # the first lines
    assert len(summary) == 1 and summary[0]["rows"] == 2500 - ISSUE_CAP
    assert payload["counts"]["error"] >= 2500
    text = invoke("validate", tmp_path / "t.csv")
    assert "(2500 rows)" in text.stdout and "see validation_issues" not in text.stdout
    run = invoke("screen", tmp_path / "t.csv", "--out", tmp_path / "run",
                 "--chunk-rows", "300")  # fmt: skip
    assert run.exit_code == ExitCode.INVALID_INPUT
    table = pd.read_csv(tmp_path / "run" / "validation_issues.csv")
    dose = table[table["check"] == "not_a_number"]
    assert len(dose) == ISSUE_CAP + 1 and dose["rows"].sum() == 2500


def test_verify_names_a_wrong_typed_manifest_field(tmp_path):
    out = tmp_path / "run"
    assert invoke("screen", SAMPLE, "--out", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["outputs"][0]["size"] = "big"
    (out / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("verify", out)
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert "field `outputs.0.size`" in result.stderr
    assert "big" not in result.stderr  # the field is named, its value is not quoted


def test_verify_reports_a_rule_file_changed_under_the_same_id(tmp_path):
    """The manifest is left consistent (its hashes and chain untouched); the rule file at
    the recorded path now sets 5 weeks instead of 4 under the same id."""
    rules = tmp_path / "mine.yaml"
    text = (ROOT / "rules" / "sforzini-2021.yaml").read_text()
    rules.write_text(text)
    out = tmp_path / "run"
    assert invoke("screen", SAMPLE, "--rules", rules, "--out", out).exit_code == 0
    assert invoke("verify", out).exit_code == 0
    rules.write_text(text.replace("    min_weeks: 4 ", "    min_weeks: 5 ", 1))
    result = invoke("verify", out)
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert "different rule set under the same id sforzini-2021" in result.stdout


def test_an_improvement_below_minus_one_is_a_warning(tmp_path):
    """improvement -1.5 (the score rose by 150 %): a warning naming line and column; the
    run goes on (an improvement that low is possible but rare enough to check)."""
    frame = pd.read_csv(BASE / "treatments.csv", dtype=str, keep_default_na=False)
    frame.loc[2, "improvement"] = "-1.5"  # file line 4
    frame.to_csv(tmp_path / "t.csv", index=False)
    result = invoke("validate", tmp_path / "t.csv", "--subjects", BASE / "subjects.csv")
    assert result.exit_code == 0, result.stdout
    assert "t.csv:4 column improvement: implausible_value" in result.stdout


@pytest.mark.parametrize(
    "text",
    [
        "".join(" " * i + f"k{i}:\n" for i in range(900)),  # 900-level block mapping
        "a: " + "{b: " * 5000 + "1" + "}" * 5000 + "\n",  # flow mappings
    ],
    ids=["block", "flow"],
)
def test_deeply_nested_rule_files_and_maps_are_refused(tmp_path, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    rules = invoke("rules", "check", path)
    assert rules.exit_code == ExitCode.INVALID_RULES and "nested more than" in rules.stderr
    mapped = invoke("validate", SAMPLE, "--map", path)
    assert mapped.exit_code == ExitCode.INVALID_RULES and "nested more than" in mapped.stderr


def test_infinite_thresholds_are_refused(tmp_path):
    rules = (ROOT / "rules" / "sforzini-2021.yaml").read_text()
    path = tmp_path / "inf.yaml"
    path.write_text(rules.replace("    min_weeks: 4 ", "    min_weeks: .inf ", 1))
    result = invoke("rules", "check", path)
    assert result.exit_code == ExitCode.INVALID_RULES
    assert "adequacy.duration.min_weeks" in result.stderr and "finite" in result.stderr


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_issues_capped_as_they_are_logged_list_what_capping_at_the_end_lists(seed, monkeypatch):
    """A warning on thousands of rows of one chunk is capped as it is logged (the first
    ISSUE_CAP lines with a key, the first without, a summary row for the rest); the
    capped log's table must equal the one capped only at the end, over several adds
    (chunks) in any line order, with and without subject keys."""
    from types import SimpleNamespace

    from trdscreen import issues as issues_module
    from trdscreen.issues import IssueLog

    rng = np.random.default_rng(seed)
    n = 5000
    source = SimpleNamespace(name="treatments", file="treatments.csv", lines=np.arange(2, n + 2))
    ids = pd.Series(np.where(rng.random(n) < 0.2, "", "S" + np.arange(n).astype(str)))
    adds = [
        (rng.choice(n, size=int(rng.integers(1200, 2600)), replace=False), check)
        for check in ("unknown_drug", "unknown_drug", "end_date_missing", "unknown_drug")
    ]

    def table() -> pd.DataFrame:
        log = IssueLog()
        for rows, check in adds:
            log.add(source, rows, "drug", check, "expected a known drug", ids, "warning")
        return log.frame()

    capped = table()
    monkeypatch.setattr(issues_module, "_capped", lambda block, cap=ISSUE_CAP: block)
    whole = table()
    pd.testing.assert_frame_equal(capped, whole)
    assert capped["rows"].sum() == sum(len(rows) for rows, _ in adds)


@pytest.mark.parametrize("seed", range(16))
def test_a_log_whose_checks_were_capped_as_added_is_not_capped_again(seed, monkeypatch):
    """`IssueLog.frame` skips `cap_issues` when every block is a check of its own, capped
    as logged; the table must be the one capping again gives, for any mix of checks
    logged once or twice, errors (never capped as logged) over and under the cap, rows
    with and without subject keys, repeated lines and a file-level issue."""
    from types import SimpleNamespace

    from trdscreen import issues as issues_module
    from trdscreen.issues import IssueLog

    rng = np.random.default_rng(seed)
    n = 4000
    source = SimpleNamespace(name="treatments", file="treatments.csv", lines=np.arange(2, n + 2))
    ids = pd.Series(np.where(rng.random(n) < 0.3, "", "S" + (np.arange(n) // 3).astype(str)))
    checks = ["unknown_drug", "end_date_missing", "bad_dose", "implausible_value"]
    adds = []
    for _ in range(int(rng.integers(2, 6))):
        size = int(rng.choice([1, 40, 999, 1001, 2500]))
        rows = rng.choice(n, size=size, replace=bool(rng.random() < 0.2))  # repeats a line
        column = str(rng.choice(["drug", "daily_dose_mg"]))
        severity = "error" if rng.random() < 0.3 else "warning"
        adds.append((rows, column, str(rng.choice(checks[: 2 + seed % 3])), severity))

    def table() -> pd.DataFrame:
        log = IssueLog()
        log.add(source, None, "drug", "file_level", "a file-level issue")
        for rows, column, check, severity in adds:
            log.add(source, rows, column, check, f"{check} here", ids, severity)
        return log.frame()

    skipped = []
    real = issues_module._capped_already
    monkeypatch.setattr(
        issues_module, "_capped_already", lambda blocks: skipped.append(real(blocks)) or skipped[-1]
    )
    fast = table()
    monkeypatch.setattr(issues_module, "_capped_already", lambda blocks: False)
    slow = table()
    pd.testing.assert_frame_equal(fast, slow)
    assert fast["rows"].sum() == 1 + sum(len(rows) for rows, *_ in adds)


def test_a_log_of_distinct_checks_takes_the_short_way():
    # The case the short way is for (each check logged once, capped as logged): without
    # this the test above could pass with the short way never taken.
    from types import SimpleNamespace

    from trdscreen.issues import IssueLog, _capped_already

    n = 3000
    source = SimpleNamespace(name="treatments", file="treatments.csv", lines=np.arange(2, n + 2))
    ids = pd.Series(["S" + str(i) if i % 4 else "" for i in range(n)])
    log = IssueLog()
    log.add(source, np.arange(n), "drug", "unknown_drug", "unknown", ids, "warning")
    log.add(source, np.arange(10), "end_date", "end_date_missing", "missing", ids, "warning")
    assert _capped_already(log._blocks)
    table = log.frame()
    # 2,250 keyed rows: the first 1,000 listed and one summary row (1,250 more); the 750
    # without a key are under the cap, all listed; the 10 missing end dates listed.
    assert table["rows"].sum() == n + 10 and len(table) == 1000 + 1 + 750 + 10
    log.add(source, np.arange(5), "drug", "unknown_drug", "unknown", ids, "warning")
    assert not _capped_already(log._blocks)  # the check twice: capped again, together
