"""Reading an OMOP CDM 5.4 extract for `trdscreen build --profile omop`.

The folder holds CDM tables as CSV or Parquet, named as the CDM names them:
`person`, `drug_exposure`, `concept`, `concept_ancestor` and `drug_strength`
(required), and any of `measurement`, `observation`, `condition_occurrence`,
`procedure_occurrence` and `observation_period`. They become the records the
events profile reads, row for row, so every built course still points at its
`drug_exposure` line:

- a drug exposure's drug is its ingredient: the drug concept itself when it is
  an Ingredient, else the one Ingredient among its ancestors in
  `concept_ancestor` (a combination product, with two, keeps the product's
  name, and the screen reports it as an unknown drug); its strength is the
  `drug_strength` amount in mg (or numerator in mg per denominator in mL) of
  that ingredient, so the build's dose is amount × quantity ÷ days, as
  DrugUtilisation computes it; its end is `drug_exposure_end_date`, else start
  + `days_supply` − 1 (the build's own order);
- ratings are the `measurement` (or `observation`) rows whose concept id the
  site lists under `omop: ratings:` in its map, their `value_as_number` the
  total: no LOINC or SNOMED code is assumed for a HAM-D or MADRS total;
- sessions are the `procedure_occurrence` rows whose concept id is listed under
  `omop: procedures:`;
- diagnoses are `condition_occurrence` rows, each as its source value (often an
  ICD-10 code) or else its concept's name;
- subjects are `person` rows: a birth date only when year, month and day are
  all given (a year alone leaves the age unknown rather than guessed).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from trdscreen.errors import InputError
from trdscreen.io import CsvOptions
from trdscreen.issues import IssueLog
from trdscreen.records import Records, Table, check_unique_subjects, read_table
from trdscreen.schemas import ColumnSpec
from trdscreen.sitemap import ColumnMap
from trdscreen.sources import one_of

MG = 8576  # UCUM milligram
ML = 8587  # UCUM milliliter
CONCEPT_ID = "a concept id (an integer)"


def _id(required: bool = True) -> ColumnSpec:
    return ColumnSpec("string", required, not required, expected=CONCEPT_ID)


def _date(required: bool = True) -> ColumnSpec:
    return ColumnSpec("date", required, not required, expected="an ISO date YYYY-MM-DD")


def _number() -> ColumnSpec:
    return ColumnSpec("float", expected="a number")


CDM: dict[str, dict[str, ColumnSpec]] = {
    "person": {
        "person_id": _id(), "year_of_birth": _number(), "month_of_birth": _number(),
        "day_of_birth": _number(),
    },
    "drug_exposure": {
        "person_id": _id(), "drug_concept_id": _id(), "drug_exposure_start_date": _date(),
        "drug_exposure_end_date": _date(False), "days_supply": _number(),
        "quantity": _number(), "drug_source_value": ColumnSpec("string"),
    },
    "concept": {
        "concept_id": _id(), "concept_name": ColumnSpec("string"),
        "concept_class_id": ColumnSpec("string"), "concept_code": ColumnSpec("string"),
    },
    "concept_ancestor": {"ancestor_concept_id": _id(), "descendant_concept_id": _id()},
    "drug_strength": {
        "drug_concept_id": _id(), "ingredient_concept_id": _id(), "amount_value": _number(),
        "amount_unit_concept_id": _id(False), "numerator_value": _number(),
        "numerator_unit_concept_id": _id(False), "denominator_value": _number(),
        "denominator_unit_concept_id": _id(False),
    },
    "measurement": {
        "person_id": _id(), "measurement_concept_id": _id(), "measurement_date": _date(),
        "value_as_number": _number(),
    },
    "observation": {
        "person_id": _id(), "observation_concept_id": _id(), "observation_date": _date(),
        "value_as_number": _number(),
    },
    "condition_occurrence": {
        "person_id": _id(), "condition_concept_id": _id(), "condition_start_date": _date(),
        "condition_source_value": ColumnSpec("string"),
    },
    "procedure_occurrence": {
        "person_id": _id(), "procedure_concept_id": _id(), "procedure_date": _date(),
    },
    "observation_period": {
        "person_id": _id(), "observation_period_start_date": _date(),
        "observation_period_end_date": _date(False),
    },
}  # fmt: skip
REQUIRED = ("person", "drug_exposure", "concept", "concept_ancestor", "drug_strength")


_EMPTY = {"date": "datetime64[s]", "float": "float64"}


def _complete(table: Table, specs: dict[str, ColumnSpec]) -> Table:
    """The table with every optional CDM column it lacks added, empty (an extract may
    leave out what it does not fill)."""
    frame = table.frame
    for name, spec in specs.items():
        if name not in frame.columns:
            frame[name] = pd.Series(index=frame.index, dtype=_EMPTY.get(spec.kind, "object"))
    return table


def is_omop(folder: Path) -> bool:
    return Path(folder).is_dir() and one_of(Path(folder), "drug_exposure") is not None


def _ids(values: pd.Series) -> np.ndarray:
    """Concept ids as text without a trailing .0 (CSV and Parquet agree)."""
    text = values.astype("string").str.replace(r"\.0+$", "", regex=True)
    return text.to_numpy(dtype=object, na_value=None)


def read_omop(folder: Path, site: ColumnMap, options: CsvOptions) -> Records:
    """The extract as records (module doc). InputError when a required table is missing."""
    folder = Path(folder)
    found = {name: one_of(folder, name) for name in CDM}
    missing = [name for name in REQUIRED if found[name] is None]
    if missing:
        raise InputError(
            f"{folder}: OMOP CDM table(s) {', '.join(missing)} not found (CSV or Parquet named "
            "as the CDM names them); --profile omop needs person, drug_exposure, concept, "
            "concept_ancestor and drug_strength"
        )
    log = IssueLog()
    read = {
        name: _complete(read_table(path, name, CDM[name], None, options, log), CDM[name])
        for name, path in found.items()
        if path is not None
    }
    person = read["person"]
    check_unique_subjects(person.source, person.frame["person_id"], log, "person_id")
    concepts = read["concept"].frame
    names = pd.Series(
        concepts["concept_name"].astype(object).to_numpy(), index=_ids(concepts["concept_id"])
    )
    events = _events(read, names)
    ratings = _ratings(read, site)
    return Records(
        events,
        ratings,
        _sessions(read, site),
        None,
        log.frame(),
        _diagnoses(read, names),
        _periods(read),
        subjects_frame=_people(read["person"]),
        sources=tuple(t.source for t in read.values()),
        profile="omop",
    )


def _ingredients(read: dict[str, Table]) -> pd.Series:
    """drug concept id -> its one ingredient concept id (ingredients map to themselves)."""
    concepts = read["concept"].frame
    ids = _ids(concepts["concept_id"])
    ingredient = set(ids[(concepts["concept_class_id"].astype(object) == "Ingredient").to_numpy()])
    pairs = read["concept_ancestor"].frame
    ancestor, descendant = _ids(pairs["ancestor_concept_id"]), _ids(pairs["descendant_concept_id"])
    keep = np.isin(ancestor, list(ingredient)) & (ancestor != descendant)
    links = pd.DataFrame({"drug": descendant[keep], "ingredient": ancestor[keep]})
    links = links.drop_duplicates()
    single = links.groupby("drug")["ingredient"].transform("size") == 1
    out = pd.Series(links["ingredient"][single].to_numpy(), index=links["drug"][single].to_numpy())
    itself = pd.Series(sorted(ingredient), index=sorted(ingredient))
    return pd.concat([out, itself[~itself.index.isin(out.index)]])


def _strengths(read: dict[str, Table]) -> pd.Series:
    """(drug concept, ingredient) -> mg per unit (per mL for a liquid)."""
    frame = read["drug_strength"].frame
    amount = frame["amount_value"].to_numpy(dtype=np.float64, na_value=np.nan)
    amount_unit = _ids(frame["amount_unit_concept_id"])
    numerator = frame["numerator_value"].to_numpy(dtype=np.float64, na_value=np.nan)
    denominator = frame["denominator_value"].to_numpy(dtype=np.float64, na_value=np.nan)
    num_unit = _ids(frame["numerator_unit_concept_id"])
    den_unit = _ids(frame["denominator_unit_concept_id"])
    per_unit = np.where(amount_unit == str(MG), amount, np.nan)
    per_ml = np.where(
        (num_unit == str(MG)) & (den_unit == str(ML)) & (denominator > 0),
        numerator / np.where(denominator > 0, denominator, 1),
        np.nan,
    )
    value = np.where(np.isnan(per_unit), per_ml, per_unit)
    key = pd.MultiIndex.from_arrays(
        [_ids(frame["drug_concept_id"]), _ids(frame["ingredient_concept_id"])]
    )
    return pd.Series(value, index=key).groupby(level=[0, 1]).first()


def _events(read: dict[str, Table], names: pd.Series) -> Table:
    table = read["drug_exposure"]
    frame = table.frame
    drug = _ids(frame["drug_concept_id"])
    ingredients = _ingredients(read)
    ingredient = ingredients.reindex(drug).to_numpy(dtype=object)
    label = np.where(pd.isna(ingredient), drug, ingredient)
    strength = _strengths(read).reindex(pd.MultiIndex.from_arrays([drug, ingredient]))
    events = pd.DataFrame(
        {
            "subject_id": frame["person_id"].to_numpy(),
            "drug": names.reindex(label).fillna(pd.Series(label)).to_numpy(dtype=object),
            "event_date": frame["drug_exposure_start_date"].to_numpy(),
            "end_date": frame["drug_exposure_end_date"].to_numpy(),
            "days_supply": frame["days_supply"].to_numpy(),
            "quantity": frame["quantity"].to_numpy(),
            "strength_mg": strength.to_numpy(dtype=np.float64),
        }
    )
    return Table(table.source, events, table.unusable)


def _listed(
    read: dict[str, Table], sources: tuple[tuple[str, str, str], ...], wanted: dict
) -> tuple[Table, np.ndarray, np.ndarray] | None:
    """The first source table holding rows of the listed concept ids, with the name each
    row is listed under and the rows (None when no id is listed or none is found)."""
    lookup = {str(cid): name for name, ids in wanted.items() for cid in ids}
    if not lookup:
        return None
    for table_name, concept, _ in sources:
        table = read.get(table_name)
        if table is None:
            continue
        ids = _ids(table.frame[concept])
        rows = np.flatnonzero(np.isin(ids, list(lookup)))
        if len(rows):
            return table, rows, pd.Series(lookup).reindex(ids[rows]).to_numpy(dtype=object)
    return None


def _ratings(read: dict[str, Table], site: ColumnMap) -> Table | None:
    sources = (
        ("measurement", "measurement_concept_id", "measurement_date"),
        ("observation", "observation_concept_id", "observation_date"),
    )
    found = _listed(read, sources, site.omop.ratings)
    if found is None:
        return None
    table, rows, instrument = found
    date_column = dict((t, d) for t, _, d in sources)[table.source.name]
    frame = table.frame.iloc[rows]
    ratings = pd.DataFrame(
        {
            "subject_id": frame["person_id"].to_numpy(),
            "date": frame[date_column].to_numpy(),
            "instrument": instrument,
            "total": frame["value_as_number"].to_numpy(),
        }
    )
    unusable = np.flatnonzero(ratings[["subject_id", "date", "total"]].isna().any(axis=1))
    return Table(table.source.take(rows), ratings, unusable)


def _sessions(read: dict[str, Table], site: ColumnMap) -> Table | None:
    sources = (("procedure_occurrence", "procedure_concept_id", "procedure_date"),)
    found = _listed(read, sources, site.omop.procedures)
    if found is None:
        return None
    table, rows, procedure = found
    frame = table.frame.iloc[rows]
    sessions = pd.DataFrame(
        {
            "subject_id": frame["person_id"].to_numpy(),
            "date": frame["procedure_date"].to_numpy(),
            "procedure": procedure,
        }
    )
    unusable = np.flatnonzero(sessions[["subject_id", "date"]].isna().any(axis=1))
    return Table(table.source.take(rows), sessions, unusable)


def _diagnoses(read: dict[str, Table], names: pd.Series) -> Table | None:
    table = read.get("condition_occurrence")
    if table is None:
        return None
    frame = table.frame
    named = names.reindex(_ids(frame["condition_concept_id"])).to_numpy(dtype=object)
    source = frame["condition_source_value"].astype(object).to_numpy()
    code = np.where(pd.isna(source), named, source)
    diagnoses = pd.DataFrame(
        {
            "subject_id": frame["person_id"].to_numpy(),
            "date": frame["condition_start_date"].to_numpy(),
            "code": code,
        }
    )
    unusable = np.flatnonzero(diagnoses.isna().any(axis=1))
    return Table(table.source, diagnoses, np.union1d(table.unusable, unusable))


def _periods(read: dict[str, Table]) -> Table | None:
    table = read.get("observation_period")
    if table is None:
        return None
    frame = table.frame
    periods = pd.DataFrame(
        {
            "subject_id": frame["person_id"].to_numpy(),
            "start_date": frame["observation_period_start_date"].to_numpy(),
            "end_date": frame["observation_period_end_date"].to_numpy(),
        }
    )
    return Table(table.source, periods, table.unusable)


def _people(read_person: Table) -> pd.DataFrame:
    frame = read_person.frame
    parts = {
        k: frame[f"{k}_of_birth"].to_numpy(dtype=np.float64, na_value=np.nan)
        if f"{k}_of_birth" in frame.columns
        else np.full(len(frame), np.nan)
        for k in ("year", "month", "day")
    }
    complete = ~np.isnan(parts["year"]) & ~np.isnan(parts["month"]) & ~np.isnan(parts["day"])
    whole = pd.DataFrame({k: np.where(complete, v, 2000) for k, v in parts.items()})
    birth = pd.to_datetime(whole.astype(np.int64), errors="coerce").where(complete)
    return pd.DataFrame({"subject_id": frame["person_id"].to_numpy(), "birth_date": birth})
