"""`explain`, `diff` and `screen --as-of`, against hand-worked expectations.

Expected values come from the sample's documented facts (sample_data/README.md)
and the rule sets' definitions, not from the program's output.
"""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

import pytest
from conftest import SAMPLE, run_cohort, write_cohort
from test_cli import invoke

from trdscreen.courses import REASON_TEXT, REASONS
from trdscreen.errors import ExitCode


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """The sample screened under Sforzini (CSV and Parquet) and under MGH-ATRQ (CSV)."""
    root = tmp_path_factory.mktemp("runs")
    out = {
        "sforzini": root / "sforzini",
        "sforzini_parquet": root / "sforzini_parquet",
        "mgh": root / "mgh",
    }
    assert invoke("screen", SAMPLE, "--out", out["sforzini"]).exit_code == 0
    assert (
        invoke("screen", SAMPLE, "--out", out["sforzini_parquet"], "--format", "parquet").exit_code
        == 0
    )
    assert invoke("screen", SAMPLE, "--rules", "mgh-atrq", "--out", out["mgh"]).exit_code == 0
    return out


def explain(run: Path, subject: str) -> dict:
    result = invoke("explain", run, subject, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_every_reason_code_has_text():
    assert set(REASON_TEXT) == set(REASONS)


# --------------------------------------------------------------------------- explain


def test_explain_s020_exactly_25_percent_is_a_partial_response(runs):
    # S020: F1 (sertraline 100 mg, 50 mg minimum, 8 weeks, HAM-D 24 -> 22 = 8.3 %) and
    # escitalopram 20 mg (10 mg minimum), 8 weeks, 24 -> 18 = exactly 25 %. Sforzini's
    # failure is < 25 %, so the second course is an adequate partial response (PRD band
    # 25 % to < 50 %), not a failure: 1 failure < 2 -> TRD-MIN not met by 1 -> excluded.
    data = explain(runs["sforzini"], "S020")
    assert data["decision"] == "excluded"
    assert data["classification"] == "PRD"
    assert data["first_failed_criterion"] == "TRD-MIN"
    first, second = data["courses"]
    assert (first["source_line"], first["drug_generic"], first["failed"]) == (
        40,
        "sertraline",
        "met",
    )
    assert (first["daily_dose_mg"], first["min_dose_mg"], first["weeks"]) == (100, 50, 8)
    assert second["source_line"] == 41 and second["pct_improvement"] == 25
    assert (second["outcome"], second["adequate"], second["failed"]) == (
        "partial_response",
        "met",
        "not_met",
    )
    assert "partial_response" in [r["code"] for r in second["reasons"]]
    assert data["counts"]["n_failed_trials"] == {
        "label": "failed adequate trials",
        "certain": 1,
        "at_most": 1,
    }
    assert data["counts"]["n_partial_response_trials"]["certain"] == 1
    trd = next(c for c in data["criteria"] if c["criterion_id"] == "TRD-MIN")
    assert (trd["outcome"], trd["observed_value"], trd["threshold"], trd["margin"]) == (
        "not_met",
        1,
        ">= 2",
        -1,
    )
    assert [c["criterion_id"] for c in data["criteria"]] == [
        "AGE",
        "MDD",
        "EX-BIPOLAR",
        "HAMD-SCREEN",
        "TRD-MIN",
    ]
    assert data["run"]["rules_id"] == "sforzini-2021"


def test_explain_s005_dose_below_the_minimum(runs):
    # S005: venlafaxine 75 mg for 7 weeks; the ATRQ minimum is 150 mg/day, so the course
    # is not adequate (dose_below_minimum) and cannot be a failure: 1 failure -> excluded.
    data = explain(runs["sforzini"], "S005")
    venlafaxine = data["courses"][1]
    assert (venlafaxine["daily_dose_mg"], venlafaxine["min_dose_mg"]) == (75, 150)
    assert venlafaxine["dose_margin_mg"] == -75
    assert (venlafaxine["dose_check"], venlafaxine["adequate"], venlafaxine["failed"]) == (
        "not_met",
        "not_met",
        "not_met",
    )
    assert {r["code"] for r in venlafaxine["reasons"]} == {
        "adherence_missing_assumed_met",
        "dose_below_minimum",
    }
    assert data["decision"] == "excluded"


def test_explain_s011_unknown_minimum_means_review(runs):
    # S011: escitalopram failure + Zyprexa (olanzapine) augmentation, which has no
    # minimum dose in the formulary: its adequacy is unknown, so failures are 1 to 2,
    # TRD-MIN is unknown and nothing failed: needs review.
    data = explain(runs["sforzini"], "S011")
    add_on = data["courses"][1]
    assert add_on["drug"] == "Zyprexa" and add_on["drug_generic"] == "olanzapine"
    assert add_on["failed"] == "unknown"
    assert "no_minimum_dose" in [r["code"] for r in add_on["reasons"]]
    assert data["counts"]["n_failed_trials"]["certain"] == 1
    assert data["counts"]["n_failed_trials"]["at_most"] == 2
    assert data["decision"] == "needs_review"
    assert data["unknown_criteria"] == ["TRD-MIN"]


def test_explain_s041_shows_the_days_clipped_to_the_episode(runs):
    """S041's episode began 2023-03-01: the sertraline course of 2022-03-02..2023-03-01
    counts one day (0.14 weeks) from the onset, so it is too short and its baseline
    cannot judge the episode; the escitalopram failure rests on assumed adherence."""
    data = json.loads(invoke("explain", runs["sforzini"], "S041", "--json").stdout)
    first = data["courses"][0]
    assert (first["exposure_start"], first["exposure_end"]) == ("2023-03-01", "2023-03-01")
    assert first["exposure_weeks"] == 0.14 and first["weeks"] == 52.14
    codes = {r["code"] for r in first["reasons"]}
    assert {"clipped_to_episode", "too_short", "baseline_before_episode"} <= codes
    assert [a["code"] for a in data["assumptions"]] == ["adherence_assumed"]
    text = invoke("explain", runs["sforzini"], "S041").stdout
    assert "counted: 2023-03-01 to 2023-03-01, 0.14 weeks at an adequate dose" in text
    assert "Rests on assumptions: adherence_assumed" in text


def test_explain_s048_names_the_merged_course(runs):
    """S048's escitalopram came in three refill rows: one course of 60 days (8.57 weeks)."""
    text = invoke("explain", runs["sforzini"], "S048").stdout
    assert "(course 2, one of 3 rows)" in text
    assert "counted: 2023-04-10 to 2023-06-08, 8.57 weeks at an adequate dose" in text


def test_explain_text_reads_as_a_coordinator_would(runs):
    result = invoke("explain", runs["sforzini"], "S020")
    text = result.stdout
    assert result.exit_code == 0
    assert text.startswith("S020: EXCLUDED")
    assert "treatments.csv line 41: escitalopram (SSRI): adequate, not failed" in text
    assert "improvement 25 %: partial response" in text
    assert "dose 20 mg/day, minimum 10 mg/day" in text
    assert "1 failed adequate trials" in text
    assert "Decision: excluded (not met: TRD-MIN" in " ".join(text.split())


def test_explain_is_the_same_from_csv_and_parquet_runs(runs):
    csv = explain(runs["sforzini"], "S011")
    parquet = explain(runs["sforzini_parquet"], "S011")
    for data in (csv, parquet):
        data.pop("run")
    assert csv == parquet


def test_explain_unknown_subject_and_altered_file(runs, tmp_path):
    result = invoke("explain", runs["sforzini"], "S999")
    assert result.exit_code == ExitCode.USAGE
    assert "S999" in result.stderr
    run = tmp_path / "run"
    shutil.copytree(runs["sforzini"], run)
    (run / "courses.csv").write_text((run / "courses.csv").read_text() + "\n")
    result = invoke("explain", run, "S001")
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert "courses.csv: the file differs from the SHA-256 recorded" in result.stderr


# --------------------------------------------------------------------------- diff


def test_diff_sforzini_vs_mgh_atrq_names_the_25_percent_flip(runs):
    result = invoke("diff", runs["sforzini"], runs["mgh"], "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["context"]["inputs_identical"] and not data["context"]["rules_identical"]
    assert "only the rules differ" in data["context"]["note"]
    changes = {c["subject_id"]: c for c in data["changes"]}
    # The subjects whose decision flips because a course improved by exactly 25 %: a
    # partial response under Sforzini (< 25 % fails), a failure under MGH-ATRQ (<= 25 %).
    at_25 = sorted(
        sid
        for sid, change in changes.items()
        if any(c["pct_improvement"] == 25 for c in change["courses_changed"])
    )
    assert at_25 == ["S020"]
    s020 = changes["S020"]
    assert s020["direction"] == "excluded -> eligible"
    assert {"criterion_id": "TRD-MIN", "outcome_a": "not_met", "outcome_b": "met"} in s020[
        "criteria_flipped"
    ]
    (course,) = s020["courses_changed"]
    assert (course["source_line"], course["failed_a"], course["failed_b"]) == (41, "not_met", "met")
    assert (course["outcome_a"], course["outcome_b"]) == ("partial_response", "nonresponse")
    # S012 is excluded by an exclusion only MGH-ATRQ has (OCD; sample_data/subjects.csv).
    assert changes["S012"]["criteria_flipped"] == [
        {"criterion_id": "EX-OCD", "outcome_a": "absent", "outcome_b": "not_met"}
    ]
    decisions = {row["decision"]: (row["a"], row["b"]) for row in data["attrition"]["decisions"]}
    assert decisions["eligible"][0] == 17  # the hand-worked Sforzini total


def test_diff_text_names_subjects_and_attrition(runs):
    text = invoke("diff", runs["sforzini"], runs["mgh"]).stdout
    assert "S020: excluded -> eligible (PRD -> TRD)" in text
    assert "criterion TRD-MIN: not_met -> met" in text
    assert "line 41 escitalopram, improvement 25 %" in text
    assert "A: screened 67 -> AGE -3" in text


def test_diff_of_csv_and_parquet_runs_of_the_same_screen_is_empty(runs):
    data = json.loads(invoke("diff", runs["sforzini"], runs["sforzini_parquet"], "--json").stdout)
    assert data["subjects"]["changed_decision"] == 0
    assert data["changes"] == []
    assert data["a"]["decisions_content_sha256"] == data["b"]["decisions_content_sha256"]
    assert data["context"]["note"].startswith("same inputs, rules")


def test_diff_after_a_data_refresh(runs, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(SAMPLE, data)
    # S020's escitalopram ends at HAM-D 19 instead of 18: 5/24 = 20.8 % < 25 %, a failure.
    lines = (data / "treatments.csv").read_text().splitlines()
    assert lines[40].startswith("S020,escitalopram")
    lines[40] = lines[40].replace(",24,18,", ",24,19,")
    (data / "treatments.csv").write_text("\n".join(lines) + "\n")
    assert invoke("screen", data, "--out", tmp_path / "refresh").exit_code == 0
    diff = json.loads(invoke("diff", runs["sforzini"], tmp_path / "refresh", "--json").stdout)
    assert "the inputs differ" in diff["context"]["note"]
    assert [(c["subject_id"], c["direction"]) for c in diff["changes"]] == [
        ("S020", "excluded -> eligible")
    ]
    assert diff["changes"][0]["courses_changed"] == []  # inputs differ: lines not matched


# --------------------------------------------------------------------------- --as-of


def test_as_of_hides_what_was_recorded_later(tmp_path):
    # Screening as on 2023-05-01 (the subject was screened 2024-06-01):
    # - sertraline 2023-02-01..2023-03-28 (8 weeks, 8 %): a failed adequate trial;
    # - escitalopram from 2023-04-10, ending 2023-06-04: still running on 2023-05-01, so
    #   ongoing to that date = 22 days (3.1 weeks) < 4 weeks, and its end score is hidden:
    #   not a failure;
    # - venlafaxine from 2023-08-01: after the date, counted nowhere.
    # One failure -> TRD-MIN not met -> excluded. Age at 2023-05-01 (born 1980-05-10): 42.
    # The screening HAM-D was taken on 2024-06-01, after the date: unknown.
    folder = write_cohort(
        tmp_path / "data",
        [
            {"subject_id": "A", "drug": "sertraline", "daily_dose_mg": 100,
             "start_date": "2023-02-01", "end_date": "2023-03-28", "hamd_start": 24, "hamd_end": 22},
            {"subject_id": "A", "drug": "escitalopram", "daily_dose_mg": 20,
             "start_date": "2023-04-10", "end_date": "2023-06-04", "hamd_start": 24, "hamd_end": 20},
            {"subject_id": "A", "drug": "venlafaxine", "daily_dose_mg": 225,
             "start_date": "2023-08-01", "end_date": "2023-09-25", "hamd_start": 20, "hamd_end": 19},
        ],
        [{"subject_id": "A"}],
    )  # fmt: skip
    loaded, result = run_cohort(folder, as_of=date(2023, 5, 1))
    assert loaded.validated.n_errors == 0
    row = result.decisions.iloc[0]
    assert (row["decision"], row["n_failed_trials"], row["n_courses"], row["age"]) == (
        "excluded",
        1,
        2,
        42,
    )
    courses = result.courses.set_index("drug")
    assert courses.loc["escitalopram", "reasons"].split(";")[0] == "censored_at_as_of"
    assert bool(courses.loc["escitalopram", "ongoing"])
    assert courses.loc["escitalopram", "duration_check"] == "not_met"
    assert courses.loc["escitalopram", "outcome"] == "unknown"
    assert courses.loc["venlafaxine", "reasons"] == "after_as_of"
    assert courses.loc["venlafaxine", "counted"] == "not_met"
    hamd = result.ledger[result.ledger["criterion_id"] == "HAMD-SCREEN"].iloc[0]
    assert hamd["outcome"] == "unknown"
    checks = set(result.issues["check"])
    assert {"after_as_of", "censored_at_as_of", "screened_after_as_of"} <= checks
    assert set(result.issues.loc[result.issues["check"].str.contains("as_of"), "severity"]) == {
        "info"
    }
    # Without --as-of the same history is screened at 2024-06-01: three failures.
    _, today = run_cohort(folder)
    assert today.decisions.iloc[0]["n_failed_trials"] == 3


def test_as_of_the_screening_date_reproduces_the_normal_screen():
    # Every sample subject with a subjects row was screened on 2024-06-01, and no course
    # starts or ends after it, so --as-of 2024-06-01 must give the same decisions.
    _, normal = run_cohort(SAMPLE)
    _, as_of = run_cohort(SAMPLE, as_of=date(2024, 6, 1))
    columns = [c for c in normal.decisions.columns if c != "reference_date"]
    with_row = normal.decisions["subject_id"] != "S038"  # no subjects row: no screening date
    assert normal.decisions.loc[with_row, columns].equals(as_of.decisions.loc[with_row, columns])
