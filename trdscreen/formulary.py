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
import difflib
import hashlib
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from trdscreen.errors import RuleError

COUNTS_AS = ("antidepressant", "augmentation", "not_antidepressant", "policy")
"""How a drug counts toward a treatment trial.

- antidepressant: a course is an antidepressant trial;
- augmentation: an add-on agent (antipsychotic, lithium, T3); it counts only
  in an augmentation or combination role;
- not_antidepressant: never an antidepressant trial (e.g. opipramol);
- policy: whether it counts is a policy choice (ketamine, neurosteroids); it
  counts only when a rule set names it in `formulary.also_count`.
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
OPTIONAL_COLUMNS = ("max_mg_per_day", "max_source", "moiety")
"""Columns a site formulary may leave out: the usual maximum daily dose and its source,
used only to warn about implausible doses (`validate.PLAUSIBLE_DOSE_MULTIPLE`), and the
active moiety (escitalopram's is citalopram) that `counting.distinct: moiety` counts by;
empty = the drug is its own moiety."""

# Release-formulation markers kept as an attribute of the course.
_FORMULATIONS = {
    "xr": "xr",
    "xl": "xl",
    "cr": "cr",
    "sr": "sr",
    "er": "er",
    "la": "la",
    "odt": "odt",
    "extended release": "er",
    "extended-release": "er",
    "modified release": "mr",
    "prolonged release": "er",
    "controlled release": "cr",
    "sustained release": "sr",
    "orally disintegrating": "odt",
}
# Salt names: dropped, the course is recorded against the base generic.
_SALTS = (
    "hydrochloride|hcl|hydrobromide|hbr|oxalate|succinate|maleate|mesylate|mesilate|sulfate|"
    "sulphate|besylate|fumarate|citrate|carbonate|sodium|tartrate|hemifumarate"
)
_DOSE_TEXT = re.compile(r"\b\d+(?:[.,]\d+)?\s*(?:mg|mcg|µg|ug)\b")
_SALT_RE = re.compile(rf"\b(?:{_SALTS})\b")
_FORM_RE = re.compile(
    r"\b(" + "|".join(sorted((re.escape(k) for k in _FORMULATIONS), key=len, reverse=True)) + r")\b"
)
_COMBINERS = re.compile(r"\s*(?:/|\+|\band\b|\bwith\b)\s*")
_SPACE = re.compile(r"\s+")
_TRIM = re.compile(r"^[\s.,;:()\-]+|[\s.,;:()\-]+$")


def normalize_name(raw: str) -> tuple[str, str]:
    """Return (normalized name, formulation) for one exported drug name.

    Lower-cases, folds white space, drops dose text ("20 mg") and salt names,
    and takes release-formulation markers (XR, XL, CR, SR, ER, LA, ODT, ...)
    off as the formulation. Combination separators ("+", "and", "with", "/")
    become "/".
    """
    text = _SPACE.sub(" ", str(raw).strip().lower().replace("_", " "))
    text = _DOSE_TEXT.sub(" ", text)
    formulation = ""
    match = _FORM_RE.search(text)
    if match:
        formulation = _FORMULATIONS[match.group(1)]
        text = _FORM_RE.sub(" ", text)
    text = _SALT_RE.sub(" ", text)
    text = _COMBINERS.sub("/", _SPACE.sub(" ", text))
    text = _TRIM.sub("", _SPACE.sub(" ", text))
    return text, formulation


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


@dataclass(frozen=True)
class Formulary:
    drugs: dict[str, Drug]
    sha256: str
    source: str
    _aliases: dict[str, tuple[str, bool]] = field(repr=False, default_factory=dict)
    _suggested: dict[tuple[str, int], list[str]] = field(
        repr=False, compare=False, default_factory=dict
    )  # suggest() per name: difflib is slow, and a streamed run asks once per chunk

    def match(self, raw: str) -> DrugMatch:
        normalized, formulation = normalize_name(raw)
        hit = self._aliases.get(normalized)
        if hit is None and "/" in normalized:
            # "fluoxetine/olanzapine" and "olanzapine/fluoxetine" are one product.
            hit = self._aliases.get("/".join(sorted(normalized.split("/"))))
        if hit is None:
            return DrugMatch(normalized, None, formulation, False)
        return DrugMatch(normalized, hit[0], formulation, hit[1])

    def suggest(self, normalized: str, n: int = 3) -> list[str]:
        """Closest known names (generic or brand) for an unknown drug name."""
        key = (normalized, n)
        if key not in self._suggested:
            self._suggested[key] = difflib.get_close_matches(
                normalized, list(self._aliases), n=n, cutoff=0.6
            )
        return list(self._suggested[key])

    def minimum_dose(self, generic: str, formulation: str, source: str) -> tuple[float | None, str]:
        """Minimum adequate daily dose and where it comes from.

        `source` is the rule set's `formulary.dose_source`: "atrq" uses the
        MGH-ATRQ column only; "atrq_then_alternative" falls back to the
        alternative column (WHO DDD, McMaster or UpToDate lower bound).
        """
        drug = self.drugs[generic]
        if formulation and formulation in drug.formulation_minimums:
            return drug.formulation_minimums[formulation], f"{drug.min_source} ({formulation})"
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


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split("|") if part.strip())


def parse_formulary(text: str, source: str) -> Formulary:
    """Parse and validate a formulary table; every problem is reported at once."""
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in FORMULARY_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise RuleError(
            f"{source}: formulary is missing columns {missing}; "
            f"expected columns: {', '.join(FORMULARY_COLUMNS)}"
        )
    problems: list[str] = []
    drugs: dict[str, Drug] = {}
    aliases: dict[str, tuple[str, bool]] = {}
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
        )
        drugs[generic] = drug
        names = [(generic, False)]
        names += [(normalize_name(s)[0], False) for s in drug.synonyms]
        names += [(normalize_name(s)[0], True) for s in drug.non_depression_brands]
        for name, non_depression in names:
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
                aliases[key] = (generic, non_depression)
    if problems:
        raise RuleError(f"{source}: the formulary is invalid ({len(problems)} problems)", problems)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Formulary(drugs=drugs, sha256=digest, source=source, _aliases=aliases)


def bundled_formulary_text() -> str:
    return resources.files("trdscreen").joinpath("data/formulary.csv").read_text(encoding="utf-8")


def load_formulary(path: Path | None = None) -> Formulary:
    """The bundled formulary, or a site formulary file with the same columns."""
    if path is None:
        return parse_formulary(bundled_formulary_text(), "bundled formulary")
    from trdscreen.io import read_config_file

    text, _ = read_config_file(Path(path), "formulary file")
    return parse_formulary(text, str(path))
