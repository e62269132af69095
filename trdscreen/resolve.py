"""Rule sets as a run uses them: the rule file, its formulary, reported presets and column
maps resolved and cross-checked, plus the formulary views the `formulary` and `rules check`
commands print. Reads rule and formulary files; screens nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trdscreen.drugnames import normalize_name
from trdscreen.errors import RuleError
from trdscreen.formulary import Formulary, load_formulary
from trdscreen.rulefile import load_column_map, read_rule_file, resolve_rules
from trdscreen.ruleset import STAGING_MODEL_OF, ColumnMap, RuleSet
from trdscreen.schemas import SUBJECT_COLUMNS, TREATMENT_COLUMNS


@dataclass(frozen=True)
class ReportRules:
    """A rule set whose staging model is reported beside the screening decision."""

    rules: RuleSet
    path: Path
    file_sha256: str
    formulary: Formulary

    @property
    def model(self) -> str:
        """Its staging model (`load_reports` admits only rule sets that have one)."""
        assert self.rules.staging is not None
        return self.rules.staging.model


@dataclass(frozen=True)
class RuleFile:
    """A parsed rule set with the file it came from."""

    rules: RuleSet
    path: Path
    file_sha256: str


def load_rules(name_or_path: str | None) -> tuple[RuleSet, Path, str]:
    path = resolve_rules(name_or_path)
    rules, digest = read_rule_file(path)
    return rules, path, digest


def formulary_of(rules: RuleSet, rules_path: Path) -> Formulary:
    formulary = load_formulary(
        (rules_path.parent / rules.formulary.path) if rules.formulary.path else None
    )
    unknown = [
        f"{rules_path}: key `formulary.{section}.{name}`: {name!r} is not a generic in the "
        f"formulary ({formulary.source})"
        for section, names in (
            ("overrides", rules.formulary.overrides),
            ("also_count", rules.formulary.also_count),
        )
        for name in names
        if name not in formulary.drugs
    ]
    unknown += [
        f"{rules_path}: key `adequacy.dose.any_dose_for`: {name!r} is not a generic in the "
        f"formulary ({formulary.source})"
        for name in rules.adequacy.dose.any_dose_for
        if name not in formulary.drugs
    ]
    unknown += [
        f"{rules_path}: key `formulary.aliases.{name}`: {generic!r} is not a generic in the "
        f"formulary ({formulary.source})"
        for name, generic in rules.formulary.aliases.items()
        if normalize_name(generic)[0] not in formulary.drugs
    ]
    if unknown:
        raise RuleError(f"{rules_path}: the rule set names unknown drugs", unknown)
    return formulary.with_aliases(rules.formulary.aliases)


def load_reports(
    rules: RuleSet, rules_path: Path, extra: tuple[str, ...]
) -> tuple[ReportRules, ...]:
    """Resolve the rule set's `report:` entries and any extra ones (e.g. --report).

    Each must have a staging model; no model may appear twice (its columns
    would collide); every staging column a criterion reads must be provided.
    """
    names = []
    for name in rules.report:  # a relative file path in a rule file is relative to that file
        candidate = Path(name)
        relative = candidate.suffix in (".yaml", ".yml") and not candidate.is_absolute()
        names.append(str(rules_path.parent / candidate) if relative else name)
    names += list(extra)
    models = {rules.staging.model: str(rules_path)} if rules.staging is not None else {}
    loaded, problems = [], []
    for name in dict.fromkeys(names):
        report_rules, path, digest = load_rules(name)
        if report_rules.staging is None:
            problems.append(f"report {name!r} ({path}): the rule set has no `staging:` model")
            continue
        staging_model = report_rules.staging.model
        if staging_model in models:
            problems.append(
                f"report {name!r}: staging model {staging_model} is already provided by "
                f"{models[staging_model]}"
            )
            continue
        models[staging_model] = str(path)
        loaded.append(ReportRules(report_rules, path, digest, formulary_of(report_rules, path)))
    for index, criterion in enumerate(rules.criteria):
        for column in criterion.columns:
            model = STAGING_MODEL_OF.get(column)
            if model is None or model in models:
                continue
            problems.append(
                f"{rules_path}: key `criteria.{index}.column`: criterion {criterion.id} reads "
                f"`{column}` but no rule set in this run has a {model} staging model"
            )
    if problems:
        raise RuleError("the reported staging presets are invalid", problems)
    return tuple(loaded)


def column_maps(rules: RuleSet, rules_path: Path, extra: Path | None) -> ColumnMap:
    maps = [(str(rules_path), rules.columns)]
    if extra is not None:
        maps.append((str(extra), load_column_map(extra)))
    treatments: dict[str, str] = {}
    subjects: dict[str, str] = {}
    problems = []
    for source, column_map in maps:
        for header, target in column_map.treatments.items():
            if target not in TREATMENT_COLUMNS:
                problems.append(
                    f"{source}: key `columns.treatments.{header}`: {target!r} is not a treatments "
                    f"column; canonical columns: {', '.join(TREATMENT_COLUMNS)}"
                )
            treatments[header] = target
        subjects.update(column_map.subjects)
    if problems:
        raise RuleError("the column map is invalid", problems)
    return ColumnMap(treatments=treatments, subjects=subjects)


@dataclass(frozen=True)
class RuleCheck:
    """A rule file that parsed, with what a reviewer should know about it."""

    rules: RuleSet
    path: Path
    file_sha256: str
    tags: dict
    formulary: Formulary
    reports: tuple[ReportRules, ...]
    notes: tuple[str, ...]


def check_rules(name_or_path: str) -> RuleCheck:
    """Parse a rule file and check what parsing alone cannot: formulary names,
    reported presets, staging columns. Raises RuleError listing every problem;
    returns notes (columns the subjects table must provide, untagged parameters)."""
    from trdscreen.protocol import read_tagged
    from trdscreen.validate import criteria_subject_columns

    rules, path, digest = load_rules(name_or_path)
    formulary = formulary_of(rules, path)
    reports = load_reports(rules, path, ())
    tags, untagged = read_tagged(path)
    notes = [
        f"subjects column `{column}` is read by this rule set but is not in the input "
        "contract: the subjects table must provide it (or map a site header to it)"
        for column in criteria_subject_columns(rules, *(r.rules for r in reports))
        if column not in SUBJECT_COLUMNS
    ]
    if untagged:
        notes.append(
            f"{len(untagged)} clinical parameter(s) carry no [V]/[S]/[U] tag in a comment: "
            + ", ".join(untagged)
        )
    return RuleCheck(rules, path, digest, tags, formulary, reports, tuple(notes))


def formulary_for(name_or_path: str | None) -> tuple[Formulary, RuleSet | None]:
    """The formulary a rule set uses (its `formulary.path`), or the bundled one."""
    if name_or_path is None:
        return load_formulary(None), None
    rules, path, _ = load_rules(name_or_path)
    return formulary_of(rules, path), rules


def _drug_row(table: Formulary, rules: RuleSet | None, generic: str, formulation: str) -> dict:
    drug = table.drugs[generic]
    dose_source = rules.formulary.dose_source if rules is not None else "atrq_then_alternative"
    overrides = rules.formulary.overrides if rules is not None else {}
    minimum, source = table.rule_minimum(generic, formulation, dose_source, overrides)
    return {
        "generic": generic,
        "drug_class": drug.drug_class,
        "atc_code": drug.atc_code,
        "counts_as": drug.counts_as,
        "min_mg_per_day": minimum,
        "min_source": source,
        "dose_source": dose_source,
        "atrq_min_mg_per_day": drug.min_mg_per_day,
        "atrq_evidence": drug.min_evidence or None,
        "alt_min_mg_per_day": drug.alt_min_mg_per_day,
        "alt_source": drug.alt_source or None,
        "formulation_minimums": dict(drug.formulation_minimums),
        "synonyms": list(drug.synonyms),
        "non_depression_brands": list(drug.non_depression_brands),
        "moiety": drug.moiety,
        "dose_unit": drug.dose_unit,
        "any_dose": rules is not None and generic in rules.adequacy.dose.any_dose_for,
        "notes": drug.notes,
    }


def formulary_rows(table: Formulary, rules: RuleSet | None) -> list[dict]:
    """One row per generic, with the minimum the rule set would apply (sorted by generic)."""
    return [_drug_row(table, rules, generic, "") for generic in sorted(table.drugs)]


def formulary_lookup(table: Formulary, rules: RuleSet | None, name: str) -> dict | None:
    """The row for an exported name (brand, synonym, salt, formulation), or None."""
    match = table.match(name)
    if match.generic is None:
        return None
    row = _drug_row(table, rules, match.generic, match.formulation)
    return {
        **row,
        "looked_up": name,
        "formulation": match.formulation or None,
        "non_depression_product": match.non_depression_product,
    }
