"""Site exports as they come (issue 21): one map file declares an export's headers and
conventions, and the export screens exactly as the same cohort in canonical form.

The European export (tests/european.py) rewrites a canonical cohort with every
convention a European spreadsheet uses; the decisions must not change by one byte. The
hand-worked cells below are the ones a careless adapter would read wrong."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import ROOT, SAMPLE, SUBJECT_DEFAULTS
from tests.european import (
    SUBJECT_HEADERS,
    TREATMENT_HEADERS,
    read_canonical,
    write_european,
    write_example,
)
from trdscreen import api
from trdscreen.cli import app
from trdscreen.errors import InvalidInputData, RuleError
from trdscreen.mapinit import template
from trdscreen.output import Destination
from trdscreen.verify import verify_run

EXAMPLE = ROOT / "examples"
SITE_MAP = EXAMPLE / "site-map.yaml"
DECIDING = ("decisions.csv", "criteria_ledger.csv", "attrition.csv")


def screen(folder: Path, out: Path, rules: str, column_map: Path | None = None) -> Path:
    request = api.ScreenRequest(input=folder, rules=rules, column_map=column_map)
    api.run_to_folder(api.load(request, ["test"]), Destination(out, ("csv",)))
    return out


def assert_same_decisions(european: Path, canonical: Path) -> None:
    for name in DECIDING:
        assert (european / name).read_bytes() == (canonical / name).read_bytes(), name
    # The courses differ only in the drug name as the export wrote it.
    a = pd.read_csv(european / "courses.csv", dtype=str, keep_default_na=False)
    b = pd.read_csv(canonical / "courses.csv", dtype=str, keep_default_na=False)
    pd.testing.assert_frame_equal(a.drop(columns="drug"), b.drop(columns="drug"))


def test_the_shipped_example_export_is_the_sample_rewritten(tmp_path):
    write_example(SAMPLE, tmp_path)
    for name in ("treatments.csv", "subjects.csv"):
        assert (tmp_path / name).read_bytes() == (EXAMPLE / "site-export" / name).read_bytes()


@pytest.mark.parametrize("preset", ["sforzini-2021", "mgh-atrq", "ema-2013"])
def test_the_example_export_screens_like_the_sample_with_one_map(tmp_path, preset):
    european = screen(EXAMPLE / "site-export", tmp_path / "eu", preset, SITE_MAP)
    canonical = screen(SAMPLE, tmp_path / "canonical", preset)
    assert_same_decisions(european, canonical)
    issues = pd.read_csv(european / "validation_issues.csv")
    assert (issues["severity"] == "error").sum() == 0


def _with_fractions_and_thousands(folder: Path) -> None:
    """Make a synthetic cohort exercise every number convention: half doses (37.5 mg
    becomes `37,5 mg`), doses of 1,000 mg or more (`1.200 mg`), fractional adherence."""
    treatments = read_canonical(folder / "treatments.csv")
    dose = pd.to_numeric(treatments["daily_dose_mg"], errors="coerce")
    every_fifth = treatments.index % 5 == 0
    treatments.loc[every_fifth & dose.notna(), "daily_dose_mg"] = (dose + 0.5).map("{:g}".format)
    lithium = treatments["drug"].str.lower().eq("lithium") & dose.notna()
    treatments.loc[lithium, "daily_dose_mg"] = (dose * 1.5).map("{:g}".format)
    treatments.loc[treatments.index % 3 == 0, "adherence"] = "0.85"
    treatments.to_csv(folder / "treatments.csv", index=False)


def test_a_synthetic_european_export_screens_like_its_canonical_form(tmp_path):
    canonical_in = tmp_path / "canonical_in"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "synth",
            "--n-subjects",
            "260",
            "--seed",
            "5",
            "--out",
            str(canonical_in),
            "--format",
            "csv",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    _with_fractions_and_thousands(canonical_in)
    doses = read_canonical(canonical_in / "treatments.csv")["daily_dose_mg"]
    assert doses.str.contains(r"\.5$").any() and (pd.to_numeric(doses) >= 1000).any()
    european_in = tmp_path / "european_in"
    european_in.mkdir()
    write_european(
        read_canonical(canonical_in / "treatments.csv"),
        TREATMENT_HEADERS,
        european_in / "treatments.csv",
    )
    write_european(
        read_canonical(canonical_in / "subjects.csv"), SUBJECT_HEADERS, european_in / "subjects.csv"
    )
    text = (european_in / "treatments.csv").read_text(encoding="utf-8-sig")
    assert re.search(r";\d\.\d{3}(,\d+)? ?mg", text)  # a thousands dot: 1.350 mg
    assert re.search(r";\d+,5 ?mg", text) and re.search(r";85%;", text)
    for preset in ("sforzini-2021", "mgh-atrq"):
        european = screen(european_in, tmp_path / f"eu-{preset}", preset, SITE_MAP)
        canonical = screen(canonical_in, tmp_path / f"c-{preset}", preset)
        assert_same_decisions(european, canonical)


def test_verify_applies_the_recorded_conventions_again(tmp_path):
    out = screen(EXAMPLE / "site-export", tmp_path / "run", "sforzini-2021", SITE_MAP)
    manifest = (out / "manifest.json").read_text()
    assert '"site_conventions"' in manifest and '"%d/%m/%Y"' in manifest
    verification = verify_run(out)
    assert verification.ok
    assert any(c.subject == "site conventions" and c.ok for c in verification.checks)


# --------------------------------------------------------------------------- hand-worked cells


def _one_course(tmp_path: Path, cells: dict[str, str], site: dict) -> tuple[Path, Path]:
    """One course of sertraline for S1 (with an as-of date, no subjects table needed)."""
    row = {"subject_id": "S1", "drug": "sertraline", "daily_dose_mg": "100",
           "start_date": "2023-01-02", "end_date": "2023-04-03", **cells}  # fmt: skip
    path = tmp_path / "treatments.csv"
    pd.DataFrame([row]).to_csv(path, index=False, sep=";")
    subject = {"subject_id": "S1", **SUBJECT_DEFAULTS}  # an MDD patient of 44, HAM-D 24
    pd.DataFrame([subject]).to_csv(tmp_path / "subjects.csv", index=False, sep=";")
    site = {"csv": {"delimiter": ";"}, **site}
    map_path = tmp_path / "map.yaml"
    map_path.write_text(yaml.safe_dump(site, allow_unicode=True))
    return path, map_path


def _issues(path: Path, map_path: Path) -> pd.DataFrame:
    from datetime import date

    request = api.ScreenRequest(input=path.parent, column_map=map_path, as_of=date(2024, 6, 1))
    loaded = api.load(request, ["test"])
    assert loaded.validated is not None
    return loaded.validated.issues


def _courses(tmp_path: Path, path: Path, map_path: Path) -> pd.DataFrame:
    from datetime import date

    request = api.ScreenRequest(input=path.parent, column_map=map_path, as_of=date(2024, 6, 1))
    out = tmp_path.parent / f"{tmp_path.name}-run"
    api.run_to_folder(api.load(request, ["test"]), Destination(out, ("csv",)))
    return pd.read_csv(out / "courses.csv")


def test_a_dot_in_a_decimal_comma_column_is_an_error_not_37_5_or_375(tmp_path):
    # Declared decimal ',' and thousands '.': `37.5` is neither 37,5 written right nor a
    # thousands group (37.500 would be). Read as 37.5 it would guess; read as 375 (the
    # dot dropped as a thousands mark) a sub-minimum dose would become adequate.
    path, map_path = _one_course(
        tmp_path,
        {"daily_dose_mg": "37.5"},
        {"formats": {"all": {"decimal": ",", "thousands": "."}}},
    )
    issues = _issues(path, map_path)
    row = issues[issues["column"] == "daily_dose_mg"].iloc[0]
    assert row["check"] == "not_a_number" and "decimal mark ','" in row["message"]


def test_declared_conventions_give_the_canonical_values(tmp_path):
    # `1.200,5 mg` is 1200.5 mg (thousands dot, decimal comma, unit); `85 %` is 0.85;
    # 02/01/2023 under %d/%m/%Y is 2 January (under %m/%d/%Y it would be 1 February).
    path, map_path = _one_course(
        tmp_path,
        {"drug": "lithium", "daily_dose_mg": "1.200,5 mg", "adherence": "85 %",
         "start_date": "02/01/2023", "end_date": "03/04/2023"},  # fmt: skip
        {"formats": {"all": {"decimal": ",", "thousands": ".", "dates": ["%d/%m/%Y"]},
                     "daily_dose_mg": {"units": ["mg"]}, "adherence": {"percent": True}}},
    )  # fmt: skip
    course = _courses(tmp_path, path, map_path).iloc[0]
    assert course["daily_dose_mg"] == 1200.5
    assert course["adherence"] == 0.85
    assert course["start_date"] == "2023-01-02" and course["end_date"] == "2023-04-03"


def test_an_undeclared_unit_and_an_impossible_date_are_errors(tmp_path):
    # `20 mcg` with only mg declared: stripping any letters would read 20 mg. 31/02 is
    # no date: a rolling parser would read 3 March.
    path, map_path = _one_course(
        tmp_path,
        {"daily_dose_mg": "20 mcg", "start_date": "31/02/2023"},
        {"formats": {"all": {"dates": ["%d/%m/%Y"]}, "daily_dose_mg": {"units": ["mg"]}}},
    )
    issues = _issues(path, map_path).set_index("column")
    assert issues.loc["daily_dose_mg", "check"] == "not_a_number"
    assert "mg" in issues.loc["daily_dose_mg", "message"]
    assert issues.loc["start_date", "check"] == "not_iso_date"
    assert "%d/%m/%Y" in issues.loc["start_date", "message"]


def test_an_ambiguous_date_without_a_declared_format_names_the_formats_that_fit(tmp_path):
    # 03/04/2023 is 3 April or 4 March: never guessed. 25/06/2023 fits day/month only.
    path, map_path = _one_course(
        tmp_path, {"start_date": "03/04/2023", "end_date": "25/06/2023"}, {}
    )
    issues = _issues(path, map_path).set_index("column")
    assert "fit %d/%m/%Y and %m/%d/%Y" in issues.loc["start_date", "message"]
    assert "fit %d/%m/%Y;" in issues.loc["end_date", "message"]
    assert "formats: start_date: dates:" in issues.loc["start_date", "message"]


def test_unmapped_codes_are_listed_and_mapped_ones_translated(tmp_path):
    path, map_path = _one_course(
        tmp_path,
        {"stop_reason": "Patientenwunsch"},
        {"values": {"stop_reason": {"Keine Wirkung": "nonresponse"}}},
    )
    issues = _issues(path, map_path).set_index("column")
    message = issues.loc["stop_reason", "message"]
    assert issues.loc["stop_reason", "check"] == "not_in_vocabulary"
    assert "'patientenwunsch'" in message and "values: stop_reason:" in message
    path, map_path = _one_course(
        tmp_path,
        {"stop_reason": " keine wirkung "},  # matched trimmed, ignoring case
        {"values": {"stop_reason": {"Keine Wirkung": "nonresponse"}}},
    )
    issues = _issues(path, map_path)
    assert (issues["column"] != "stop_reason").all()


@pytest.mark.parametrize(
    ("site", "key"),
    [
        ({"formats": {"adherance": {"percent": True}}}, "formats.adherance"),
        ({"formats": {"drug": {"decimal": ","}}}, "formats.drug"),
        ({"values": {"stop_reason": {"Keine Wirkung": "nonresponder"}}},
         "values.stop_reason.Keine Wirkung"),
        ({"values": {"drug": {"Sertra": "sertraline"}}}, "values.drug"),
        ({"drug_aliases": {"Trevilor": "venlafaxin-xr"}}, "drug_aliases.Trevilor"),
        ({"csv": {"encoding": "klingon"}}, "csv.encoding"),
    ],
)  # fmt: skip
def test_a_wrong_map_key_is_named(tmp_path, site, key):
    path, map_path = _one_course(tmp_path, {}, site)
    with pytest.raises(RuleError) as caught:
        _issues(path, map_path)
    assert f"`{key}`" in str(caught.value) + " ".join(getattr(caught.value, "problems", []))


@pytest.mark.parametrize(
    ("site", "words"),
    [
        ({"formats": {"all": {"dates": ["%d/%q/%Y"]}}}, "%q"),
        ({"formats": {"all": {"dates": ["%d/%m"]}}}, "once each"),
        ({"formats": {"all": {"decimal": ",", "thousands": ","}}}, "both ','"),
        ({"formats": {"all": {"booleans": {"yes": ["Ja", "N"], "no": ["N"]}}}}, "both yes and no"),
    ],
)
def test_a_wrong_convention_is_refused_when_the_map_is_read(tmp_path, site, words):
    path, map_path = _one_course(tmp_path, {}, site)
    with pytest.raises(RuleError) as caught:
        _issues(path, map_path)
    assert words in str(caught.value) + " ".join(getattr(caught.value, "problems", []))


def test_unquoted_yaml_yes_and_no_are_read_as_the_words(tmp_path):
    # YAML 1.1 reads `yes:`/`no:` keys and `Yes` words as true/false: the issue's own
    # example `{yes: [Yes, Ja], no: [No, Nein]}` must still mean those words.
    map_path = tmp_path / "map.yaml"
    map_path.write_text("formats:\n  all:\n    booleans: {yes: [Yes, Ja, 1], no: [No, Nein, 0]}\n")
    from trdscreen.rulefile import load_column_map

    words = load_column_map(map_path).formats["all"].booleans
    assert words is not None
    assert words.yes == ("yes", "Ja", "1") and words.no == ("no", "Nein", "0")


def test_a_rule_set_columns_section_may_declare_conventions_too(tmp_path):
    from tests.conftest import write_rules

    rules = write_rules(tmp_path, {"columns": {"formats": {"all": {"dates": ["%d.%m.%Y"]}}}})
    path = tmp_path / "t.csv"
    path.write_text("subject_id,drug,daily_dose_mg,start_date,end_date\nS1,sertraline,100,"
                    "02.01.2023,03.04.2023\n")  # fmt: skip
    from datetime import date

    request = api.ScreenRequest(input=path, rules=str(rules), as_of=date(2024, 6, 1))
    loaded = api.load(request, ["test"])
    assert loaded.validated is not None
    assert (loaded.validated.issues["column"] != "start_date").all()


# --------------------------------------------------------------------------- map init


def test_map_init_proposes_every_column_and_convention_of_the_example(tmp_path):
    proposed = yaml.safe_load(template(EXAMPLE / "site-export"))
    shipped = yaml.safe_load(SITE_MAP.read_text())
    assert proposed["treatments"] == shipped["treatments"]
    assert proposed["subjects"] == shipped["subjects"]
    assert proposed["csv"] == {"delimiter": ";", "encoding": "utf-8"}
    everything = proposed["formats"]["all"]
    assert everything["dates"] == ["%d/%m/%Y"] and everything["decimal"] == ","
    assert everything["booleans"] == {"yes": ["Ja"], "no": ["Nein"]}
    assert set(proposed["formats"]["daily_dose_mg"]["units"]) == {"mg", "mg/Tag"}
    assert proposed["formats"]["adherence"]["percent"] is True


def test_map_init_leaves_ambiguous_dates_to_the_user(tmp_path):
    (tmp_path / "t.csv").write_text(
        "Patient;Drug;Dose;Start;Stop\nS1;sertraline;100;03/04/2023;05/06/2023\n"
    )
    text = template(tmp_path / "t.csv")
    assert '# dates: ["%d/%m/%Y"]  # CHOOSE: %d/%m/%Y and %m/%d/%Y' in text
    proposed = yaml.safe_load(text)
    assert "dates" not in ((proposed.get("formats") or {}).get("all") or {})


def test_map_init_output_with_the_values_filled_in_screens_the_example(tmp_path):
    # What a coordinator does: init, fill in the ? lines and the drug aliases, screen.
    proposed = yaml.safe_load(template(EXAMPLE / "site-export"))
    shipped = yaml.safe_load(SITE_MAP.read_text())
    proposed["values"] = shipped["values"]
    proposed["drug_aliases"] = shipped["drug_aliases"]
    map_path = tmp_path / "edited.yaml"
    map_path.write_text(yaml.safe_dump(proposed, allow_unicode=True))
    european = screen(EXAMPLE / "site-export", tmp_path / "eu", "sforzini-2021", map_path)
    canonical = screen(SAMPLE, tmp_path / "c", "sforzini-2021")
    assert_same_decisions(european, canonical)


def test_map_init_on_the_cli_prints_the_template_and_escapes_headers(tmp_path):
    (tmp_path / "t.csv").write_text("subject_id,drug,\x1b[31mred,start_date\nS1,x,1,2023-01-01\n")
    result = CliRunner().invoke(app, ["map", "init", str(tmp_path / "t.csv")])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\\x1b[31mred" in result.output
    yaml.safe_load(result.output)  # the escaped header still reads back


def test_unedited_template_values_fail_with_the_unmapped_codes(tmp_path):
    shutil.copytree(EXAMPLE / "site-export", tmp_path / "export")
    map_path = tmp_path / "init.yaml"
    map_path.write_text(template(tmp_path / "export"))
    with pytest.raises(InvalidInputData):
        screen(tmp_path / "export", tmp_path / "run", "sforzini-2021", map_path)
    issues = pd.read_csv(tmp_path / "run" / "validation_issues.csv")
    vocabulary = issues[issues["check"] == "not_in_vocabulary"]
    assert "'keine wirkung'" in " ".join(vocabulary["message"])
