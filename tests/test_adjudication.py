"""Adjudication (issue 22, first part): a reviewer's decision for a named subject sets its
final decision; the computed decision stays beside it; the file is hashed, each override
audited, re-run by verify, shown by explain, told apart by diff.

The hand-written file flips two sample subjects (sample_data/README.md): S020, excluded
by TRD-MIN at 25 % improvement on its second course, becomes eligible on a chart review;
S018, needs_review for the unknown drug "Setraline", becomes excluded."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import SAMPLE
from trdscreen.cli import app
from trdscreen.verify import verify_run

FILE = """subject_id,decision,reason,reviewer,date,criterion
S020,eligible,"Chart review: a third failed trial in 2022 not in the export",Dr. Weber,2024-06-10,TRD-MIN
S018,excluded,"Setraline was sertraline at 25 mg/day, below the minimum",Dr. Weber,2024-06-11,
"""


def screen(out: Path, *more: str) -> dict:
    result = CliRunner().invoke(app, ["screen", str(SAMPLE), "--out", str(out), "--json", *more])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("adjudication")
    (tmp / "adjudications.csv").write_text(FILE)
    screen(tmp / "plain")
    screen(tmp / "adjudicated", "--adjudications", str(tmp / "adjudications.csv"))
    return {
        "plain": tmp / "plain",
        "adjudicated": tmp / "adjudicated",
        "file": tmp / "adjudications.csv",
    }


def test_two_subjects_flip_and_the_computed_decision_stays(runs):
    decisions = pd.read_csv(runs["adjudicated"] / "decisions.csv", keep_default_na=False)
    rows = decisions.set_index("subject_id")
    assert rows.loc["S020", ["decision", "final_decision"]].tolist() == ["excluded", "eligible"]
    assert rows.loc["S018", ["decision", "final_decision"]].tolist() == ["needs_review", "excluded"]
    assert rows.loc["S020", "adjudication_reason"].startswith("TRD-MIN: Chart review")
    assert rows.loc["S018", "adjudicated_by"] == "Dr. Weber"
    assert rows.loc["S018", "adjudicated_on"] == "2024-06-11"
    others = rows.drop(index=["S020", "S018"])
    assert (others["final_decision"] == others["decision"]).all() and not others[
        "adjudicated"
    ].any()
    # The sample's 17 / 37 / 13 become 18 eligible (S020 in), 37 excluded (S018 in, S020
    # out) and 12 to review (S018 out); the splits follow the final decision.
    assert len(pd.read_csv(runs["adjudicated"] / "included.csv")) == 18
    excluded = pd.read_csv(runs["adjudicated"] / "excluded.csv")["subject_id"].tolist()
    assert "S018" in excluded and "S020" not in excluded and len(excluded) == 37
    assert len(pd.read_csv(runs["adjudicated"] / "needs_review.csv")) == 12


def test_the_manifest_audit_and_summary_record_it(runs):
    manifest = json.loads((runs["adjudicated"] / "manifest.json").read_text())
    import hashlib

    assert manifest["adjudications"]["sha256"] == hashlib.sha256(FILE.encode()).hexdigest()
    assert manifest["adjudications"]["rows"] == 2
    assert manifest["counts"]["final_decision"] == {
        "eligible": 18,
        "excluded": 37,
        "needs_review": 12,
    }
    assert manifest["counts"]["adjudicated"] == {"subjects": 2, "changed": 2}
    events = [
        json.loads(line) for line in (runs["adjudicated"] / "audit.jsonl").read_text().splitlines()
    ]
    overrides = [e for e in events if e["event"] == "decision_adjudicated"]
    assert [(e["subject_id"], e["decision"], e["line"]) for e in overrides] == [
        ("S020", "eligible", 2),
        ("S018", "excluded", 3),
    ]
    assert all("reason" not in e for e in overrides)  # free text stays out of the log
    assert (
        "2 decision(s) adjudicated by reviewers, 2 changed"
        in (runs["adjudicated"] / "summary.txt").read_text()
    )
    plain = json.loads((runs["plain"] / "manifest.json").read_text())
    assert plain["adjudications"] is None and "adjudicated" not in plain["counts"]


def test_verify_reruns_with_the_adjudications(runs, tmp_path):
    assert verify_run(runs["adjudicated"]).ok
    # A changed adjudication file is caught: the re-run refuses different data.
    copies = tmp_path / "copies"
    copies.mkdir()
    for name in ("treatments.csv", "subjects.csv"):
        (copies / name).write_bytes((SAMPLE / name).read_bytes())
    (copies / "adjudications.csv").write_text(FILE.replace("eligible", "excluded"))
    verification = verify_run(runs["adjudicated"], copies)
    assert not verification.ok
    assert any(c.subject == "adjudications" and not c.ok for c in verification.checks)


def test_explain_shows_the_adjudication(runs):
    result = CliRunner().invoke(app, ["explain", str(runs["adjudicated"]), "S020"])
    assert "adjudicated: ELIGIBLE by Dr. Weber on 2024-06-10" in result.output
    assert "computed: excluded" in result.output
    data = json.loads(
        CliRunner().invoke(app, ["explain", str(runs["adjudicated"]), "S020", "--json"]).stdout
    )
    assert data["final_decision"] == "eligible" and data["adjudication"]["reviewer"] == "Dr. Weber"


def test_diff_tells_adjudication_apart_from_data_and_rules(runs):
    data = json.loads(
        CliRunner()
        .invoke(app, ["diff", str(runs["plain"]), str(runs["adjudicated"]), "--json"])
        .stdout
    )
    assert data["subjects"]["changed_decision"] == 0  # the computed decisions are the same
    assert data["context"]["adjudications_identical"] is False
    assert "the adjudications differ" in data["context"]["note"]
    assert data["subjects"]["changed_by_adjudication"] == 2
    assert [(c["subject_id"], c["direction"]) for c in data["adjudication_changes"]] == [
        ("S018", "needs_review -> excluded"),
        ("S020", "excluded -> eligible"),
    ]


def test_the_worklist_round_trips_into_adjudications(runs, tmp_path):
    worklist = tmp_path / "review.csv"
    result = CliRunner().invoke(app, ["worklist", str(runs["plain"]), "--out", str(worklist)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(worklist, dtype=str, keep_default_na=False)
    assert len(table) == 13 and set(table["decision"]) == {""}
    assert (
        table.set_index("subject_id").loc["S018", "to_resolve"].startswith("treatments.csv line 37")
    )
    # The coordinator decides one subject and leaves the other twelve rows empty.
    table.loc[table["subject_id"] == "S029", ["decision", "reason", "reviewer", "date"]] = [
        "excluded",
        "dose confirmed 5 mg",
        "J. Ortiz",
        "2024-06-12",
    ]
    table.to_csv(worklist, index=False)
    summary = screen(tmp_path / "run", "--adjudications", str(worklist))
    assert summary["counts"]["adjudicated"] == {"subjects": 1, "changed": 1}


@pytest.mark.parametrize(
    ("rows", "says"),
    [
        ("S999,eligible,r,Dr. X,2024-06-10,", "S999 is in neither the treatments nor the subjects"),
        ("S020,maybe,r,Dr. X,2024-06-10,", ":2 column decision: expected one of eligible"),
        ("S020,eligible,,Dr. X,2024-06-10,", ":2 column reason: empty"),
        ("S020,eligible,r,,2024-06-10,", ":2 column reviewer: empty"),
        ("S020,eligible,r,Dr. X,10/06/2024,", ":2 column date: expected an ISO date"),
        ("S020,eligible,r,Dr. X,2024-06-10,\nS020,excluded,r,Dr. Y,2024-06-11,",
         ":3 column subject_id: S020 is adjudicated again (first on line 2)"),
    ],
)  # fmt: skip
def test_bad_adjudications_are_clear_errors_with_file_and_line(tmp_path, rows, says):
    path = tmp_path / "adj.csv"
    path.write_text("subject_id,decision,reason,reviewer,date,criterion\n" + rows + "\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["screen", str(SAMPLE), "--out", str(out), "--adjudications", str(path)]
    )
    assert result.exit_code == 4
    assert says in result.output and "adj.csv" in result.output
    assert not out.exists()


def test_an_adjudicated_key_matches_as_validation_reads_keys(tmp_path):
    # The export pads the key (" P1 "); validation trims it, and so does the check that
    # every adjudicated subject is in the inputs: "P1" is known, not refused.
    from tests.conftest import write_cohort

    courses = [{"subject_id": " P1 ", "drug": "sertraline", "daily_dose_mg": 100,
                "start_date": "2023-01-02", "end_date": "2023-03-06"}]  # fmt: skip
    folder = write_cohort(tmp_path / "c", courses, [{"subject_id": " P1 "}])
    adjudications = tmp_path / "adj.csv"
    adjudications.write_text(
        "subject_id,decision,reason,reviewer,date\nP1,excluded,withdrew consent,Dr. W,2024-06-10\n"
    )
    from trdscreen import api

    request = api.ScreenRequest(input=folder, adjudications=adjudications)
    decisions = api.screen(api.load(request, ["test"])).decisions.set_index("subject_id")
    assert decisions.loc["P1", "final_decision"] == "excluded"


HOSTILE_IDS = ['=HYPERLINK("http://example.invalid","x")', "+1", "-2", "@SUM(A1)", "'quoted", "P6"]


@pytest.mark.parametrize("opened_in", ["kept", "stripped"])
def test_the_worklist_escapes_formulas_and_reads_them_back(tmp_path, opened_in):
    """A subject id exported as `=HYPERLINK(...)` reaches the worklist, the one file a
    reviewer opens in a spreadsheet: written raw, the spreadsheet would run it. It is
    written `'=HYPERLINK(...)` as in every CSV of the run, and the filled-in worklist
    applies to the subject whether the spreadsheet kept the mark or stripped it on
    saving. Each subject needs review (bipolar status empty), so each is listed."""
    from tests.conftest import write_cohort

    courses = [  # two failed adequate trials: only the bipolar status is unknown
        {"drug": "sertraline", "daily_dose_mg": 100, "start_date": "2023-02-01",
         "end_date": "2023-03-28", "adherence": 0.9, "hamd_start": 24, "hamd_end": 22},
        {"drug": "escitalopram", "daily_dose_mg": 20, "start_date": "2023-04-10",
         "end_date": "2023-06-04", "adherence": 0.9, "hamd_start": 22, "hamd_end": 20},
    ]  # fmt: skip
    folder = write_cohort(
        tmp_path / "in",
        [{"subject_id": s, **course} for s in HOSTILE_IDS for course in courses],
        [{"subject_id": s, "bipolar": ""} for s in HOSTILE_IDS],
    )
    runner = CliRunner()
    result = runner.invoke(app, ["screen", str(folder), "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    review = tmp_path / "review.csv"
    result = runner.invoke(app, ["worklist", str(tmp_path / "run"), "--out", str(review)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(review, dtype=str, keep_default_na=False)
    assert sorted(table["subject_id"]) == sorted(
        f"'{s}" if s[0] in "=+-@'" else s for s in HOSTILE_IDS
    )
    table["decision"], table["reason"] = "excluded", "chart: a manic episode"
    table["reviewer"], table["date"] = "Dr. Weber", "2024-06-10"
    if opened_in == "stripped":  # a spreadsheet that took the mark as its own and dropped it
        table["subject_id"] = table["subject_id"].str.removeprefix("'")
        # An id that itself starts with the mark ("'quoted", written "''quoted") cannot
        # survive that: read back as "quoted" it is refused as an unknown subject (loud,
        # never applied to another); left out here.
        table = table[table["subject_id"] != "'quoted"]
    table.to_csv(review, index=False)
    result = runner.invoke(
        app,
        ["screen", str(folder), "--out", str(tmp_path / "adj"), "--adjudications", str(review)],
    )
    assert result.exit_code == 0, result.output
    final = pd.read_csv(tmp_path / "adj" / "decisions.csv", dtype=str, keep_default_na=False)
    decided = dict(zip(final["subject_id"], final["final_decision"], strict=True))
    applied = [s for s in HOSTILE_IDS if not (opened_in == "stripped" and s == "'quoted")]
    for subject in applied:  # decisions.csv escapes them too
        key = f"'{subject}" if subject[0] in "=+-@'" else subject
        assert decided[key] == "excluded", (subject, decided)
