"""`trdscreen build`: the ratings of a course made of several supply runs.

A course can hold several rows of the treatments table (a dose step, a supply gap of
at most `gap_days`). The screen judges such a course on its first row's baseline and
its last row's end rating, and judges every row on its own ratings as well: a row that
rated a response or remission the course's ends do not show leaves the outcome unknown
(`segments_disagree`). So each row built from records carries its own run's baseline
and end rating (found as a course's are: buildratings), not only the course's ends.

Expected values are worked out by hand from the build rules (BUILD_TAGS: gap_days 30,
ratings windows 30/7 days around the first day, 14 days around the last and at least 14
days after the baseline) and the sforzini-2021 preset (mirtazapine at least 30 mg/day,
sertraline 50; at least 4 weeks; improvement < 25 % fails; an end rating <= 7 is
remission; adherence at least 0.8).
"""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from tests.conftest import run_cohort
from tests.test_build import built, ev, rating, rows_of, table
from trdscreen.cli import app


def sertraline_failure(subject: str) -> tuple[list[dict], list[dict]]:
    # Sertraline 100 mg 1 Feb .. 28 Mar 2023 (8 weeks), 24 (30 Jan) -> 21 (25 Mar):
    # 12.5 %, a failed adequate trial.
    events = [
        ev(subject, "sertraline", "2023-02-01", 28, 100),
        ev(subject, "sertraline", "2023-03-01", 28, 100),
    ]
    return events, [rating(subject, "2023-01-30", 24), rating(subject, "2023-03-25", 21)]


def mirtazapine_with_a_gap(subject: str) -> list[dict]:
    # Mirtazapine 30 mg 1 May .. 25 Jun 2023 (two 28-day fills), no supply 26 Jun .. 19
    # Jul (24 days: within gap_days, one course), again 20 Jul .. 13 Sep.
    return [
        ev(subject, "mirtazapine", day, 28, 30)
        for day in ("2023-05-01", "2023-05-29", "2023-07-20", "2023-08-17")
    ]


def test_a_remission_before_a_supply_gap_is_not_lost_in_the_merged_course(tmp_path):
    # U: mirtazapine 30 mg 1 May .. 25 Jun (two 28-day fills), rated 22 on 1 May and 6 on
    # 25 Jun (remission); no supply for 24 days (26 Jun .. 19 Jul, within gap_days 30:
    # the same course); again 20 Jul .. 13 Sep, rated 21 on 20 Jul and 20 on 13 Sep.
    # Course ends: 22 (1 May) -> 20 (13 Sep), 9.1 %: read carelessly a failed adequate
    # trial, which with sertraline's makes two and U "eligible". But the first run
    # remitted (22 -> 6): the rows disagree, mirtazapine's outcome is unknown, and with
    # one failed trial and one unknown TRD-MIN cannot be decided: needs review.
    # Row 1's own end: nearest 25 Jun within 11 Jun .. 9 Jul -> 6. Row 2's own
    # baseline: nearest 20 Jul within 20 Jun .. 27 Jul: 25 Jun (25 days before) or 20
    # Jul (the day) -> 21.
    # W: the control. Mirtazapine 15 mg 1 .. 14 May, then 30 mg 15 May .. 9 Jul, rated 22
    # (1 May), 21 (15 May), 20 (9 Jul): no row improves by 25 %, the course 22 -> 20
    # (9.1 %) with 8 weeks at 30 mg is a failed adequate trial; with sertraline's,
    # eligible. Row 1's own end: nearest 14 May, at least 14 days after 1 May -> 21 (15
    # May); row 2's own baseline: 21 (15 May).
    events, ratings = [], []
    for subject in "UW":
        more_events, more_ratings = sertraline_failure(subject)
        events += more_events
        ratings += more_ratings
    events += mirtazapine_with_a_gap("U") + [
        ev("W", "mirtazapine", "2023-05-01", 14, 15),
        ev("W", "mirtazapine", "2023-05-15", 28, 30),
        ev("W", "mirtazapine", "2023-06-12", 28, 30),
    ]
    ratings += [
        rating("U", "2023-05-01", 22), rating("U", "2023-06-25", 6),
        rating("U", "2023-07-20", 21), rating("U", "2023-09-13", 20),
        rating("W", "2023-05-01", 22), rating("W", "2023-05-15", 21),
        rating("W", "2023-07-09", 20),
    ]  # fmt: skip
    out = built(tmp_path, events, ratings, [{"subject_id": s} for s in "UW"])
    t = table(out)
    for subject, starts, ends, course in (
        ("U", [22, 21], [6, 20], "U:2"),
        ("W", [22, 21], [21, 20], "W:2"),
    ):
        rows = rows_of(t, subject)
        mirtazapine = rows[rows["drug"] == "mirtazapine"]
        assert list(mirtazapine["course_id"]) == [course, course]  # one course, two rows
        assert list(mirtazapine["hamd_start"].astype("Int64")) == starts
        assert list(mirtazapine["hamd_end"].astype("Int64")) == ends
    u = rows_of(t, "U")
    assert list(u["hamd_end_date"].astype(str)[1:]) == ["2023-06-25", "2023-09-13"]

    _, result = run_cohort(out)
    decisions = result.decisions.set_index("subject_id")
    courses = result.courses
    u_mirtazapine = courses[(courses["subject_id"] == "U") & (courses["drug"] == "mirtazapine")]
    assert set(u_mirtazapine["failed"]) == {"unknown"}
    assert all("segments_disagree" in r for r in u_mirtazapine["reasons"])
    assert decisions.loc["U", "decision"] == "needs_review"
    assert decisions.loc["U", "n_failed_trials"] == 1
    assert decisions.loc["W", "decision"] == "eligible"
    assert decisions.loc["W", "n_failed_trials"] == 2


def test_a_runs_rating_on_another_ham_d_version_than_its_course_is_left_empty(tmp_path):
    # Sertraline 100 mg 1 Jan .. 25 Feb 2024, then again 10 .. 23 Mar (a 13-day gap: one
    # course). HAM-D17 24 (1 Jan) and 20 (23 Mar) give the course its version, 17. The
    # second run's own baseline would be the HAM-D21 of 10 Mar (30): a 21-item total is
    # never compared with 17-item ones, so that cell stays empty (the screen would
    # otherwise read 30 -> 20 as a response on that row).
    out = built(
        tmp_path,
        [
            ev("V", "sertraline", "2024-01-01", 56, 100),
            ev("V", "sertraline", "2024-03-10", 14, 100),
        ],
        ratings=[
            rating("V", "2024-01-01", 24),
            rating("V", "2024-03-10", 30, "HAMD21"),
            rating("V", "2024-03-23", 20),
        ],
    )
    t = table(out)
    assert list(t["hamd_version"]) == [17, 17]
    assert t.loc[0, "hamd_start"] == 24 and pd.isna(t.loc[1, "hamd_start"])
    assert t.loc[1, "hamd_end"] == 20


def test_the_lowest_rating_between_a_courses_ends_is_written_and_screened(tmp_path):
    # H: citalopram 20 mg 1 Jan .. 30 Apr 2024 (four 30-day fills, one row). HAM-D17 22 on
    # 1 Jan (baseline), 9 on 1 Feb, 6 on 15 Feb and 6 on 1 Mar, 21 on 30 Apr (the end
    # rating). The ends give 22 -> 21 (4.5 %): read alone a failed adequate trial. The
    # lowest strictly between them is 6, the earlier of the two (15 Feb, line 4 of the
    # ratings file): remission (<= 7), so the screen leaves the outcome unknown.
    # K, the control: the same course rated 22, 19 (1 Feb), 21: no rating in between
    # reaches 25 %, a failed trial.
    events = [ev(s, "citalopram", d, 30, 20) for s in "HK"
              for d in ("2024-01-01", "2024-01-31", "2024-03-01", "2024-03-31")]  # fmt: skip
    ratings = [
        rating("H", "2024-01-01", 22), rating("H", "2024-02-01", 9),
        rating("H", "2024-02-15", 6), rating("H", "2024-03-01", 6),
        rating("H", "2024-04-29", 21),
        rating("K", "2024-01-01", 22), rating("K", "2024-02-01", 19),
        rating("K", "2024-04-29", 21),
    ]  # fmt: skip
    subjects = [{"subject_id": s, "episode_start": "2023-12-01"} for s in "HK"]
    out = built(tmp_path, events, ratings, subjects)
    t = table(out).set_index("subject_id")
    assert (t.loc["H", "hamd_start"], t.loc["H", "hamd_end"], t.loc["H", "hamd_lowest"]) == (
        22, 21, 6,
    )  # fmt: skip
    assert str(t.loc["H", "hamd_lowest_date"]) == "2024-02-15"
    assert t.loc["H", "hamd_lowest_line"] == 4
    assert t.loc["K", "hamd_lowest"] == 19
    assert t["madrs_lowest"].isna().all()

    _, result = run_cohort(out)
    courses = result.courses.set_index("subject_id")
    assert courses.loc["H", "failed"] == "unknown"
    assert "interim_response" in courses.loc["H", "reasons"]
    assert courses.loc["K", "failed"] == "met"

    # `explain` shows a coordinator the ratings behind the verdict, with their lines in
    # the ratings file (header line 1: H's 22 on line 2, 6 on line 4, 21 on line 6).
    runner = CliRunner()
    run = tmp_path / "run"
    assert runner.invoke(app, ["screen", str(out), "--out", str(run), "-q"]).exit_code == 0
    text = runner.invoke(app, ["explain", str(run), "H"]).stdout
    assert (
        "ratings (assessments.csv): HAM-D17 22 on 2024-01-01 (line 2) -> 21 on 2024-04-29 "
        "(line 6), lowest between 6 on 2024-02-15 (line 4)"
    ) in text
    shown = json.loads(runner.invoke(app, ["explain", str(run), "H", "--json"]).stdout)
    assert shown["courses"][0]["built_ratings"]["hamd_lowest"] == 6


def test_a_rating_in_a_supply_gap_is_not_the_courses_interim_rating(tmp_path):
    # G: sertraline's failed trial (as above), then mirtazapine 30 mg 1 May .. 25 Jun,
    # no mirtazapine for 24 days (one course: gap <= 30) while fluoxetine 20 mg is given
    # 26 Jun .. 9 Jul, then mirtazapine 20 Jul .. 13 Sep. Rated 22 (1 May), 20 (25 Jun),
    # 6 (9 Jul, on fluoxetine: a remission), 21 (20 Jul), 20 (13 Sep). The 6 fell on no
    # day of mirtazapine supply: it is fluoxetine's end rating, not mirtazapine's. The
    # mirtazapine days rated between its ends hold 20 (25 Jun) and 21 (20 Jul): lowest
    # 20, 9 % from 22, no response; its rows 22 -> 20 and 21 -> 20 agree: a failed
    # adequate trial (adherence 112 of 136 days, 0.82). Fluoxetine, 14 days rated 20 ->
    # 6, remitted and is no failure. Sertraline and mirtazapine: two failed trials of
    # two drugs, eligible. Counting the gap's 6 as mirtazapine's would have left it
    # unknown (needs review) for a remission on another drug.
    events, ratings = sertraline_failure("G")
    events += [*mirtazapine_with_a_gap("G"), ev("G", "fluoxetine", "2023-06-26", 14, 20)]
    ratings += [
        rating("G", "2023-05-01", 22), rating("G", "2023-06-25", 20),
        rating("G", "2023-07-09", 6), rating("G", "2023-07-20", 21),
        rating("G", "2023-09-13", 20),
    ]  # fmt: skip
    out = built(tmp_path, events, ratings, [{"subject_id": "G"}])
    t = table(out)
    mirtazapine = t[t["drug"] == "mirtazapine"].reset_index(drop=True)
    assert mirtazapine.loc[1, "hamd_lowest"] == 20
    assert str(mirtazapine.loc[1, "hamd_lowest_date"]) == "2023-06-25"
    _, result = run_cohort(out)
    courses = result.courses.set_index("drug")
    assert courses.loc["fluoxetine", "failed"] == "not_met"
    assert set(courses.loc["mirtazapine", "failed"]) == {"met"}
    decision = result.decisions.set_index("subject_id").loc["G"]
    assert (decision["decision"], decision["n_failed_trials"]) == ("eligible", 2)
