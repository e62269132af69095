"""`trdscreen build`: drug events and ratings into treatment courses.

Every expected value below is worked out by hand from the build rules
(buildrules.BUILD_TAGS, the module docs of build, buildcourses and
buildratings): day arithmetic is inclusive (a 28-day supply from 1 January
lasts to 28 January).
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import ROOT, SUBJECT_DEFAULTS, preset_data, run_cohort, write_csv
from trdscreen.buildrun import BuildRequest, run_build
from trdscreen.cli import app
from trdscreen.errors import InputError, OutputExistsError, RuleError

EVENT_COLUMNS = [
    "subject_id", "drug", "event_date", "days_supply", "quantity", "units_per_day",
    "strength_mg", "daily_dose_mg", "end_date",
]  # fmt: skip


def ev(subject, drug, day, supply=None, dose=None, **more) -> dict:
    return {
        "subject_id": subject, "drug": drug, "event_date": day, "days_supply": supply,
        "daily_dose_mg": dose, **more,
    }  # fmt: skip


def rating(subject, day, total, instrument="HAMD17") -> dict:
    return {"subject_id": subject, "date": day, "instrument": instrument, "total": total}


def records(folder: Path, events: list[dict], ratings=(), subjects=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_csv(folder / "drug_events.csv", events, EVENT_COLUMNS)
    if ratings:
        write_csv(
            folder / "assessments.csv", list(ratings), ["subject_id", "date", "instrument", "total"]
        )
    if subjects is not None:
        rows = [{**SUBJECT_DEFAULTS, **s} for s in subjects]
        write_csv(folder / "subjects.csv", rows, list(dict.fromkeys(k for r in rows for k in r)))
    return folder


def built(tmp_path: Path, events, ratings=(), subjects=None, **request) -> Path:
    folder = records(tmp_path / "records", events, ratings, subjects)
    out = tmp_path / "built"
    run_build(BuildRequest(folder, out, **request))
    return out


def table(out: Path, name: str = "treatments") -> pd.DataFrame:
    return pd.read_parquet(out / f"{name}.parquet")


def day(text: str) -> date:
    return date.fromisoformat(text)


def rows_of(frame: pd.DataFrame, subject: str) -> pd.DataFrame:
    return frame[frame["subject_id"] == subject].reset_index(drop=True)


# --------------------------------------------------------------------------- supply runs


def test_refills_touching_make_one_row_and_a_dose_step_a_second_row_of_the_same_course(tmp_path):
    # 100 mg: 1 Jan + 28 days = to 28 Jan; refill 29 Jan + 28 = to 25 Feb (touching: one
    # row). 150 mg from 26 Feb for 28 days = to 24 Mar (2024 is a leap year): a new row,
    # the same course.
    out = built(tmp_path, [
        ev("A", "sertraline", "2024-01-01", 28, 100),
        ev("A", "sertraline", "2024-01-29", 28, 100),
        ev("A", "sertraline", "2024-02-26", 28, 150),
    ])  # fmt: skip
    t = table(out)
    assert list(t["daily_dose_mg"]) == [100, 150]
    assert list(t["start_date"]) == [day("2024-01-01"), day("2024-02-26")]
    assert list(t["end_date"]) == [day("2024-02-25"), day("2024-03-24")]
    assert list(t["course_id"]) == ["A:1", "A:1"]
    assert list(t["n_events"]) == [2, 1]
    assert list(t["first_source_line"]) == [2, 4]  # CSV lines: the header is line 1
    assert list(t["pdc"]) == [1.0, 1.0]
    assert set(t["duration_source"]) == {"days_supply"}


def test_an_early_refill_does_not_stockpile(tmp_path):
    # 30 days from 1 Jan (to 30 Jan), refilled 20 Jan for 30 days (to 18 Feb). Without
    # stockpiling the supply ends 18 Feb; carrying the 11 spare days over would say 29 Feb.
    out = built(tmp_path, [
        ev("B", "fluoxetine", "2024-01-01", 30, 20),
        ev("B", "fluoxetine", "2024-01-20", 30, 20),
    ])  # fmt: skip
    t = table(out)
    assert len(t) == 1
    assert t.loc[0, "end_date"] == day("2024-02-18")


def test_a_gap_within_gap_days_is_one_course_and_its_pdc_counts_the_gap(tmp_path):
    # 28 days from 1 Jan (to 28 Jan); the next fill 20 Feb: a gap of 22 days <= 30, so one
    # course of two rows from 1 Jan to 19 Mar (78 days), 56 of them supplied: pdc 56/78.
    out = built(tmp_path, [
        ev("C", "citalopram", "2024-01-01", 28, 20),
        ev("C", "citalopram", "2024-02-20", 28, 20),
    ])  # fmt: skip
    t = table(out)
    assert list(t["course_id"]) == ["C:1", "C:1"]
    assert list(t["pdc"]) == [round(56 / 78, 4)] * 2
    assert list(t["change_type"]) == ["stop", "stop"]
    assert list(t["adherence"]) == list(t["pdc"])  # supply-based adherence


def test_days_on_another_antidepressant_are_no_missed_doses(tmp_path):
    # Citalopram as above, but duloxetine was supplied from 29 Jan for 14 days (to 11 Feb)
    # in its gap: a switch away and back, not 22 missed days. Of the span's 78 days the 14
    # on duloxetine leave the denominator: pdc 56/64 = 0.875 (>= 0.8; without the switch it
    # was 56/78 = 0.718, under Sforzini's 0.8, so the trial was not adequate). The 8 days
    # with no antidepressant at all (12-19 Feb) still count as missed. Duloxetine's own
    # course is whole (pdc 1).
    out = built(tmp_path, [
        ev("C", "citalopram", "2024-01-01", 28, 20),
        ev("C", "duloxetine", "2024-01-29", 14, 60),
        ev("C", "citalopram", "2024-02-20", 28, 20),
    ])  # fmt: skip
    t = table(out)
    citalopram = t[t["drug"] == "citalopram"]
    assert list(citalopram["pdc"]) == [round(56 / 64, 4)] * 2
    assert list(t[t["drug"] == "duloxetine"]["pdc"]) == [1.0]


def test_a_course_with_gaps_is_not_assumed_adherent(tmp_path):
    # The course above covers 56 of 78 days: adherence 0.718, under Sforzini's 0.8. The
    # screen must not count it as adequate (leaving adherence empty would have it
    # "assumed adequate"): its 24 -> 22 (8 %) is not a failed adequate trial.
    out = built(
        tmp_path,
        [ev("C", "citalopram", "2024-01-01", 28, 20), ev("C", "citalopram", "2024-02-20", 28, 20)],
        ratings=[rating("C", "2023-12-30", 24), rating("C", "2024-03-15", 22)],
        subjects=[
            {"subject_id": "C", "episode_start": "2023-06-01", "screening_date": "2024-06-01"}
        ],
    )
    t = table(out)
    assert (t.loc[0, "hamd_start"], t.loc[1, "hamd_end"]) == (24, 22)
    _, result = run_cohort(out)
    row = result.decisions.set_index("subject_id").loc["C"]
    assert (row["n_adequate_trials"], row["n_failed_trials"]) == (0, 0)


def test_a_restart_after_a_long_gap_is_a_new_course(tmp_path):
    # To 28 Jan, then again 1 Apr: 63 days without supply (> 30): two courses; the first
    # stopped, 63 days before the next.
    out = built(tmp_path, [
        ev("D", "citalopram", "2024-01-01", 28, 20),
        ev("D", "citalopram", "2024-04-01", 28, 20),
    ])  # fmt: skip
    t = table(out)
    assert list(t["course_id"]) == ["D:1", "D:2"]
    assert t.loc[0, "change_type"] == "stop"
    assert t.loc[0, "days_to_next"] == 63  # 29 Jan .. 31 Mar


# --------------------------------------------------------------------------- roles


def test_a_cross_taper_shorter_than_the_window_is_a_switch(tmp_path):
    # Sertraline to 25 Feb; venlafaxine from 15 Feb: they overlap 11 days (< 30).
    out = built(tmp_path, [
        ev("E", "sertraline", "2024-01-01", 56, 100),
        ev("E", "venlafaxine", "2024-02-15", 56, 150),
    ])  # fmt: skip
    t = table(out)
    assert list(t["role"]) == ["monotherapy", "monotherapy"]
    assert t.loc[0, "change_type"] == "switch"
    assert t.loc[0, "next_drug"] == "venlafaxine"
    assert t.loc[0, "days_to_next"] == -11


def test_a_second_antidepressant_overlapping_the_window_is_a_combination(tmp_path):
    # Sertraline 1 Jan to 30 Mar; mirtazapine 20 Jan to 19 Mar: 60 days together (>= 30).
    out = built(tmp_path, [
        ev("F", "sertraline", "2024-01-01", 90, 100),
        ev("F", "mirtazapine", "2024-01-20", 60, 30),
    ])  # fmt: skip
    t = table(out).set_index("drug")
    assert t.loc["sertraline", "role"] == "monotherapy"
    assert t.loc["mirtazapine", "role"] == "combination"
    assert t.loc["sertraline", "change_type"] == "combine"


def test_an_add_on_started_before_the_antidepressant_does_not_make_it_an_add_on(tmp_path):
    # Aripiprazole from 1 Jan, escitalopram from 15 Jan while it runs: a careless "started
    # while another drug ran" would call escitalopram an add-on. It is the antidepressant
    # trial. Aripiprazole was not added to an antidepressant (it came first), so it is no
    # augmentation trial of its own either (0.8.8; before, its 60 days beside
    # escitalopram made it one, so one regimen could count as two failed trials): as the
    # screen reads an empty role (tests/cases/roles.yaml).
    out = built(tmp_path, [
        ev("G", "aripiprazole", "2024-01-01", 90, 5),
        ev("G", "escitalopram", "2024-01-15", 60, 10),
    ])  # fmt: skip
    t = table(out).set_index("drug")
    assert t.loc["escitalopram", "role"] == "monotherapy"
    assert t.loc["aripiprazole", "role"] == "monotherapy"


def test_an_add_on_started_during_the_antidepressant_is_its_augmentation(tmp_path):
    # Escitalopram from 1 Jan for 90 days, aripiprazole added 15 Jan for 60 days (all
    # beside it, >= 30): augmentation.
    out = built(tmp_path, [
        ev("G", "escitalopram", "2024-01-01", 90, 10),
        ev("G", "aripiprazole", "2024-01-15", 60, 5),
    ])  # fmt: skip
    t = table(out).set_index("drug")
    assert t.loc["aripiprazole", "role"] == "augmentation"


# --------------------------------------------------------------------------- dates


def test_a_course_running_past_the_reference_date_is_ongoing(tmp_path):
    # Screening 1 Mar 2024; duloxetine 15 Jan for 90 days (to 13 Apr) is still supplied on
    # it: end_date empty, stop_reason ongoing. A fill on 10 Mar is after the reference date.
    out = built(
        tmp_path,
        [ev("H", "duloxetine", "2024-01-15", 90, 60), ev("H", "duloxetine", "2024-03-10", 90, 60)],
        subjects=[{"subject_id": "H", "screening_date": "2024-03-01"}],
    )
    t = table(out)
    assert len(t) == 1
    assert pd.isna(t.loc[0, "end_date"]) and t.loc[0, "stop_reason"] == "ongoing"
    assert t.loc[0, "change_type"] == "ongoing"
    trail = table(out, "course_events")
    assert list(trail["status"]) == ["used", "after_reference_date"]


def test_as_of_is_the_reference_date_for_everyone(tmp_path):
    # --as-of 1 Feb 2024: the 1 Jan fill (to 30 Mar) is ongoing on it.
    out = built(tmp_path, [ev("H", "duloxetine", "2024-01-01", 90, 60)], as_of=date(2024, 2, 1))
    assert table(out).loc[0, "stop_reason"] == "ongoing"
    assert json.loads((out / "manifest.json").read_text())["reference_date"] == {
        "as_of": "2024-02-01"
    }


# --------------------------------------------------------------------------- same day


def test_two_strengths_on_one_day_are_summed_and_flagged(tmp_path):
    # Venlafaxine 150 mg and 75 mg dispensed together: 225 mg/day, one row.
    out = built(tmp_path, [
        ev("I", "venlafaxine", "2024-01-01", 28, 150),
        ev("I", "venlafaxine", "2024-01-01", 28, 75),
    ])  # fmt: skip
    t = table(out)
    assert list(t["daily_dose_mg"]) == [225]
    assert t.loc[0, "dose_source"] == "summed_strengths"
    trail = table(out, "course_events")
    assert list(trail["status"]) == ["used", "summed"]
    assert list(trail["course_id"]) == ["I:1", "I:1"]


def test_a_same_day_duplicate_under_a_brand_name_is_one_event_not_a_double_dose(tmp_path):
    # Zoloft is sertraline: the same day and dose twice is one event. Summing them would
    # make 200 mg/day out of a duplicated export row.
    out = built(tmp_path, [
        ev("J", "sertraline", "2024-01-01", 28, 100),
        ev("J", "Zoloft", "2024-01-01", 28, 100),
    ])  # fmt: skip
    assert list(table(out)["daily_dose_mg"]) == [100]
    assert list(table(out, "course_events")["status"]) == ["used", "duplicate"]


# --------------------------------------------------------------------------- durations


def test_missing_supply_lasts_to_the_next_issue_capped_and_the_last_one_is_unknown(tmp_path):
    # No supply or end: 1 Jan lasts to the next issue (28 days, to 28 Jan); 29 Jan's next
    # issue is 123 days later, capped at 90 days (to 27 Apr); 1 Jun has no next issue:
    # unknown. The 1 Jun course therefore has an unknown end (stop_reason other, never
    # "ongoing"), and is a course of its own: 34 days after 27 Apr (> 30).
    out = built(tmp_path, [
        ev("K", "fluoxetine", "2024-01-01", strength_mg=20, units_per_day=1),
        ev("K", "fluoxetine", "2024-01-29", strength_mg=20, units_per_day=1),
        ev("K", "fluoxetine", "2024-06-01", strength_mg=20, units_per_day=1),
    ])  # fmt: skip
    t = table(out)
    assert list(t["course_id"]) == ["K:1", "K:2"]
    assert t.loc[0, "end_date"] == day("2024-04-27")
    assert list(t["daily_dose_mg"]) == [20, 20]
    assert pd.isna(t.loc[1, "end_date"]) and t.loc[1, "stop_reason"] == "other"
    trail = table(out, "course_events")
    assert list(trail["duration_source"]) == ["next_issue", "next_issue_capped", "unknown"]
    assert list(trail["days"].astype("Int64")) == [28, 90, pd.NA]


def test_quantity_over_units_per_day_and_strength_give_duration_and_dose(tmp_path):
    # 56 tablets of 50 mg, 2 a day: 28 days at 100 mg/day.
    out = built(tmp_path, [
        ev("L", "sertraline", "2024-01-01", quantity=56, units_per_day=2, strength_mg=50)
    ])  # fmt: skip
    t = table(out)
    assert t.loc[0, "end_date"] == day("2024-01-28")
    assert t.loc[0, "daily_dose_mg"] == 100
    assert t.loc[0, "duration_source"] == "quantity"
    assert t.loc[0, "dose_source"] == "strength_x_units_per_day"


def test_implausible_events_are_set_aside_with_a_reason_and_counted(tmp_path):
    out = built(tmp_path, [
        ev("M", "sertraline", "2024-01-01", 400, 100),  # above 183 days' supply
        ev("M", "sertraline", "2024-02-01", 28, 100, quantity=0),
        ev("M", "sertraline", "2037-07-07", 28, 100),  # a placeholder date
        ev("M", "sertraline", "2024-03-01", 28, 100, end_date="2024-02-01"),
        ev("M", "sertraline", "2024-04-01", 28, 100),
    ])  # fmt: skip
    trail = table(out, "course_events")
    assert list(trail["status"]) == [
        "days_supply_implausible", "quantity_not_positive", "placeholder_date",
        "end_before_start", "used",
    ]  # fmt: skip
    counts = json.loads((out / "manifest.json").read_text())["event_attrition"]
    assert counts["read"] == 5 and counts["used"] == 1 and counts["supply_runs"] == 1
    assert (
        sum(v for k, v in counts.items() if k not in ("read", "used", "supply_runs", "courses"))
        == 4
    )


# --------------------------------------------------------------------------- ratings


def test_the_ratings_nearest_the_course_ends_judge_it_not_the_best_later_one(tmp_path):
    # Sertraline 1 Jan to 25 Feb. Baseline window 2 Dec .. 8 Jan: 10 Dec (26) and 28 Dec
    # (24) and 8 Jan (25): nearest to 1 Jan is 28 Dec -> 24. End window 11 Feb .. 10 Mar:
    # 20 Feb (20) and 5 Mar (12): nearest to 25 Feb is 20 Feb -> 20. 24 -> 20 is 16.7 %
    # (nonresponse); taking the latest rating (12) would call it a 50 % response.
    out = built(
        tmp_path,
        [ev("N", "sertraline", "2024-01-01", 56, 100)],
        ratings=[
            rating("N", "2023-12-10", 26),
            rating("N", "2023-12-28", 24),
            rating("N", "2024-01-08", 25),
            rating("N", "2024-02-20", 20),
            rating("N", "2024-03-05", 12),
        ],  # fmt: skip
    )
    t = table(out)
    assert (t.loc[0, "hamd_start"], t.loc[0, "hamd_end"], t.loc[0, "hamd_version"]) == (24, 20, 17)
    assert t.loc[0, "hamd_start_date"] == day("2023-12-28")
    assert t.loc[0, "hamd_end_line"] == 5


def test_a_tie_goes_to_the_earlier_rating_and_versions_are_never_mixed(tmp_path):
    # 29 Dec and 4 Jan are both 3 days from 1 Jan: the earlier (before treatment) wins.
    # The end is rated only on HAM-D21: no HAM-D17 end, and no 21-item total compared
    # with a 17-item baseline.
    out = built(
        tmp_path,
        [ev("O", "sertraline", "2024-01-01", 56, 100)],
        ratings=[
            rating("O", "2023-12-29", 22),
            rating("O", "2024-01-04", 19),
            rating("O", "2024-02-24", 30, "HAMD21"),
        ],  # fmt: skip
    )
    t = table(out)
    assert t.loc[0, "hamd_start"] == 22 and t.loc[0, "hamd_version"] == 17
    assert pd.isna(t.loc[0, "hamd_end"])


def test_an_end_rating_must_come_min_days_after_the_baseline(tmp_path):
    # A 10-day course (1 .. 10 Jan) rated 28 Dec and 5 Jan: 5 Jan is within 14 days of the
    # end but only 8 days after the baseline (< 14): no end rating.
    out = built(
        tmp_path,
        [ev("Q", "sertraline", "2024-01-01", 10, 100)],
        ratings=[rating("Q", "2023-12-28", 22), rating("Q", "2024-01-05", 10)],
    )
    t = table(out)
    assert t.loc[0, "hamd_start"] == 22 and pd.isna(t.loc[0, "hamd_end"])


# --------------------------------------------------------------------------- screened


def trial_events(subject: str, second: str = "venlafaxine") -> list[dict]:
    return [
        ev(subject, "sertraline", "2023-02-01", 28, 100),
        ev(subject, "sertraline", "2023-03-01", 28, 100),  # to 28 Mar: 8 weeks at 100 mg
        ev(subject, second, "2023-05-01", 28, 150),
        ev(subject, second, "2023-05-29", 28, 150),  # to 25 Jun: 8 weeks at 150 mg
    ]


def test_built_courses_screen_to_decisions_worked_by_hand(tmp_path):
    # Sforzini 2021: >= 2 failed adequate trials of distinct drugs in the episode (from
    # 1 Jan 2023), each >= 4 weeks at >= the minimum dose (sertraline 50, venlafaxine
    # 150 mg/day) with < 25 % improvement. Courses: sertraline 1 Feb .. 28 Mar, then
    # venlafaxine 1 May .. 25 Jun (baseline window 1 Apr .. 8 May, end 11 Jun .. 9 Jul).
    # R: sertraline 24 (30 Jan) -> 21 (25 Mar) = 12.5 %; venlafaxine 21 (28 Apr) -> 19
    #    (20 Jun) = 9.5 %: two failed adequate trials of two drugs: eligible.
    # S: the same, but venlafaxine's end rating came 4 Aug, 40 days after it ended
    #    (outside the 14-day window): its outcome is unknown, so needs review. Reading
    #    "the last rating" as the end would have made S eligible.
    # T: sertraline again from 1 May (33 days after 28 Mar: a new course of the same
    #    drug): one distinct failed drug, so TRD-MIN is not met: excluded.
    ratings = [
        rating("R", "2023-01-30", 24), rating("R", "2023-03-25", 21),
        rating("R", "2023-04-28", 21), rating("R", "2023-06-20", 19),
        rating("S", "2023-01-30", 24), rating("S", "2023-03-25", 21),
        rating("S", "2023-04-28", 21), rating("S", "2023-08-04", 19),
        rating("T", "2023-01-30", 24), rating("T", "2023-03-25", 21),
        rating("T", "2023-04-28", 21), rating("T", "2023-06-20", 19),
    ]  # fmt: skip
    events = trial_events("R") + trial_events("S") + trial_events("T", "sertraline")
    subjects = [{"subject_id": s} for s in "RST"]
    out = built(tmp_path, events, ratings, subjects)
    t = table(out)
    r = rows_of(t, "R")
    assert list(r["hamd_start"].astype("Int64")) == [24, 21]
    assert list(r["hamd_end"].astype("Int64")) == [21, 19]
    assert pd.isna(rows_of(t, "S").loc[1, "hamd_end"])
    assert list(rows_of(t, "T")["course_id"]) == ["T:1", "T:2"]
    _, result = run_cohort(out)
    decisions = result.decisions.set_index("subject_id")
    assert decisions.loc["R", "decision"] == "eligible"
    assert decisions.loc["R", "n_failed_trials"] == 2
    assert decisions.loc["S", "decision"] == "needs_review"
    assert decisions.loc["T", "decision"] == "excluded"
    assert decisions.loc["T", "n_failed_trials"] == 1


# --------------------------------------------------------------------------- the folder


def test_a_rerun_writes_the_same_bytes_and_the_manifest_names_every_parameter(tmp_path):
    events = [ev("A", "sertraline", "2024-01-01", 28, 100)]
    folder = records(tmp_path / "records", events, [rating("A", "2023-12-30", 22)])
    for name in ("one", "two"):
        run_build(BuildRequest(folder, tmp_path / name))
    for path in sorted((tmp_path / "one").iterdir()):
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes(), path.name
    manifest = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert manifest["kind"] == "build" and manifest["tool"] == "trdscreen"
    tags = {p["key"]: p["tag"] for p in manifest["parameters"]}
    assert tags["gap_days"] == "S" and tags["next_issue_cap_days"] == "U"
    assert {o["path"] for o in manifest["outputs"]} == {
        "treatments.parquet", "subjects.parquet", "course_events.parquet",
        "event_attrition.parquet",
    }  # fmt: skip
    assert [i["role"] for i in manifest["inputs"]] == ["drug_events", "assessments"]


def test_the_rule_sets_build_section_is_used_and_recorded(tmp_path):
    # gap_days 60: the 63-day gap of test_a_restart... is still a new course; 70 would
    # join it. Here 45 days apart (to 28 Jan, next 13 Mar = 44 days without supply).
    import yaml

    from tests.conftest import preset_data

    rules = preset_data()
    rules["build"] = {"gap_days": 45}
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    events = [
        ev("D", "citalopram", "2024-01-01", 28, 20),
        ev("D", "citalopram", "2024-03-13", 28, 20),
    ]
    out = built(tmp_path, events, rules=str(path))
    assert list(table(out)["course_id"]) == ["D:1", "D:1"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert {p["key"]: p["value"] for p in manifest["parameters"]}["gap_days"] == 45


def test_a_bad_cell_stops_the_build_with_file_line_and_column_and_writes_nothing(tmp_path):
    folder = records(
        tmp_path / "records",
        [
            ev("A", "sertraline", "2024-01-01", 28, 100),
            ev("SECRET-7", "sertraline", "not a day", 28, 100),
        ],
    )
    out = tmp_path / "built"
    result = CliRunner().invoke(app, ["build", str(folder), "--out", str(out)])
    assert result.exit_code == 4
    assert "drug_events.csv line 3" in result.output and "event_date" in result.output
    assert "not a day" not in result.output  # never a cell value
    assert not out.exists()


def test_a_map_renames_the_sites_headers(tmp_path):
    folder = tmp_path / "records"
    folder.mkdir()
    (folder / "drug_events.csv").write_text(
        "pid,product,dispensed_on,supply_days,mg_per_day\nA,sertraline,2024-01-01,28,100\n"
    )
    site_map = tmp_path / "map.yaml"
    site_map.write_text(
        "drug_events:\n  pid: subject_id\n  product: drug\n  dispensed_on: event_date\n"
        "  supply_days: days_supply\n  mg_per_day: daily_dose_mg\n"
    )
    run_build(BuildRequest(folder, tmp_path / "out", column_map=site_map))
    t = table(tmp_path / "out")
    assert (t.loc[0, "subject_id"], t.loc[0, "end_date"]) == ("A", day("2024-01-28"))


def test_a_map_naming_an_unknown_records_column_is_refused_with_its_key(tmp_path):
    folder = records(tmp_path / "records", [ev("A", "sertraline", "2024-01-01", 28, 100)])
    site_map = tmp_path / "map.yaml"
    site_map.write_text("drug_events:\n  pid: patient\n")
    try:
        run_build(BuildRequest(folder, tmp_path / "out", column_map=site_map))
    except RuleError as exc:
        assert any("drug_events.pid" in p for p in exc.problems)
    else:
        raise AssertionError("the map was accepted")


def test_force_replaces_only_a_folder_trdscreen_wrote(tmp_path):
    folder = records(tmp_path / "records", [ev("A", "sertraline", "2024-01-01", 28, 100)])
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    try:
        run_build(BuildRequest(folder, mine, force=True))
    except OutputExistsError:
        pass
    else:
        raise AssertionError("--force replaced a folder trdscreen did not write")
    assert (mine / "notes.txt").read_text() == "keep me"
    out = tmp_path / "out"
    run_build(BuildRequest(folder, out))
    run_build(BuildRequest(folder, out, force=True))  # its own folder: replaced


def test_no_drug_events_file_is_a_clear_error(tmp_path):
    (tmp_path / "records").mkdir()
    try:
        run_build(BuildRequest(tmp_path / "records", tmp_path / "out"))
    except InputError as exc:
        assert "drug_events" in str(exc)
    else:
        raise AssertionError("an empty folder built")


def test_without_a_subjects_table_every_subject_of_the_events_is_listed(tmp_path):
    # B's only event is set aside: B still reaches the screen, with no course.
    out = built(tmp_path, [
        ev("A", "sertraline", "2024-01-01", 28, 100),
        ev("B", "sertraline", "1900-01-01", 28, 100),
    ])  # fmt: skip
    assert list(table(out, "subjects")["subject_id"]) == ["A", "B"]


def test_the_cli_prints_counts_and_json(tmp_path):
    folder = records(tmp_path / "records", [ev("A", "sertraline", "2024-01-01", 28, 100)])
    result = CliRunner().invoke(
        app, ["build", str(folder), "--out", str(tmp_path / "out"), "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["event_attrition"]["courses"] == 1
    assert "treatments.parquet" in payload["outputs"]


def test_the_readme_example_builds_and_screens_as_worked_by_hand(tmp_path):
    # examples/records, worked in the README's table: R two failed trials of two drugs
    # (eligible); S's second outcome unknown (needs review); T one drug twice and U one
    # failed trial with an add-on overlapping 19 days (< 30: not its augmentation), both
    # excluded. Built rows: U's 150 + 75 mg are summed, S's Zoloft row is a duplicate,
    # U's 1900 event is set aside.
    out = tmp_path / "built"
    run_build(BuildRequest(ROOT / "examples" / "records", out))
    counts = json.loads((out / "manifest.json").read_text())["event_attrition"]
    assert (counts["read"], counts["supply_runs"], counts["courses"]) == (19, 8, 8)
    assert (counts["placeholder_date"], counts["duplicate"], counts["summed"]) == (1, 1, 1)
    t = table(out)
    u = rows_of(t, "U").set_index("drug")
    assert u.loc["venlafaxine", "daily_dose_mg"] == 225
    assert u.loc["aripiprazole", "role"] == "monotherapy"
    _, result = run_cohort(out)
    decided = result.decisions.set_index("subject_id")["decision"].to_dict()
    assert decided == {"R": "eligible", "S": "needs_review", "T": "excluded", "U": "excluded"}


def test_explain_on_a_screened_build_lists_each_courses_events(tmp_path):
    # S (README example): sertraline course from event lines 6 (Zoloft), 7 (its duplicate)
    # and 8; venlafaxine from lines 9 and 10.
    out = tmp_path / "built"
    run_build(BuildRequest(ROOT / "examples" / "records", out))
    run = tmp_path / "run"
    runner = CliRunner()
    assert runner.invoke(app, ["screen", str(out), "--out", str(run), "-q"]).exit_code == 0
    shown = json.loads(runner.invoke(app, ["explain", str(run), "S", "--json"]).stdout)
    lines = {c["drug"]: [e["source_line"] for e in c["built_from"]] for c in shown["courses"]}
    assert lines == {"sertraline": [6, 7, 8], "venlafaxine": [9, 10]}
    statuses = [e["status"] for e in shown["courses"][0]["built_from"]]
    assert statuses == ["used", "duplicate", "used"]
    text = runner.invoke(app, ["explain", str(run), "S"]).stdout
    assert "event line 7: sertraline on 2023-02-01: the same generic, day and dose" in text
    # A build folder altered after the run: no event is shown, and the note says why.
    (out / "course_events.parquet").write_bytes(b"changed")
    shown = json.loads(runner.invoke(app, ["explain", str(run), "S", "--json"]).stdout)
    assert "changed since this run" in shown["build"]["note"]
    assert all(c["built_from"] == [] for c in shown["courses"])


# --------------------------------------------------------------------------- procedures


def sessions(subject: str, procedure: str, first: str, count: int, every: tuple[int, ...]):
    """`count` sessions from `first`, the gaps between them cycling through `every`."""
    out, day = [], date.fromisoformat(first)
    for k in range(count):
        out.append({"subject_id": subject, "date": day.isoformat(), "procedure": procedure})
        day += timedelta(days=every[k % len(every)])
    return out


def test_ect_sessions_are_courses_counted_in_session_days(tmp_path):
    # Subject E: ECT Mon/Wed/Fri from Mon 6 Mar 2023: 7 sessions (6, 8, 10, 13, 15, 17,
    # 20 Mar), one exported twice (a duplicate, not an 8th session). Then rTMS on 10
    # weekdays from Mon 5 Jun (5-9, 12-16 Jun): 78 days after the last ECT (> 30), and
    # another procedure anyway. The ECT course has 7 sessions (>= Sforzini's 6 [U]),
    # HAM-D 30 (3 Mar) -> 27 (21 Mar) = 10 %: a failed adequate ECT trial. The rTMS
    # course has 10 sessions (< 20): not adequate. With sertraline failed before (24 -> 21),
    # E has two failed adequate trials: eligible. A careless count of rows would give ECT
    # 8 sessions; of rTMS weeks (2 weeks) would say nothing of its sessions.
    ect = sessions("E", "ECT", "2023-03-06", 7, (2, 2, 3))
    rtms = sessions("E", "rTMS", "2023-06-05", 10, (1, 1, 1, 1, 3))
    folder = records(
        tmp_path / "records",
        [
            ev("E", "sertraline", "2023-01-02", 28, 100),
            ev("E", "sertraline", "2023-01-30", 28, 100),
        ],
        [
            rating("E", "2022-12-30", 24),
            rating("E", "2023-02-24", 21),
            rating("E", "2023-03-03", 30),
            rating("E", "2023-03-21", 27),
        ],  # fmt: skip
        [{"subject_id": "E"}],
    )
    write_csv(folder / "procedures.csv", [*ect, ect[3], *rtms], ["subject_id", "date", "procedure"])
    out = tmp_path / "built"
    run_build(BuildRequest(folder, out))
    t = table(out).set_index("modality")
    assert t.loc["ect", "sessions"] == 7 and t.loc["rtms", "sessions"] == 10
    assert (t.loc["ect", "start_date"], t.loc["ect", "end_date"]) == (
        day("2023-03-06"), day("2023-03-20"),
    )  # fmt: skip
    assert (t.loc["ect", "hamd_start"], t.loc["ect", "hamd_end"]) == (30, 27)
    assert t.loc["ect", "drug"] == "ECT" and t.loc["ect", "course_id"] == "E:ect1"
    assert list(table(out)["modality"]) == ["pharmacotherapy", "ect", "rtms"]  # by start
    trail = table(out, "procedure_sessions")
    assert list(trail["status"]).count("duplicate") == 1
    assert set(trail.loc[trail["status"] == "used", "treatments_row"]) == {2, 3}
    counts = json.loads((out / "manifest.json").read_text())["event_attrition"]
    assert (counts["procedures_read"], counts["procedures_used"], counts["session_courses"]) == (
        18, 17, 2,
    )  # fmt: skip
    _, result = run_cohort(out)
    row = result.decisions.set_index("subject_id").loc["E"]
    assert (row["decision"], row["n_failed_trials"]) == ("eligible", 2)


# --------------------------------------------------------------------------- episodes


def test_the_current_episode_is_derived_from_treatment_gaps_and_a_depression_diagnosis(
    tmp_path,
):
    # No episode_start is given. Every subject: sertraline 100 mg 15 Jan .. 11 Mar 2023
    # (HAM-D 24 -> 21, failed) and, for W and Y, venlafaxine 150 mg 1 Apr .. 26 May
    # (21 -> 19, failed).
    # V: citalopram 1 Mar .. 25 Apr 2021 (failed too), then nothing for 629 days (> 182):
    #    the current episode begins with sertraline, confirmed by F33.1 on 10 Jan 2023,
    #    five days before it: episode_start 10 Jan. Only sertraline is in it: one failed
    #    trial, excluded. (Counting the 2021 citalopram would say two: "eligible".)
    # W: the only diagnosis near the index is F41.1 (anxiety): no depression diagnosis,
    #    the episode start stays unknown: needs review, never eligible.
    # Y: records from 1 Dec 2022 (observation period), F32.1 on 20 Jan 2023: episode from
    #    15 Jan (the treatment came first); 45 days of observation before it (< 365):
    #    left censored. Two failed trials: eligible, resting on the derived episode.
    def sert(s):
        return [
            ev(s, "sertraline", "2023-01-15", 28, 100),
            ev(s, "sertraline", "2023-02-12", 28, 100),
        ]

    def venla(s):
        return [
            ev(s, "venlafaxine", "2023-04-01", 28, 150),
            ev(s, "venlafaxine", "2023-04-29", 28, 150),
        ]

    events = [
        ev("V", "citalopram", "2021-03-01", 56, 20), *sert("V"),
        *sert("W"), *venla("W"), *sert("Y"), *venla("Y"),
    ]  # fmt: skip
    ratings = [
        rating("V", "2021-02-27", 24), rating("V", "2021-04-20", 22),
        *(r for s in "VWY" for r in (
            rating(s, "2023-01-13", 24), rating(s, "2023-03-09", 21),
            rating(s, "2023-03-30", 21), rating(s, "2023-05-24", 19),
        )),
    ]  # fmt: skip
    # Screened 1 Jul 2023, within 182 days of the last treatment: the episode is current.
    subjects = [
        {"subject_id": s, "episode_start": None, "screening_date": "2023-07-01"} for s in "VWY"
    ]
    folder = records(tmp_path / "records", events, ratings, subjects)
    write_csv(folder / "diagnoses.csv", [
        {"subject_id": "V", "date": "2023-01-10", "code": "F33.1"},
        {"subject_id": "W", "date": "2023-01-10", "code": "F41.1"},
        {"subject_id": "Y", "date": "2023-01-20", "code": "F32.1"},
        {"subject_id": "Y", "date": "2023-01-20", "code": "I10"},
    ], ["subject_id", "date", "code"])  # fmt: skip
    write_csv(folder / "observation_periods.csv", [
        {"subject_id": s, "start_date": "2020-01-01" if s != "Y" else "2022-12-01"}
        for s in "VWY"
    ], ["subject_id", "start_date", "end_date"])  # fmt: skip
    out = tmp_path / "built"
    run_build(BuildRequest(folder, out))
    people = table(out, "subjects").set_index("subject_id")
    assert people.loc["V", "episode_start"] == day("2023-01-10")
    assert pd.isna(people.loc["W", "episode_start"])
    assert people.loc["Y", "episode_start"] == day("2023-01-15")
    assert list(people["episode_source"]) == ["derived", "no_depression_diagnosis", "derived"]
    assert list(people["left_censored"]) == [False, False, True]
    assert people.loc["Y", "diagnoses"] == "F32.1"  # I10 is not a psychiatric entry
    t = table(out)
    assert list(rows_of(t, "V")["episode_id"]) == ["V:e1", "V:e2"]
    _, result = run_cohort(out)
    decisions = result.decisions.set_index("subject_id")
    assert decisions.loc["V", "decision"] == "excluded"
    assert decisions.loc["V", "n_failed_trials"] == 1
    assert decisions.loc["W", "decision"] == "needs_review"
    assert decisions.loc["Y", "decision"] == "eligible"
    assert "episode_derived" in decisions.loc["Y", "assumptions"]
    assert "episode_left_censored" in decisions.loc["Y", "assumptions"]


def test_a_bipolar_code_in_the_records_excludes_even_when_subjects_say_mdd(tmp_path):
    # The subjects table says F33.1 and bipolar false; the diagnoses table holds F31.3
    # (bipolar affective disorder, current episode depressed) a year before screening.
    # Sforzini excludes bipolar depression (item 15): excluded, whatever the trials.
    folder = records(
        tmp_path / "records",
        trial_events("B"),
        [rating("B", "2023-01-30", 24), rating("B", "2023-03-25", 21),
         rating("B", "2023-04-28", 21), rating("B", "2023-06-20", 19)],
        [{"subject_id": "B"}],
    )  # fmt: skip
    write_csv(
        folder / "diagnoses.csv",
        [{"subject_id": "B", "date": "2023-05-15", "code": "F31.3"}],
        ["subject_id", "date", "code"],
    )
    out = tmp_path / "built"
    run_build(BuildRequest(folder, out))
    assert table(out, "subjects").loc[0, "diagnoses"] == "F31.3"
    _, result = run_cohort(out)
    row = result.decisions.set_index("subject_id").loc["B"]
    assert row["decision"] == "excluded"
    assert "EX-BIPOLAR" in row["failed_criteria"]


# --------------------------------------------------------------------------- product names


def test_a_strength_written_in_the_product_name_gives_the_dose(tmp_path):
    # "Sertraline 100mg tablets", 56 tablets, 1 a day: 100 mg/day for 56 days. A liquid,
    # "Fluoxetine 20mg/5ml oral solution", 140 mL at 5 mL a day: 4 mg/mL x 5 = 20 mg/day
    # for 28 days. A combination product names two strengths: no dose is guessed.
    out = built(tmp_path, [
        ev("P", "Sertraline 100mg tablets", "2024-01-01", quantity=56, units_per_day=1),
        ev("L", "Fluoxetine 20mg/5ml oral solution", "2024-01-01", quantity=140, units_per_day=5),
        ev("O", "olanzapine/fluoxetine 6mg/25mg", "2024-01-01", 28),
    ])  # fmt: skip
    t = table(out).set_index("subject_id")
    assert (t.loc["P", "drug"], t.loc["P", "daily_dose_mg"]) == ("sertraline", 100)
    assert t.loc["P", "end_date"] == day("2024-02-25")
    assert t.loc["P", "dose_source"] == "name_strength_x_units_per_day"
    assert (t.loc["L", "daily_dose_mg"], t.loc["L", "end_date"]) == (20, day("2024-01-28"))
    assert pd.isna(t.loc["O", "daily_dose_mg"])


def test_a_code_and_a_name_for_one_drug_on_one_day_are_one_event(tmp_path):
    # One dispensing exported as a name and as an ATC code (N06AB06 = sertraline).
    out = built(tmp_path, [
        ev("A", "sertraline", "2024-01-01", 28, 100),
        ev("A", "Lustral", "2024-01-01", 28, 100, atc_code="N06AB06"),
    ])  # fmt: skip
    assert list(table(out, "course_events")["status"]) == ["used", "duplicate"]


def test_a_free_text_quantity_is_an_error_with_its_line_not_a_guess(tmp_path):
    # "1 pack" says nothing of how many tablets: the build stops and says where.
    folder = records(tmp_path / "records", [
        ev("A", "sertraline", "2024-01-01", quantity="56.000", units_per_day=1, strength_mg=50),
        ev("A", "sertraline", "2024-02-26", quantity="1 pack", units_per_day=1, strength_mg=50),
    ])  # fmt: skip
    try:
        run_build(BuildRequest(folder, tmp_path / "out"))
    except InputError as exc:
        assert any("line 3" in p and "quantity" in p for p in exc.problems), exc.problems
    else:
        raise AssertionError("a free-text quantity was read")
    assert not (tmp_path / "out").exists()


def test_a_low_dose_for_sleep_is_built_as_given_and_is_not_an_adequate_trial(tmp_path):
    # Amitriptyline 10 mg at night for 8 weeks (a sleep or pain dose), HAM-D 24 -> 22:
    # built at 10 mg/day; the screen's minimum (far above 10) makes it not adequate, so
    # it is no failed trial. Reading "8 weeks of an antidepressant" would count it.
    out = built(
        tmp_path,
        [
            ev("A", "amitriptyline", "2023-02-01", 28, 10),
            ev("A", "amitriptyline", "2023-03-01", 28, 10),
        ],
        [rating("A", "2023-01-30", 24), rating("A", "2023-03-25", 22)],
        [{"subject_id": "A"}],
    )
    assert table(out).loc[0, "daily_dose_mg"] == 10
    _, result = run_cohort(out)
    assert result.decisions.set_index("subject_id").loc["A", "n_failed_trials"] == 0


def test_synth_records_writes_a_records_folder_that_builds_and_screens(tmp_path):
    # 300 synthetic subjects as fills of 28 days and ratings: every subject reaches the
    # built folder and the screen; a course of D days is ceil(D / 28) fills.
    runner = CliRunner()
    folder = tmp_path / "records"
    done = runner.invoke(
        app, ["synth", "--n-subjects", "300", "--out", str(folder), "--records", "-q"]
    )
    assert done.exit_code == 0, done.output
    events = pd.read_parquet(folder / "drug_events.parquet")
    assert set(events["days_supply"]) <= set(range(1, 29))
    out = tmp_path / "built"
    run_build(BuildRequest(folder, out))
    assert len(table(out, "subjects")) == 300
    run = tmp_path / "run"
    assert runner.invoke(app, ["screen", str(out), "--out", str(run), "-q"]).exit_code == 0
    decisions = pd.read_csv(run / "decisions.csv")
    assert len(decisions) == 300 and (decisions["decision"] == "eligible").any()


# --------------------------------------------------------------------------- OMOP


def test_a_hand_made_omop_extract_builds_and_screens_as_worked_by_hand(tmp_path):
    # tests/omop: person 1 has sertraline 100 MG tablets, 28 a fill for 28 days (100
    # mg/day) from 1 Feb and 1 Mar 2023, then venlafaxine 75 MG capsules, 56 for 28 days
    # (150 mg/day) from 1 May (the second fill ends 25 Jun as given); HAM-D totals under
    # the site's concept 90031: 24 -> 21 and 21 -> 19 (12.5 %, 9.5 %). F33.1 on 10 Jan
    # confirms the episode (derived start 10 Jan; observed since 2015). Two failed
    # adequate trials; the subjects' bipolar flag is not in OMOP, so EX-BIPOLAR stays
    # unknown: needs review, not eligible.
    # Person 2: fluoxetine 4 MG/ML solution, 140 mL over 28 days = 20 mg/day; two ECT
    # sessions (concept 90041 as the map lists it; 4058736 is not listed); born 1975
    # with no month or day, so the age is unknown, never guessed; no failed trial:
    # excluded. Observed from 1 Dec 2022, under 365 days before: left censored.
    out = tmp_path / "built"
    omop = ROOT / "tests" / "omop"
    run_build(BuildRequest(omop, out, column_map=omop / "omop-map.yaml", as_of=date(2023, 7, 1)))
    t = table(out)
    one = rows_of(t, "1")
    assert list(one["drug"]) == ["sertraline", "venlafaxine"]
    assert list(one["daily_dose_mg"]) == [100, 150]
    assert list(one["end_date"]) == [day("2023-03-28"), day("2023-06-25")]
    assert list(one["first_source_line"]) == [2, 4]  # drug_exposure.csv lines
    two = rows_of(t, "2").set_index("modality")
    assert two.loc["pharmacotherapy", "daily_dose_mg"] == 20
    assert two.loc["ect", "sessions"] == 2
    people = table(out, "subjects").set_index("subject_id")
    assert people.loc["1", "birth_date"] == day("1980-05-10")
    assert pd.isna(people.loc["2", "birth_date"])
    assert list(people["left_censored"]) == [False, True]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["profile"] == "omop"
    assert {i["role"] for i in manifest["inputs"]} >= {"drug_exposure", "concept", "person"}
    rules = preset_data()
    rules["criteria"] = [c for c in rules["criteria"] if c["id"] != "HAMD-SCREEN"]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    _, result = run_cohort(out, tmp_path / "rules.yaml", as_of=date(2023, 7, 1))
    decisions = result.decisions.set_index("subject_id")
    assert decisions.loc["1", "n_failed_trials"] == 2
    assert decisions.loc["1", "decision"] == "needs_review"
    assert decisions.loc["1", "unknown_criteria"] == "EX-BIPOLAR"
    assert decisions.loc["2", "decision"] == "excluded"


def test_a_maps_values_translate_the_records_codes(tmp_path):
    # The site writes "HAM-D 17" and "Montgomery-Asberg"; `values: instrument:` says which
    # scale each is, as it does for the treatments' coded columns.
    folder = records(
        tmp_path / "records",
        [ev("A", "sertraline", "2024-01-01", 56, 100)],
        [rating("A", "2023-12-30", 24, "HAM-D 17"), rating("A", "2024-02-20", 20, "HAM-D 17")],
    )
    site_map = tmp_path / "map.yaml"
    site_map.write_text("values:\n  instrument: {HAM-D 17: hamd17, Montgomery-Asberg: madrs}\n")
    run_build(BuildRequest(folder, tmp_path / "out", column_map=site_map))
    t = table(tmp_path / "out")
    assert (t.loc[0, "hamd_start"], t.loc[0, "hamd_end"]) == (24, 20)


HOSTILE = {
    "control characters": '"\x1b[31mSECRET-A\x1b[0m",2024-01-01,28,100',
    "formula": "=SECRET-B|' /C calc'!A0,2024-01-01,28,100",
    "a line break": '"SECRET\nC",2024-01-01,28,100',
    "right-to-left": "SECRET-D\u202e,2024-01-01,28,100",
    "a huge number": "SECRET-E,2024-01-01,1e308,100",
    "a far date": "SECRET-F,9999-12-31,28,100",
    "a negative supply": "SECRET-G,2024-01-01,-5,100",
}


def test_hostile_drug_cells_never_crash_the_build_or_reach_the_terminal(tmp_path):
    # Each drug cell (or its row) is hostile; the build either builds (the text stays in
    # the Parquet tables, never on the terminal) or stops with exit 4 naming the line.
    runner = CliRunner()
    for k, (what, row) in enumerate(HOSTILE.items()):
        folder = tmp_path / f"case{k}"
        folder.mkdir()
        (folder / "drug_events.csv").write_text(
            f"subject_id,drug,event_date,days_supply,daily_dose_mg\nS,{row}\n", "utf-8"
        )
        done = runner.invoke(app, ["build", str(folder), "--out", str(tmp_path / f"out{k}")])
        assert done.exit_code in (0, 4), (what, done.output)
        assert "SECRET" not in done.output, what
        assert "internal error" not in done.output, what


def test_verify_builds_a_build_folder_again_and_names_what_changed(tmp_path):
    # examples/records built, then verified: every table matches its manifest and comes
    # out byte for byte the same when built again. A changed input file, or an altered
    # table, makes it "not verified" (exit 6), naming the file.
    folder = tmp_path / "records"
    shutil.copytree(ROOT / "examples" / "records", folder)
    out = tmp_path / "built"
    run_build(BuildRequest(folder, out))
    runner = CliRunner()
    done = runner.invoke(app, ["verify", str(out), "--json"])
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["status"] == "verified" and payload["reran"] is True
    with open(folder / "drug_events.csv", "a") as handle:
        handle.write("R,sertraline,2023-07-01,dispensed,28,,,,100\n")
    done = runner.invoke(app, ["verify", str(out), "--json"])
    assert done.exit_code == 6
    assert any("drug_events.csv" in p for p in json.loads(done.stdout)["problems"])
    shutil.copy(ROOT / "examples" / "records" / "drug_events.csv", folder / "drug_events.csv")
    (out / "treatments.parquet").write_bytes(b"altered")
    done = runner.invoke(app, ["verify", str(out), "--json"])
    assert done.exit_code == 6
    assert any("treatments.parquet" in p for p in json.loads(done.stdout)["problems"])


def test_a_duration_guessed_from_the_next_issue_is_named_among_the_assumptions(tmp_path):
    # Sertraline 100 mg issued 2 Jan and 30 Jan 2023 with no supply, quantity or end:
    # each lasts to the next issue (28 days); the 27 Feb issue has 28 days' supply: one
    # course 2 Jan .. 26 Mar (12 weeks), HAM-D 24 -> 21 (12.5 %): failed, but its length
    # rests on the guess. Venlafaxine 150 mg 1 May .. 25 Jun (given supplies), 21 -> 19:
    # failed. Eligible, and `duration_assumed` is named beside the decision.
    out = built(
        tmp_path,
        [
            ev("G", "sertraline", "2023-01-02", strength_mg=100, units_per_day=1),
            ev("G", "sertraline", "2023-01-30", strength_mg=100, units_per_day=1),
            ev("G", "sertraline", "2023-02-27", 28, strength_mg=100, units_per_day=1),
            ev("G", "venlafaxine", "2023-05-01", 28, 150),
            ev("G", "venlafaxine", "2023-05-29", 28, 150),
        ],
        [rating("G", "2022-12-30", 24), rating("G", "2023-03-20", 21),
         rating("G", "2023-04-28", 21), rating("G", "2023-06-20", 19)],
        [{"subject_id": "G"}],
    )  # fmt: skip
    t = table(out).set_index("drug")
    assert t.loc["sertraline", "end_date"] == day("2023-03-26")
    assert bool(t.loc["sertraline", "duration_assumed"]) is True
    assert bool(t.loc["venlafaxine", "duration_assumed"]) is False
    _, result = run_cohort(out)
    row = result.decisions.set_index("subject_id").loc["G"]
    assert row["decision"] == "eligible"
    assert "duration_assumed" in row["assumptions"]


def test_screen_profile_builds_first_then_screens_and_both_verify(tmp_path):
    # `screen RECORDS --profile events`: the courses are built into OUT-built (a build
    # folder with its manifest) and screened from there; the README's hand-worked
    # decisions come out, and the run and the build each verify.
    runner = CliRunner()
    out = tmp_path / "run"
    done = runner.invoke(
        app, ["screen", str(ROOT / "examples" / "records"), "--profile", "events",
              "--out", str(out), "--json"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    payload = json.loads(done.stdout)
    assert payload["build"] == str(tmp_path / "run-built")
    decided = pd.read_csv(out / "decisions.csv").set_index("subject_id")["decision"].to_dict()
    assert decided == {"R": "eligible", "S": "needs_review", "T": "excluded", "U": "excluded"}
    manifest = json.loads((out / "manifest.json").read_text())
    treatments = next(i for i in manifest["inputs"] if i["role"] == "treatments")
    assert treatments["path"] == str(tmp_path / "run-built" / "treatments.parquet")
    assert runner.invoke(app, ["verify", str(out), "-q"]).exit_code == 0
    assert runner.invoke(app, ["verify", str(tmp_path / "run-built"), "-q"]).exit_code == 0
    refused = runner.invoke(
        app, ["screen", str(ROOT / "examples" / "records"), "--profile", "events",
              "--subjects", "x.csv", "--out", str(tmp_path / "other")],
    )  # fmt: skip
    assert refused.exit_code == 2 and "--subjects with --profile" in refused.output


def test_an_omop_extract_without_its_optional_columns_still_builds(tmp_path):
    # An extract that leaves out what it does not fill (no end dates, supplies or
    # quantities, no concept classes or strengths): no crash and no dose guessed; without
    # concept classes no ingredient is known, so a drug is its product name, which the
    # formulary may still resolve ("sertraline 100 MG Oral Tablet" is sertraline).
    extract = tmp_path / "omop"
    shutil.copytree(ROOT / "tests" / "omop", extract)
    for name, keep in (("drug_exposure", 4), ("concept", 2), ("drug_strength", 2)):
        lines = (extract / f"{name}.csv").read_text().splitlines()
        (extract / f"{name}.csv").write_text(
            "\n".join(",".join(line.split(",")[:keep]) for line in lines) + "\n"
        )
    out = tmp_path / "built"
    run_build(BuildRequest(extract, out, column_map=extract / "omop-map.yaml"))
    t = table(out)
    assert t["daily_dose_mg"].isna().all()
    assert {"sertraline", "fluoxetine"} <= set(t["drug"])


def test_dispensings_without_ratings_fail_only_by_an_opted_in_inference(tmp_path):
    # K: sertraline 100 mg dispensed 1 Feb and 1 Mar (28 days each): 1 Feb .. 28 Mar, no
    # gaps (pdc 1). Venlafaxine 150 mg from 1 Apr (day 59 of sertraline) to 26 May;
    # mirtazapine 30 mg from 15 Jun (day 75 of venlafaxine). No ratings at all.
    # Sforzini as shipped: three unknown outcomes, needs review (the builder never writes
    # a nonresponse). With outcome.infer_failure_from: switch_or_augment, each switch
    # within 98 days of a course's first day infers that course's failure: sertraline and
    # venlafaxine failed, `inferred`; mirtazapine (nothing follows) unknown. Two failures:
    # eligible, naming failure_inferred; explain says "FAILED trial (inferred)".
    events = [
        ev("K", "sertraline", "2023-02-01", 28, 100), ev("K", "sertraline", "2023-03-01", 28, 100),
        ev("K", "venlafaxine", "2023-04-01", 28, 150), ev("K", "venlafaxine", "2023-04-29", 28, 150),
        ev("K", "mirtazapine", "2023-06-15", 28, 30), ev("K", "mirtazapine", "2023-07-13", 28, 30),
    ]  # fmt: skip
    out = built(tmp_path, events, (), [{"subject_id": "K"}])
    assert "hamd_end" not in table(out) or table(out)["hamd_end"].isna().all()
    runner = CliRunner()
    plain = tmp_path / "plain"
    assert runner.invoke(app, ["screen", str(out), "--out", str(plain), "-q"]).exit_code == 0
    decided = pd.read_csv(plain / "decisions.csv").set_index("subject_id").loc["K"]
    assert decided["decision"] == "needs_review"
    rules = preset_data()
    rules["outcome"]["infer_failure_from"] = "switch_or_augment"
    rule_file = tmp_path / "inferring.yaml"
    rule_file.write_text(yaml.safe_dump(rules))
    run = tmp_path / "run"
    done = runner.invoke(
        app, ["screen", str(out), "--rules", str(rule_file), "--out", str(run), "-q"]
    )
    assert done.exit_code == 0, done.output
    decided = pd.read_csv(run / "decisions.csv").set_index("subject_id").loc["K"]
    assert decided["decision"] == "eligible" and decided["n_failed_trials"] == 2
    assert decided["assumptions"] == "failure_inferred"
    courses = pd.read_csv(run / "courses.csv").sort_values("start_date")
    # refills touching one another are one treatments row per drug
    assert list(courses["failed"].astype(str)) == ["inferred", "inferred", "unknown"]
    shown = json.loads(runner.invoke(app, ["explain", str(run), "K", "--json"]).stdout)
    assert [c["failed"] for c in shown["courses"]] == ["inferred", "inferred", "unknown"]
    text = runner.invoke(app, ["explain", str(run), "K"]).stdout
    assert "FAILED trial (inferred)" in text and "failure_inferred" in text
    report = (run / "report.html").read_text()
    assert report.count('data-verdict="inferred"') == 2 and "FAILED trial (inferred)" in report


# --------------------------------------------------------------------------- code systems


def test_codes_of_other_systems_are_named_by_the_sites_code_list(tmp_path):
    # A site's drug_codes list (made-up codes: no vocabulary is bundled):
    #   ndc 12345-678-90 -> "Sertraline 100mg tablets" (5-3-2 written, 12345067890 compared)
    #   rxnorm 900001 -> sertraline, strength 100 mg
    #   bnf TESTBNF001 -> "Venlafaxine 75mg tablets"
    # P: 2 Jan the NDC, 28 tablets, 1 a day (100 mg from the product name) and, the same
    # day, "sertraline" 100 mg 28 days: one event, not a double dose. 30 Jan the RxNorm
    # code, 28 x 1 a day at the listed 100 mg: sertraline 2 Jan .. 26 Feb, HAM-D 24 (30
    # Dec) -> 21 (24 Feb) = 12.5 %: failed. 1 Apr the BNF code written in lower case, 2 a
    # day for 28 days = 150 mg: venlafaxine 1 .. 28 Apr, 21 (30 Mar) -> 19 (26 Apr) = 9.5 %:
    # failed. Two failures: eligible.
    # Q: sertraline by name 2 Jan .. 26 Feb (failed as P's), then a dm+d code the list does
    # not hold, 56 days. Dropping it would exclude Q (one failure); kept under its code it is
    # an unknown drug, a possible second failure: needs review.
    events = [
        ev("P", "12345-678-90", "2023-01-02", 28, code_system="NDC", quantity=28, units_per_day=1),
        ev("P", "sertraline", "2023-01-02", 28, 100),
        ev("P", "900001", "2023-01-30", None, code_system="rxnorm", quantity=28, units_per_day=1),
        ev("P", "testbnf001", "2023-04-01", 28, code_system="bnf", units_per_day=2),
        ev("Q", "sertraline", "2023-01-02", 56, 100),
        ev("Q", "39000000001", "2023-04-01", 56, code_system="dmd", units_per_day=1),
    ]  # fmt: skip
    ratings = [
        rating(s, d, t)
        for s in "PQ"
        for d, t in (("2022-12-30", 24), ("2023-02-24", 21), ("2023-03-30", 21), ("2023-04-26", 19))
    ]
    folder = records(tmp_path / "records", [], ratings, [{"subject_id": "P"}, {"subject_id": "Q"}])
    write_csv(folder / "drug_events.csv", events, [*EVENT_COLUMNS, "code_system"])
    write_csv(
        folder / "drug_codes.csv",
        [
            {"code_system": "ndc", "code": "12345-678-90", "drug": "Sertraline 100mg tablets"},
            {"code_system": "RxNorm", "code": "900001", "drug": "sertraline", "strength_mg": 100},
            {"code_system": "bnf", "code": "TESTBNF001", "drug": "Venlafaxine 75mg tablets"},
        ],
        ["code_system", "code", "drug", "strength_mg"],
    )
    out = tmp_path / "built"
    result = run_build(BuildRequest(folder, out))
    assert "drug_codes" in {i["role"] for i in result.manifest["inputs"]}
    t = rows_of(table(out), "P")
    assert list(t["drug"].astype(str)) == ["sertraline", "venlafaxine"]
    assert list(t["daily_dose_mg"]) == [100.0, 150.0]
    assert list(t["start_date"]) == [day("2023-01-02"), day("2023-04-01")]
    assert list(t["end_date"]) == [day("2023-02-26"), day("2023-04-28")]
    q = rows_of(table(out), "Q")
    assert list(q["drug"].astype(str)) == ["sertraline", "DMD 39000000001"]
    trail = table(out, "course_events")
    assert list(trail["drug"].astype(str))[:4] == [
        "12345-678-90",
        "sertraline",
        "900001",
        "testbnf001",
    ]
    assert sorted(trail["status"].astype(str))[:1] == ["duplicate"]
    steps = table(out, "event_attrition").set_index("step")["count"]
    assert steps["codes_listed"] == 3 and steps["codes_not_listed"] == 1
    _, screened = run_cohort(out)
    decided = screened.decisions.set_index("subject_id")["decision"]
    assert decided["P"] == "eligible" and decided["Q"] == "needs_review"


def test_a_code_listed_twice_with_different_drugs_is_refused_with_its_lines(tmp_path):
    folder = records(tmp_path / "records", [], (), [{"subject_id": "P"}])
    write_csv(
        folder / "drug_events.csv",
        [ev("P", "900001", "2023-01-02", 28, 100, code_system="rxnorm")],
        [*EVENT_COLUMNS, "code_system"],
    )
    write_csv(
        folder / "drug_codes.csv",
        [{"code_system": "rxnorm", "code": "900001", "drug": "sertraline"},
         {"code_system": "rxnorm", "code": " 900001", "drug": "fluoxetine"}],
        ["code_system", "code", "drug"],
    )  # fmt: skip
    with pytest.raises(InputError, match=r"drug_codes.csv: line 3, column code: .*line 2"):
        run_build(BuildRequest(folder, tmp_path / "built"))
    assert not (tmp_path / "built").exists()


def test_events_outside_every_observation_period_are_set_aside_with_a_reason(tmp_path):
    # O is observed 1 Jan .. 31 Dec 2023 and from 1 Mar 2024 (open). Sertraline filled
    # 1 Nov 2022 (before the first period) and venlafaxine 15 Jan 2024 (between the
    # periods) are set aside as outside_observation_period, not used; escitalopram 1 Jun
    # 2023 and mirtazapine 10 Mar 2024 are inside and used. O2 has no period: nothing
    # says when its records are complete, so its event is used. An ECT session on 20 Jan
    # 2024 falls between O's periods too.
    events = [
        ev("O", "sertraline", "2022-11-01", 28, 100),
        ev("O", "escitalopram", "2023-06-01", 28, 10),
        ev("O", "venlafaxine", "2024-01-15", 28, 150),
        ev("O", "mirtazapine", "2024-03-10", 28, 30),
        ev("O2", "sertraline", "2022-11-01", 28, 100),
    ]
    folder = records(tmp_path / "records", events, (), [{"subject_id": "O"}, {"subject_id": "O2"}])
    write_csv(
        folder / "observation_periods.csv",
        [{"subject_id": "O", "start_date": "2024-03-01", "end_date": ""},
         {"subject_id": "O", "start_date": "2023-01-01", "end_date": "2023-12-31"}],
        ["subject_id", "start_date", "end_date"],
    )  # fmt: skip
    write_csv(
        folder / "procedures.csv",
        [{"subject_id": "O", "date": "2024-01-20", "procedure": "ECT"}],
        ["subject_id", "date", "procedure"],
    )
    out = tmp_path / "built"
    run_build(BuildRequest(folder, out))
    trail = table(out, "course_events")
    status = dict(
        zip(
            trail["subject_id"] + " " + trail["drug"].astype(str),
            trail["status"].astype(str),
            strict=True,
        )
    )
    assert status == {
        "O sertraline": "outside_observation_period", "O escitalopram": "used",
        "O venlafaxine": "outside_observation_period", "O mirtazapine": "used",
        "O2 sertraline": "used",
    }  # fmt: skip
    steps = table(out, "event_attrition").set_index("step")["count"]
    assert steps["outside_observation_period"] == 2 and steps["used"] == 3
    assert steps["procedures_outside_observation_period"] == 1
    assert set(table(out)["drug"].astype(str)) == {"escitalopram", "mirtazapine", "sertraline"}
