"""`to_resolve` (issue 21): each needs_review subject names the fact to look up first,
where it is in the export (file and line, and the course's drug, its generic where
the formulary knows it, and its start, read off the line). The expected facts below are read off the hand-worked table
in sample_data/README.md (the "why" column), not copied from the program's output."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.conftest import SAMPLE, run_cohort, write_cohort

EXPECTED = {
    # F2 + "Zyprexa" (olanzapine) add-on: no source gives an add-on minimum dose.
    "S011": (
        "treatments.csv line 23 (olanzapine from 2023-06-05): "
        "no minimum dose of olanzapine in the formulary"
    ),
    # F1 + escitalopram with no scores: outcome unknown.
    "S014": "treatments.csv line 29 (escitalopram from 2023-04-10): hamd_start and hamd_end",
    # "Setraline": not in the formulary; the closest name is sertraline.
    "S018": (
        "treatments.csv line 37 (Setraline from 2023-09-01): "
        "drug 'Setraline' unknown (closest: sertraline"
    ),
    # escitalopram with the dose missing.
    "S029": "treatments.csv line 57 (escitalopram from 2023-04-10): daily_dose_mg missing",
    # HAM-D17 at screening is missing.
    "S031": "subjects: hamd_screening missing",
    # bipolar status is missing (the MDD diagnosis does not stand in for it).
    "S033": "subjects: bipolar missing",
    # episode onset missing: both courses' episode check is unknown - one fact, not two.
    "S034": "subjects: episode_start missing",
    # courses but no row in subjects.csv.
    "S038": "subjects: no row for this subject in the subjects table",
    # venlafaxine's baseline was rated long before the episode onset.
    "S042": (
        "treatments.csv line 80 (venlafaxine from 2020-01-01): "
        "baseline rating before the current episode"
    ),
    # duloxetine stopped for intolerance with no end date.
    "S043": "treatments.csv line 83 (duloxetine from 2023-05-01): end_date missing",
    # escitalopram 12 to 11: a baseline below 14.
    "S047": (
        "treatments.csv line 91 (escitalopram from 2023-04-10): "
        "baseline rating below the rule set's minimum"
    ),
    # the screening HAM-D is a HAM-D24 total: HAMD-SCREEN compares HAM-D17 only.
    "S064": "subjects: hamd_screening given but not comparable by HAMD-SCREEN",
    # escitalopram rated on HAM-D24: not compared with HAM-D17 thresholds.
    "S066": (
        "treatments.csv line 135 (escitalopram from 2023-04-10): "
        "HAM-D rated on a version the rule set does not compare"
    ),
}


TWO_FAILED_TRIALS = [
    # Each adequate (dose at or above the minimum, 9 weeks) and failed (24 to 22: 8 %).
    {"subject_id": "P1", "drug": "escitalopram", "daily_dose_mg": 20, "start_date":
     "2023-01-02", "end_date": "2023-03-06", "hamd_start": 24, "hamd_end": 22},
    {"subject_id": "P1", "drug": "sertraline", "daily_dose_mg": 150, "start_date":
     "2023-03-10", "end_date": "2023-05-15", "hamd_start": 24, "hamd_end": 22},
]  # fmt: skip


@pytest.fixture(scope="module")
def decisions() -> pd.DataFrame:
    return run_cohort(SAMPLE)[1].decisions.set_index("subject_id")


def test_every_needs_review_subject_of_the_sample_names_its_fact(decisions):
    review = decisions[decisions["decision"] == "needs_review"]
    assert set(review.index) == set(EXPECTED)
    for subject, fact in EXPECTED.items():
        assert str(review.loc[subject, "to_resolve"]).startswith(fact), subject


def test_no_other_decision_has_anything_to_resolve(decisions):
    others = decisions[decisions["decision"] != "needs_review"]
    assert (others["to_resolve"] == "").all()


def test_the_line_points_at_the_course_in_the_file(decisions):
    # The line named is the course's own line in treatments.csv (header = line 1).
    lines = (SAMPLE / "treatments.csv").read_text().splitlines()
    assert lines[37 - 1].startswith("S018,Setraline,")
    assert lines[57 - 1].startswith("S029,escitalopram,,")


def test_more_unknown_courses_are_counted_and_the_first_is_named(tmp_path):
    # Two courses whose adherence is missing under a rule set that leaves it unknown
    # (when_missing unknown): the first by start date is named, the other counted.
    from tests.conftest import write_rules

    rules = write_rules(tmp_path, {"adequacy": {"adherence": {"when_missing": "unknown"}}})
    courses = [
        {"subject_id": "P1", "drug": "sertraline", "daily_dose_mg": 100,
         "start_date": "2023-05-01", "end_date": "2023-07-01", "hamd_start": 24, "hamd_end": 22},
        {"subject_id": "P1", "drug": "escitalopram", "daily_dose_mg": 20,
         "start_date": "2023-02-01", "end_date": "2023-04-01", "hamd_start": 24, "hamd_end": 22},
    ]  # fmt: skip
    folder = write_cohort(tmp_path / "c", courses, [{"subject_id": "P1"}])
    decisions = run_cohort(folder, rules)[1].decisions.set_index("subject_id")
    assert decisions.loc["P1", "decision"] == "needs_review"
    # escitalopram (line 3) started first: it is named; sertraline (line 2) is counted.
    assert decisions.loc["P1", "to_resolve"] == (
        "treatments.csv line 3 (escitalopram from 2023-02-01): adherence missing "
        "(and 1 more unknown course)"
    )


def test_a_held_subject_is_told_to_correct_its_rejected_rows(tmp_path):
    from tests.conftest import write_rules

    rules = write_rules(tmp_path, {})
    courses = [
        {"subject_id": "P1", "drug": "sertraline", "daily_dose_mg": "lots",
         "start_date": "2023-02-01", "end_date": "2023-04-01", "hamd_start": 24, "hamd_end": 22},
        {"subject_id": "P2", "drug": "sertraline", "daily_dose_mg": 100,
         "start_date": "2023-02-01", "end_date": "2023-04-01", "hamd_start": 24, "hamd_end": 22},
    ]  # fmt: skip
    folder = write_cohort(tmp_path / "c", courses, [{"subject_id": "P1"}, {"subject_id": "P2"}])
    from trdscreen import api

    request = api.ScreenRequest(input=folder, rules=str(rules), on_invalid="quarantine")
    loaded = api.load(request, ["test"])
    result = api.screen(loaded)
    row = result.decisions.set_index("subject_id").loc["P1"]
    assert row["decision"] == "needs_review"
    assert "treatments.csv line 2 (not_a_number)" in row["to_resolve"]


def test_an_excluded_subject_with_unknown_criteria_has_nothing_to_resolve(tmp_path):
    # Aged 70 at screening: AGE (18 to 65) is not met, so the subject is excluded, even
    # though TRD-MIN is unknown too: one failed trial (escitalopram 20 mg, 8 weeks, 24 to
    # 22) and one with no dose, so 1 to 2 failures. A careless reading would send the
    # coordinator after the missing dose of a patient who can never enrol.
    courses = [
        {"subject_id": "P1", "drug": "escitalopram", "daily_dose_mg": 20,
         "start_date": "2023-01-02", "end_date": "2023-03-01", "hamd_start": 24, "hamd_end": 22},
        {"subject_id": "P1", "drug": "sertraline", "daily_dose_mg": "",
         "start_date": "2023-03-10", "end_date": "2023-05-10", "hamd_start": 24, "hamd_end": 22},
    ]  # fmt: skip
    folder = write_cohort(
        tmp_path / "c", courses, [{"subject_id": "P1", "birth_date": "1954-01-01"}]
    )
    decisions = run_cohort(folder)[1].decisions.set_index("subject_id")
    assert decisions.loc["P1", "decision"] == "excluded"
    assert "TRD-MIN" in decisions.loc["P1", "unknown_criteria"]
    assert decisions.loc["P1", "to_resolve"] == ""


def test_a_staging_score_unknown_for_the_severity_rating_names_it(tmp_path):
    # Maudsley: 2 failed trials (1 point), episode 2023-01-01 to screening 2024-06-01 = 17
    # months, sub-acute (2 points), no augmentation or ECT (0), severity from HAM-D at
    # screening - missing, so 1 to 5 points: MSM 4 to 8 against >= 7, unknown. The
    # courses are all known: the fact is the missing rating, not a course.
    courses = TWO_FAILED_TRIALS
    folder = write_cohort(tmp_path / "c", courses, [{"subject_id": "P1", "hamd_screening": ""}])
    decisions = run_cohort(folder, "maudsley-2009")[1].decisions.set_index("subject_id")
    assert decisions.loc["P1", "decision"] == "needs_review"
    assert decisions.loc["P1", "to_resolve"] == "subjects: hamd_screening missing"


def test_a_history_flag_with_no_course_evidence_names_the_flag(tmp_path):
    # MGH-ATRQ excludes ECT in the current episode: the flag or an ECT course. No ECT
    # course, flag empty: unknown, and the flag is the fact (not any course).
    from tests.conftest import preset_data

    subject = {"subject_id": "P1", "ect_current_episode": "", "madrs_screening": 30}
    for column in ("psychotic_features", "substance_use_disorder", "ocd",
                   "intellectual_disability", "cluster_b_pd", "prior_ketamine_nonresponse",
                   "current_vns_or_dbs"):  # fmt: skip
        subject[column] = "false"
    courses = TWO_FAILED_TRIALS
    assert any(c["id"] == "EX-ECT-EPISODE" for c in preset_data("mgh-atrq")["criteria"])
    folder = write_cohort(tmp_path / "c", courses, [subject])
    decisions = run_cohort(folder, "mgh-atrq")[1].decisions.set_index("subject_id")
    assert decisions.loc["P1", "decision"] == "needs_review", decisions.loc["P1", "reason"]
    assert decisions.loc["P1", "unknown_criteria"] == "EX-ECT-EPISODE"
    assert decisions.loc["P1", "to_resolve"] == "subjects: ect_current_episode missing"


def test_a_value_hidden_by_as_of_is_named_as_such_not_as_missing(tmp_path):
    # Screened as of 2024-06-01 (sforzini-2021: AGE, MDD, EX-BIPOLAR, HAMD-SCREEN,
    # TRD-MIN in that order); each subject has the two failed trials of P1, in 2023.
    # Every value below is in the export; telling the coordinator it is "missing" would
    # send them looking for what is there. What is unknown is its value on the date.
    # - A: HAM-D 24 taken on 2024-07-01, after the date: HAMD-SCREEN unknown.
    # - B: HAM-D 24 with no screening date: it may have been taken after the date.
    # - C: age 30 and no birth date: the age carries no date (A 30 later may be 28 then).
    # - D: born 2025-01-01, after the date (a mistyped year, say): no age on it. Its
    #      courses cannot precede its birth (an error), so none counts on the date and
    #      TRD-MIN excludes it: nothing to resolve. Under a rule set of AGE alone,
    #      AGE is what is unknown, and its birth date the fact.
    # - E: the current episode began 2024-07-01, after the date: the courses' episode
    #      check is unknown, so TRD-MIN is.
    # - F: screened 2024-05-01 with no HAM-D at all: that one is missing.
    # - G: its sertraline runs 2024-04-01..2024-07-15, past the date: its end rating is not
    #      known then (nor whether it failed), so TRD-MIN is unknown at that course.
    later = {"screening_date": "2024-07-01"}
    subjects = {
        "A": {**later, "hamd_screening": 24},
        "B": {"screening_date": "", "hamd_screening": 24},
        "C": {"birth_date": "", "age": 30},
        "D": {"birth_date": "2025-01-01", "episode_start": "2025-01-01", **later},
        "E": {"episode_start": "2024-07-01"},
        "F": {"screening_date": "2024-05-01", "hamd_screening": ""},
        "G": {},
    }
    courses = [{**c, "subject_id": s} for s in subjects for c in TWO_FAILED_TRIALS]
    for course in (c for c in courses if c["subject_id"] == "D"):
        course["start_date"] = course["start_date"].replace("2023", "2025")
        course["end_date"] = course["end_date"].replace("2023", "2025")
    courses[-1].update(start_date="2024-04-01", end_date="2024-07-15")  # G's sertraline
    folder = write_cohort(
        tmp_path / "c", courses, [{"subject_id": s, **v} for s, v in subjects.items()]
    )
    from datetime import date

    as_of = date(2024, 6, 1)
    decisions = run_cohort(folder, as_of=as_of)[1].decisions.set_index("subject_id")
    assert decisions.loc["D", ["decision", "to_resolve"]].tolist() == ["excluded", ""]
    assert decisions.drop(index="D")["to_resolve"].to_dict() == {
        "A": "subjects: hamd_screening taken after the --as-of date (screening_date is later)",
        "B": "subjects: hamd_screening has no screening_date, so it may postdate the --as-of date",
        "C": "subjects: age given without birth_date; only a birth_date gives the age on the "
        "--as-of date",
        "E": "subjects: episode_start is after the --as-of date (the episode began later)",
        "F": "subjects: hamd_screening missing",
        # G is the seventh subject of two courses each: rows 13 and 14, lines 14 and 15
        "G": "treatments.csv line 15 (sertraline from 2024-04-01): still running on the "
        "--as-of date: its end rating, stop reason and sessions are not known then",
    }
    from tests.conftest import preset_data, write_rules

    age = [c for c in preset_data()["criteria"] if c["id"] == "AGE"]
    rules = write_rules(tmp_path, {"criteria": age})
    decisions = run_cohort(folder, rules, as_of=as_of)[1].decisions.set_index("subject_id")
    assert decisions.loc["D", ["decision", "to_resolve"]].tolist() == [
        "needs_review",
        "subjects: birth_date is after the --as-of date (no age on it)",
    ]


def test_an_age_undecided_by_a_29_february_birth_names_the_birthday(tmp_path):
    # Born 1956-02-29, screened 2022-02-28 (a common year): 65 or 66 depending on the
    # jurisdiction's reading of the birthday, so AGE (18-65) is unknown. The birth date is
    # there: "birth_date missing" would send the coordinator after a value they have.
    courses = [{**c, "start_date": c["start_date"].replace("2023", "2021"),
                "end_date": c["end_date"].replace("2023", "2021")} for c in TWO_FAILED_TRIALS]  # fmt: skip
    folder = write_cohort(
        tmp_path / "c",
        courses,
        [
            {
                "subject_id": "P1",
                "birth_date": "1956-02-29",
                "episode_start": "2020-12-01",
                "screening_date": "2022-02-28",
            }
        ],  # fmt: skip
    )
    decisions = run_cohort(folder)[1].decisions.set_index("subject_id")
    assert decisions.loc["P1", "to_resolve"] == (
        "subjects: born on 29 February and screened on 28 February of a common year: whether "
        "the birthday has passed differs by jurisdiction (a given age decides)"
    )
