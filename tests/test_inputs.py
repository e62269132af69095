"""Readers and validation: line numbers, strict dates, every problem located, no values leaked."""

from __future__ import annotations

from datetime import date

import pytest
from conftest import TREATMENT_COLUMNS, run_cohort, write_cohort, write_csv
from typer.testing import CliRunner

from trdscreen import api
from trdscreen.cli import app
from trdscreen.errors import InputError


def good(subject="A", **extra):
    row = {
        "subject_id": subject,
        "drug": "sertraline",
        "daily_dose_mg": 100,
        "start_date": "2023-02-01",
        "end_date": "2023-03-28",
        "hamd_start": 24,
        "hamd_end": 22,
    }
    row.update(extra)
    return row


def issues_for(folder, as_of=None):
    """Issues of a load; a bare treatments file also reports the (expected) missing subjects table."""
    issues = api.load(api.ScreenRequest(folder, as_of=as_of)).validated.issues
    return issues[issues["check"] != "subjects_table_missing"].reset_index(drop=True)


def located(issues, check):
    """(file, line, column, check, severity) of the issues whose check holds `check`."""
    found = issues[issues["check"].str.contains(check)]
    columns = ("file", "line", "column", "check", "severity")
    return sorted(zip(*(found[c] for c in columns), strict=True))


def test_line_numbers_survive_quoted_line_breaks(tmp_path):
    path = tmp_path / "treatments.csv"
    path.write_text(
        "subject_id,drug,daily_dose_mg,start_date,end_date\n"
        'A,"sertraline\nfilm-coated",100,2023-02-01,2023-03-28\n'
        "B,sertraline,-5,2023-02-01,2023-03-28\n"
    )
    issues = issues_for(path, date(2024, 6, 1))
    row = issues[issues["check"] == "out_of_range"].iloc[0]
    assert (row["line"], row["column"], row["subject_id"]) == (4, "daily_dose_mg", "B")


def test_byte_order_mark_and_header_case_are_accepted(tmp_path):
    path = tmp_path / "treatments.csv"
    path.write_bytes(
        "\ufeffSubject_ID,Drug,Daily_Dose_mg,Start_Date,End_Date\nA,sertraline,100,2023-02-01,2023-03-28\n".encode()
    )
    assert issues_for(path, date(2024, 6, 1)).empty


def test_ambiguous_and_impossible_dates_are_errors(tmp_path):
    folder = write_cohort(
        tmp_path,
        [good("A", end_date="03/28/2023"), good("B", start_date="2023-02-30")],
        [{"subject_id": "A"}, {"subject_id": "B"}],
    )
    issues = issues_for(folder)
    located = set(zip(issues["line"], issues["column"], issues["check"], strict=True))
    assert (2, "end_date", "not_iso_date") in located
    assert (3, "start_date", "not_iso_date") in located


def test_every_value_problem_is_collected(tmp_path):
    rows = [
        good("A", hamd_start=60),
        good("B", adherence=85),
        good("C", role="booster"),
        good("D", daily_dose_mg="lots"),
        good("E", end_date="2023-01-15"),
        good("F"),
        good("F"),
        good("G", start_date="2025-01-01", end_date="2025-02-01"),
    ]
    folder = write_cohort(tmp_path, rows, [{"subject_id": s} for s in "ABCDEFG"])
    issues = issues_for(folder)
    checks = set(zip(issues["subject_id"], issues["check"], strict=True))
    assert ("A", "out_of_range") in checks
    assert ("B", "out_of_range") in checks
    assert "percentages" in issues[issues["subject_id"] == "B"]["message"].iloc[0]
    assert ("C", "not_in_vocabulary") in checks
    assert ("D", "not_a_number") in checks
    assert ("E", "end_before_start") in checks
    assert ("F", "duplicate_course") in checks
    assert ("G", "starts_after_reference_date") in checks
    assert ("G", "ends_after_reference_date") in checks


def test_a_birth_or_episode_after_the_screening_date_is_an_error(tmp_path):
    # Screened 2024-06-01 (the conftest default). A is born after it and B's current episode
    # begins after it: neither can be (a subject is screened after birth, within the
    # episode). C is born and falls ill on the screening day itself: possible, no issue.
    folder = write_cohort(
        tmp_path,
        [good("A"), good("B"), good("C")],
        [
            {"subject_id": "A", "birth_date": "2024-06-02"},
            {"subject_id": "B", "episode_start": "2024-07-01"},
            {"subject_id": "C", "birth_date": "2024-06-01", "episode_start": "2024-06-01"},
        ],
    )
    assert located(issues_for(folder), "after_reference_date") == [
        ("subjects.csv", 2, "birth_date", "born_after_reference_date", "error"),
        ("subjects.csv", 3, "episode_start", "episode_after_reference_date", "error"),
    ]
    # With --as-of, later records are expected: A's birth is info, B's episode is hidden
    # (asof.subject_masks), and neither is an error.
    issues = issues_for(folder, date(2024, 6, 1))
    assert not issues["check"].str.contains("after_reference_date").any()
    row = issues[issues["check"] == "born_after_as_of"]
    assert (row["line"].tolist(), row["severity"].tolist()) == ([2], ["info"])


def test_a_course_or_an_episode_before_birth_is_an_error(tmp_path):
    # A (born 1980-05-10) has a course in 1975 and an episode from 1975: neither can be,
    # and taken as given they made A eligible (two failed trials in a 1975 episode). B's
    # course starts on the day B was born: possible, no issue.
    folder = write_cohort(
        tmp_path,
        [
            good("A", start_date="1975-02-01", end_date="1975-03-28"),
            good("B", start_date="1990-01-01", end_date="1990-02-28"),
        ],
        [
            {"subject_id": "A", "episode_start": "1975-01-01"},
            {"subject_id": "B", "birth_date": "1990-01-01", "episode_start": "1990-01-01"},
        ],
    )
    assert located(issues_for(folder), "before_birth") == [
        ("subjects.csv", 2, "episode_start", "episode_before_birth", "error"),
        ("treatments.csv", 2, "start_date", "starts_before_birth", "error"),
    ]


def test_a_given_age_is_said_to_be_unknown_on_an_as_of_date(tmp_path):
    # A has only an age, B a birth date as well: with --as-of, A's age (no date) is unknown
    # on that date and said so; B's is computed from the birth date, nothing to say.
    folder = write_cohort(
        tmp_path,
        [good("A"), good("B")],
        [
            {"subject_id": "A", "birth_date": "", "age": 30},
            {"subject_id": "B", "birth_date": "1980-05-10", "age": 44},
        ],
    )
    issues = issues_for(folder, date(2024, 6, 1))
    row = issues[issues["check"] == "age_undated_at_as_of"]
    assert (row["subject_id"].tolist(), row["severity"].tolist()) == (["A"], ["info"])
    assert "age_undated_at_as_of" not in set(issues_for(folder)["check"])  # no --as-of


def test_screening_scores_of_an_unknown_date_are_said_to_be_unknown_on_an_as_of_date(tmp_path):
    # With --as-of: A has a HAM-D but no screening date (said: the score may be later);
    # B has neither (nothing hidden, nothing said); C was screened before the date.
    folder = write_cohort(
        tmp_path,
        [good("A"), good("B"), good("C")],
        [
            {"subject_id": "A", "screening_date": "", "hamd_screening": 24},
            {"subject_id": "B", "screening_date": "", "hamd_screening": ""},
            {"subject_id": "C", "screening_date": "2024-05-01", "hamd_screening": 24},
        ],
    )
    issues = issues_for(folder, date(2024, 6, 1))
    row = issues[issues["check"] == "screening_undated_at_as_of"]
    assert (row["subject_id"].tolist(), row["severity"].tolist()) == (["A"], ["info"])


def test_a_criteria_column_has_the_type_its_criteria_compare_it_with(tmp_path):
    # ocd (compared with true) and bmi (compared by order) are not contract columns. A
    # cell that is not true/false, or not a number, is an error at its line, as in a
    # contract column: inferred from the cells, ocd would have been text and bmi too,
    # and "yes" would not have been true. Without such a cell both read as before.
    from conftest import write_rules

    rules = write_rules(
        tmp_path,
        {
            "criteria": [
                {"id": "EX-OCD", "title": "No OCD", "source": "test", "kind": "exclusion",
                 "column": "ocd", "op": "eq", "value": True},
                {"id": "BMI", "title": "BMI under 40", "source": "test", "column": "bmi",
                 "op": "lt", "value": 40},
            ]
        },
    )  # fmt: skip
    folder = write_cohort(
        tmp_path / "in",
        [good("A"), good("B")],
        [
            {"subject_id": "A", "ocd": "unknown", "bmi": "n/a"},
            {"subject_id": "B", "ocd": "no", "bmi": 31},
        ],
    )
    issues = api.load(api.ScreenRequest(folder, rules=str(rules))).validated.issues
    located = set(zip(issues["line"], issues["column"], issues["check"], strict=True))
    assert {(2, "ocd", "not_boolean"), (2, "bmi", "not_a_number")} <= located
    assert not (issues["line"] == 3).any()

    # The decision: C said "yes" (OCD) in a column whose "unknown" cell (D's) made it text,
    # where "yes" is not true, and C was eligible. Now C is excluded, D held for review.
    folder = write_cohort(
        tmp_path / "in2",
        [good("C"), good("D")],
        [
            {"subject_id": "C", "ocd": "yes", "bmi": 31},
            {"subject_id": "D", "ocd": "unknown", "bmi": 31},
        ],
    )
    request = api.ScreenRequest(folder, rules=str(rules), on_invalid="quarantine")
    decisions = api.screen(api.load(request)).decisions.set_index("subject_id")["decision"]
    assert decisions.to_dict() == {"C": "excluded", "D": "needs_review"}


def test_missing_required_column_says_how_to_map_it(tmp_path):
    path = write_csv(
        tmp_path / "treatments.csv", [good()], [c for c in TREATMENT_COLUMNS if c != "drug"]
    )
    issues = issues_for(path, date(2024, 6, 1))
    message = issues[issues["check"] == "missing_column"]["message"].iloc[0]
    assert "`drug`" in message and "columns:" in message


def test_column_map_renames_site_headers(tmp_path):
    path = tmp_path / "treatments.csv"
    path.write_text("Patient,Medication,Dose,Start,Stop\nA,sertraline,100,2023-02-01,2023-03-28\n")
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "treatments: {Patient: subject_id, Medication: drug, Dose: daily_dose_mg, Start: start_date, Stop: end_date}\n"
    )
    loaded = api.load(api.ScreenRequest(path, column_map=mapping, as_of=date(2024, 6, 1)))
    checks = set(loaded.validated.issues["check"])
    assert checks == {"subjects_table_missing"}  # the columns themselves all mapped
    assert loaded.validated.treatments["daily_dose_mg"].tolist() == [100.0]


def test_ragged_csv_is_a_clean_error(tmp_path):
    path = tmp_path / "treatments.csv"
    path.write_text("subject_id,drug,daily_dose_mg,start_date\nA,sertraline,100,2023-02-01,extra\n")
    with pytest.raises(InputError, match="line 2: the row has 5 fields but the header has 4"):
        api.load(api.ScreenRequest(path, as_of=date(2024, 6, 1)))


@pytest.mark.parametrize("chunk_rows", [None, 1000])  # read whole, or streamed
def test_the_error_shown_is_the_first_one_reading_in_turn_would_meet(tmp_path, chunk_rows):
    # The subjects file is opened and read in a thread while the treatments are hashed;
    # the error a user sees must still be the first one met going in turn: treatments
    # opened (an empty file fails here), subjects opened, treatments read (a ragged row
    # fails here), subjects read. So a ragged treatments file with an empty subjects file
    # shows the subjects' error, and with a ragged subjects file the treatments'.
    files = {
        "empty": "",
        "ragged treatments": "subject_id,drug\nA,sertraline,extra\n",
        "ragged subjects": "subject_id,sex\nA,F,extra\n",
    }
    first = {  # (treatments, subjects) -> the file named and what it says
        ("empty", "empty"): ("treatments", "empty"),
        ("empty", "ragged subjects"): ("treatments", "empty"),
        ("empty", None): ("treatments", "empty"),
        ("ragged treatments", "empty"): ("subjects", "empty"),
        ("ragged treatments", "ragged subjects"): ("treatments", "has 3 fields"),
        ("ragged treatments", None): ("treatments", "has 3 fields"),
        (None, "empty"): ("subjects", "empty"),
        (None, "ragged subjects"): ("subjects", "has 3 fields"),
    }
    folder = tmp_path / "cohort"
    write_cohort(folder, [good()], [{"subject_id": "A"}])
    good_files = {n: (folder / f"{n}.csv").read_text() for n in ("treatments", "subjects")}
    request = api.ScreenRequest(folder, as_of=date(2024, 6, 1), chunk_rows=chunk_rows)
    for (treatments, subjects), (named, says) in first.items():
        for name, bad in (("treatments", treatments), ("subjects", subjects)):
            (folder / f"{name}.csv").write_text(files[bad] if bad else good_files[name])
        with pytest.raises(InputError, match=rf"{named}\.csv: .*{says}"):
            api.load(request)


def test_empty_file_is_a_clean_error(tmp_path):
    path = tmp_path / "treatments.csv"
    path.write_text("")
    with pytest.raises(InputError, match="empty"):
        api.load(api.ScreenRequest(path, as_of=date(2024, 6, 1)))


def test_no_patient_value_reaches_stdout_or_stderr(tmp_path):
    """A sentinel planted in bad cells must never be printed."""
    sentinel = "ZZSENTINEL4711"
    rows = [
        good("A", daily_dose_mg=sentinel),
        good("B", drug=sentinel),
        good("C", end_date=sentinel),
    ]
    folder = write_cohort(tmp_path / "in", rows, [{"subject_id": s} for s in "ABC"])
    runner = CliRunner()
    for args in (
        ["screen", folder, "--out", tmp_path / "o"],
        ["validate", folder],
        ["validate", folder, "--json"],
    ):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert sentinel not in result.stdout and sentinel not in result.stderr
    issues = (tmp_path / "o" / "validation_issues.csv").read_text()
    assert sentinel not in issues


def test_as_of_sets_the_reference_date(tmp_path):
    """--as-of replaces every subject's screening date: an ongoing course started 2024-05-01 runs
    32 days to 2024-06-01 but only 11 days to 2024-05-11."""
    folder = write_cohort(
        tmp_path,
        [good("A", end_date="", stop_reason="ongoing", start_date="2024-05-01")],
        [{"subject_id": "A"}],
    )
    weeks = {
        when: run_cohort(folder, as_of=when)[1].courses["weeks"].iloc[0]
        for when in (date(2024, 6, 1), date(2024, 5, 11))
    }
    assert weeks == {date(2024, 6, 1): 4.57, date(2024, 5, 11): 1.57}


def test_text_dates_and_numbers_parsed_per_distinct_value_still_flag_every_bad_row():
    """Dates and numbers in text are parsed once per distinct text (convert._by_distinct);
    a bad text that repeats must still be reported on each of its rows, blanks stay
    missing without an error, and good repeats all get their value."""
    import numpy as np
    import pyarrow as pa

    from trdscreen.convert import _to_date, _to_float

    dates = pa.chunked_array(
        [["2023-01-05", "2023-02-30", " 2023-01-05 "], [None, "", "2023-02-30", "2023-01-05"]]
    )
    values, bad, check = _to_date(dates)
    assert check == "not_iso_date"
    assert bad.tolist() == [1, 5]  # 2023-02-30 does not exist, on both of its rows
    assert values.astype(str).tolist() == [
        "2023-01-05T00:00:00", "NaT", "2023-01-05T00:00:00", "NaT", "NaT", "NaT",
        "2023-01-05T00:00:00",
    ]  # fmt: skip
    numbers = pa.chunked_array([["50", "5O", "50", "  ", "12.5", "5O"]])
    values, bad, _ = _to_float(numbers, integral=False)
    assert bad.tolist() == [1, 5]  # "5O" (letter O) on both rows
    assert np.isnan(values[[1, 3, 5]]).all() and values[[0, 2, 4]].tolist() == [50.0, 50.0, 12.5]


# --------------------------------------------------------------------------- batches
# The Dask engine reads inputs a batch at a time (`InputFile.batches`): the batches
# must hold the rows, values and source lines the whole read holds.


def _batched(source, rows, exact=False):
    import numpy as np
    import pyarrow as pa

    pieces = list(source.batches(rows, exact_lines=exact))
    return pa.concat_tables([p.table for p in pieces]), np.concatenate([p.lines for p in pieces])


def _decoded(table):
    import pyarrow as pa

    for index, field in enumerate(table.schema):
        if pa.types.is_dictionary(field.type):
            column = table.column(index).cast(field.type.value_type)
            table = table.set_column(index, field.name, column)
    return table


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_whole_read_holds_text_but_the_key_as_codes(tmp_path, fmt):
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from trdscreen.io import open_source

    # The site calls its key "patient" (mapped), and has a text column of its own.
    rows = {
        "patient": ["A", "A", "B"],
        "drug": ["sertraline", "sertraline", " Zoloft "],
        "daily_dose_mg": ["100", "100", "50"],
        "note": ["x", None, "y"],
    }
    path = tmp_path / f"treatments.{fmt}"
    (pacsv.write_csv if fmt == "csv" else pq.write_table)(pa.table(rows), path)
    names = set(TREATMENT_COLUMNS)
    source = open_source(path, "treatments", {"patient": "subject_id"}, names).read()
    kinds = {f.name: f.type for f in source.table.schema}
    # The key stays text (chunks and codes read it as such); other text becomes codes.
    assert kinds["subject_id"] == pa.string()
    assert all(pa.types.is_dictionary(kinds[n]) for n in ("drug", "note"))
    # From CSV every column is text; from Parquet the dose column is text as written.
    assert pa.types.is_dictionary(kinds["daily_dose_mg"])
    # The values are the file's, untouched (trimming is validation's job).
    assert _decoded(source.table).to_pydict() == {
        "subject_id": ["A", "A", "B"],
        "drug": ["sertraline", "sertraline", " Zoloft "],
        "daily_dose_mg": ["100", "100", "50"],
        "note": ["x", None, "y"],
    }


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_batches_hold_what_the_whole_read_holds(tmp_path, fmt):
    from trdscreen.io import open_source
    from trdscreen.synth import synthesize, write_synthetic

    write_synthetic(synthesize(400, seed=5), tmp_path, fmt)
    source = open_source(tmp_path / f"treatments.{fmt}", "treatments", {}, set(TREATMENT_COLUMNS))
    whole = source.read()
    table, lines = _batched(source, 300)
    # The whole read holds text dictionary-encoded (the batches as read): same values.
    assert table.equals(_decoded(whole.table))
    assert lines.tolist() == whole.lines.tolist()
    # CSV: the header is line 1, so row k is on line k + 1; Parquet: row k is "line" k.
    first = 2 if fmt == "csv" else 1
    assert lines.tolist() == list(range(first, first + whole.table.num_rows))


def test_batches_count_lines_exactly_after_a_quoted_line_break(tmp_path):
    from trdscreen.io import LinesNotCounted, open_source

    path = tmp_path / "treatments.csv"
    path.write_text(
        "subject_id,drug,daily_dose_mg,start_date,end_date\n"
        'A,"sertraline\nfilm-coated",100,2023-02-01,2023-03-28\n'
        "B,sertraline,100,2023-02-01,2023-03-28\n"
        "\n"  # a blank line: not a row, but a line
        "C,sertraline,100,2023-02-01,2023-03-28\n"
    )
    source = open_source(path, "treatments", {}, set(TREATMENT_COLUMNS))
    with pytest.raises(LinesNotCounted):  # one line per row is not true of this file
        _batched(source, 1)
    table, lines = _batched(source, 1, exact=True)
    # A starts on line 2 and spans 3; B is on 4; line 5 is blank; C is on 6.
    assert lines.tolist() == [2, 4, 6] == source.read().lines.tolist()
    assert table["subject_id"].to_pylist() == ["A", "B", "C"]


def test_batches_report_a_file_with_no_rows(tmp_path):
    from trdscreen.io import open_source

    path = tmp_path / "treatments.csv"
    path.write_text("subject_id,drug,daily_dose_mg,start_date,end_date\n")
    source = open_source(path, "treatments", {}, set(TREATMENT_COLUMNS))
    with pytest.raises(InputError, match="header but no data rows"):
        _batched(source, 10)


def test_a_source_tables_repr_holds_no_values(tmp_path):
    # A failed Dask task's log prints its arguments (SourceTable pieces): no cell may
    # appear there, only the file's name, format, hash and size.
    from trdscreen.io import open_source

    row = good("SENTINEL-7731", drug="zzsentinelzz")
    write_csv(tmp_path / "treatments.csv", [row], list(row))
    shown = repr(open_source(tmp_path / "treatments.csv", "treatments", {}, set()).read())
    assert "SENTINEL-7731" not in shown and "zzsentinelzz" not in shown
    assert "treatments.csv" in shown


def test_a_hamd_total_is_checked_against_its_own_version(tmp_path):
    # HAM-D17 tops out at 52, HAM-D21 at 64, HAM-D24 at 75 (trd-reference D.1): 60 is
    # impossible on HAM-D17 (also when hamd_version is empty) but a valid HAM-D24 total;
    # 80 is beyond every version; 19 is no version.
    rows = [
        good("A", hamd_start=60),
        good("B", hamd_start=60, hamd_version=17),
        good("C", hamd_start=60, hamd_version=24),
        good("D", hamd_start=70, hamd_version=21),
        good("E", hamd_start=80, hamd_version=24),
        good("F", hamd_version=19),
        good("G", madrs_start=61),
    ]
    folder = write_cohort(tmp_path, rows, [{"subject_id": s} for s in "ABCDEFG"])
    issues = issues_for(folder)
    checks = set(zip(issues["subject_id"], issues["check"], issues["column"], strict=True))
    assert ("A", "out_of_range", "hamd_start") in checks
    assert ("B", "out_of_range", "hamd_start") in checks
    assert not any(subject == "C" for subject, _, _ in checks)
    assert ("D", "out_of_range", "hamd_start") in checks
    assert ("E", "out_of_range", "hamd_start") in checks
    assert ("F", "not_in_vocabulary", "hamd_version") in checks
    assert ("G", "out_of_range", "madrs_start") in checks
    # one issue per bad cell, never two (the range check and the per-version check)
    assert len(issues[issues["subject_id"] == "E"]) == 1


def test_the_fast_pre_check_finds_every_cell_pandera_finds(tmp_path, monkeypatch):
    """Value checks run pandera only on a table where the vectorized pre-check (read from
    the same pandera schema) finds a failure. Each row below breaks one declared check
    (a range on each side, a vocabulary, a required cell); with the pre-check forced to
    say "failed" every time, pandera checks everything: the issues must be the same,
    and a clean table must pass the pre-check without pandera."""
    from trdscreen import schemas

    rows = [
        good("A", hamd_start=60), good("B", adherence=1.5), good("C", role="booster"),
        good("D", daily_dose_mg=-5), good("E", drug=""), good("F", modality="yoga"),
        good("G", hamd_end=-1), good("H"),
    ]  # fmt: skip
    folder = write_cohort(tmp_path / "bad", rows, [{"subject_id": s} for s in "ABCDEFGH"])
    fast = issues_for(folder)
    assert {"out_of_range", "not_in_vocabulary", "required_value_missing"} <= set(fast["check"])
    monkeypatch.setattr(schemas, "_all_pass", lambda schema, frame: False)
    assert issues_for(folder).equals(fast)
    monkeypatch.undo()
    clean = write_cohort(
        tmp_path / "clean", [good("A"), good("B")], [{"subject_id": "A"}, {"subject_id": "B"}]
    )
    called = []
    original = schemas.pa.DataFrameSchema.validate
    monkeypatch.setattr(
        schemas.pa.DataFrameSchema, "validate",
        lambda self, *a, **k: called.append(1) or original(self, *a, **k),
    )  # fmt: skip
    assert issues_for(clean).empty and called == []
