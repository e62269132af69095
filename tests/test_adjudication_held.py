"""A reviewer's `eligible` is an answer to the question the worklist asked: the computed
decision and the criteria unknown then. When a later export changes that question (a
bipolar flag filled in, a score gone missing), the answer is held and the subject goes
back to review: applied as written, it would enrol a subject the data now exclude.

Every subject below has, under sforzini-2021, two failed adequate trials in the current
episode (sertraline 100 mg/day for 8 weeks, HAM-D 24 to 22, about 8 % better;
escitalopram 20 mg/day for 8 weeks, 22 to 20, about 9 %: both under 25 %, both at or
above the minimum dose), MDD (F33.1), age 44, HAM-D 24 at screening. Only `bipolar` and
`hamd_screening` vary: with `bipolar` empty, EX-BIPOLAR is unknown and the subject
needs review (like sample subject S033)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import write_cohort
from trdscreen import api
from trdscreen.cli import app

COURSES = [
    {"drug": "sertraline", "daily_dose_mg": 100, "start_date": "2023-02-01",
     "end_date": "2023-03-28", "adherence": 0.9, "hamd_start": 24, "hamd_end": 22},
    {"drug": "escitalopram", "daily_dose_mg": 20, "start_date": "2023-04-10",
     "end_date": "2023-06-04", "adherence": 0.9, "hamd_start": 22, "hamd_end": 20},
]  # fmt: skip
SUBJECTS = ("P1", "P2", "P3", "P4", "P5")


def cohort(folder: Path, changes: dict[str, dict] | None = None) -> Path:
    courses = [{"subject_id": s, **c} for s in SUBJECTS for c in COURSES]
    subjects = [{"subject_id": s, "bipolar": "", **(changes or {}).get(s, {})} for s in SUBJECTS]
    return write_cohort(folder, courses, subjects)


def decisions(folder: Path, adjudications: Path | None = None) -> pd.DataFrame:
    request = api.ScreenRequest(folder, rules="sforzini-2021", adjudications=adjudications)
    result = api.screen(api.load(request))
    return result.decisions.astype({"decision": "str", "final_decision": "str"}).set_index(
        "subject_id"
    )


ANSWERS = {  # what the reviewer wrote into the worklist of the first export
    "P1": ("eligible", "chart: never manic or hypomanic"),
    "P2": ("eligible", "chart: never manic or hypomanic"),
    "P3": ("excluded", "chart: a manic episode in 2019"),
    "P4": ("eligible", "chart: never manic or hypomanic"),
    "P5": ("eligible", "chart: never manic or hypomanic"),
}


@pytest.fixture(scope="module")
def filled(tmp_path_factory) -> Path:
    """The first export screened, its worklist written by the CLI and filled in."""
    tmp = tmp_path_factory.mktemp("held")
    first = cohort(tmp / "first")
    run = tmp / "run"
    assert CliRunner().invoke(app, ["screen", str(first), "--out", str(run), "-q"]).exit_code == 0
    worklist = tmp / "review.csv"
    result = CliRunner().invoke(app, ["worklist", str(run), "--out", str(worklist)])
    assert result.exit_code == 0, result.output
    table = pd.read_csv(worklist, dtype=str, keep_default_na=False)
    # The columns of 0.8.6 keep their places; the question asked comes after them.
    assert list(table.columns) == [
        "subject_id", "to_resolve", "unknown_criteria", "decision", "reason", "reviewer",
        "date", "criterion", "computed_decision", "computed_reason", "failed_criteria",
    ]  # fmt: skip
    table = table.set_index("subject_id")
    # Every subject was needs_review for EX-BIPOLAR alone: that is the question asked.
    assert table["computed_decision"].tolist() == ["needs_review"] * 5
    assert table["unknown_criteria"].tolist() == ["EX-BIPOLAR"] * 5
    for subject, (decision, reason) in ANSWERS.items():
        table.loc[subject, ["decision", "reason", "reviewer", "date"]] = [
            decision, reason, "Dr. A", "2024-06-20"
        ]  # fmt: skip
    table.reset_index().to_csv(worklist, index=False)
    return worklist


@pytest.fixture(scope="module")
def second(filled, tmp_path_factory) -> pd.DataFrame:
    """The second export, screened with the filled worklist."""
    folder = cohort(
        tmp_path_factory.mktemp("second") / "data",
        {
            "P2": {"bipolar": "true"},  # a bipolar diagnosis recorded since the review
            "P3": {"bipolar": "false"},
            "P4": {"hamd_screening": ""},  # the screening score gone from the export
            "P5": {"bipolar": "false"},
        },
    )
    return decisions(folder, filled)


def test_an_unchanged_question_keeps_the_reviewers_answer(second):
    # P1: still needs_review for EX-BIPOLAR alone, exactly what the reviewer answered.
    row = second.loc["P1"]
    assert (row["decision"], row["final_decision"]) == ("needs_review", "eligible")
    assert row["adjudication_reason"] == "chart: never manic or hypomanic"


def test_an_eligible_on_a_subject_the_data_now_exclude_is_held(second):
    # P2: bipolar is now true, so EX-BIPOLAR is not met and the computed decision is
    # excluded. Read carelessly, the reviewer's eligible (given when bipolar status was
    # unknown) would enrol a subject with a recorded bipolar disorder.
    row = second.loc["P2"]
    assert (row["decision"], row["final_decision"]) == ("excluded", "needs_review")
    assert bool(row["adjudicated"]) and row["adjudicated_by"] == "Dr. A"
    # Excluded by the data, it has nothing to resolve computed; in review, it points at why.
    assert row["to_resolve"].startswith("see adjudication_reason: a reviewer put this")
    assert row["adjudication_reason"] == (
        "held for review: eligible was decided when the computed decision was needs_review "
        "(unknown: EX-BIPOLAR; not met: none); it is now excluded (unknown: none; not met: "
        "EX-BIPOLAR). Reviewer's reason: chart: never manic or hypomanic"
    )


def test_a_reviewers_exclusion_stands_whatever_changed(second):
    # P3: bipolar is now false and the computed decision eligible; the reviewer excluded
    # on chart evidence the export does not carry. An exclusion never enrols anyone.
    row = second.loc["P3"]
    assert (row["decision"], row["final_decision"]) == ("eligible", "excluded")


def test_a_criterion_unknown_since_the_review_holds_the_answer(second):
    # P4: the computed decision is still needs_review, but HAMD-SCREEN is unknown now
    # (no screening score): the reviewer answered about bipolar status only. Comparing
    # the decision alone would keep the eligible on a severity nobody checked.
    row = second.loc["P4"]
    assert row["unknown_criteria"] == "EX-BIPOLAR;HAMD-SCREEN"  # in the protocol's order
    assert (row["decision"], row["final_decision"]) == ("needs_review", "needs_review")
    assert "it is now needs_review (unknown: " in row["adjudication_reason"]


def test_data_that_now_agree_with_the_reviewer_keep_the_answer(second):
    # P5: bipolar is now false: the computed decision is eligible, as the reviewer said.
    row = second.loc["P5"]
    assert (row["decision"], row["final_decision"]) == ("eligible", "eligible")
    assert row["adjudication_reason"] == "chart: never manic or hypomanic"


def test_the_run_counts_summarises_and_audits_held_answers(filled, tmp_path):
    folder = cohort(tmp_path / "data", {"P2": {"bipolar": "true"}})
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app, ["screen", str(folder), "--out", str(out), "--adjudications", str(filled), "--json"]
    )
    assert result.exit_code == 0, result.output
    # Only P2 changed in this export (bipolar true: computed excluded, held to
    # needs_review); the other four are needs_review as reviewed and take the reviewer's
    # eligible (P1, P4, P5) or excluded (P3): five adjudicated, all five changed.
    assert json.loads(result.stdout)["counts"]["adjudicated"] == {
        "subjects": 5, "changed": 5, "held": 1
    }  # fmt: skip
    events = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert [e["subjects"] for e in events if e["event"] == "adjudications_held"] == [1]
    assert "1 reviewer's eligible held for review" in (out / "summary.txt").read_text()
    # The held subject is on the next worklist, with the decision the data now give.
    again = tmp_path / "again.csv"
    assert CliRunner().invoke(app, ["worklist", str(out), "--out", str(again)]).exit_code == 0
    table = pd.read_csv(again, dtype=str, keep_default_na=False).set_index("subject_id")
    assert table.index.tolist() == ["P2"]
    assert table.loc["P2", "computed_decision"] == "excluded"
    assert table.loc["P2", "computed_reason"].startswith("not met: EX-BIPOLAR")


def test_a_worklist_from_before_computed_decision_still_holds(filled, tmp_path):
    # A worklist written by 0.8.6 had to_resolve and unknown_criteria but no
    # computed_decision; it listed subjects to review, so the decision asked about was
    # needs_review, and P2's eligible is held as above.
    old = pd.read_csv(filled, dtype=str, keep_default_na=False).drop(
        columns=["computed_decision", "computed_reason", "failed_criteria"]
    )
    path = tmp_path / "old.csv"
    old.to_csv(path, index=False)
    rows = decisions(cohort(tmp_path / "data", {"P2": {"bipolar": "true"}}), path)
    assert rows.loc["P2", "final_decision"] == "needs_review"
    assert rows.loc["P1", "final_decision"] == "eligible"


def test_a_file_that_records_no_question_applies_as_written(tmp_path):
    # A hand-written file (issue 22's columns only) overrides whatever the data say:
    # the reviewer states no question, so none can have changed. P2 is excluded by its
    # bipolar flag and the reviewer's eligible stands, as it always did.
    path = tmp_path / "adj.csv"
    path.write_text(
        "subject_id,decision,reason,reviewer,date\n"
        "P2,eligible,bipolar flag entered in error,Dr. A,2024-06-20\n"
    )
    rows = decisions(cohort(tmp_path / "data", {"P2": {"bipolar": "true"}}), path)
    assert rows.loc["P2", ["decision", "final_decision"]].tolist() == ["excluded", "eligible"]


def test_a_recorded_decision_that_is_not_one_is_a_located_error(tmp_path):
    path = tmp_path / "adj.csv"
    path.write_text(
        "subject_id,computed_decision,decision,reason,reviewer,date\n"
        "P1,review,eligible,r,Dr. A,2024-06-20\n"
    )
    out = tmp_path / "run"
    folder = cohort(tmp_path / "data")
    result = CliRunner().invoke(
        app, ["screen", str(folder), "--out", str(out), "--adjudications", str(path)]
    )
    assert result.exit_code == 4
    assert "adj.csv:2 column computed_decision: expected one of eligible" in result.output
    assert not out.exists()


def test_force_never_replaces_a_filled_worklist(filled, tmp_path):
    run = tmp_path / "run"
    assert CliRunner().invoke(app, ["screen", str(cohort(tmp_path / "d")), "--out", str(run),
                                    "-q"]).exit_code == 0  # fmt: skip
    before = filled.read_bytes()
    result = CliRunner().invoke(app, ["worklist", str(run), "--out", str(filled), "--force"])
    assert result.exit_code == 5
    assert "5 row(s) hold a reviewer's decision" in result.output
    assert filled.read_bytes() == before
    # An unfilled worklist, this version's or one written before computed_decision, is
    # trdscreen's own and --force replaces it.
    for header in (
        "subject_id,to_resolve,unknown_criteria,decision,reason,reviewer,date,criterion,"
        "computed_decision,computed_reason,failed_criteria",
        "subject_id,to_resolve,unknown_criteria,decision,reason,reviewer,date,criterion",
    ):
        blank = tmp_path / "blank.csv"
        blank.write_text(header + "\nP1" + "," * header.count(",") + "\n")
        result = CliRunner().invoke(app, ["worklist", str(run), "--out", str(blank), "--force"])
        assert result.exit_code == 0, result.output
        assert "computed_decision" in blank.read_text().splitlines()[0]


def test_an_override_of_an_exclusion_is_held_when_another_criterion_fails(tmp_path):
    # P1's screening HAM-D is 15: HAMD-SCREEN (>= 18) is not met, P1 is excluded. The
    # reviewer overrode it ("re-rated 20 at the visit"), recording the question: excluded,
    # not met HAMD-SCREEN. In a later export P1's bipolar flag is true as well: still
    # excluded, so comparing the decision alone keeps the eligible, on a bipolar disorder
    # nobody reviewed. EX-BIPOLAR is not met now and was not then: held. In an export
    # where only HAM-D still fails (the control), the override stands.
    path = tmp_path / "adj.csv"
    path.write_text(
        "subject_id,computed_decision,failed_criteria,decision,reason,reviewer,date\n"
        "P1,excluded,HAMD-SCREEN,eligible,re-rated 20 at the visit,Dr. A,2024-06-20\n"
    )
    low = {"P1": {"bipolar": "false", "hamd_screening": 15}}
    control = decisions(cohort(tmp_path / "same", low), path)
    assert control.loc["P1", ["decision", "final_decision"]].tolist() == ["excluded", "eligible"]
    worse = {"P1": {"bipolar": "true", "hamd_screening": 15}}
    rows = decisions(cohort(tmp_path / "worse", worse), path)
    assert rows.loc["P1", ["decision", "final_decision"]].tolist() == ["excluded", "needs_review"]
    assert (
        "it is now excluded (unknown: none; not met: EX-BIPOLAR;HAMD-SCREEN)"
        in rows.loc["P1", "adjudication_reason"]
    )


# ------------------------------------------------------- the fact the reviewer resolved
# Under sforzini-2021 (two failed adequate trials of distinct drugs, under 25 %
# improvement, at or above the minimum dose): sertraline 100 mg/day for 8 weeks, HAM-D
# 24 to 22 (8 %), is one failed adequate trial. Escitalopram for 8 weeks, 22 to 20 (9 %),
# with no dose: adequate or not is unknown, so TRD-MIN is unknown (one or two failures)
# and the subject needs review, to resolve "escitalopram's daily_dose_mg missing".
SERTRALINE = {
    "drug": "sertraline",
    "daily_dose_mg": 100,
    "start_date": "2023-02-01",
    "end_date": "2023-03-28",
    "adherence": 0.9,
    "hamd_start": 24,
    "hamd_end": 22,
}
ESCITALOPRAM = {
    "drug": "escitalopram",
    "daily_dose_mg": "",
    "start_date": "2023-04-10",
    "end_date": "2023-06-04",
    "adherence": 0.9,
    "hamd_start": 22,
    "hamd_end": 20,
}
# Mirtazapine 30 mg/day (at the minimum) for 8 weeks, no ratings: outcome unknown.
MIRTAZAPINE = {"drug": "mirtazapine", "daily_dose_mg": 30, "start_date": "2023-07-01",
               "end_date": "2023-08-26", "adherence": 0.9}  # fmt: skip


@pytest.fixture(scope="module")
def dose_review(tmp_path_factory) -> tuple[Path, Path]:
    """The first export (Q1, Q2: sertraline, then escitalopram without a dose), its
    worklist written by the CLI, and the reviewer's eligible for both ("chart:
    escitalopram 20 mg/day throughout")."""
    tmp = tmp_path_factory.mktemp("facts")
    rows = [{"subject_id": s, **c} for s in ("Q1", "Q2") for c in (SERTRALINE, ESCITALOPRAM)]
    first = write_cohort(tmp / "first", rows, [{"subject_id": "Q1"}, {"subject_id": "Q2"}])
    run = tmp / "run"
    assert CliRunner().invoke(app, ["screen", str(first), "--out", str(run), "-q"]).exit_code == 0
    worklist = tmp / "review.csv"
    assert CliRunner().invoke(app, ["worklist", str(run), "--out", str(worklist)]).exit_code == 0
    table = pd.read_csv(worklist, dtype=str, keep_default_na=False).set_index("subject_id")
    # The question: TRD-MIN unknown, escitalopram's dose to look up, named by line, drug
    # and start (header = line 1: Q1's escitalopram is line 3, Q2's line 5).
    assert table["unknown_criteria"].tolist() == ["TRD-MIN", "TRD-MIN"]
    assert table.loc["Q1", "to_resolve"] == (
        "treatments.csv line 3 (escitalopram from 2023-04-10): daily_dose_mg missing"
    )
    table[["decision", "reason", "reviewer", "date"]] = [
        "eligible", "chart: escitalopram 20 mg/day throughout", "Dr. A", "2024-06-20"
    ]  # fmt: skip
    table.reset_index().to_csv(worklist, index=False)
    return tmp, worklist


def second_export(folder: Path) -> Path:
    """Q0 comes first now (two lines), so every line of Q1 and Q2 moved. Q1's
    escitalopram is exported at 5 mg/day (under the 10 mg minimum: not adequate, so not a
    failure), and mirtazapine follows it without ratings. Q2's courses are as they were."""
    rows = [
        {"subject_id": "Q0", **SERTRALINE},
        {"subject_id": "Q1", **SERTRALINE},
        {"subject_id": "Q1", **ESCITALOPRAM, "daily_dose_mg": 5},
        {"subject_id": "Q1", **MIRTAZAPINE},
        {"subject_id": "Q2", **SERTRALINE},
        {"subject_id": "Q2", **ESCITALOPRAM},
    ]
    return write_cohort(folder, rows, [{"subject_id": s} for s in ("Q0", "Q1", "Q2")])


def test_an_eligible_is_held_when_the_fact_it_resolved_is_no_longer_the_question(dose_review):
    # Q1 in the second export: one failed adequate trial (sertraline) is known,
    # escitalopram is not adequate (5 mg), mirtazapine's outcome is unknown: TRD-MIN is
    # still unknown and the decision still needs_review, so comparing decision and
    # criteria alone (0.8.9) kept the reviewer's eligible, an enrolment resting on a
    # dose the export now contradicts with one failed trial established. The fact to
    # resolve is another course's now: the answer is held.
    tmp, worklist = dose_review
    rows = decisions(second_export(tmp / "second"), worklist)
    row = rows.loc["Q1"]
    assert (row["decision"], row["unknown_criteria"]) == ("needs_review", "TRD-MIN")
    assert row["final_decision"] == "needs_review"
    assert row["adjudication_reason"] == (
        "held for review: eligible was decided when the computed decision was needs_review "
        "(unknown: TRD-MIN; not met: none; to resolve: treatments.csv line 3 (escitalopram "
        "from 2023-04-10): daily_dose_mg missing); it is now needs_review (unknown: TRD-MIN; "
        "not met: none; to resolve: treatments.csv line 5 (mirtazapine from 2023-07-01): "
        "hamd_start and hamd_end (or improvement, or a stop reason the rule set reads) "
        "missing). Reviewer's reason: chart: escitalopram 20 mg/day throughout"
    )


def test_the_same_fact_on_another_line_keeps_the_answer(dose_review):
    # Q2's courses are unchanged; only their lines moved (escitalopram 5 -> 7). The
    # reviewer's answer is about the same course and the same missing dose: it stands.
    tmp, worklist = dose_review
    rows = decisions(second_export(tmp / "second-q2"), worklist)
    row = rows.loc["Q2"]
    assert row["to_resolve"].startswith("treatments.csv line 7 (escitalopram from 2023-04-10)")
    assert (row["decision"], row["final_decision"]) == ("needs_review", "eligible")
    assert row["adjudication_reason"] == "chart: escitalopram 20 mg/day throughout"


def test_a_fact_recorded_before_courses_were_named_is_compared_with_its_line(dose_review):
    # A worklist of 0.8.9 wrote "treatments.csv line 5: daily_dose_mg missing": no drug
    # or start, so the line is all that says which course. Same line and fact: stands;
    # the line moved (another course may be on line 5 now): held.
    tmp, worklist = dose_review
    old = pd.read_csv(worklist, dtype=str, keep_default_na=False)
    old["to_resolve"] = old["to_resolve"].str.replace(r" \(escitalopram from [0-9-]+\)", "",
                                                      regex=True)  # fmt: skip
    assert old.loc[1, "to_resolve"] == "treatments.csv line 5: daily_dose_mg missing"
    path = tmp / "old.csv"
    old.to_csv(path, index=False)
    same = decisions(tmp / "first", path)
    assert same.loc["Q2", "final_decision"] == "eligible"
    moved = decisions(second_export(tmp / "second-old"), path)
    assert moved.loc["Q2", "final_decision"] == "needs_review"
