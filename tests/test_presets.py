"""The preset library: every shipped definition is complete, cited, runnable and rendered
from its YAML; the rules and formulary commands; reported staging scores."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from conftest import SAMPLE, deep_merge, preset_data, run_cohort
from typer.testing import CliRunner

from trdscreen.cli import app
from trdscreen.errors import ExitCode
from trdscreen.evidence import read_tagged
from trdscreen.rulefile import parse_rules, preset_dir
from trdscreen.ruleset import RuleSet

PRESETS = [
    "ema-2013",
    "kim-2020",
    "maudsley-2009",
    "mgh-atrq",
    "mgh-s-2003",
    "sforzini-2021",
    "thase-rush-1997",
]
STAGING = {
    "maudsley-2009": "msm_score",
    "thase-rush-1997": "thase_rush_stage",
    "mgh-s-2003": "mgh_s_score",
}
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_the_seven_presets_are_shipped():
    assert sorted(p.stem for p in preset_dir().glob("*.yaml")) == PRESETS


@pytest.mark.parametrize("name", PRESETS)
def test_every_clinical_parameter_names_its_evidence(name):
    path = preset_dir() / f"{name}.yaml"
    text = path.read_text()
    assert read_tagged(path)[1] == []  # no untagged clinical parameter
    rules = parse_rules(text, name)
    assert rules.id == name and rules.source
    for criterion in rules.criteria:
        assert criterion.evidence in ("V", "S", "U"), criterion.id
        assert criterion.source, criterion.id


def _leaves(value, path=()):
    if isinstance(value, dict) and value:
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    else:
        yield path


@pytest.mark.parametrize("name", PRESETS)
def test_no_parameter_is_a_hidden_default(name):
    """Every rule-model parameter appears in the preset file itself, so nothing [U] hides in code."""
    raw = preset_data(name)
    dumped = RuleSet.model_validate(raw).model_dump(mode="json")
    optional = {("columns",), ("description",)} | (
        {("staging",)} if "staging" not in raw else set()
    )
    duration = raw["adequacy"]["duration"]
    either = "min_days" if "min_weeks" in duration else "min_weeks"  # one of the two is written
    for path in _leaves({k: v for k, v in dumped.items() if k != "criteria"}):
        if path[:1] in optional or path == ("adequacy", "duration", either):
            continue
        node = raw
        for part in path:
            assert isinstance(node, dict) and part in node, (
                f"{name}: {'.'.join(path)} is not written out"
            )
            node = node[part]


@pytest.mark.parametrize("name", PRESETS)
def test_each_preset_screens_the_sample(name, tmp_path):
    result = invoke("screen", SAMPLE, "--rules", name, "--out", tmp_path / "run", "--json")
    assert result.exit_code == ExitCode.OK, result.output
    summary = json.loads(result.stdout)
    assert summary["rules"] == name
    assert sum(summary["counts"]["decision"].values()) == 67
    if name in STAGING:
        decisions = pd.read_csv(tmp_path / "run" / "decisions.csv")
        assert STAGING[name] in decisions.columns


def test_rules_list_shows_every_preset():
    result = invoke("rules", "list")
    assert result.exit_code == 0
    for name in PRESETS:
        assert name in result.stdout
    listed = json.loads(invoke("rules", "list", "--json").stdout)
    assert [p["id"] for p in listed["presets"]] == PRESETS
    assert listed["default"] == "sforzini-2021"
    assert all(p["title"] and p["source"] and p["summary"] for p in listed["presets"])


@pytest.mark.parametrize("name", PRESETS)
def test_rules_show_renders_each_preset(name):
    result = invoke("rules", "show", name)
    assert result.exit_code == 0, result.output
    rules = parse_rules((preset_dir() / f"{name}.yaml").read_text(), name)
    assert rules.title in result.stdout
    for criterion in rules.criteria:
        assert criterion.id in result.stdout
    assert "Unverified parameters" in result.stdout


def test_rules_show_is_generated_from_the_yaml(tmp_path):
    """Change a value and its tag in a copy: the protocol text follows the file."""
    text = (preset_dir() / "sforzini-2021.yaml").read_text()
    assert "    min_weeks: 4               # [U]" in text
    changed = text.replace(
        "    min_weeks: 4               # [U]", "    min_weeks: 7               # [V]"
    )
    path = tmp_path / "custom.yaml"
    path.write_text(changed)
    before = invoke("rules", "show", "sforzini-2021").stdout
    after = invoke("rules", "show", path).stdout
    assert "duration >= 4 weeks" in before and "adequacy.duration.min_weeks" in before
    assert "duration >= 7 weeks" in after
    line = next(x for x in after.splitlines() if "duration >= 7 weeks" in x)
    assert line.endswith("[V]")
    unverified = after.split("Unverified parameters")[1]
    assert "adequacy.duration.min_weeks:" not in unverified


def test_rules_check_reports_every_problem_with_key_and_line(tmp_path):
    data = preset_data()
    data["adequacy"]["duration"]["min_weeks"] = -3
    data["outcome"]["nonresponse"]["op"] = "=<"
    data["counting"]["agents"] = ["antidepressant", "hormone"]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    result = invoke("rules", "check", path)
    assert result.exit_code == ExitCode.INVALID_RULES
    for key in ("adequacy.duration.min_weeks", "outcome.nonresponse.op", "counting.agents.1"):
        assert f"`{key}`" in result.stderr, key
    assert f"{path}:" in result.stderr  # file:line on each problem


def test_rules_check_accepts_a_good_file_and_notes_extra_columns():
    result = invoke("rules", "check", preset_dir() / "mgh-atrq.yaml")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok: ")
    assert "subjects column `ocd`" in result.stdout


def test_a_staging_column_needs_a_staging_model(tmp_path):
    data = preset_data()
    data["criteria"].append(
        {
            "id": "MSM",
            "title": "MSM >= 7",
            "source": "test",
            "column": "msm_score",
            "op": "ge",
            "value": 7,
        }
    )
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    result = invoke("rules", "check", path)
    assert result.exit_code == ExitCode.INVALID_RULES
    assert "criteria.5" in result.stderr and "maudsley" in result.stderr  # the 6th criterion
    # Reporting the MSM preset provides the column: the same gate is then accepted.
    data["report"] = ["maudsley-2009"]
    path.write_text(yaml.safe_dump(data))
    assert invoke("rules", "check", path).exit_code == 0


def test_a_report_must_have_a_staging_model():
    result = invoke("screen", SAMPLE, "--out", "unused", "--report", "ema-2013")
    assert result.exit_code == ExitCode.INVALID_RULES
    assert "no `staging:` model" in " ".join(result.stderr.split())


def test_reported_scores_are_recorded_in_the_manifest(tmp_path):
    out = tmp_path / "run"
    result = invoke(
        "screen", SAMPLE, "--out", out, "--report", "maudsley-2009", "--report", "mgh-s-2003"
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert [r["id"] for r in manifest["reports"]] == ["maudsley-2009", "mgh-s-2003"]
    assert all(len(r["normalized_sha256"]) == 64 for r in manifest["reports"])
    decisions = pd.read_csv(out / "decisions.csv")
    assert {"msm_score", "msm_score_max", "msm_band", "mgh_s_score"} <= set(decisions.columns)
    # The decision itself is Sforzini's, unchanged by what is reported.
    plain = run_cohort(SAMPLE)[1].decisions
    assert decisions["decision"].tolist() == plain["decision"].astype(str).tolist()


def test_formulary_lists_and_looks_up():
    listed = json.loads(invoke("formulary", "--json").stdout)
    generics = [d["generic"] for d in listed["drugs"]]
    assert "sertraline" in generics and len(generics) == len(set(generics))
    assert len(listed["sha256"]) == 64
    found = json.loads(invoke("formulary", "Seroxat CR", "--json").stdout)["drugs"][0]
    assert (
        found["generic"] == "paroxetine" and found["min_mg_per_day"] == 25
    )  # CR minimum (ATRQ [S])
    brand = json.loads(invoke("formulary", "Zyban", "--json").stdout)["drugs"][0]
    assert brand["non_depression_product"] is True
    text = invoke("formulary", "venlafaxine").stdout
    assert "150 mg/day" in text and "SNRI" in text
    # escitalopram is the S-enantiomer of citalopram: one moiety (counting.distinct: moiety)
    lexapro = json.loads(invoke("formulary", "Lexapro", "--json").stdout)["drugs"][0]
    assert (lexapro["generic"], lexapro["moiety"]) == ("escitalopram", "citalopram")
    assert "active moiety: citalopram" in invoke("formulary", "escitalopram").stdout
    assert (
        json.loads(invoke("formulary", "sertraline", "--json").stdout)["drugs"][0]["moiety"]
        == "sertraline"
    )
    missing = invoke("formulary", "fluoxitine")
    assert missing.exit_code == ExitCode.USAGE and "fluoxetine" in missing.stderr


def test_formulary_applies_a_rule_sets_overrides_and_dose_column(tmp_path):
    data = deep_merge(
        preset_data(),
        {
            "formulary": {
                "overrides": {"fluvoxamine": {"min_mg_per_day": 100, "source": "site protocol"}}
            }
        },
    )
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    row = json.loads(invoke("formulary", "fluvoxamine", "--rules", path, "--json").stdout)["drugs"][
        0
    ]
    assert row["min_mg_per_day"] == 100 and "site protocol" in row["min_source"]
    # dosulepin has no ATRQ minimum: the MGH-ATRQ preset (atrq only) shows none, Sforzini the fallback.
    atrq = json.loads(invoke("formulary", "dosulepin", "--rules", "mgh-atrq", "--json").stdout)
    sforzini = json.loads(invoke("formulary", "dosulepin", "--json").stdout)
    assert atrq["drugs"][0]["min_mg_per_day"] is None
    assert sforzini["drugs"][0]["min_mg_per_day"] == 150


def test_a_site_formulary_file_is_used_and_hashed(tmp_path):
    from trdscreen.formulary import bundled_formulary_text

    site = bundled_formulary_text().replace(
        "sertraline,SSRI,N06AB06,antidepressant,50,", "sertraline,SSRI,N06AB06,antidepressant,150,"
    )
    assert site != bundled_formulary_text()
    (tmp_path / "site-formulary.csv").write_text(site)
    data = deep_merge(preset_data(), {"formulary": {"path": "site-formulary.csv"}})
    rules = tmp_path / "site.yaml"
    rules.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    assert invoke("screen", SAMPLE, "--rules", rules, "--out", out).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    import hashlib

    assert manifest["formulary"]["sha256"] == hashlib.sha256(site.encode()).hexdigest()
    courses = pd.read_csv(out / "courses.csv")
    assert set(courses.loc[courses["drug_generic"] == "sertraline", "min_dose_mg"]) == {150.0}
