"""Rule-file loading (strict, safe, every problem named) and the bundled formulary."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import preset_data, write_rules

from trdscreen import api
from trdscreen.drugnames import inn_variants, normalize_name
from trdscreen.errors import RuleError
from trdscreen.formulary import load_formulary
from trdscreen.rulefile import parse_rules, resolve_rules


def problems_for(data: dict) -> list[str]:
    with pytest.raises(RuleError) as info:
        parse_rules(yaml.safe_dump(data), "custom.yaml")
    return info.value.problems


def test_default_preset_loads():
    rules = parse_rules(resolve_rules(None).read_text(), "preset")
    assert rules.id == "sforzini-2021"
    assert rules.outcome.nonresponse.op == "<" and rules.outcome.nonresponse.pct == 25
    assert [c.id for c in rules.criteria] == ["AGE", "MDD", "EX-BIPOLAR", "HAMD-SCREEN", "TRD-MIN"]


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


# Names as pharmacies and EHRs print them: strengths, units, dose forms, salts in
# brackets, a bracketed brand, and the INN as German, French, Spanish and Italian
# spell it. Each expected generic is the drug the name plainly means.
EXPORT_NAMES = [
    ("Sertraline 100mg tablets", "sertraline", ""),
    ("Venlafaxine 37.5 mg/5 ml oral solution", "venlafaxine", ""),
    ("Fluoxetine 20mg/5ml oral liquid", "fluoxetine", ""),
    ("Citalopram 20mg film-coated tablets", "citalopram", ""),
    ("Duloxetine 60mg gastro-resistant capsules", "duloxetine", ""),
    ("Mirtazapine 15mg orodispersible tablets", "mirtazapine", "odt"),
    ("Bupropion (as hydrochloride) 150mg modified-release tablets", "bupropion", "mr"),
    ("Quetiapine 50mg prolonged-release tablets", "quetiapine", "er"),
    ("Paroxetine (as hydrochloride hemihydrate) 20 mg", "paroxetine", ""),
    ("Escitalopram (Cipralex)", "escitalopram", ""),
    ("Vortioxetine (Brintellix) 10 mg", "vortioxetine", ""),
    ("Lithium carbonate 400mg MR tablets", "lithium", "mr"),
    # RxNorm clinical drug names (an OMOP concept_name): the release hours go.
    ("venlafaxine 75 MG 24HR Extended Release Oral Capsule", "venlafaxine", "er"),
    ("bupropion hydrochloride 150 MG 12 HR Extended Release Oral Tablet", "bupropion", "er"),
    ("Sertralin", "sertraline", ""),  # German
    ("Duloxetin", "duloxetine", ""),
    ("duloxétine", "duloxetine", ""),  # French, accent dropped
    ("sertralina", "sertraline", ""),  # Spanish and Italian
    ("Amitriptilina", "amitriptyline", ""),  # y -> i
    ("Fenelzina", "phenelzine", ""),  # ph -> f
    ("Aripiprazolo", "aripiprazole", ""),  # Italian
    ("Litio", "lithium", ""),
    ("Bupropione", "bupropion", ""),  # Italian
]


@pytest.mark.parametrize(("name", "generic", "formulation"), EXPORT_NAMES)
def test_export_names_resolve(name, generic, formulation):
    match = load_formulary().match(name)
    assert match.generic == generic, (name, match)
    if generic is not None:
        assert match.formulation == formulation and not match.non_depression_product


def test_selegiline_counts_only_as_the_patch():
    """Oral selegiline is the Parkinson's product (ATC N04BD01): never an antidepressant
    trial. Only the transdermal system (Emsam, "patch", "transdermal") counts."""
    formulary = load_formulary()
    for name in ("selegiline", "Selegiline 5mg tablets", "Eldepryl", "Zelapar", "selegiline HCl"):
        match = formulary.match(name)
        assert match.generic == "selegiline" and match.non_depression_product, name
    for name in ("Emsam", "Emsam 6 mg/24 hr", "selegiline patch", "selegiline transdermal",
                 "selegiline (Emsam)"):  # fmt: skip
        match = formulary.match(name)
        assert match.generic == "selegiline" and not match.non_depression_product, name
        assert match.formulation == "transdermal", name
    assert formulary.drugs["selegiline"].atc_code == "N04BD01"


def test_a_bracketed_non_depression_brand_wins():
    """ "Bupropion (Zyban)" names the smoking-cessation product: not an antidepressant trial."""
    assert load_formulary().match("Bupropion (Zyban)").non_depression_product


def test_inn_variants_never_claim_another_drugs_name():
    formulary = load_formulary()
    for generic in formulary.drugs:
        for variant in inn_variants(generic):
            match = formulary.match(variant)
            assert match.generic in (generic, None), (generic, variant, match.generic)
    assert inn_variants("citalopram") == set()  # the same in every language
    assert inn_variants("olanzapine/fluoxetine") == set()


def test_site_aliases_from_the_rule_set(tmp_path):
    """`formulary.aliases` maps a site's own names (normalized like every exported name);
    an alias to an unknown generic is an error naming the key."""
    rules = write_rules(tmp_path, {"formulary": {"aliases": {"Sertra-Q": "sertraline"}}})
    formulary, _ = api.formulary_for(str(rules))
    assert formulary.match("Sertra-Q 50 mg tablets").generic == "sertraline"
    assert load_formulary().match("Sertra-Q").generic is None  # the bundled table is unchanged
    (tmp_path / "bad").mkdir()
    bad = write_rules(tmp_path / "bad", {"formulary": {"aliases": {"Sertra-Q": "sertralinex"}}})
    with pytest.raises(RuleError) as caught:
        api.formulary_for(str(bad))
    assert "formulary.aliases.Sertra-Q" in " ".join([str(caught.value), *caught.value.problems])


def test_the_atc_layer_knows_common_drugs_that_are_not_depression_treatments():
    """At least 200 drugs of psychiatric and primary-care exports, each with a well-formed
    ATC code of its group, none an antidepressant (N06A), none claiming a name the
    antidepressant table uses."""
    import csv
    import re
    from importlib import resources

    text = resources.files("trdscreen").joinpath("data/other_drugs.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    assert len(rows) >= 200
    assert len({r["generic"] for r in rows}) == len(rows)
    for row in rows:
        assert re.fullmatch(r"[A-Z]\d\d[A-Z]{2}\d\d", row["atc_code"]), row
        assert not row["atc_code"].startswith("N06A"), row
        assert row["counts_as"] in ("not_a_depression_treatment", "policy"), row
    prefixes = {r["atc_code"][:5] for r in rows} | {r["atc_code"][:4] for r in rows}
    # The groups the issue names: benzodiazepines, Z-drugs, antiepileptics and
    # gabapentinoids, stimulants, antihistamines, hydroxyzine, melatonin, thyroid,
    # opioids, analgesics, antihypertensives, statins, antidiabetics, contraceptives.
    for group in ("N05BA", "N05CD", "N05CF", "N03A", "N06BA", "R06A", "N05BB", "N05CH",
                  "H03AA", "N02A", "N02B", "C09A", "C07A", "C10AA", "A10B", "G03A"):  # fmt: skip
        assert group in prefixes, group
    formulary = load_formulary()
    bundled = parse_formulary_text()
    for row in rows:
        name = normalize_name(row["generic"])[0]
        assert name not in bundled.drugs, name
        assert formulary.match(row["generic"]).generic == name


def parse_formulary_text():
    from trdscreen.formulary import bundled_formulary_text, parse_formulary

    return parse_formulary(bundled_formulary_text(), "bundled")


@pytest.mark.parametrize(
    ("name", "generic", "counts_as"),
    [
        ("lorazepam", "lorazepam", "not_a_depression_treatment"),
        ("Zolpidem 10mg tablets", "zolpidem", "not_a_depression_treatment"),
        ("Lyrica 75 mg capsules", "pregabalin", "not_a_depression_treatment"),
        ("gabapentin", "gabapentin", "not_a_depression_treatment"),
        ("methylphenidate", "methylphenidate", "not_a_depression_treatment"),
        ("hydroxyzine", "hydroxyzine", "not_a_depression_treatment"),
        ("melatonin", "melatonin", "not_a_depression_treatment"),
        ("Lorazepam 1 mg Tabletten", "lorazepam", "not_a_depression_treatment"),
        ("Pregabalina", "pregabalin", "not_a_depression_treatment"),
        ("buspirone", "buspirone", "policy"),  # augmentation evidence: only via also_count
        ("lamotrigine", "lamotrigine", "policy"),
        ("modafinil", "modafinil", "policy"),
        ("pramipexole", "pramipexole", "policy"),
    ],
)
def test_other_drugs_are_known_with_how_they_count(name, generic, counts_as):
    match = load_formulary().match(name)
    assert match.generic == generic
    assert load_formulary().drugs[generic].counts_as == counts_as


def test_any_dose_for_names_only_known_generics(tmp_path):
    """`adequacy.dose.any_dose_for` lists formulary generics; a typo is an error naming the key
    (never a silent no-op that would leave a drug judged differently than the protocol says)."""
    (tmp_path / "bad").mkdir()
    bad = write_rules(tmp_path / "bad", {"adequacy": {"dose": {"any_dose_for": ["aripiprazol3"]}}})
    with pytest.raises(RuleError) as caught:
        api.formulary_for(str(bad))
    said = " ".join([str(caught.value), *caught.value.problems])
    assert "adequacy.dose.any_dose_for" in said and "aripiprazol3" in said


def test_formulary_lookup_gives_the_minimum_of_the_name_as_exported():
    """An exported name's minimum is that of its salt and formulation: Aplenzin (bupropion
    hydrobromide) needs 348 mg, the equivalent of the hydrochloride's 300 [U]; a weekly
    product and a drug dosed in ug or per session say so."""
    table = load_formulary()
    aplenzin = api.formulary_lookup(table, None, "Aplenzin XL 348 mg")
    assert (aplenzin["generic"], aplenzin["min_mg_per_day"]) == ("bupropion", 348)
    assert "hydrobromide" in aplenzin["formulation"].split()
    assert "[U]" in aplenzin["min_source"]
    assert api.formulary_lookup(table, None, "Wellbutrin XL")["min_mg_per_day"] == 300
    assert api.formulary_lookup(table, None, "Prozac Weekly")["formulation"] == "weekly"
    assert api.formulary_lookup(table, None, "Cytomel")["dose_unit"] == "ug"
    assert api.formulary_lookup(table, None, "Spravato")["dose_unit"] == "mg/session"
    # the doubtful minimums: mirtazapine's DDD (not the 15 mg starting dose), lofepramine's BNF
    assert api.formulary_lookup(table, None, "mirtazapine")["min_mg_per_day"] == 30
    assert api.formulary_lookup(table, None, "Gamanil")["min_mg_per_day"] == 140
    rules, _, _ = api.load_rules("mgh-atrq")
    assert api.formulary_lookup(table, rules, "lithium")["any_dose"]
    assert not api.formulary_lookup(table, rules, "quetiapine")["any_dose"]


def test_every_minimum_names_its_source():
    """A minimum without a source cannot be checked against the protocol's dose appendix."""
    for drug in load_formulary().drugs.values():
        if drug.min_mg_per_day is not None:
            assert drug.min_source, drug.generic
        if drug.alt_min_mg_per_day is not None:
            assert drug.alt_source, drug.generic


def test_a_criterion_is_one_comparison_or_one_group():
    """A criterion with both column/op/value and a group, or a group of one, is refused
    naming the criterion's key: which of the two the protocol meant cannot be guessed."""
    data = preset_data("sforzini-2021")
    both = {"id": "SEV", "title": "t", "source": "s", "column": "hamd_screening", "op": "ge",
            "value": 18, "any_of": [{"column": "hamd_screening", "op": "ge", "value": 18},
                                    {"column": "madrs_screening", "op": "ge", "value": 28}]}  # fmt: skip
    alone = {"id": "SEV", "title": "t", "source": "s",
             "all_of": [{"column": "madrs_screening", "op": "ge", "value": 28}]}  # fmt: skip
    for criterion, said in ((both, "not both"), (alone, "at least 2")):
        broken = copy.deepcopy(data)
        broken["criteria"].append(criterion)
        with pytest.raises(RuleError) as caught:
            parse_rules(yaml.safe_dump(broken), "x.yaml")
        problems = " ".join(caught.value.problems)
        assert f"criteria.{len(broken['criteria']) - 1}" in problems and said in problems


def test_inferred_failures_are_opt_in_and_only_for_score_rule_sets():
    """outcome.infer_failure_from (issue 23): off by default, so every rule set without it
    keeps its hash; a register rule set (evidence next_trial) already infers from the next
    trial and is refused the option, naming the key."""
    plain = parse_rules(yaml.safe_dump(preset_data()), "preset")
    assert plain.outcome.infer_failure_from is None
    spelled = preset_data()
    spelled["outcome"].update(infer_failure_from=None, switch_window_days=60)
    assert parse_rules(yaml.safe_dump(spelled), "x").sha256() == plain.sha256()
    inferring = preset_data()
    inferring["outcome"]["infer_failure_from"] = "switch_or_augment"
    on = parse_rules(yaml.safe_dump(inferring), "x")
    assert on.sha256() != plain.sha256() and on.outcome.switch_window_days == 98
    kim = preset_data("kim-2020")
    kim["outcome"]["infer_failure_from"] = "switch_or_augment"
    (problem,) = problems_for(kim)
    assert "outcome" in problem and "infer_failure_from" in problem and "scores" in problem
    wrong = preset_data()
    wrong["outcome"].update(infer_failure_from="any_change")
    (problem,) = problems_for(wrong)
    assert "outcome.infer_failure_from" in problem
