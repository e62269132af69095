"""Drug codes of other systems made drug names, before the formulary reads them.

A drug event's `drug` is a name unless its `code_system` says it is a code: `atc` (a
WHO ATC code, which the formulary knows), or `rxnorm`, `ndc`, `bnf`, `dmd` or `omop` (a
concept id), which no bundled table can name: a site brings its own code list, the
records table `drug_codes` (code_system, code, drug, and optionally strength_mg), and
each listed code's row is read as if the export had written that drug name (a product
name such as "Sertraline 50mg tablets" gives its strength, as a name does) and that
strength. A code the list does not hold is kept under the name `NDC 00093718001` (the
system and the code): the screen reports it as an unknown drug, so a subject with it is
never screened as if the event did not exist. Codes are compared after
`normalize_code`: NDC in its 11-digit 5-4-2 form when written with hyphens, BNF and ATC
upper case, numeric ids without spaces. Vectorized over the distinct (system, code)
pairs, which are few.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.errors import InputError

CODE_SYSTEMS = ("name", "atc", "rxnorm", "ndc", "bnf", "dmd", "omop")
"""The values of drug_events.code_system (empty: name)."""
LISTED = ("rxnorm", "ndc", "bnf", "dmd", "omop")
"""Systems whose codes only a site's `drug_codes` list can name."""
NDC_WIDTHS = (5, 4, 2)


def normalize_code(system: str, code: str) -> str:
    """One code in the form codes are compared in (see the module doc)."""
    text = "".join(str(code).split())
    if system == "ndc" and text.count("-") == 2:
        parts = text.split("-")
        return "".join(p.zfill(w) for p, w in zip(parts, NDC_WIDTHS, strict=True))
    if system == "ndc":
        return text.replace("-", "")
    return text.upper()


@dataclass(frozen=True)
class Translated:
    """The events as the formulary should read them, and what the code list did."""

    frame: pd.DataFrame  # drug (and atc_code, strength_mg) replaced on coded rows
    listed: int  # events whose code the list names
    not_listed: int  # events whose code it does not hold (kept under the code)


def code_list(frame: pd.DataFrame, lines: np.ndarray, file: str) -> dict[tuple[str, str], tuple]:
    """The site's `drug_codes` table as {(system, normalized code): (drug, strength_mg)};
    InputError naming the lines when one code is listed with two different drugs."""
    systems = frame["code_system"].astype(object).to_numpy()
    codes = frame["code"].astype(object).to_numpy()
    drugs = frame["drug"].astype(object).to_numpy()
    strengths = (
        frame["strength_mg"].to_numpy(dtype=np.float64, na_value=np.nan)
        if "strength_mg" in frame.columns
        else np.full(len(frame), np.nan)
    )
    listed: dict[tuple[str, str], tuple] = {}
    first_line: dict[tuple[str, str], int] = {}
    for i in range(len(frame)):  # a site's code list: thousands of rows, read once
        if systems[i] is None or codes[i] is None or drugs[i] is None:
            continue  # an unreadable cell: the issues name it
        key = (str(systems[i]), normalize_code(str(systems[i]), codes[i]))
        value = (str(drugs[i]), float(strengths[i]))
        if (
            key in listed
            and listed[key] != value
            and not (listed[key][0] == value[0] and np.isnan(listed[key][1]) and np.isnan(value[1]))
        ):
            raise InputError(
                f"{file}: line {int(lines[i])}, column code: {key[0]} code listed on line "
                f"{first_line[key]} with another drug or strength; each code names one drug"
            )
        listed.setdefault(key, value)
        first_line.setdefault(key, int(lines[i]))
    return listed


def _resolve(
    system: str, code: str, listed: dict[tuple[str, str], tuple]
) -> tuple[str | None, str | None, float, bool]:
    """(the name the formulary reads, the ATC code it reads, the listed strength, whether
    the code was found) of one distinct coded drug."""
    if not code:  # an unreadable drug cell: the event is set aside as invalid
        return None, None, np.nan, True
    code = normalize_code(system, code)
    if system == "atc":  # the formulary resolves ATC codes itself
        return code, code, np.nan, True
    hit = listed.get((system, code))
    if hit is None:
        return f"{system.upper()} {code}", None, np.nan, False
    return hit[0], None, hit[1], True


def translate(frame: pd.DataFrame, listed: dict[tuple[str, str], tuple] | None) -> Translated:
    """`frame` with each coded event's drug as its code list names it (see module doc)."""
    if "code_system" not in frame.columns:
        return Translated(frame, 0, 0)
    system = frame["code_system"].astype(object).fillna("name").to_numpy()
    coded = system != "name"
    if not coded.any():
        return Translated(frame, 0, 0)
    drug_text = frame["drug"].astype(object).fillna("").to_numpy()[coded]
    index, distinct = pd.factorize(system[coded].astype(str) + "\t" + drug_text.astype(str))
    split = (str(pair).split("\t", 1) for pair in distinct)
    resolved = [_resolve(system, code, listed or {}) for system, code in split]
    names, atcs, strengths, found = (list(column) for column in zip(*resolved, strict=True))
    out = frame.copy()
    rows = np.flatnonzero(coded)
    drug = out["drug"].astype(object).to_numpy().copy()
    drug[rows] = np.asarray(names, dtype=object)[index]
    out["drug"] = pd.array(drug, dtype="str")
    atc = (
        out["atc_code"].astype(object).to_numpy().copy()
        if "atc_code" in out.columns
        else np.full(len(out), None, dtype=object)
    )
    given_atc = np.asarray(atcs, dtype=object)[index]
    keep = pd.isna(atc[rows])
    atc[rows[keep]] = given_atc[keep]
    if "atc_code" in out.columns or not pd.isna(atc).all():
        out["atc_code"] = pd.array(atc, dtype="str")
    strength = (
        out["strength_mg"].to_numpy(dtype=np.float64, na_value=np.nan).copy()
        if "strength_mg" in out.columns
        else np.full(len(out), np.nan)
    )
    listed_strength = np.asarray(strengths, dtype=np.float64)[index]
    strength[rows] = np.where(np.isnan(strength[rows]), listed_strength, strength[rows])
    if "strength_mg" in out.columns or not np.isnan(strength).all():
        out["strength_mg"] = strength
    is_found = np.asarray(found, dtype=bool)[index]
    is_listed = np.asarray([p.split("\t", 1)[0] in LISTED for p in distinct], dtype=bool)[index]
    return Translated(out, int((is_found & is_listed).sum()), int((~is_found).sum()))
