"""Rule-file loading (strict, safe, every problem named) and the bundled formulary."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import preset_data

from trdscreen.errors import RuleError
from trdscreen.formulary import load_formulary, normalize_name
from trdscreen.ruleset import parse_rules, resolve_rules


def problems_for(data: dict) -> list[str]:
    with pytest.raises(RuleError) as info:
        parse_rules(yaml.safe_dump(data), "custom.yaml")
    return info.value.problems


def test_default_preset_loads():
    rules = parse_rules(resolve_rules(None).read_text(), "preset")
    assert rules.id == "sforzini-2021"
    assert rules.outcome.nonresponse.op == "<" and rules.outcome.nonresponse.pct == 25
    assert [c.id for c in rules.criteria] == ["AGE", "EX-BIPOLAR", "HAMD-SCREEN", "TRD-MIN"]


def test_unknown_key_lists_allowed_keys():
    data = preset_data()
    data["adequacy"]["duration"]["minimum_weeks"] = 6
    (problem,) = problems_for(data)
    assert "adequacy.duration.minimum_weeks" in problem and "min_weeks" in problem


def test_every_problem_is_reported_at_once():
    data = preset_data()
    data["outcome"]["nonresponse"]["op"] = "=<"
    data["resistance"]["min_failed_trials"] = 0
    data["criteria"][0]["op"] = "roughly"
    found = problems_for(data)
    assert len(found) == 3
    assert any("outcome.nonresponse.op" in p and "'<'" in p for p in found)
    assert any("resistance.min_failed_trials" in p for p in found)
    assert any("criteria.0.op" in p for p in found)


def test_problems_carry_line_numbers():
    text = resolve_rules(None).read_text().replace("min_weeks: 4", "min_weeks: -4")
    with pytest.raises(RuleError) as info:
        parse_rules(text, "custom.yaml")
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "min_weeks: -4" in t)
    assert info.value.problems[0].startswith(f"custom.yaml:{line}:")


def test_criterion_value_must_fit_the_operator():
    data = preset_data()
    data["criteria"][0]["value"] = [65, 18]
    assert any("low <= high" in p for p in problems_for(data))
    data = preset_data()
    data["criteria"][3]["value"] = "two"
    assert any("takes a number" in p for p in problems_for(data))


def test_duplicate_criterion_ids_are_rejected():
    data = preset_data()
    data["criteria"].append(copy.deepcopy(data["criteria"][0]))
    assert any("used twice" in p for p in problems_for(data))


def test_yaml_aliases_and_bad_yaml_are_refused():
    with pytest.raises(RuleError, match="aliases"):
        parse_rules("a: &x [1, 2]\nb: *x\n", "evil.yaml")
    with pytest.raises(RuleError, match=r"evil\.yaml:\d+: not valid YAML"):
        parse_rules("a: 1\nb: [\n", "evil.yaml")
    with pytest.raises(RuleError, match="mapping"):
        parse_rules("- 1\n- 2\n", "list.yaml")


def test_bundled_formulary_has_the_required_breadth():
    formulary = load_formulary()
    antidepressants = [d for d in formulary.drugs.values() if d.counts_as == "antidepressant"]
    assert len(antidepressants) >= 40
    augmentation = {d.generic for d in formulary.drugs.values() if d.counts_as == "augmentation"}
    assert {"aripiprazole", "quetiapine", "lithium", "liothyronine"} <= augmentation
    for drug in formulary.drugs.values():
        if drug.min_mg_per_day is not None:
            assert drug.min_source, drug.generic  # every dose names its source


@pytest.mark.parametrize(
    ("raw", "generic", "formulation"),
    [
        ("  ZOLOFT ", "sertraline", ""),
        ("Effexor XR", "venlafaxine", "xr"),
        ("sertraline hydrochloride 50 mg", "sertraline", ""),
        ("Escitalopram Oxalate", "escitalopram", ""),
        ("Wellbutrin XL", "bupropion", "xl"),
        ("fluoxetine + olanzapine", "olanzapine/fluoxetine", ""),
        ("Dothiepin", "dosulepin", ""),
    ],
)
def test_names_normalize_to_generics(raw, generic, formulation):
    match = load_formulary().match(raw)
    assert (match.generic, match.formulation) == (generic, formulation)


def test_non_depression_brands_are_flagged():
    formulary = load_formulary()
    for brand, generic in [
        ("Zyban", "bupropion"),
        ("Silenor", "doxepin"),
        ("Brisdelle", "paroxetine"),
    ]:
        match = formulary.match(brand)
        assert match.generic == generic and match.non_depression_product


def test_unknown_names_get_suggestions():
    formulary = load_formulary()
    normalized, _ = normalize_name("Setraline")
    assert formulary.match("Setraline").generic is None
    assert formulary.suggest(normalized)[0] == "sertraline"
