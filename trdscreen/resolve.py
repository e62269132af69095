"""Rule sets as a run uses them: the rule file, its formulary, reported presets and column
maps resolved and cross-checked, plus the formulary views the `formulary` and `rules check`
commands print. Reads rule and formulary files; screens nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trdscreen.drugnames import normalize_name
from trdscreen.errors import RuleError, UsageError
from trdscreen.formulary import Formulary, load_formulary
from trdscreen.io import CsvOptions
from trdscreen.records import TABLES as RECORD_SPECS
from trdscreen.rulefile import load_column_map, read_rule_file, resolve_rules
from trdscreen.ruleset import STAGING_MODEL_OF, RuleSet
from trdscreen.schemas import SUBJECT_COLUMNS, TREATMENT_COLUMNS
from trdscreen.sitemap import RECORD_TABLES, ColumnMap, OmopMap
from trdscreen.subjectcolumns import criteria_subject_columns


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
    """The rule set's `columns:` and a --map file as one site adapter (the file's entries
    win), every key checked against the input contract."""
    maps = [(str(rules_path), "columns.", rules.columns)]
    if extra is not None:
        maps.append((str(extra), "", load_column_map(extra)))
    merged: dict = {"treatments": {}, "subjects": {}, "formats": {}, "values": {}}
    merged |= {name: {} for name in ("drug_aliases", *RECORD_TABLES)}
    csv: dict = {}
    problems = []
    for source, prefix, column_map in maps:
        problems += _map_problems(source, prefix, column_map, criteria_subject_columns(rules))
        for section in ("treatments", "subjects", "formats", "drug_aliases", *RECORD_TABLES):
            merged[section].update(getattr(column_map, section))
        for column, mapping in column_map.values.items():
            merged["values"][column] = {**merged["values"].get(column, {}), **mapping}
        csv.update(column_map.csv.model_dump(exclude_none=True))
    if problems:
        raise RuleError("the column map is invalid", problems)
    omop = (
        maps[-1][2].omop if len(maps) > 1 and maps[-1][2].omop != OmopMap() else rules.columns.omop
    )
    return ColumnMap(**merged, csv=csv, omop=omop)


CODED_COLUMNS = {
    name: tuple(str(v) for v in spec.vocabulary)
    for specs in (TREATMENT_COLUMNS, SUBJECT_COLUMNS, *RECORD_SPECS.values())
    for name, spec in specs.items()
    if spec.vocabulary
}
"""Columns of a closed vocabulary: the ones a map's `values:` may translate."""


def _map_problems(
    source: str, prefix: str, column_map: ColumnMap, criteria_columns: tuple[str, ...]
) -> list[str]:
    problems = [
        f"{source}: key `{prefix}treatments.{header}`: {target!r} is not a treatments column; "
        f"canonical columns: {', '.join(TREATMENT_COLUMNS)}"
        for header, target in column_map.treatments.items()
        if target not in TREATMENT_COLUMNS
    ]
    problems += [
        f"{source}: key `{prefix}{table}.{header}`: {target!r} is not a {table} column; "
        f"canonical columns: {', '.join(RECORD_SPECS[table])}"
        for table in RECORD_TABLES
        for header, target in getattr(column_map, table).items()
        if target not in RECORD_SPECS[table]
    ]
    typed = {
        name
        for specs in (TREATMENT_COLUMNS, SUBJECT_COLUMNS)
        for name, spec in specs.items()
        if spec.kind in ("date", "float", "int", "bool")
    } | set(criteria_columns)
    problems += [
        f"{source}: key `{prefix}formats.{column}`: not a date, number or true/false column of "
        f"the input contract or a column the criteria read; expected `all` or one of: {', '.join(sorted(typed))}"
        for column in column_map.formats
        if column != "all" and column not in typed
    ]
    for column, mapping in column_map.values.items():
        vocabulary = CODED_COLUMNS.get(column)
        if vocabulary is None:
            problems.append(
                f"{source}: key `{prefix}values.{column}`: not a coded column; expected one of: "
                f"{', '.join(CODED_COLUMNS)} (free text is never mapped; drug names go under "
                "`drug_aliases:`)"
            )
            continue
        problems += [
            f"{source}: key `{prefix}values.{column}.{value}`: {target!r} is not a "
            f"{column} value; expected one of: {', '.join(vocabulary)}"
            for value, target in mapping.items()
            if target not in vocabulary
        ]
    if column_map.csv.encoding is not None:
        try:
            CsvOptions(encoding=column_map.csv.encoding)
        except UsageError:
            problems.append(
                f"{source}: key `{prefix}csv.encoding`: {column_map.csv.encoding!r} is not a "
                "known text encoding (e.g. utf-8, cp1252, latin-1)"
            )
    if column_map.csv.delimiter is not None and column_map.csv.delimiter in '"\r\n':
        problems.append(
            f"{source}: key `{prefix}csv.delimiter`: expected one character other than a quote "
            "or line break"
        )
    return problems


def with_site_aliases(formulary: Formulary, columns: ColumnMap, source: str) -> Formulary:
    """The formulary with the column map's `drug_aliases` added (checked like a rule set's
    `formulary.aliases`)."""
    unknown = [
        f"{source}: key `drug_aliases.{name}`: {generic!r} is not a generic in the formulary "
        f"({formulary.source})"
        for name, generic in columns.drug_aliases.items()
        if normalize_name(generic)[0] not in formulary.drugs
    ]
    if unknown:
        raise RuleError("the column map names unknown drugs", unknown)
    return formulary.with_aliases(columns.drug_aliases)


def csv_under(options: CsvOptions, columns: ColumnMap) -> CsvOptions:
    """CSV options: --encoding and --delimiter when given (other than the defaults),
    else the column map's `csv:`, else UTF-8 and comma."""
    default = CsvOptions()
    return CsvOptions(
        options.encoding
        if options.encoding != default.encoding
        else (columns.csv.encoding or default.encoding),
        options.delimiter
        if options.delimiter != default.delimiter
        else (columns.csv.delimiter or default.delimiter),
    )


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
    from trdscreen.evidence import read_tagged

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
