"""`build --profile courses` and `screen --profile courses`: a treatments export whose
ratings are in an `assessments` table (the input contract's optional long table).

Every patient below is screened under sforzini-2021 (4 weeks at an adequate dose,
failure below 25 % improvement, HAM-D17 >= 18 at screening, two failed trials of
distinct drugs in the current episode, onset 2023-01-01, screening 2024-06-01). The
windows are build's defaults: a baseline from 30 days before a course's first day to 7
after (nearest; the earlier on a tie), an end rating within 14 days of its last day at
least 14 days after the baseline, a screening score from 28 days before the screening
date to it. Each course is sertraline 100 mg 2023-02-01 to 2023-03-28 (8 weeks), then
escitalopram 20 mg 2023-04-10 to 2023-06-04 (8 weeks), neither row giving a rating.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from trdscreen.cli import app

HEADER = "subject_id,drug,daily_dose_mg,start_date,end_date,hamd_start,hamd_end,stop_reason\n"
COURSES = (
    "{s},sertraline,100,2023-02-01,2023-03-28,{own},\n"
    "{s},escitalopram,20,2023-04-10,2023-06-04,,,\n"
)
SUBJECT_HEADER = (
    "subject_id,birth_date,diagnosis,episode_start,screening_date,hamd_screening,bipolar,"
    "psychotic_features\n"
)
SUBJECT = '{s},1980-05-10,"MDD, recurrent",2023-01-01,2024-06-01,{screening},false,false\n'

# The ratings both courses of P1 are judged by. Sertraline: baseline nearest 1 Feb within
# 2 Jan..8 Feb -> 30 Jan (24); end nearest 28 Mar within 14 Mar..11 Apr -> 25 Mar (22), not
# 8 Apr (11 days away against 3): (24-22)/24 = 8.3 % < 25 %, failed. Escitalopram: baseline
# nearest 10 Apr within 11 Mar..17 Apr -> 8 Apr (22), 2 days before, not 25 Mar; end nearest
# 4 Jun within 21 May..18 Jun -> 1 Jun (20): 9.1 %, failed. Screening: the latest HAM-D17
# from 4 May 2024 to 1 Jun 2024 -> 20 May (24) >= 18.
BOTH_FAIL = [
    ("2023-01-30", "HAMD17", 24),
    ("2023-03-25", "HAMD17", 22),
    ("2023-04-08", "HAMD17", 22),
    ("2023-06-01", "HAMD17", 20),
]
SCREENED = [("2024-05-20", "HAMD17", 24)]

PATIENTS = {
    # Both courses failed by the assessments' ratings, screening score from them: eligible.
    "P1": ("", "", BOTH_FAIL + SCREENED, "eligible"),
    # Sertraline's only later rating is 20 Apr, 23 days after its end (window 14 days)
    # and 10 days after escitalopram's start (its baseline window ends 17 Apr, so it is
    # not escitalopram's baseline either; 14 Apr is). Sertraline has a baseline and no end
    # rating: its outcome is unknown, so one failure is certain and one unknown: needs
    # review. A careless reading (the next rating, whenever it was) scores 24 -> 22 a
    # failure and says eligible.
    "P2": (
        "",
        "",
        [
            ("2023-01-30", "HAMD17", 24),
            ("2023-04-14", "HAMD17", 22),
            ("2023-04-20", "HAMD17", 22),
            ("2023-06-01", "HAMD17", 20),
            *SCREENED,
        ],
        "needs_review",
    ),
    # The sertraline row gives its own HAM-D (24 -> 10: 58 %, a response) and keeps it;
    # the assessments' 24 -> 22 for it are not used (two sources are never mixed in a
    # row). One failed trial (escitalopram): excluded by TRD-MIN. A careless reading that
    # lets the assessments win counts two failures and says eligible.
    "P3": ("24,10", "", BOTH_FAIL + SCREENED, "excluded"),
    # The only HAM-D near screening is rated 5 June 2024, after the screening date (the
    # reference date): not used, so hamd_screening stays empty: HAMD-SCREEN unknown,
    # needs review. A careless reading takes the nearest rating (24) and says eligible.
    "P4": ("", "", [*BOTH_FAIL, ("2024-06-05", "HAMD17", 24)], "needs_review"),
    # Sertraline's baseline is a HAM-D21 (28) and its end rating a HAM-D17 (22): versions
    # are never mixed, so it has a HAM-D21 baseline and no end rating: outcome unknown,
    # needs review. A careless reading scores 28 -> 22 (21 %) a failure: eligible.
    "P5": (
        "",
        "",
        [("2023-01-30", "HAMD21", 28), *BOTH_FAIL[1:], *SCREENED],
        "needs_review",
    ),
    # The subjects row gives its own screening score (15, under 18): it is kept, not the
    # assessments' 24: excluded by HAMD-SCREEN.
    "P6": ("", "15", BOTH_FAIL + SCREENED, "excluded"),
}


def _export(folder: Path) -> Path:
    folder.mkdir()
    treatments, subjects, ratings = (
        [HEADER],
        [SUBJECT_HEADER],
        ["subject_id,date,instrument,total\n"],
    )
    for s, (own, screening, rated, _) in PATIENTS.items():
        treatments.append(COURSES.format(s=s, own=own or ","))
        subjects.append(SUBJECT.format(s=s, screening=screening))
        ratings += [f"{s},{day},{scale},{total}\n" for day, scale, total in rated]
    (folder / "treatments.csv").write_text("".join(treatments))
    (folder / "subjects.csv").write_text("".join(subjects))
    (folder / "assessments.csv").write_text("".join(ratings))
    return folder


def _cli(*args: str):
    return CliRunner().invoke(app, list(args), terminal_width=400)


def _copy(folder: str, to: Path) -> Path:
    to.mkdir()
    for file in (Path(__file__).parents[1] / folder).iterdir():
        (to / file.name).write_bytes(file.read_bytes())
    return to


@pytest.fixture(scope="module")
def screened(tmp_path_factory):
    root = tmp_path_factory.mktemp("given")
    export = _export(root / "export")
    out = root / "run"
    result = _cli(
        "screen", str(export), "--profile", "courses", "--rules", "sforzini-2021",
        "--out", str(out),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return root, result


def test_each_hand_worked_patient(screened):
    root, _ = screened
    decisions = pd.read_csv(root / "run" / "decisions.csv").set_index("subject_id")
    expected = {s: patient[3] for s, patient in PATIENTS.items()}
    assert decisions["decision"].to_dict() == expected
    assert decisions.loc["P3", "first_failed_criterion"] == "TRD-MIN"
    assert decisions.loc["P6", "first_failed_criterion"] == "HAMD-SCREEN"


def test_the_built_rows_name_each_rating_and_where_it_came_from(screened):
    root, _ = screened
    built = pq.read_table(root / "run-built" / "treatments.parquet").to_pandas()
    p1 = built[built["subject_id"] == "P1"].reset_index(drop=True)
    assert p1["hamd_start"].tolist() == [24, 22]
    assert p1["hamd_end"].tolist() == [22, 20]
    assert [str(d) for d in p1["hamd_end_date"]] == ["2023-03-25", "2023-06-01"]
    assert p1["hamd_start_line"].tolist() == [2, 4]  # lines of assessments.csv
    assert p1["hamd_version"].tolist() == [17, 17]
    assert p1["scores_source"].astype(str).tolist() == ["assessments", "assessments"]
    assert p1["first_source_line"].tolist() == [2, 3]  # lines of treatments.csv
    p3 = built[built["subject_id"] == "P3"].reset_index(drop=True)
    assert p3["scores_source"].astype(str).tolist() == ["given", "assessments"]
    assert (p3.loc[0, "hamd_start"], p3.loc[0, "hamd_end"]) == (24, 10)
    assert pd.isna(p3.loc[0, "hamd_start_line"])
    p5 = built[built["subject_id"] == "P5"].reset_index(drop=True)
    assert (p5.loc[0, "hamd_start"], p5.loc[0, "hamd_version"]) == (28, 21)
    assert pd.isna(p5.loc[0, "hamd_end"])
    subjects = pq.read_table(root / "run-built" / "subjects.parquet").to_pandas()
    subjects = subjects.set_index("subject_id")
    assert subjects.loc["P1", "hamd_screening"] == 24
    assert subjects.loc["P1", "hamd_screening_source"] == "derived"
    assert pd.isna(subjects.loc["P4", "hamd_screening"])  # rated after the screening date
    assert subjects.loc["P6", "hamd_screening"] == 15
    assert subjects.loc["P6", "hamd_screening_source"] == "given"
    manifest = json.loads((root / "run-built" / "manifest.json").read_text())
    assert manifest["profile"] == "courses"
    # 12 rows: P3's sertraline gives its own; P4's and P2's... every other row found a
    # baseline. Screening scores derived for P1, P2, P3, P5 (P4's is after the date, P6
    # gives its own).
    assert manifest["scores"] == {
        "rows": 12, "given": 1, "assessments": 11, "none": 0,
        "hamd_screening_derived": 4, "madrs_screening_derived": 0,
    }  # fmt: skip
    assert {p["key"] for p in manifest["parameters"]} == {
        "ratings.start_before_days", "ratings.start_after_days", "ratings.end_within_days",
        "ratings.min_days_between", "ratings.screening_within_days",
    }  # fmt: skip


def test_verify_builds_it_again_byte_for_byte(screened):
    root, _ = screened
    result = _cli("verify", str(root / "run-built"))
    assert result.exit_code == 0, result.output
    result = _cli("verify", str(root / "run"))
    assert result.exit_code == 0, result.output


def test_explain_shows_the_ratings_a_course_was_judged_by(screened):
    root, _ = screened
    result = _cli("explain", str(root / "run"), "P1")
    assert result.exit_code == 0, result.output
    assert "ratings (assessments.csv): HAM-D17 24 on 2023-01-30 (line 2) -> 22 on 2023-03-25" in (
        result.output
    )
    assert "the export's row: treatments.csv line 2" in result.output  # the built row's source
    result = _cli("explain", str(root / "run"), "P3")
    # P3's sertraline gave its own ratings: no attached rating is shown for it.
    first = result.output.split("  2. ")[0]
    assert "the export's row: treatments.csv line 6" in first
    assert "ratings (assessments.csv)" not in first


def test_build_auto_reads_a_courses_export(tmp_path):
    export = _export(tmp_path / "export")
    result = _cli("build", str(export), "--out", str(tmp_path / "built"))
    assert result.exit_code == 0, result.output
    assert "attached the assessments' ratings to 11 of 12 treatment row(s)" in result.output
    assert "1 gave their own (kept)" in result.output
    assert "screening scores from the assessments: 4 hamd_screening" in result.output


def test_without_the_profile_the_screen_names_the_table_and_the_profile(tmp_path):
    export = _export(tmp_path / "export")
    result = _cli("screen", str(export), "--rules", "sforzini-2021", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    assert "Not read: assessments.csv" in result.stderr
    assert "--profile courses" in result.stderr
    # Without the ratings no course has an outcome and no screening score is known.
    decisions = pd.read_csv(tmp_path / "r" / "decisions.csv")
    assert "eligible" not in set(decisions["decision"])


def test_an_unreadable_cell_stops_the_build_and_writes_nothing(tmp_path):
    export = _export(tmp_path / "export")
    text = (export / "treatments.csv").read_text().replace("2023-06-04", "4 June", 1)
    (export / "treatments.csv").write_text(text)
    result = _cli("build", str(export), "--out", str(tmp_path / "built"))
    assert result.exit_code == 4, result.output
    assert "treatments.csv line 3, column end_date" in result.output + result.stderr
    assert "4 June" not in result.output + result.stderr  # never a cell value
    assert not (tmp_path / "built").exists()


def test_a_build_folder_is_not_read_as_a_courses_export(tmp_path):
    export = _export(tmp_path / "export")
    assert _cli("build", str(export), "--out", str(tmp_path / "built")).exit_code == 0
    result = _cli(
        "build", str(tmp_path / "built"), "--profile", "courses", "--out", str(tmp_path / "b2")
    )
    assert result.exit_code == 4
    assert "a folder `trdscreen build` wrote" in result.output + result.stderr


REF = r"treatments\.(csv|parquet) (line|row) \d+"


def _decisions(folder: Path) -> pd.DataFrame:
    """A run's decisions with the treatments line a reason cites left out (the built
    folder's Parquet row is the export's line less its header)."""
    frame = pd.read_csv(folder / "decisions.csv", dtype=str, keep_default_na=False)
    return frame.replace(REF, "REF", regex=True)


@pytest.mark.parametrize("rules", ["sforzini-2021", "mgh-s-2003"])
def test_without_assessments_the_profile_changes_no_decision(tmp_path, rules):
    """Every row of the sample gives its own ratings (or none): the built folder holds the
    export's rows typed as the screen types them, so every decision is the same."""
    sample = Path(__file__).parents[1] / "sample_data"
    plain = _cli("screen", str(sample), "--rules", rules, "--out", str(tmp_path / "a"))
    assert plain.exit_code == 0, plain.output
    built = _cli(
        "screen", str(sample), "--rules", rules, "--profile", "courses",
        "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    pd.testing.assert_frame_equal(_decisions(tmp_path / "a"), _decisions(tmp_path / "b"))


def test_the_site_map_reaches_the_built_folder(tmp_path):
    """The German export of the sample, its map, and an assessments table with German
    headers the map names: the build reads them through the map (delimiter, date format,
    spellings) and writes each drug the map's aliases name as its generic, so the screen of
    the built folder, which has no map, decides as the screen of the export with it."""
    examples = Path(__file__).parents[1] / "examples"
    export = tmp_path / "export"
    export.mkdir()
    for name in ("treatments.csv", "subjects.csv"):
        (export / name).write_bytes((examples / "site-export" / name).read_bytes())
    (export / "assessments.csv").write_text(
        "Patienten-ID;Datum;Skala;Summe\nS001;20/05/2024;HAMD17;25\n", "utf-8"
    )
    site_map = tmp_path / "map.yaml"
    site_map.write_text(
        (examples / "site-map.yaml").read_text("utf-8")
        + "\nassessments:\n  Patienten-ID: subject_id\n  Datum: date\n  Skala: instrument\n"
        "  Summe: total\n",
        "utf-8",
    )
    plain = _cli("screen", str(export), "--map", str(site_map), "--out", str(tmp_path / "a"))
    assert plain.exit_code == 0, plain.output
    built = _cli(
        "screen", str(export), "--map", str(site_map), "--profile", "courses",
        "--out", str(tmp_path / "b"),
    )  # fmt: skip
    assert built.exit_code == 0, built.output
    pd.testing.assert_frame_equal(_decisions(tmp_path / "a"), _decisions(tmp_path / "b"))
    rows = pq.read_table(tmp_path / "b-built" / "treatments.parquet").to_pandas()
    trevilor = rows[rows["drug_as_given"] == "Trevilor"]
    assert len(trevilor) and set(trevilor["drug"]) == {"venlafaxine"}  # drug_aliases
    zyban = rows[rows["drug_as_given"].str.lower() == "zyban"]
    assert (zyban["drug"] == zyban["drug_as_given"]).all()  # a product the formulary knows


def test_a_running_course_is_rated_to_the_reference_date_and_a_stopped_one_without_end_is_not(
    tmp_path,
):
    """Q1's escitalopram has no end date and no stop reason: it runs to the screening date
    (1 Jun 2024), so its end rating is the one nearest that day within 14 days and not
    after it: 25 May (21), not 3 Jun (12, after the reference date, though nearer).
    Q2's row stopped for nonresponse without an end date: its last day is unknown, so it
    gets its baseline (22 on 28 Feb) and no end rating (not 25 May, whatever a reading that
    runs it to the screening date would take)."""
    export = tmp_path / "export"
    export.mkdir()
    (export / "treatments.csv").write_text(
        HEADER
        + "Q1,escitalopram,20,2024-03-01,,,,\n"
        + "Q2,escitalopram,20,2024-03-01,,,,nonresponse\n"
    )
    (export / "subjects.csv").write_text(
        SUBJECT_HEADER + SUBJECT.format(s="Q1", screening="") + SUBJECT.format(s="Q2", screening="")
    )
    rated = [("2024-02-28", 22), ("2024-05-25", 21), ("2024-06-03", 12)]
    (export / "assessments.csv").write_text(
        "subject_id,date,instrument,total\n"
        + "".join(f"{s},{day},HAMD17,{total}\n" for s in ("Q1", "Q2") for day, total in rated)
    )
    result = _cli("build", str(export), "--out", str(tmp_path / "built"))
    assert result.exit_code == 0, result.output
    rows = pq.read_table(tmp_path / "built" / "treatments.parquet").to_pandas()
    assert rows["hamd_start"].tolist() == [22, 22]
    assert rows["hamd_end"].iloc[0] == 21
    assert str(rows["hamd_end_date"].iloc[0]) == "2024-05-25"
    assert pd.isna(rows["hamd_end"].iloc[1])
    # The screening score: the latest HAM-D17 from 4 May to 1 Jun: 25 May (21), not 3 Jun.
    subjects = pq.read_table(tmp_path / "built" / "subjects.parquet").to_pandas()
    assert subjects["hamd_screening"].tolist() == [21, 21]


@pytest.mark.parametrize(
    "folder, table, column",
    [
        ("given", "subjects.csv", "subject_id"),
        ("examples/records", "subjects.csv", "subject_id"),
        ("tests/omop", "person.csv", "person_id"),
    ],
)
def test_a_subject_given_twice_stops_every_build_profile(tmp_path, folder, table, column):
    """A subjects row (an OMOP person) given twice left the build's reference date and
    screening score ambiguous and stopped it with an internal error; now it is an input
    error naming both lines, and nothing is written."""
    source = _export(tmp_path / "given") if folder == "given" else _copy(folder, tmp_path / "r")
    lines = (source / table).read_text("utf-8").splitlines(keepends=True)
    (source / table).write_text("".join([*lines, lines[1]]), "utf-8")
    extra = ["--map", str(source / "omop-map.yaml")] if table == "person.csv" else []
    result = _cli("build", str(source), "--out", str(tmp_path / "built"), *extra)
    assert result.exit_code == 4, result.output
    text = result.output + result.stderr
    assert f"{table} line 2, column {column}: {column} appears more than once" in text
    assert f"{table} line {len(lines) + 1}, column {column}" in text
    assert not (tmp_path / "built").exists()


def test_the_example_folder_is_these_patients(tmp_path):
    """examples/courses-export, which the README screens, holds exactly the patients
    worked above (so its decisions are the ones this module checks)."""
    made = _export(tmp_path / "export")
    example = Path(__file__).parents[1] / "examples" / "courses-export"
    assert sorted(p.name for p in example.iterdir()) == sorted(p.name for p in made.iterdir())
    for file in made.iterdir():
        assert (example / file.name).read_bytes() == file.read_bytes(), file.name


@pytest.mark.parametrize("column", ["drug_as_given", "scores_source", "source_file"])
def test_an_export_column_the_profile_writes_is_refused_not_replaced(tmp_path, column):
    """A column of the export named as one the profile writes (its own provenance) would
    be replaced, or (drug_as_given) stopped the build with an internal error: refused,
    named, nothing written."""
    export = _export(tmp_path / "export")
    frame = pd.read_csv(export / "treatments.csv", dtype=str, keep_default_na=False)
    frame[column] = "x"
    frame.to_csv(export / "treatments.csv", index=False)
    result = _cli("build", str(export), "--out", str(tmp_path / "built"))
    assert result.exit_code == 4, result.output
    assert f"column(s) {column} are written by --profile courses" in result.output + result.stderr
    assert not (tmp_path / "built").exists()


@pytest.mark.parametrize("folder", ["given", "examples/records"])
def test_two_totals_for_one_rating_stop_the_build(tmp_path, folder):
    """P1's sertraline ends 28 Mar with its end rating the HAM-D17 of 25 Mar (22: 24 to
    22 is 8 %, a failed trial). A second HAM-D17 of 5 dated 25 Mar (remission, no
    failure) was not used: the first of the day was taken. Which one is the rating
    cannot be told from the export, so the build stops naming both lines, for the
    courses profile and for drug events (R's sertraline ends near 25 Mar too)."""
    source = _export(tmp_path / "given") if folder == "given" else _copy(folder, tmp_path / "r")
    subject = "P1" if folder == "given" else "R"
    lines = (source / "assessments.csv").read_text().splitlines(keepends=True)
    first = next(i + 1 for i, line in enumerate(lines) if line.startswith(f"{subject},2023-03-25"))
    (source / "assessments.csv").write_text("".join([*lines, f"{subject},2023-03-25,HAMD17,5\n"]))
    result = _cli("build", str(source), "--out", str(tmp_path / "built"))
    assert result.exit_code == 4, result.output
    text = result.output + result.stderr
    added = len(lines) + 1
    assert f"assessments.csv line {first}, column total: line {added} gives another total" in text
    assert f"assessments.csv line {added}, column total: line {first} gives another total" in text
    assert not (tmp_path / "built").exists()


def test_the_same_total_twice_is_one_rating_and_a_total_above_its_scale_is_an_error(tmp_path):
    # The 25 Mar HAM-D17 of 22 exported twice: one rating, P1 still eligible (as above).
    source = _export(tmp_path / "twice")
    with (source / "assessments.csv").open("a") as out:
        out.write("P1,2023-03-25,HAMD17,22\n")
    run = tmp_path / "run"
    result = _cli("screen", str(source), "--profile", "courses", "--rules", "sforzini-2021",
                  "--out", str(run), "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    decisions = pd.read_csv(run / "decisions.csv").set_index("subject_id")
    assert decisions.loc["P1", "decision"] == "eligible"
    # A HAM-D17 of 60 (the scale's maximum is 52) and a MADRS of 61 (maximum 60) passed
    # the table's range (0 to 75, the widest scale), and the screen then refused the
    # built folder at its own row; the build names the assessments line now.
    bad = _export(tmp_path / "bad")
    with (bad / "assessments.csv").open("a") as out:
        out.write("P2,2023-07-01,HAMD17,60\nP2,2023-07-01,MADRS,61\nP2,2023-07-01,PHQ9,27\n")
    result = _cli("build", str(bad), "--out", str(tmp_path / "built"))
    assert result.exit_code == 4, result.output
    text = result.output + result.stderr
    n = len((bad / "assessments.csv").read_text().splitlines())
    assert f"line {n - 2}, column total: expected a HAMD17 total from 0 to 52" in text
    assert f"line {n - 1}, column total: expected a MADRS total from 0 to 60" in text
    assert f"line {n}," not in text  # a PHQ-9 of 27 is its maximum, not above it
