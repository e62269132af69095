"""Reading a records folder for `trdscreen build` (profile `events`).

A records folder holds what sites export instead of treatment courses:

- `drug_events` (required): one row per prescription, dispensing, administration
  or stated use: subject_id, drug, event_date, and whichever of event_type,
  end_date, days_supply, quantity, units_per_day, strength_mg and
  daily_dose_mg the export has;
- `assessments` (optional): subject_id, date, instrument (HAMD17, HAMD21,
  HAMD24, MADRS, PHQ9), total;
- `procedures` (optional): subject_id, date, procedure (ECT, rTMS,
  esketamine): one row per session;
- `diagnoses` (optional): subject_id, date, code (ICD-10, ICD-11, SNOMED CT or
  a name, as the subjects' `diagnosis` column takes);
- `observation_periods` (optional): subject_id, start_date, end_date;
- `drug_codes` (optional): a site's code list, code_system, code, drug and
  strength_mg, naming the RxNorm, NDC, BNF, dm+d or OMOP codes of drug events
  whose `code_system` says they are codes (`trdscreen.buildcodes`);
- `subjects` (optional): the subjects table of the input contract, passed on.

Each is CSV or Parquet, read and checked as screening inputs are (every
problem with file, line and column; `--map` renames headers under the table's
name). Rows whose required cells cannot be read are not used; the issues say
which. Implausible events are set aside by the builder, with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.buildcodes import CODE_SYSTEMS, LISTED
from trdscreen.convert import coerce
from trdscreen.errors import InputError
from trdscreen.io import DEFAULT_CSV, CsvOptions, SourceTable, open_source, row_unit
from trdscreen.issues import IssueLog
from trdscreen.schemas import HAMD_MAXIMUM, TREATMENT_COLUMNS, ColumnSpec, check_values
from trdscreen.sitemap import ColumnMap
from trdscreen.sources import build_manifest, one_of, unread_tables

EVENT_TYPES = ("prescribed", "dispensed", "administered", "stated")
INSTRUMENTS = ("hamd17", "hamd21", "hamd24", "madrs", "phq9")
PROCEDURES = ("ect", "rtms", "esketamine")

DRUG_EVENT_COLUMNS: dict[str, ColumnSpec] = {
    "subject_id": ColumnSpec("string", True, False, expected="a subject key"),
    "drug": ColumnSpec("string", True, False, expected="a drug name (or a code: code_system)"),
    "code_system": ColumnSpec(
        "category",
        vocabulary=CODE_SYSTEMS,
        expected="name, atc, rxnorm, ndc, bnf, dmd or omop (empty: name)",
    ),
    "atc_code": ColumnSpec("string", expected="a WHO ATC code such as N06AB06"),
    "event_date": ColumnSpec("date", True, False, expected="an ISO date YYYY-MM-DD"),
    "event_type": ColumnSpec("category", vocabulary=EVENT_TYPES),
    "end_date": ColumnSpec("date", expected="an ISO date YYYY-MM-DD or empty"),
    "days_supply": ColumnSpec("float", expected="a number of days"),
    "quantity": ColumnSpec("float", expected="a number of units (tablets, capsules, mL)"),
    "units_per_day": ColumnSpec("float", low=0, high=100, expected="units a day, 0 to 100"),
    "strength_mg": ColumnSpec("float", low=0, high=10_000, expected="mg per unit, 0 to 10,000"),
    "daily_dose_mg": ColumnSpec("float", low=0, high=10_000, expected="a dose in mg/day >= 0"),
}
"""The drug_events contract (days_supply and quantity are checked by the builder, which
sets an implausible event aside with its reason instead of rejecting the file)."""

ASSESSMENT_COLUMNS: dict[str, ColumnSpec] = {
    "subject_id": ColumnSpec("string", True, False, expected="a subject key"),
    "date": ColumnSpec("date", True, False, expected="an ISO date YYYY-MM-DD"),
    "instrument": ColumnSpec(
        "category",
        True,
        False,
        vocabulary=INSTRUMENTS,
        expected="HAMD17, HAMD21, HAMD24, MADRS or PHQ9",
    ),
    "total": ColumnSpec("int", True, False, low=0, high=75, expected="a scale total from 0 to 75"),
}

PROCEDURE_COLUMNS: dict[str, ColumnSpec] = {
    "subject_id": ColumnSpec("string", True, False, expected="a subject key"),
    "date": ColumnSpec("date", True, False, expected="an ISO date YYYY-MM-DD"),
    "procedure": ColumnSpec(
        "category", True, False, vocabulary=PROCEDURES, expected="ECT, rTMS or esketamine"
    ),
}
"""One row per session of a neurostimulation or clinic-given treatment."""

DIAGNOSIS_COLUMNS: dict[str, ColumnSpec] = {
    "subject_id": ColumnSpec("string", True, False, expected="a subject key"),
    "date": ColumnSpec("date", True, False, expected="an ISO date YYYY-MM-DD"),
    "code": ColumnSpec(
        "string", True, False, expected="a diagnosis: ICD-10, ICD-11, SNOMED CT or its name"
    ),
}
OBSERVATION_COLUMNS: dict[str, ColumnSpec] = {
    "subject_id": ColumnSpec("string", True, False, expected="a subject key"),
    "start_date": ColumnSpec("date", True, False, expected="an ISO date YYYY-MM-DD"),
    "end_date": ColumnSpec("date", expected="an ISO date YYYY-MM-DD or empty"),
}
"""When a subject's records are complete (enrolment in a health plan, registration at a
practice): the build's washout is counted from the first period's start."""

DRUG_CODE_COLUMNS: dict[str, ColumnSpec] = {
    "code_system": ColumnSpec(
        "category", True, False, vocabulary=LISTED, expected="rxnorm, ndc, bnf, dmd or omop"
    ),
    "code": ColumnSpec("string", True, False, expected="a drug code of that system"),
    "drug": ColumnSpec(
        "string", True, False, expected="the drug it names: a generic, brand or product name"
    ),
    "strength_mg": ColumnSpec("float", low=0, high=10_000, expected="mg per unit, 0 to 10,000"),
}
"""A site's code list (`buildcodes`): what each code of its drug events names."""

TABLES = {
    "drug_events": DRUG_EVENT_COLUMNS,
    "assessments": ASSESSMENT_COLUMNS,
    "procedures": PROCEDURE_COLUMNS,
    "diagnoses": DIAGNOSIS_COLUMNS,
    "observation_periods": OBSERVATION_COLUMNS,
    "drug_codes": DRUG_CODE_COLUMNS,
}
OPTIONAL = ("assessments", "procedures", "diagnoses", "observation_periods", "drug_codes")
READ_TABLES = ("drug_events", *OPTIONAL, "subjects")
"""Every table a records folder may hold, by the name `build` looks for."""


@dataclass(frozen=True)
class Table:
    """One records table as read: its source (file, hash, lines) and typed frame."""

    source: SourceTable
    frame: pd.DataFrame
    unusable: np.ndarray  # rows whose required cells could not be read (issues say why)

    @cached_property
    def subject_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(the distinct subject keys, an unreadable one as ""; each row's index into
        them), through Arrow's dictionary encoding: no Python string per row. Made once
        (a build reads them for the subject index, the ratings' check and lookups)."""
        column = pa.array(self.frame["subject_id"], pa.string(), from_pandas=True)
        encoded = pc.dictionary_encode(pc.fill_null(column, ""))
        names = encoded.dictionary.to_numpy(zero_copy_only=False).astype(object)
        return names, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)


@dataclass(frozen=True)
class Records:
    events: Table
    assessments: Table | None
    procedures: Table | None
    subjects: Path | None
    issues: pd.DataFrame
    diagnoses: Table | None = None
    observation_periods: Table | None = None
    subjects_frame: pd.DataFrame | None = None  # typed subjects made from the records (OMOP)
    sources: tuple[SourceTable, ...] = ()  # every table read, when not one per field (OMOP)
    profile: str = "events"
    drug_codes: Table | None = None
    unread: tuple[str, ...] = ()  # tables in the records folder that build does not read

    def inputs(self) -> list[SourceTable]:
        """Every table read, in a stable order (the manifest's inputs)."""
        if self.sources:
            return list(self.sources)
        tables = (
            self.events, self.assessments, self.procedures, self.diagnoses,
            self.observation_periods, self.drug_codes,
        )  # fmt: skip
        return [t.source for t in tables if t is not None]


def _tables(folder: Path, names: tuple[str, ...], holds: str) -> dict[str, Path | None]:
    """The tables of a folder by name; the first is required (`holds`: what the folder
    is expected to hold, for the message)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; `trdscreen build` reads a folder")
    found = {name: one_of(folder, name) for name in names}
    if found[names[0]] is None:
        raise InputError(f"{folder}: no {names[0]}.csv or {names[0]}.parquet; {holds}")
    return found


def find_records(folder: Path) -> dict[str, Path | None]:
    """The records tables of a folder (drug_events is required)."""
    return _tables(
        folder, READ_TABLES, "a records folder holds one row per prescription, dispensing or "
        "administration there",
    )  # fmt: skip


def read_typed(
    path: Path, name: str, rename: dict[str, str], specs: dict[str, ColumnSpec],
    options: CsvOptions, site: ColumnMap | None, log: IssueLog, keep_others: bool = False,
) -> tuple[SourceTable, pd.DataFrame]:  # fmt: skip
    """A table read whole, its columns converted to their working types and its values
    checked against `specs` (issues into `log`); with `keep_others`, the columns `specs`
    does not name are kept too, their type inferred."""
    source = open_source(path, name, rename, set(specs), options, site=site).read()
    others = [n for n in source.table.column_names if n not in specs] if keep_others else []
    frame = coerce(source, specs, log, extra=dict.fromkeys(others))
    check_values(source, frame, specs, log)
    return source, frame


def read_table(
    path: Path, name: str, specs: dict[str, ColumnSpec], site: ColumnMap | None,
    options: CsvOptions, log: IssueLog, keep_others: bool = False,
) -> Table:  # fmt: skip
    """One table read and checked against `specs` (issues into `log`; `keep_others`:
    read_typed's); InputError when a required column is missing."""
    rename = dict(getattr(site, name, {}) or {}) if site is not None else {}
    source, frame = read_typed(path, name, rename, specs, options, site, log, keep_others)
    required = [n for n, s in specs.items() if s.required and n in frame.columns]
    missing_required = [n for n, s in specs.items() if s.required and n not in frame.columns]
    if missing_required:
        raise InputError(
            f"{path}: required column(s) {', '.join(missing_required)} not found; map the site's "
            f"headers to them under `{name}:` in --map"
        )
    unusable = np.flatnonzero(frame[required].isna().any(axis=1).to_numpy())
    return Table(source, frame, unusable)


def read_records(
    folder: Path, site: ColumnMap | None = None, options: CsvOptions = DEFAULT_CSV
) -> Records:
    """The records of a folder, read and checked (InputError when one cannot be read)."""
    found = find_records(folder)
    log = IssueLog()
    assert found["drug_events"] is not None
    events = read_table(found["drug_events"], "drug_events", DRUG_EVENT_COLUMNS, site, options, log)
    optional = {
        name: read_table(found[name], name, TABLES[name], site, options, log)  # type: ignore[arg-type]
        if found[name]
        else None
        for name in OPTIONAL
    }
    if optional["assessments"] is not None:
        check_ratings(optional["assessments"], log)
    return Records(
        events,
        optional["assessments"],
        optional["procedures"],
        found["subjects"],
        log.frame(),
        optional["diagnoses"],
        optional["observation_periods"],
        drug_codes=optional["drug_codes"],
        unread=tuple(unread_tables(Path(folder), [p for p in found.values() if p is not None])),
    )


COURSES_TABLES = ("treatments", "assessments", "subjects")
"""The tables `build --profile courses` reads (`buildgiven`)."""


def read_courses(
    folder: Path, site: ColumnMap | None = None, options: CsvOptions = DEFAULT_CSV
) -> Records:
    """A courses export (treatments, assessments, optional subjects) read and checked, as
    Records of profile `courses` (`events`: the treatments, every column kept)."""
    folder = Path(folder)
    found = _tables(
        folder, COURSES_TABLES, "--profile courses reads a courses export (treatments, "
        "assessments, optional subjects) there",
    )  # fmt: skip
    if build_manifest(folder) is not None:
        raise InputError(f"{folder}: a folder `trdscreen build` wrote; screen it as it is")
    log = IssueLog()
    path = found["treatments"]
    assert path is not None  # _tables: the first is required
    treatments = read_table(path, "treatments", TREATMENT_COLUMNS, site, options, log, True)
    assessments = (
        read_table(found["assessments"], "assessments", ASSESSMENT_COLUMNS, site, options, log)
        if found["assessments"]
        else None
    )
    if assessments is not None:
        check_ratings(assessments, log)
    return Records(
        treatments,
        assessments,
        None,
        found["subjects"],
        log.frame(),
        profile="courses",
        unread=tuple(unread_tables(folder, [p for p in found.values() if p is not None])),
    )


RATING_MAXIMUM = {
    **{f"hamd{version}": top for version, top in HAMD_MAXIMUM.items()},
    "madrs": 60,  # 10 items scored 0-6 (trd-reference D.2 [V])
    "phq9": 27,  # 9 items scored 0-3
}
"""The highest total of each instrument: a total above it is not a rating of it."""


def check_ratings(table: Table, log: IssueLog) -> None:
    """Errors on ratings no course may be judged by: a total above its instrument's
    maximum (a HAM-D17 of 60; the table's own range is that of the widest scale), and
    a subject rated on one instrument on one day with two different totals (which is
    the rating cannot be told, and the first would have been taken: 22 or 5 is a failed
    trial or a remission). Each names its line and the other's; no message gives a
    total. The same total twice is one rating, not an error."""
    frame = table.frame
    usable = np.ones(len(frame), dtype=bool)
    usable[table.unusable] = False
    rows = np.flatnonzero(usable)
    if not rows.size:
        return
    ids = frame["subject_id"]
    codes, instrument = pd.factorize(frame["instrument"])  # no Python string per row
    scales = codes[rows]
    total = frame["total"].to_numpy(dtype=np.float64, na_value=np.nan)[rows]
    maximum = np.array([RATING_MAXIMUM.get(str(name), np.inf) for name in instrument])
    over = total > maximum[scales]
    if over.any():
        expected = np.array([f"expected a {str(name).upper()} total from 0 to {top:g}"
                             for name, top in zip(instrument, maximum, strict=True)])  # fmt: skip
        log.add(table.source, rows[over], "total", "out_of_range", expected[scales[over]], ids)
    # One key per subject, day and instrument; a hash finds the keys given twice (few),
    # whose totals are then compared: no sort of a table of millions of ratings.
    subject = table.subject_keys[1][rows]
    day = frame["date"].to_numpy(dtype="datetime64[D]").astype(np.int64)[rows]
    day -= day.min()
    key = (subject * (int(day.max()) + 1) + day) * len(instrument) + scales
    twice = np.flatnonzero(pd.Series(key).duplicated(keep=False).to_numpy())
    if not twice.size:
        return
    order = twice[np.lexsort((total[twice], key[twice]))]
    starts = np.flatnonzero(np.r_[True, key[order][1:] != key[order][:-1]])
    differ = np.minimum.reduceat(total[order], starts) != np.maximum.reduceat(total[order], starts)
    if not differ.any():
        return
    conflict = np.zeros(len(rows), dtype=bool)
    conflict[order[np.repeat(differ, np.diff(np.r_[starts, len(order)]))]] = True
    at = rows[conflict]  # few: each names another line of its subject, day and instrument
    group = key[conflict]
    line = table.source.lines[at]
    order = np.lexsort((line, group))
    start = np.r_[True, group[order][1:] != group[order][:-1]]
    head = np.flatnonzero(start)[np.cumsum(start) - 1]  # each sorted row's group's first
    first, second = line[order][head], line[order][head + 1]  # a conflict has two rows
    other = np.empty_like(line)
    other[order] = np.where(line[order] == first, second, first)
    message = (
        f"{row_unit(table.source.file)} "
        + other.astype(str)
        + " gives another total of this instrument for this "
        "subject on this day: one total per subject, instrument and day; correct or remove "
        "the wrong one"
    )
    log.add(table.source, at, "total", "conflicting_rating", message, ids)


def check_unique_subjects(
    source: SourceTable, ids: pd.Series, log: IssueLog, column: str = "subject_id"
) -> None:
    """An error on every row of a subject given twice (a subjects table; OMOP `person`, by
    `person_id`), as the screen's validation checks its subjects (`IssueLog.add_duplicates`)."""
    log.add_duplicates(source, pd.factorize(ids)[0], ids, column)


def subject_codes(table: Table, ids: pd.Index) -> np.ndarray:
    """Each row's subject as its position in `ids` (-1: not there)."""
    names, rows = table.subject_keys
    return np.r_[ids.get_indexer(names), -1][rows] if len(rows) else rows
