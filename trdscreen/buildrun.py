"""`trdscreen build` end to end: read a records folder, build the courses, write a folder
that `trdscreen screen DIR` screens as it is.

The folder holds `treatments.parquet` (the input contract plus provenance
columns), `subjects.parquet` (the subjects table as read and typed, or the
subject keys of the events when none was given, so no subject is lost),
`course_events.parquet`, `event_attrition.parquet` and `manifest.json`: the
inputs with their hashes, the rule set and formulary hashes, every build
parameter with its evidence tag, the reference date, and every output with its
hash. Nothing in it depends on the clock, the user or the machine, so the same
inputs and rules give the same bytes. Written into a draft folder and put in
place whole (`outdir.atomic_folder`): a failed build leaves nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from trdscreen.build import Built, build
from trdscreen.build import Records as BuildInput
from trdscreen.buildgiven import attach_given, refuse_written, site_drugs
from trdscreen.buildratings import SCREENING_SCALES
from trdscreen.buildrules import BuildRules, parameters
from trdscreen.buildtables import ints
from trdscreen.columns import floats
from trdscreen.errors import InputError
from trdscreen.formulary import Formulary
from trdscreen.io import CsvOptions, row_unit
from trdscreen.issues import IssueLog, issue_counts
from trdscreen.manifest import input_record, versions
from trdscreen.outdir import MANIFEST_FILE, atomic_folder
from trdscreen.output import Destination, write_tables
from trdscreen.records import (
    Records,
    Table,
    check_unique_subjects,
    read_courses,
    read_records,
    read_typed,
)
from trdscreen.resolve import (
    column_maps,
    csv_under,
    formulary_of,
    load_rules,
    with_site_aliases,
)
from trdscreen.schemas import SUBJECT_COLUMNS
from trdscreen.sitemap import ColumnMap
from trdscreen.sources import one_of

BUILD_SCHEMA_VERSION = 1
ISSUES_SHOWN = 20


@dataclass(frozen=True)
class BuildRequest:
    input: Path  # a records folder
    out: Path
    rules: str | None = None  # preset name or rule file (its `build:` section)
    column_map: Path | None = None
    as_of: date | None = None
    force: bool = False
    profile: str = "auto"  # events | omop | courses | auto (_read)


@dataclass(frozen=True)
class BuildResult:
    out: Path
    manifest: dict
    built: Built | None  # None for --profile courses (buildgiven)


def _subjects(
    records: Records, columns: ColumnMap, options: CsvOptions, log: IssueLog
) -> tuple[pd.DataFrame | None, dict | None]:
    """The subjects table typed (every column kept), with its input record."""
    if records.subjects is None:
        return None, None
    source, frame = read_typed(
        records.subjects, "subjects", columns.subjects, SUBJECT_COLUMNS, options, columns, log,
        keep_others=True,
    )  # fmt: skip
    check_unique_subjects(source, frame["subject_id"], log)
    return frame, input_record(source)


def with_facts(subjects: pd.DataFrame | None, facts: pd.DataFrame | None) -> pd.DataFrame:
    """The subjects table with what the build derived: `episode_start` where it is not
    given (`episode_source` says which: given, derived, or why none), `left_censored`,
    the records' diagnoses added to `diagnoses`, and screening scores the table leaves
    empty (`_screening_score`). Without a subjects table, a row per subject of the
    records (none is lost)."""
    assert facts is not None
    facts = facts[facts["subject_id"] != ""]
    if subjects is None:
        return facts.reset_index(drop=True)
    out = subjects.copy()
    at = pd.Index(facts["subject_id"]).get_indexer(out["subject_id"].astype(object))
    found = at >= 0
    pick = np.maximum(at, 0)
    given = (
        out["episode_start"].notna().to_numpy()
        if "episode_start" in out.columns
        else np.zeros(len(out), dtype=bool)
    )
    derived = np.where(found, facts["episode_start"].to_numpy()[pick], np.datetime64("NaT"))
    out["episode_start"] = np.where(
        given, out.get("episode_start", pd.Series(pd.NaT, index=out.index)), derived
    )
    source = np.where(
        found, facts["episode_source"].astype(object).to_numpy()[pick], "no_treatment"
    )
    out["episode_source"] = pd.Categorical(np.where(given, "given", source))
    censored = pd.array(np.where(found, facts["left_censored"].to_numpy()[pick], False), "boolean")
    censored[given] = pd.NA  # not judged: the site gave the episode
    out["left_censored"] = censored
    if "diagnoses" in facts.columns:
        recorded = pd.Series(facts["diagnoses"].to_numpy()[pick], index=out.index).where(found)
        if "diagnoses" in out.columns:
            both = out["diagnoses"].astype("string").str.cat(recorded.astype("string"), sep=";")
            recorded = both.fillna(out["diagnoses"].astype("string")).fillna(recorded)
        out["diagnoses"] = recorded
    for column in (c for _, c in SCREENING_SCALES if c in facts.columns):
        derived = np.where(found, facts[column].to_numpy(dtype=np.float64)[pick], np.nan)
        line = np.where(
            found, facts[f"{column}_line"].to_numpy(np.float64, na_value=np.nan)[pick], np.nan
        )
        _screening_score(out, column, derived, line)
    return out


def _screening_score(out: pd.DataFrame, column: str, derived: np.ndarray, line: np.ndarray) -> None:
    """A screening score the subjects row leaves empty, from the ratings (`derived`, with
    its ratings `line`, per row of `out`: `buildratings.screening_scores`), with
    `COLUMN_source` (given, derived or none) and `COLUMN_line` (the ratings line of a
    derived one)."""
    given_values = floats(out, column)
    given = ~np.isnan(given_values)
    use = ~given & ~np.isnan(derived)
    out[column] = np.where(given, given_values, derived)
    out[f"{column}_source"] = pd.Categorical(
        np.where(given, "given", np.where(use, "derived", "none")),
        categories=["given", "derived", "none"],
    )
    out[f"{column}_line"] = ints(np.where(use, line, np.nan)).to_numpy()
    if column == "hamd_screening" and "hamd_version" in out.columns and use.any():
        # A derived score is a HAM-D17 total, whatever version the row named for its own.
        version = out["hamd_version"].to_numpy(dtype=np.float64, na_value=np.nan)
        out["hamd_version"] = ints(np.where(use, 17.0, version)).to_numpy()


def _built(
    records: Records, subjects: pd.DataFrame | None, settings: BuildRules,
    formulary: Formulary, as_of: date | None,
) -> tuple[dict[str, pd.DataFrame], dict, Built]:  # fmt: skip
    """Profiles events and omop: the tables built from the records, the manifest's
    `event_attrition`, and what `build` returned."""
    built = build(
        BuildInput(
            records.events, records.assessments, subjects, records.procedures,
            records.diagnoses, records.observation_periods, records.drug_codes,
        ),
        settings, formulary, as_of,
    )  # fmt: skip
    tables = {
        "treatments": built.treatments,
        "subjects": with_facts(subjects, built.subject_facts),
        "course_events": built.course_events,
        "event_attrition": built.attrition,
    }
    if built.procedure_sessions is not None:
        tables["procedure_sessions"] = built.procedure_sessions
    steps = zip(built.attrition["step"], built.attrition["count"], strict=True)
    return tables, {"event_attrition": {str(s): int(c) for s, c in steps}}, built


def _given(
    records: Records, subjects: pd.DataFrame | None, settings: BuildRules,
    formulary: Formulary, plain: Formulary, as_of: date | None,
) -> tuple[dict[str, pd.DataFrame], dict]:  # fmt: skip
    """`--profile courses`: the treatments (the map's drug aliases written as generics,
    `formulary` against `plain`) with the assessments' ratings on the rows that give
    none, the subjects with the screening scores they leave empty (`buildgiven`); and
    the manifest's `scores` counts."""
    refuse_written(records.events)
    named = Table(
        records.events.source, site_drugs(records.events.frame, formulary, plain),
        records.events.unusable,
    )  # fmt: skip
    given = attach_given(named, records.assessments, subjects, settings.ratings, as_of)
    tables = {"treatments": given.treatments}
    counts = dict(given.counts)
    if subjects is not None:
        out = subjects.copy()
        for column, (derived, line) in given.screening.items():
            _screening_score(out, column, derived, line)
            counts[f"{column}_derived"] = int((out[f"{column}_source"] == "derived").sum())
        tables["subjects"] = out
    return tables, {"scores": counts}


def _refuse_invalid(issues: pd.DataFrame) -> None:
    """Stop on any error in the inputs (cells that cannot be read would drop events);
    each problem with file, line, column and what was expected, never a cell value."""
    errors = issues[issues["severity"] == "error"]
    if errors.empty:
        return
    lines = [
        f"{row.file}"
        + (f" {row_unit(row.file)} {int(row.line)}" if pd.notna(row.line) and row.line > 0 else "")
        + (f", column {row.column}" if isinstance(row.column, str) and row.column else "")
        + f": {row.message}"
        + (f" ({int(row.rows)} rows)" if pd.notna(row.rows) and int(row.rows) > 1 else "")
        for row in errors.head(ISSUES_SHOWN).itertuples()
    ]
    if len(errors) > ISSUES_SHOWN:
        lines.append(f"... and {len(errors) - ISSUES_SHOWN} more")
    raise InputError(
        f"the records do not pass validation ({int(errors['rows'].fillna(1).sum())} "
        "problem(s)); nothing was built. "
        "Fix them or map the site's headers and formats with --map",
        lines,
    )


def _read(request: BuildRequest, columns: ColumnMap, options: CsvOptions) -> Records:
    """The records of the request's profile (`auto`: omop when the folder holds a
    drug_exposure table, else events)."""
    from trdscreen.omop import is_omop, read_omop

    profile = request.profile
    if profile == "auto":
        profile = "omop" if is_omop(request.input) else _events_or_courses(request.input)
    if profile == "omop":
        return read_omop(request.input, columns, options)
    if profile == "courses":
        return read_courses(request.input, columns, options)
    return read_records(request.input, columns, options)


def _events_or_courses(folder: Path) -> str:
    """`auto` without OMOP tables: courses when the folder holds treatments and no
    drug_events, else events."""
    if not Path(folder).is_dir() or one_of(Path(folder), "drug_events") is not None:
        return "events"
    return "courses" if one_of(Path(folder), "treatments") is not None else "events"


def run_build(request: BuildRequest, command: tuple[str, ...] = ()) -> BuildResult:
    """Read, build and write (module doc). InputError/RuleError when something cannot be
    read; nothing is written then."""
    rules, rules_path, rules_sha = load_rules(request.rules)
    plain = formulary_of(rules, rules_path)
    columns = column_maps(rules, rules_path, request.column_map)
    formulary = with_site_aliases(plain, columns, str(request.column_map or rules_path))
    options = csv_under(CsvOptions(), columns)
    records = _read(request, columns, options)
    log = IssueLog()
    subjects, subjects_record = _subjects(records, columns, options, log)
    if subjects is None and records.subjects_frame is not None:
        subjects = records.subjects_frame
    issues = pd.concat([records.issues, log.frame()], ignore_index=True)
    _refuse_invalid(issues)
    settings = rules.build_rules()
    built: Built | None = None
    if records.profile == "courses":
        tables, summary = _given(records, subjects, settings, formulary, plain, request.as_of)
    else:
        tables, summary, built = _built(records, subjects, settings, formulary, request.as_of)
    inputs = [input_record(source) for source in records.inputs()]
    if subjects_record is not None:
        inputs.append(subjects_record)
    with atomic_folder(request.out, request.force, [request.input]) as draft:
        written = write_tables(
            tables, draft, Destination(request.out, ("parquet",), escape_formulas=False)
        )
        manifest = {
            "manifest_schema_version": BUILD_SCHEMA_VERSION,
            "tool": "trdscreen",
            "kind": "build",
            "profile": records.profile,
            "versions": versions(),
            "status": "ok",
            "command": list(command),
            "request": {
                "input": str(request.input),
                "rules": request.rules,
                "column_map": str(request.column_map) if request.column_map else None,
                "as_of": request.as_of.isoformat() if request.as_of else None,
                "profile": records.profile,
            },
            "inputs": inputs,
            **({"inputs_not_read": list(records.unread)} if records.unread else {}),
            "column_map": str(request.column_map) if request.column_map else None,
            "rules": {
                "id": rules.id,
                "path": str(rules_path),
                "file_sha256": rules_sha,
                "normalized_sha256": rules.sha256(),
                "build_section": rules.build is not None,
            },
            "formulary": {"source": formulary.source, "sha256": formulary.sha256},
            "reference_date": (
                {"as_of": request.as_of.isoformat()}
                if request.as_of
                else {"column": "subjects.screening_date"}
            ),
            "parameters": parameters(settings, records.profile),
            **summary,
            "issues": issue_counts(issues),
            "outputs": [record.as_json() for record in written],
        }
        (draft / MANIFEST_FILE).write_text(
            json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n", "utf-8"
        )
    return BuildResult(Path(request.out), manifest, built)
