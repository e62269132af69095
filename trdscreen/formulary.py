"""The drug formulary: names, classes and minimum adequate daily doses.

The bundled table (`trdscreen/data/formulary.csv`) is built from the project's
cited drug reference: each minimum dose carries its source and evidence level
(V verified, S secondary, U unverified). Values marked U are defaults a rule
set can override per drug (`formulary.overrides`).

Name normalization works on the *distinct* drug names of an export (a few
hundred at most), never per row: callers factorize the column and map codes.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process

from trdscreen.drugnames import (
    ATC_PREFIX,
    DEPRESSION_ATC,
    DOSE_SALTS,
    bracketed,
    inn_variants,
    joined_formulations,
    normalize_atc,
    normalize_name,
)
from trdscreen.errors import RuleError

COUNTS_AS = (
    "antidepressant",
    "augmentation",
    "not_antidepressant",
    "policy",
    "not_a_depression_treatment",
)
"""How a drug counts toward a treatment trial.

- antidepressant: a course is an antidepressant trial;
- augmentation: an add-on agent (antipsychotic, lithium, T3); it counts only
  in an augmentation or combination role;
- not_antidepressant: never an antidepressant trial (e.g. opipramol);
- policy: whether it counts is a policy choice (ketamine, neurosteroids, add-ons
  with some augmentation evidence such as buspirone); it counts only when a rule
  set names it in `formulary.also_count`;
- not_a_depression_treatment: a known drug for another condition (the ATC layer:
  lorazepam, zolpidem, pregabalin, ...): never a trial, and definitely so.
"""

FORMULARY_COLUMNS = (
    "generic",
    "drug_class",
    "atc_code",
    "counts_as",
    "min_mg_per_day",
    "min_source",
    "min_evidence",
    "alt_min_mg_per_day",
    "alt_source",
    "formulation_minimums",
    "synonyms",
    "non_depression_brands",
    "notes",
)
OPTIONAL_COLUMNS = (
    "max_mg_per_day", "max_source", "moiety", "required_formulation", "dose_unit",
)  # fmt: skip
"""Columns a site formulary may leave out: the usual maximum daily dose and its source,
used only to warn about implausible doses (`validate.PLAUSIBLE_DOSE_MULTIPLE`), and the
active moiety (escitalopram's is citalopram) that `counting.distinct: moiety` counts by
(empty = the drug is its own moiety), and the formulation a drug counts in only (selegiline:
transdermal; the oral product is for Parkinson's disease and never counts), and the unit a
drug's doses and minimum are in (`DRUG_UNITS`; empty = mg: liothyronine is dosed in ug,
esketamine in mg per session)."""


@dataclass(frozen=True)
class DrugMatch:
    """What the formulary says about one distinct exported name."""

    normalized: str
    generic: str | None
    formulation: str
    non_depression_product: bool


@dataclass(frozen=True)
class Drug:
    generic: str
    drug_class: str
    atc_code: str
    counts_as: str
    min_mg_per_day: float | None
    min_source: str
    min_evidence: str
    alt_min_mg_per_day: float | None
    alt_source: str
    formulation_minimums: dict[str, float]
    synonyms: tuple[str, ...]
    non_depression_brands: tuple[str, ...]
    notes: str
    max_mg_per_day: float | None = None
    max_source: str = ""
    moiety: str = ""  # empty: the generic itself
    required_formulation: str = ""  # counts only in this formulation (selegiline: transdermal)
    dose_unit: str = "mg"  # the unit of its doses and minimum (DRUG_UNITS)


RESOLVED_CACHE = 100_000
"""Most (name, ATC code) pairs a formulary remembers resolving (a hostile export of
millions of distinct names is resolved per chunk instead of filling memory)."""


@dataclass(frozen=True)
class Formulary:
    drugs: dict[str, Drug]
    sha256: str
    source: str
    _aliases: dict[str, tuple[str, bool, str]] = field(repr=False, default_factory=dict)
    _suggested: dict[tuple[str, int], list[str]] = field(
        repr=False, compare=False, default_factory=dict
    )  # suggest() per name: fuzzy matching is slow, and a streamed run asks once per chunk
    _resolved: dict[tuple[str | None, str | None], DrugMatch] = field(
        repr=False, compare=False, default_factory=dict
    )  # resolve() per (name, code): every chunk of a streamed run asks for the same few

    def resolve(self, raw: str | None, atc: str | None) -> DrugMatch:
        """A row's drug from its name, else from its ATC code (the optional `atc_code`
        column): a code of a known drug is that drug; a code of another group than the
        depression treatments (N06A, N05A, H03AA02) is a drug that is not one
        (`ATC_PREFIX` + code); a depression-treatment code the table lacks stays unknown."""
        known = self._resolved.get((raw, atc))
        if known is not None:
            return known
        found = self._resolve(raw, atc)
        if len(self._resolved) < RESOLVED_CACHE:
            self._resolved[(raw, atc)] = found
        return found

    def _resolve(self, raw: str | None, atc: str | None) -> DrugMatch:
        match = self.match(raw) if raw is not None else DrugMatch("", None, "", False)
        code = normalize_atc(atc)
        if match.generic is not None or code is None:
            return match
        generic = self._atc_index.get(code)
        if generic is not None:
            formulation = match.formulation
            other = self._outside_required(generic, formulation)
            return DrugMatch(match.normalized, generic, formulation, other)
        if code.startswith(DEPRESSION_ATC):
            return match
        return DrugMatch(match.normalized, ATC_PREFIX + code, match.formulation, False)

    def drug(self, generic: str) -> Drug:
        """The table's drug, or for an `ATC_PREFIX` code a drug that is not a depression
        treatment."""
        if generic in self.drugs or not generic.startswith(ATC_PREFIX):
            return self.drugs[generic]
        code = generic.removeprefix(ATC_PREFIX)
        return _drug_without_dose(
            generic, f"ATC {code[:3]}", code, "not_a_depression_treatment", (),
            "known by its ATC code only",
        )  # fmt: skip

    @cached_property
    def _atc_index(self) -> dict[str, str]:
        """ATC code -> generic (the first generic in name order where two share a code)."""
        table: dict[str, str] = {}
        for generic in sorted(self.drugs):
            code = normalize_atc(self.drugs[generic].atc_code)
            if code is not None:
                table.setdefault(code, generic)
        return table

    def _outside_required(self, generic: str, formulation: str) -> bool:
        """A drug that counts in one formulation only (selegiline: transdermal), given in
        another: a product for another condition (oral selegiline, Parkinson's)."""
        required = self.drugs[generic].required_formulation
        return bool(required) and required not in formulation.split()

    def match(self, raw: str) -> DrugMatch:
        normalized, formulation = normalize_name(raw)
        hit = self._find(normalized)
        if hit is None:  # "Escitalopram (Cipralex)" with an unknown first word: the brand
            for inner in bracketed(raw):
                hit = self._find(normalize_name(inner)[0])
                if hit is not None:
                    break
        if hit is None:
            return DrugMatch(normalized, None, formulation, False)
        generic, non_depression, implied = hit
        formulation = joined_formulations(formulation, implied)
        for inner in bracketed(raw):  # "Bupropion (Zyban)", "selegiline (Emsam)"
            name, form = normalize_name(inner)
            also = self._find(name)
            if also is not None and also[0] == generic:
                non_depression |= also[1]
                formulation = joined_formulations(formulation, form, also[2])
        non_depression |= self._outside_required(generic, formulation)
        return DrugMatch(normalized, generic, formulation, non_depression)

    def with_aliases(self, aliases: Mapping[str, str]) -> Formulary:
        """This formulary with a rule set's site names (`formulary.aliases`) added; a site
        name replaces what the bundled table says of it. The table's hash is unchanged:
        the aliases are part of the rule set, which is hashed on its own."""
        if not aliases:
            return self
        extra = {
            normalize_name(name)[0]: (normalize_name(generic)[0], False, "")
            for name, generic in aliases.items()
        }
        return replace(self, _aliases={**self._aliases, **extra}, _suggested={}, _resolved={})

    def _find(self, normalized: str) -> tuple[str, bool, str] | None:
        hit = self._aliases.get(normalized)
        if hit is None and "/" in normalized:
            # "fluoxetine/olanzapine" and "olanzapine/fluoxetine" are one product.
            hit = self._aliases.get("/".join(sorted(normalized.split("/"))))
        return hit

    def suggest(self, normalized: str, n: int = 3) -> list[str]:
        """Closest known names (generic or brand) for an unknown drug name."""
        key = (normalized, n)
        if key not in self._suggested:
            # rapidfuzz's normalized Indel similarity is difflib's ratio, in C; names tie
            # on score in alphabetical order, so the answer never depends on table order.
            found = process.extract(
                normalized, sorted(self._aliases), scorer=fuzz.ratio, limit=None, score_cutoff=60
            )
            ranked = sorted(found, key=lambda hit: (-hit[1], hit[0]))
            best: dict[str, str] = {}  # one name per drug: the closest
            for name, _, _ in ranked:
                best.setdefault(self._aliases[name][0], name)
            self._suggested[key] = list(best.values())[:n]
        return list(self._suggested[key])

    def minimum_dose(self, generic: str, formulation: str, source: str) -> tuple[float | None, str]:
        """Minimum adequate daily dose and where it comes from.

        `source` is the rule set's `formulary.dose_source`: "atrq" uses the
        MGH-ATRQ column only; "atrq_then_alternative" falls back to the
        alternative column (WHO DDD, McMaster or UpToDate lower bound).
        """
        drug = self.drug(generic)
        # "xl hydrobromide": the salt (the last word) decides before the release marker.
        for word in reversed(formulation.split()):
            if word in drug.formulation_minimums:
                if word in DOSE_SALTS.values():  # not the source's own figure: a conversion
                    return drug.formulation_minimums[word], (
                        f"{drug.min_source}, converted to the {word} salt [U]"
                    )
                return drug.formulation_minimums[word], f"{drug.min_source} ({word})"
        if drug.min_mg_per_day is not None:
            return drug.min_mg_per_day, drug.min_source
        if source == "atrq_then_alternative" and drug.alt_min_mg_per_day is not None:
            return drug.alt_min_mg_per_day, drug.alt_source
        return None, ""

    def rule_minimum(
        self, generic: str, formulation: str, dose_source: str, overrides: Mapping[str, Any]
    ) -> tuple[float | None, str]:
        """The minimum a rule set applies: its per-drug override, else `minimum_dose`."""
        override = overrides.get(generic)
        if override is not None:
            return override.min_mg_per_day, f"rule set override: {override.source}"
        return self.minimum_dose(generic, formulation, dose_source)


def _number(value: str, where: str, problems: list[str]) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        problems.append(f"{where}: expected a number of mg/day")
        return None
    if not number > 0:
        problems.append(f"{where}: expected a dose greater than 0")
        return None
    return number


DRUG_UNITS = ("mg", "ug", "mg/session")
"""Units of a drug's doses and minimum (the formulary's `dose_unit`): mass per day, or mg per
session (esketamine), which is never compared with a daily dose."""


def _unit(value: str, where: str, problems: list[str]) -> str:
    unit = value.strip() or "mg"
    if unit not in DRUG_UNITS:
        problems.append(f"{where}: {unit!r} is not one of {', '.join(DRUG_UNITS)}")
    return unit


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split("|") if part.strip())


def parse_formulary(text: str, source: str) -> Formulary:
    """Parse and validate a formulary table; every problem is reported at once."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in FORMULARY_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RuleError(
            f"{source}: formulary is missing columns {missing}; "
            f"expected columns: {', '.join(FORMULARY_COLUMNS)} "
            f"(optional: {', '.join(OPTIONAL_COLUMNS)})"
        )
    problems: list[str] = []
    drugs: dict[str, Drug] = {}
    aliases: dict[str, tuple[str, bool, str]] = {}
    for line, row in enumerate(reader, start=2):
        where = f"{source}, line {line}"
        generic, _ = normalize_name(row["generic"])
        if not generic:
            problems.append(f"{where}: column generic is empty")
            continue
        if generic in drugs:
            problems.append(f"{where}: generic {generic!r} appears twice")
            continue
        if row["counts_as"] not in COUNTS_AS:
            problems.append(
                f"{where}, column counts_as: {row['counts_as']!r} is not one of {', '.join(COUNTS_AS)}"
            )
        formulation_minimums: dict[str, float] = {}
        for item in _split(row["formulation_minimums"]):
            form, _, dose = item.partition("=")
            value = _number(dose, f"{where}, column formulation_minimums ({item})", problems)
            if value is not None:
                formulation_minimums[form.strip().lower()] = value
        drug = Drug(
            generic=generic,
            drug_class=row["drug_class"].strip(),
            atc_code=row["atc_code"].strip(),
            counts_as=row["counts_as"],
            min_mg_per_day=_number(
                row["min_mg_per_day"], f"{where}, column min_mg_per_day", problems
            ),
            min_source=row["min_source"].strip(),
            min_evidence=row["min_evidence"].strip(),
            alt_min_mg_per_day=_number(
                row["alt_min_mg_per_day"], f"{where}, column alt_min_mg_per_day", problems
            ),
            alt_source=row["alt_source"].strip(),
            formulation_minimums=formulation_minimums,
            synonyms=_split(row["synonyms"]),
            non_depression_brands=_split(row["non_depression_brands"]),
            notes=row["notes"].strip(),
            max_mg_per_day=_number(
                row.get("max_mg_per_day") or "", f"{where}, column max_mg_per_day", problems
            ),
            max_source=(row.get("max_source") or "").strip(),
            moiety=normalize_name(row.get("moiety") or "")[0] or generic,
            required_formulation=(row.get("required_formulation") or "").strip().lower(),
            dose_unit=_unit(row.get("dose_unit") or "", f"{where}, column dose_unit", problems),
        )
        drugs[generic] = drug
        # A brand of a drug that counts only in one formulation (Emsam: transdermal
        # selegiline) carries that formulation; the generic name alone does not.
        # A brand of a salt that changes the dose (Aplenzin: bupropion hydrobromide) is
        # listed with its salt and carries it too.
        implied = drug.required_formulation
        names: list[tuple[str, bool, str]] = [(generic, False, "")]
        for synonym in drug.synonyms:
            name, form = normalize_name(synonym)
            salt = " ".join(w for w in form.split() if w in DOSE_SALTS.values())
            names.append((name, False, implied or salt))
        names += [(normalize_name(s)[0], True, "") for s in drug.non_depression_brands]
        for name, non_depression, formulation in names:
            keys = {name}
            if "/" in name:
                keys.add("/".join(sorted(name.split("/"))))
            for key in keys:
                previous = aliases.get(key)
                if previous is not None and previous[0] != generic:
                    problems.append(
                        f"{where}: name {key!r} already belongs to {previous[0]!r}; "
                        "a name may map to one generic only"
                    )
                aliases[key] = (generic, non_depression, formulation)
    if problems:
        raise RuleError(f"{source}: the formulary is invalid ({len(problems)} problems)", problems)
    _add_inn_variants(aliases, drugs)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Formulary(drugs=drugs, sha256=digest, source=source, _aliases=aliases)


def _add_inn_variants(aliases: dict[str, tuple[str, bool, str]], generics: Iterable[str]) -> None:
    """Add the INN as German, French, Spanish and Italian print it (Sertralin,
    sertralina) where no listed name already means something else; a spelling two of
    `generics` could claim is left unknown."""
    variants = [(v, generic) for generic in generics for v in inn_variants(generic)]
    shared = {v for v, n in Counter(v for v, _ in variants).items() if n > 1}
    for variant, generic in variants:
        if variant not in shared:
            aliases.setdefault(variant, (generic, False, ""))


def _drug_without_dose(
    generic: str, drug_class: str, atc_code: str, counts_as: str, synonyms: tuple[str, ...],
    notes: str,
) -> Drug:  # fmt: skip
    """A drug the screening never judges by dose (the ATC layer, a bare ATC code)."""
    return Drug(
        generic=generic,
        drug_class=drug_class,
        atc_code=atc_code,
        counts_as=counts_as,
        min_mg_per_day=None,
        min_source="",
        min_evidence="",
        alt_min_mg_per_day=None,
        alt_source="",
        formulation_minimums={},
        synonyms=synonyms,
        non_depression_brands=(),
        notes=notes,
    )


def bundled_formulary_text() -> str:
    return resources.files("trdscreen").joinpath("data/formulary.csv").read_text(encoding="utf-8")


OTHER_DRUGS_FILE = "data/other_drugs.csv"
"""The bundled ATC layer: common drugs of psychiatric and primary-care exports that are not
depression treatments (benzodiazepines, Z-drugs, antiepileptics, stimulants, antihistamines,
opioids, cardiovascular, metabolic, ...), with their ATC code, group and names; a few with
some augmentation evidence (buspirone, lamotrigine, modafinil, pramipexole) and antipsychotics
without depression evidence are `policy` drugs, counted only when a rule set names them in
`also_count`. Versioned with trdscreen (the manifest records the version)."""


def load_formulary(path: Path | None = None) -> Formulary:
    """The bundled formulary, or a site formulary file with the same columns, plus the
    bundled ATC layer of drugs that are not depression treatments."""
    if path is None:
        table = parse_formulary(bundled_formulary_text(), "bundled formulary")
    else:
        from trdscreen.io import read_config_file

        text, _ = read_config_file(Path(path), "formulary file")
        table = parse_formulary(text, str(path))
    return with_other_drugs(table)


def with_other_drugs(table: Formulary) -> Formulary:
    """`table` with the bundled other drugs added; a generic or a name the table already
    has keeps the table's meaning."""
    text = resources.files("trdscreen").joinpath(OTHER_DRUGS_FILE).read_text(encoding="utf-8")
    drugs = dict(table.drugs)
    aliases = dict(table._aliases)
    for row in csv.DictReader(io.StringIO(text)):
        generic = normalize_name(row["generic"])[0]
        if generic in drugs:
            continue
        drugs[generic] = _drug_without_dose(
            generic,
            row["drug_class"].strip(),
            row["atc_code"].strip(),
            row["counts_as"].strip(),
            _split(row["synonyms"]),
            "ATC layer (trdscreen/data/other_drugs.csv): WHO ATC code as commonly listed, not "
            "checked against the ATC/DDD index here [U]",
        )
        for name in (generic, *(normalize_name(s)[0] for s in drugs[generic].synonyms)):
            aliases.setdefault(name, (generic, False, ""))
    _add_inn_variants(aliases, (g for g in drugs if g not in table.drugs))
    return replace(table, drugs=drugs, _aliases=aliases, _suggested={}, _resolved={})
