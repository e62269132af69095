"""The library's entry points: load and validate inputs, screen, write a run folder.

This is the one layer that ties file I/O (`trdscreen.io`) to the pure stages
(`validate`, `pipeline`). The CLI calls these functions and nothing deeper.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
import sys
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from pathlib import Path

from trdscreen import __version__, quarantine
from trdscreen.audit import AUDIT_FILE, AUDIT_FORMAT, AuditTrail
from trdscreen.engine import DaskOptions
from trdscreen.errors import ExitCode, InvalidInputData, RuleError, UsageError
from trdscreen.formulary import Formulary, load_formulary, normalize_name
from trdscreen.io import (
    CsvOptions,
    InputFile,
    SourceTable,
    find_inputs,
    open_source,
    sha256_file,
)
from trdscreen.issues import issue_counts
from trdscreen.merge import merge_issues, merge_validated
from trdscreen.outdir import atomic_folder, prepare_out_dir, remove_stale_drafts
from trdscreen.output import write_tables
from trdscreen.pipeline import Screening, ScreenResult, refuse_invalid, screen_checked
from trdscreen.ruleset import (
    STAGING_MODEL_OF,
    ColumnMap,
    RuleSet,
    load_column_map,
    read_rule_file,
    resolve_rules,
)
from trdscreen.runs import MANIFEST_FILE, MANIFEST_SCHEMA_VERSION
from trdscreen.schemas import SUBJECT_COLUMNS, TREATMENT_COLUMNS
from trdscreen.stream import CHUNK_ROWS, StreamedResult, chunks, stream
from trdscreen.validate import ValidatedInputs, criteria_subject_columns, validate_inputs

FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class ScreenRequest:
    """What to screen, as the user gave it."""

    input: Path
    subjects: Path | None = None
    rules: str | None = None  # preset name or file; None = the default preset
    column_map: Path | None = None
    as_of: date | None = None
    reports: tuple[str, ...] = ()  # presets or files whose staging scores are added
    csv: CsvOptions = CsvOptions()  # --encoding, --delimiter
    on_invalid: str = "fail"  # quarantine.ON_INVALID: what rows that fail validation do
    dask: DaskOptions | None = None  # --engine dask: run the kernel per hash bucket
    chunk_rows: int | None = None  # screen_and_write: rows per chunk; None: the whole cohort

    def __post_init__(self) -> None:
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise UsageError(f"--chunk-rows {self.chunk_rows}: expected at least 1")
        if self.on_invalid not in quarantine.ON_INVALID:
            raise UsageError(
                f"on_invalid {self.on_invalid!r}: expected one of {', '.join(quarantine.ON_INVALID)}"
            )


@dataclass(frozen=True)
class ReportRules:
    """A rule set whose staging model is reported beside the screening decision."""

    rules: RuleSet
    path: Path
    file_sha256: str
    formulary: Formulary


@dataclass(frozen=True)
class RuleFile:
    """A parsed rule set with the file it came from."""

    rules: RuleSet
    path: Path
    file_sha256: str


@dataclass
class LoadedRun:
    request: ScreenRequest
    rules: RuleSet
    rules_path: Path
    rules_file_sha256: str
    formulary: Formulary
    treatments: SourceTable | InputFile  # InputFile: the Dask engine reads it as it screens
    subjects: SourceTable | InputFile | None
    validated: ValidatedInputs | None  # None until a streamed run has validated its parts
    started_at: datetime
    reports: tuple[ReportRules, ...]
    trail: AuditTrail
    command: tuple[str, ...]
    column_map: tuple[Path, str] | None  # the --map file and its SHA-256


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
        model = report_rules.staging.model
        if model in models:
            problems.append(
                f"report {name!r}: staging model {model} is already provided by {models[model]}"
            )
            continue
        models[model] = str(path)
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


def _column_maps(rules: RuleSet, rules_path: Path, extra: Path | None) -> ColumnMap:
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


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container's anonymous uid)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def load(request: ScreenRequest, command: list[str] | None = None) -> LoadedRun:
    """Resolve rules and inputs, read them and validate them (no screening yet).

    Starts the run's audit trail; every later step appends to it.
    """
    started = datetime.now(UTC)
    argv = tuple(command if command is not None else sys.argv)
    trail = start_trail(argv)
    rules, rules_path, rules_digest = load_rules(request.rules)
    reports = load_reports(rules, rules_path, request.reports)
    return load_with(
        request, RuleFile(rules, rules_path, rules_digest), reports, trail, argv, started
    )


def start_trail(command: tuple[str, ...]) -> AuditTrail:
    """A new run id and its audit trail, opened with run_started (who, where, what)."""
    origin = {"user": _user(), "host": socket.gethostname(), "cwd": str(Path.cwd())}
    trail = AuditTrail(str(uuid.uuid4()), origin=origin)
    trail.record("run_started", command=list(command), trdscreen_version=__version__, **origin)
    return trail


def load_with(
    request: ScreenRequest,
    rule_file: RuleFile,
    reports: tuple[ReportRules, ...],
    trail: AuditTrail,
    command: tuple[str, ...],
    started: datetime,
) -> LoadedRun:
    """Read and validate the inputs under an already parsed rule set (used by verify)."""
    rules, rules_path = rule_file.rules, rule_file.path
    formulary = formulary_of(rules, rules_path)
    for rule_set, path, digest in [
        (rules, rules_path, rule_file.file_sha256),
        *((r.rules, r.path, r.file_sha256) for r in reports),
    ]:
        trail.record(
            "rules_loaded",
            id=rule_set.id,
            path=str(path),
            file_sha256=digest,
            normalized_sha256=rule_set.sha256(),
            role="screening" if rule_set is rules else "report",
        )
    trail.record("formulary_loaded", source=formulary.source, sha256=formulary.sha256)
    columns = _column_maps(rules, rules_path, request.column_map)
    column_map = (
        (Path(request.column_map), sha256_file(Path(request.column_map)))
        if request.column_map is not None
        else None
    )
    treatments_path, subjects_path = find_inputs(request.input, request.subjects)
    # The Dask engine reads the inputs a batch at a time while it screens; here they are
    # only opened (hashed, their headers checked).
    read = request.dask is None
    treatments = open_source(
        treatments_path, "treatments", columns.treatments, set(TREATMENT_COLUMNS), request.csv
    )
    if read:
        treatments = treatments.read()
        trail.record("input_read", **_input_record(treatments))
    subjects = None
    if subjects_path is not None:
        wanted = criteria_subject_columns(rules, *(r.rules for r in reports))
        canonical = set(SUBJECT_COLUMNS) | set(wanted)
        subjects = open_source(subjects_path, "subjects", columns.subjects, canonical, request.csv)
        if read:
            subjects = subjects.read()
            trail.record("input_read", **_input_record(subjects))
    validated = None
    if request.dask is None and request.chunk_rows is None:  # else validated per part
        validated = validate_inputs(
            treatments, subjects, rules, formulary, request.as_of, tuple(r.rules for r in reports)
        )
        trail.record("inputs_validated", issues=issue_counts(validated.issues))
    return LoadedRun(
        request,
        rules,
        rules_path,
        rule_file.file_sha256,
        formulary,
        treatments,
        subjects,
        validated,
        started,
        reports,
        trail,
        command,
        column_map,
    )


def screening_of(loaded: LoadedRun) -> Screening:
    """How a loaded run screens, apart from its data (what every chunk or bucket needs)."""
    return Screening(
        loaded.rules,
        loaded.formulary,
        loaded.request.as_of,
        tuple((r.rules, r.formulary) for r in loaded.reports),
        loaded.request.on_invalid,
    )


def screen(loaded: LoadedRun) -> ScreenResult:
    """Screen a loaded run. When validation found errors: raise InvalidInputData
    (`--on-invalid fail`), or hold the subjects concerned for review
    (`--on-invalid quarantine`, see `trdscreen.quarantine`)."""
    screening = screening_of(loaded)
    if loaded.validated is None:
        raise UsageError("a request with chunk_rows or dask is screened by screen_and_write")
    else:
        refuse_invalid(loaded.validated, screening.on_invalid)
        result = screen_checked(loaded.treatments, loaded.subjects, loaded.validated, screening)
    _record_screened(loaded, result)
    return result


def load_and_validate(request: ScreenRequest, command: list[str] | tuple = ()) -> LoadedRun:
    """Load the inputs and validate them a chunk of subjects at a time (what `validate`
    does): each chunk's issues are capped (`schemas.cap_issues`) and merged, so memory
    holds one chunk's issues, not every bad cell of the file. `loaded.validated` holds
    the merged issues (no typed frames, no rejections)."""
    chunk_rows = request.chunk_rows or CHUNK_ROWS
    loaded = load(replace(request, chunk_rows=chunk_rows, dask=None), command)
    reports = tuple(r.rules for r in loaded.reports)
    parts: list = []
    for courses, people in chunks(loaded.treatments, loaded.subjects, chunk_rows):
        validated = validate_inputs(
            courses, people, loaded.rules, loaded.formulary, request.as_of, reports
        )
        parts.append(validated.issues)
        if len(parts) >= 16:  # fold as we go: the capped issues stay small
            parts = [merge_issues(parts)]
    loaded.validated = merge_validated(parts, [])
    loaded.trail.record("inputs_validated", issues=issue_counts(loaded.validated.issues))
    return loaded


def _record_screened(loaded: LoadedRun, result: ScreenResult | StreamedResult) -> None:
    if result.quarantine is not None:
        loaded.trail.record("quarantine_planned", **result.quarantine.counts())
    loaded.trail.record("decisions_computed", counts=result.counts())


def screen_and_write(
    loaded: LoadedRun,
    out: Path,
    formats: tuple[str, ...],
    force: bool = False,
    escape_formulas: bool = True,
) -> tuple[RunRecord, StreamedResult]:
    """Validate, screen and write a run loaded with `chunk_rows` (a chunk of subjects
    at a time, `trdscreen.stream`) or with `dask` (bucket by bucket on a Dask
    cluster, `trdscreen.engine`), into an atomically written folder.

    The tables are the ones `screen` and `write_run` give. When validation errors
    stop the run, InvalidInputData is raised, nothing is left in `out`, and
    `loaded.validated` holds every issue for `write_run(loaded, None, ...)`.
    """
    screening = screening_of(loaded)
    with atomic_folder(out, force, input_paths(loaded.request)) as folder:
        if loaded.request.dask is not None:
            validated, outputs, result = _stream_dask(
                loaded, screening, folder, formats, escape_formulas
            )
        else:
            validated, outputs, result = stream(
                loaded.treatments,
                loaded.subjects,
                screening,
                folder,
                formats,
                escape_formulas,
                loaded.request.chunk_rows or CHUNK_ROWS,
            )
            loaded.trail.record("inputs_validated", issues=issue_counts(validated.issues))
        loaded.validated = validated
        if result is None or outputs is None:
            refuse_invalid(validated, screening.on_invalid)
            raise InvalidInputData("input validation stopped the run", validated.issues)
        _record_screened(loaded, result)
        record = _finish(loaded, result, out, folder, outputs, formats, force, escape_formulas)
    return record, result


def _stream_dask(
    loaded: LoadedRun,
    screening: Screening,
    folder: Path,
    formats: tuple[str, ...],
    escape: bool,
) -> tuple[ValidatedInputs, list[dict[str, object]] | None, StreamedResult | None]:
    """The Dask engine's run (`trdscreen.engine`): each input is recorded once read,
    with its row count, and the validation once every bucket is screened."""
    from trdscreen import engine

    def on_validated(validated: ValidatedInputs) -> None:
        loaded.trail.record("inputs_validated", issues=issue_counts(validated.issues))

    validated, outputs, result, read = engine.stream_dask(
        loaded.treatments,
        loaded.subjects,
        screening,
        folder,
        formats,
        escape,
        loaded.request.dask,
        on_read=lambda source: loaded.trail.record("input_read", **_input_record(source)),
        on_validated=on_validated,
    )
    loaded.treatments, loaded.subjects = read
    return validated, outputs, result


@dataclass(frozen=True)
class RunRecord:
    out: Path
    manifest: dict
    audit_head: str  # SHA-256 of the audit log's last line: keep it to detect a rewrite


def _input_record(source: SourceTable | InputFile) -> dict[str, object]:
    return {
        "role": source.name,
        "path": str(source.path),
        "resolved_path": str(source.path.resolve()),
        "format": source.fmt,
        "size": source.size,
        "rows": source.rows,
        "sha256": source.sha256,
    }


def versions() -> dict[str, str]:
    import pandas
    import pandera
    import pyarrow

    return {
        "trdscreen": __version__,
        "python": platform.python_version(),
        "pandas": pandas.__version__,
        "pyarrow": pyarrow.__version__,
        "pandera": pandera.__version__,
    }


def _rule_record(rules: RuleSet, path: Path, file_sha256: str, formulary: Formulary) -> dict:
    return {
        "id": rules.id,
        "title": rules.title,
        "path": str(path),
        "resolved_path": str(Path(path).resolve()),
        "file_sha256": file_sha256,
        "normalized_sha256": rules.sha256(),
        "normalized": rules.model_dump(mode="json"),
        "formulary": {"source": formulary.source, "sha256": formulary.sha256},
    }


def build_manifest(
    loaded: LoadedRun,
    result: ScreenResult | None,
    outputs: list[dict[str, object]],
    formats: tuple[str, ...],
    force: bool,
    escape_formulas: bool = True,
) -> dict:
    """The run's self-description (JSON Schema: trdscreen/data/manifest.schema.json)."""
    rules = loaded.rules
    request = loaded.request
    as_of = request.as_of
    inputs = [_input_record(loaded.treatments)]
    if loaded.subjects is not None:
        inputs.append(_input_record(loaded.subjects))
    origin = loaded.trail.origin  # user, host and working folder from run_started
    decisions = [o for o in outputs if o["table"] == "decisions"]
    return {
        "manifest_schema_version": MANIFEST_SCHEMA_VERSION,
        "tool": "trdscreen",
        "versions": versions(),
        "run_id": loaded.trail.run_id,
        "status": "ok" if result is not None else "invalid_input",
        "exit_code": int(ExitCode.OK if result is not None else ExitCode.INVALID_INPUT),
        "started_at": loaded.started_at.isoformat(timespec="milliseconds"),
        "finished_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "user": origin["user"],
        "host": origin["host"],
        "cwd": origin["cwd"],
        "command": list(loaded.command),
        "options": {
            "input": str(request.input),
            "subjects": str(request.subjects) if request.subjects else None,
            "rules": request.rules,
            "column_map": str(request.column_map) if request.column_map else None,
            "as_of": as_of.isoformat() if as_of else None,
            "reports": list(request.reports),
            "formats": list(formats),
            "force": force,
            "encoding": request.csv.encoding,
            "delimiter": request.csv.delimiter,
            "on_invalid": request.on_invalid,
            "escape_formulas": escape_formulas,
            "engine": _engine_record(request),
        },
        "reference_date": (
            {"source": "as_of", "value": as_of.isoformat()}
            if as_of
            else {"source": "subjects column", "column": rules.reference_date.column}
        ),
        "rules": _rule_record(rules, loaded.rules_path, loaded.rules_file_sha256, loaded.formulary),
        "formulary": {"source": loaded.formulary.source, "sha256": loaded.formulary.sha256},
        "column_map": (
            {
                "path": str(loaded.column_map[0]),
                "resolved_path": str(loaded.column_map[0].resolve()),
                "sha256": loaded.column_map[1],
            }
            if loaded.column_map
            else None
        ),
        "reports": [
            {
                **_rule_record(r.rules, r.path, r.file_sha256, r.formulary),
                "staging_model": r.rules.staging.model,
            }
            for r in loaded.reports
        ],
        "inputs": inputs,
        "outputs": outputs,
        "decisions_content_sha256": decisions[0]["content_sha256"] if decisions else None,
        "counts": result.counts() if result is not None else None,
        "audit": {"path": AUDIT_FILE, "format": AUDIT_FORMAT},
    }


def _engine_record(request: ScreenRequest) -> dict[str, object]:
    if request.dask is None:
        return {"name": "pandas", "chunk_rows": request.chunk_rows}
    return {
        "name": "dask",
        "scheduler": request.dask.scheduler,
        "partitions": request.dask.partitions,
    }


def run_tables(loaded: LoadedRun, result: ScreenResult | None) -> dict:
    """The tables a run folder holds: every table, or only the issues of an invalid input."""
    if result is None:
        return {"validation_issues": loaded.validated.issues}
    return result.tables()


def write_run(
    loaded: LoadedRun,
    result: ScreenResult | None,
    out: Path,
    formats: tuple[str, ...],
    force: bool = False,
    escape_formulas: bool = True,
) -> RunRecord:
    """Write the run folder atomically: tables, manifest.json and audit.jsonl.

    With a result: every table. Without one (invalid input): only the
    validation issues, and the audit log ends with run_aborted.
    """
    with atomic_folder(out, force, input_paths(loaded.request)) as folder:
        outputs = write_tables(run_tables(loaded, result), folder, formats, escape_formulas)
        return _finish(loaded, result, out, folder, outputs, formats, force, escape_formulas)


def _finish(
    loaded: LoadedRun,
    result: ScreenResult | StreamedResult | None,
    out: Path,
    folder: Path,
    outputs: list[dict[str, object]],
    formats: tuple[str, ...],
    force: bool,
    escape_formulas: bool,
) -> RunRecord:
    """Record the written files, then write manifest.json and end audit.jsonl."""
    trail = loaded.trail
    trail.attach(folder)
    try:
        for record in outputs:
            trail.record("output_written", **record)
        manifest = build_manifest(loaded, result, outputs, formats, force, escape_formulas)
        path = folder / MANIFEST_FILE
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")
        final = {"manifest_sha256": sha256_file(path), "exit_code": manifest["exit_code"]}
        if result is None:
            head = trail.record(
                "run_aborted",
                reason="invalid_input",
                message=f"input validation found {loaded.validated.n_errors} error(s)",
                **final,
            )
        else:
            head = trail.record("run_finished", counts=result.counts(), **final)
    finally:
        trail.close()
    return RunRecord(Path(out), manifest, head)


def input_paths(request: ScreenRequest) -> list[Path]:
    """The files and folders a run reads, which its --out may not hold or replace."""
    paths = [request.input, request.subjects, request.column_map]
    if request.rules is not None and Path(request.rules).exists():
        paths.append(Path(request.rules))
    return [Path(p) for p in paths if p is not None]


def check_out_dir(out: Path, force: bool, inputs: list[Path] | tuple = ()) -> list[str]:
    """Fail early (before reading inputs) when the output folder may not be used; remove
    the drafts of dead runs beside it. Returns one line per draft removed or restored."""
    prepare_out_dir(out, force, inputs)
    return remove_stale_drafts(Path(out).absolute().parent)


# --------------------------------------------------------------------------- rule sets


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
