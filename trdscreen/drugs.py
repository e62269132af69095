"""What the formulary says about each row's drug, looked up once per distinct name.

An export names a few hundred distinct drugs over millions of rows: each name
is matched once (`Formulary.match`) and its facts are broadcast to the rows by
factorized codes, so no Python string is touched per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trdscreen.coded import Coded, categorical
from trdscreen.formulary import Formulary
from trdscreen.ruleset import RuleSet


def distinct_drugs(courses: pd.DataFrame) -> tuple[np.ndarray, list[tuple[Any, Any]]]:
    """(code per row, the distinct (name, ATC code) pairs): rows of one pair share a code
    (-1 where the name is null); without an `atc_code` column the code is None."""
    names, name_values = pd.factorize(courses["drug"])
    if "atc_code" not in courses.columns:
        return names, [(name, None) for name in name_values]
    atcs, atc_values = pd.factorize(courses["atc_code"])
    pair = np.where(names < 0, -1, names.astype(np.int64) * (len(atc_values) + 1) + atcs + 1)
    codes, pairs = pd.factorize(pair)
    codes = np.where(pair < 0, -1, codes)
    width = len(atc_values) + 1
    distinct: list[tuple[Any, Any]] = []
    for value in pairs:
        if value < 0:
            distinct.append((None, None))
            continue
        atc = int(value) % width - 1
        distinct.append((name_values[int(value) // width], atc_values[atc] if atc >= 0 else None))
    return codes, distinct


@dataclass(frozen=True)
class DrugFacts:
    """What the formulary says about each row's drug (arrays per row; text per distinct
    name as codes or Categoricals, so no Python string is touched per row)."""

    known: np.ndarray  # bool: the name (or ATC code) resolved to a drug
    nondep: np.ndarray  # bool: a product for another condition (Zyban, oral selegiline)
    also: np.ndarray  # bool: a policy drug the rule set counts (`also_count`)
    any_dose: np.ndarray  # bool: any dose adequate (`adequacy.dose.any_dose_for`)
    lithium: np.ndarray  # bool
    weekly: np.ndarray  # bool: a weekly product by name ("Prozac Weekly")
    min_dose: np.ndarray  # float: the minimum the rule set applies (NaN: none)
    same_drug: np.ndarray  # int64 keys: one per generic (an unknown name: itself)
    same_moiety: np.ndarray  # int64 keys: one per active moiety
    same_class: np.ndarray  # int64 keys: one per drug class
    counts_as: Coded
    dose_unit: Coded  # the drug's unit (formulary.DRUG_UNITS)
    drug_generic: pd.Categorical
    drug_class: pd.Categorical
    min_dose_source: pd.Categorical

    def same(self, distinct: str) -> np.ndarray:
        """The counting keys of `counting.distinct` (drug, moiety or class)."""
        return {"drug": self.same_drug, "moiety": self.same_moiety, "class": self.same_class}[
            distinct
        ]


@dataclass(frozen=True)
class _Name:
    """The formulary's facts about one distinct exported name."""

    generic: str | None
    normalized: str
    drug_class: str = ""
    moiety: str = ""
    counts_as: str = ""
    min_dose: float = np.nan
    min_source: str = ""
    nondep: bool = False
    dose_unit: str = "mg"
    weekly: bool = False


def _name_facts(name: str | None, atc: str | None, rules: RuleSet, formulary: Formulary) -> _Name:
    match = formulary.resolve(name, atc)
    if match.generic is None:
        return _Name(None, match.normalized)
    drug = formulary.drug(match.generic)
    minimum, source = formulary.rule_minimum(
        match.generic, match.formulation, rules.formulary.dose_source, rules.formulary.overrides
    )
    return _Name(
        generic=match.generic,
        normalized=match.normalized,
        drug_class=drug.drug_class,
        moiety=drug.moiety or match.generic,
        counts_as=drug.counts_as,
        min_dose=np.nan if minimum is None else minimum,
        min_source=source,
        nondep=match.non_depression_product,
        dose_unit=drug.dose_unit,
        weekly="weekly" in match.formulation.split(),  # "Prozac Weekly": once every 7 days
    )


def drug_facts(courses: pd.DataFrame, rules: RuleSet, formulary: Formulary) -> DrugFacts:
    """Formulary facts per row, computed once per distinct exported name (and ATC code,
    when the export has an `atc_code` column: it names the drug where the name does not),
    then spread to the rows by code."""
    codes, uniques = distinct_drugs(courses)
    names = [_name_facts(name, atc, rules, formulary) for name, atc in uniques]

    def column(field: str, dtype: type | str = object) -> np.ndarray:
        return np.array([getattr(n, field) for n in names], dtype=dtype)

    generic = np.array([n.generic or "" for n in names], dtype=object)
    known = np.array([n.generic is not None for n in names], dtype=bool)
    normalized = column("normalized").astype(str)

    def keys(field: str) -> np.ndarray:
        """Integers per distinct name: two names are the same trial when their keys agree;
        an unknown name counts as itself."""
        if not names:
            return np.zeros(0, dtype=np.int64)
        text = np.where(known, column(field), "?" + normalized)
        return pd.factorize(text)[0].astype(np.int64)

    per_name = {
        "known": known,
        "nondep": column("nondep", bool),
        "also": np.isin(generic.astype(str), rules.formulary.also_count),
        "any_dose": np.isin(generic.astype(str), rules.adequacy.dose.any_dose_for),
        "lithium": generic.astype(str) == "lithium",
        "weekly": column("weekly", bool),
        "min_dose": column("min_dose", np.float64),
        "same_drug": keys("generic"),
        "same_moiety": keys("moiety"),
        "same_class": keys("drug_class"),
    }
    # A null name reads the first name's facts, as its checks are decided by its modality
    # (a drug course without a name fails validation).
    safe = np.where(codes >= 0, codes, 0)
    per_row = {k: (v[safe] if names else v) for k, v in per_name.items()}
    min_dose = per_name["min_dose"]
    return DrugFacts(
        **per_row,
        counts_as=Coded(safe, tuple(n.counts_as for n in names)),
        dose_unit=Coded(safe, tuple(n.dose_unit for n in names) or ("mg",)),
        # Output text columns: built per distinct name, gathered by Arrow.
        drug_generic=categorical([n.generic for n in names], codes),
        drug_class=categorical([n.drug_class if n.generic else None for n in names], codes),
        min_dose_source=categorical(
            [
                n.min_source if not np.isnan(m) else None
                for n, m in zip(names, min_dose, strict=True)
            ],
            codes,
        ),
    )
