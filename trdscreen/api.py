"""The library's entry points: load and validate inputs, screen, write a run folder.

A request (`manifest.ScreenRequest`) is resolved into rules (`resolve`), its inputs
opened, read and validated (`io`, `validate`), screened whole (`pipeline`), a chunk at a
time (`stream`) or on Dask (`engine`), and written as an atomic run folder with its
manifest and audit log (`output`, `outdir`, `manifest`, `audit`). The CLI calls these
functions and nothing deeper.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from trdscreen import __version__
from trdscreen.adjudication import Adjudications, read_adjudications, unknown_subjects
from trdscreen.audit import AuditTrail
from trdscreen.engine import DaskOptions
from trdscreen.errors import InputError, InvalidInputData, UsageError
from trdscreen.io import InputFile, SourceTable, open_source, sha256_file
from trdscreen.issues import issue_counts
from trdscreen.manifest import (
    LoadedRun,
    RunRecord,
    ScreenRequest,
    build_manifest,
    input_record,
    versions,
)
from trdscreen.merge import merge_issues, merge_validated
from trdscreen.outdir import atomic_folder, prepare_out_dir, remove_stale_drafts
from trdscreen.output import Destination, OutputFile, write_tables, write_workbook
from trdscreen.partition import SPILL
from trdscreen.pipeline import (
    RunSummary,
    Screening,
    ScreenResult,
    decide_checked,
    refuse_invalid,
)
from trdscreen.quarantine import over_limit
from trdscreen.report import REPORT_FILE, write_report
from trdscreen.reportdata import ReportOptions
from trdscreen.resolve import (
    ReportRules,
    RuleCheck,
    RuleFile,
    check_rules,
    column_maps,
    csv_under,
    formulary_for,
    formulary_lookup,
    formulary_of,
    formulary_rows,
    load_reports,
    load_rules,
    with_site_aliases,
)
from trdscreen.runs import MANIFEST_FILE, RunFolder
from trdscreen.schemas import SUBJECT_COLUMNS, TREATMENT_COLUMNS
from trdscreen.sources import find_inputs, is_remote, scratch_folder, unread_tables
from trdscreen.stream import (
    CHUNK_ROWS,
    KERNELS,
    StreamedResult,
    StreamOutcome,
    chunks,
    write_streamed,
)
from trdscreen.subjectcolumns import criteria_subject_columns
from trdscreen.summarytext import SUMMARY_FILE, summary_text
from trdscreen.tables import REPORT, SHEET_ORDER
from trdscreen.tuning import release_freed
from trdscreen.validate import ValidatedInputs, validate_inputs

__all__ = [  # the library's face: what the CLI, verify and callers use
    "CHUNK_ROWS", "DaskOptions", "LoadedRun", "ReportRules", "RuleCheck", "RuleFile",
    "Destination", "RunRecord", "ScreenRequest", "check_out_dir", "check_rules", "formulary_for",
    "formulary_lookup", "formulary_of", "formulary_rows", "input_paths", "load",
    "load_and_validate", "load_rules", "load_with", "run_tables", "run_to_folder", "screen",
    "screen_and_write", "screening_of", "versions", "write_run",
]  # fmt: skip


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (e.g. a container's anonymous uid)
        return f"uid:{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def load(request: ScreenRequest, command: Sequence[str] | None = None) -> LoadedRun:
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
    columns = column_maps(rules, rules_path, request.column_map)
    formulary = with_site_aliases(formulary, columns, str(request.column_map or rules_path))
    request = replace(request, csv=csv_under(request.csv, columns))
    column_map = (
        (Path(request.column_map), sha256_file(Path(request.column_map)))
        if request.column_map is not None
        else None
    )
    treatments_path, subjects_path = find_inputs(request.input, request.subjects)
    unread = _unread(request, treatments_path, subjects_path)
    if unread:
        trail.record("inputs_not_read", files=unread)
    # The Dask engine reads the inputs a batch at a time while it screens; here they are
    # only opened (hashed, their headers checked).
    read = request.dask is None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="subjects") as pool:
        # The subjects file is opened, then read, in one worker beside the treatments'
        # hashing pass (one core); each step's error is raised where reading one file
        # after the other would raise it (the read fails with the opening's error too).
        opening: Future[InputFile] | None = None
        reading: Future[SourceTable] | None = None
        if subjects_path is not None:
            wanted = criteria_subject_columns(rules, *(r.rules for r in reports))
            canonical = set(SUBJECT_COLUMNS) | set(wanted)
            opening = pool.submit(
                open_source, subjects_path, "subjects", columns.subjects, canonical,
                request.csv, columns,
            )  # fmt: skip
            if read:
                reading = pool.submit(lambda opened: opened.result().read(), opening)
        treatments: SourceTable | InputFile = open_source(
            treatments_path,
            "treatments",
            columns.treatments,
            set(TREATMENT_COLUMNS),
            request.csv,
            columns,
        )
        subjects: SourceTable | InputFile | None = None
        if opening is not None:
            subjects = opening.result()
        if read:  # a streamed run reads one file of treatments a chunk at a time
            treatments = _read(treatments, trail, whole=request.chunk_rows is None)
            if reading is not None:
                subjects = reading.result()
                trail.record("input_read", **input_record(subjects))
    adjudications = _adjudications(request, treatments, subjects, trail)
    validated = None
    if request.dask is None and request.chunk_rows is None:  # else validated per part
        assert isinstance(treatments, SourceTable)
        assert subjects is None or isinstance(subjects, SourceTable)
        validated = validate_inputs(
            treatments, subjects, rules, formulary, request.as_of, tuple(r.rules for r in reports)
        )
        trail.record("inputs_validated", issues=issue_counts(validated.issues))
    return LoadedRun(
        request=request,
        rules=rules,
        rules_path=rules_path,
        rules_file_sha256=rule_file.file_sha256,
        formulary=formulary,
        treatments=treatments,
        subjects=subjects,
        validated=validated,
        started_at=started,
        reports=reports,
        trail=trail,
        command=command,
        column_map=column_map,
        conventions=columns.conventions(),
        adjudications=adjudications,
        unread=tuple(unread),
    )


def _unread(request: ScreenRequest, *read: Path | None) -> list[str]:
    """The tables of an input folder this run does not read (`sources.unread_tables`)."""
    folder = Path(request.input)
    if is_remote(request.input) or not folder.is_dir() or read[0] == folder:
        return []  # a file, or a folder that is itself a dataset of treatments
    given = [*read, request.adjudications, request.column_map]
    return unread_tables(folder, [Path(p) for p in given if p is not None])


def _adjudications(
    request: ScreenRequest,
    treatments: SourceTable | InputFile,
    subjects: SourceTable | InputFile | None,
    trail: AuditTrail,
) -> Adjudications | None:
    """The reviewers' decisions, checked, each subject against the inputs where they are
    read already (the Dask engine reads its inputs later: unknown keys go unnoticed)."""
    if request.adjudications is None:
        return None
    path = Path(request.adjudications)
    if not path.is_file():
        raise InputError(f"{path}: no such adjudication file")
    adjudications = read_adjudications(path, sha256_file(path))
    if request.dask is None:  # else the Dask engine reads them later: _refuse_unapplied
        # A treatments file read a chunk at a time later gives its key column now.
        assert subjects is None or isinstance(subjects, SourceTable)
        read = [treatments.keys() if isinstance(treatments, InputFile) else treatments, subjects]
        keys = [k for k in (s.key_text() for s in read if s is not None) if k is not None]
        unknown_subjects(adjudications, keys)
    trail.record(
        "adjudications_loaded",
        path=str(path),
        rows=adjudications.rows,
        blank_rows=adjudications.blank,
        sha256=adjudications.sha256,
    )
    return adjudications


def _read(
    source: SourceTable | InputFile, trail: AuditTrail, whole: bool = True
) -> SourceTable | InputFile:
    """An opened input read whole (or, unless `whole`, only counted where its rows can
    be read a range at a time: `stream.chunks` reads them), recorded in the audit trail."""
    assert isinstance(source, InputFile)
    table = source.read() if whole or not source.in_ranges else source.counted()
    trail.record("input_read", **input_record(table))
    return table


def screening_of(loaded: LoadedRun) -> Screening:
    """How a loaded run screens, apart from its data (what every chunk or bucket needs)."""
    return Screening(
        loaded.rules,
        loaded.formulary,
        loaded.request.as_of,
        tuple((r.rules, r.formulary) for r in loaded.reports),
        loaded.request.on_invalid,
        loaded.adjudications,
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
        result = decide_checked(*loaded.tables(), loaded.validated, screening)
    _refuse_over_limit(loaded, result)
    _record_screened(loaded, result)
    return result


def _refuse_over_limit(loaded: LoadedRun, result: RunSummary) -> None:
    """InvalidInputData when the quarantine holds more subjects than --max-quarantine."""
    if result.quarantine is None:
        return
    held = len(result.quarantine.held)
    why = over_limit(held, result.counts()["subjects"]["total"], loaded.request.max_quarantine)
    if why is not None:
        raise InvalidInputData(why, loaded.checked().issues)


def load_and_validate(request: ScreenRequest, command: Sequence[str] = ()) -> LoadedRun:
    """Load the inputs and validate them a chunk of subjects at a time (what `validate`
    does): each chunk's issues are capped (`issues.cap_issues`) and merged, so memory
    holds one chunk's issues, not every bad cell of the file. `loaded.validated` holds
    the merged issues (no typed frames, no rejections)."""
    chunk_rows = request.chunk_rows or CHUNK_ROWS
    loaded = load(replace(request, chunk_rows=chunk_rows, dask=None), command)
    reports = tuple(r.rules for r in loaded.reports)
    parts: list = []
    spill = scratch_folder() / SPILL  # an unsorted file cut here, not read whole
    for courses, people in chunks(*loaded.streamed(), chunk_rows, spill=spill):
        validated = validate_inputs(
            courses, people, loaded.rules, loaded.formulary, request.as_of, reports
        )
        parts.append(validated.issues)
        if len(parts) >= 16:  # fold as we go: the capped issues stay small
            parts = [merge_issues(parts)]
    loaded.validated = merge_validated(parts, [])
    loaded.trail.record("inputs_validated", issues=issue_counts(loaded.validated.issues))
    return loaded


def _record_screened(loaded: LoadedRun, result: RunSummary) -> None:
    if result.quarantine is not None:
        loaded.trail.record("quarantine_planned", **result.quarantine.counts())
    if loaded.adjudications is not None:  # one event per override: key, decision, line only
        table = loaded.adjudications.table
        for subject, decision, line in zip(
            table["subject_id"], table["decision"], table["line"], strict=True
        ):
            loaded.trail.record(
                "decision_adjudicated", subject_id=subject, decision=decision, line=int(line)
            )
    counts = result.counts()
    held = counts.get("adjudicated", {}).get("held", 0)
    if held:
        loaded.trail.record("adjudications_held", subjects=held)
    loaded.trail.record("decisions_computed", counts=counts)


def run_to_folder(loaded: LoadedRun, destination: Destination) -> tuple[RunRecord, RunSummary]:
    """Screen a loaded run and write its folder, whichever engine the request names: the
    whole cohort (`screen`, `write_run`), a chunk of subjects at a time or on a Dask
    cluster (`screen_and_write`). When validation stops the run, the folder of an
    invalid input (the issues, the manifest, the audit log) is written and
    InvalidInputData is raised carrying its run record (`exc.record`): the CLI, `verify`
    and a library caller get the same folder."""
    try:
        if loaded.validated is not None:  # read and validated whole
            result = screen(loaded)
            return write_run(loaded, result, destination), result
        return screen_and_write(loaded, destination)
    except InvalidInputData as exc:
        exc.record = write_run(loaded, None, destination)
        raise


def screen_and_write(
    loaded: LoadedRun, destination: Destination
) -> tuple[RunRecord, StreamedResult]:
    """Validate, screen and write a run loaded with `chunk_rows` (a chunk of subjects
    at a time, `trdscreen.stream`) or with `dask` (bucket by bucket on a Dask
    cluster, `trdscreen.engine`), into an atomically written folder.

    The tables are the ones `screen` and `write_run` give. When validation errors
    stop the run, InvalidInputData is raised, nothing is left in `out`, and
    `loaded.validated` holds every issue (`run_to_folder` then writes the invalid
    input's folder).
    """
    screening = screening_of(loaded)
    out = destination.out
    with atomic_folder(out, destination.force, input_paths(loaded.request)) as folder:
        if loaded.request.dask is not None:
            validated, outputs, result = _write_on_dask(loaded, screening, folder, destination)
        else:
            validated, outputs, result = stream_to(loaded, folder, destination)
            loaded.trail.record("inputs_validated", issues=issue_counts(validated.issues))
        loaded.validated = validated
        if result is None or outputs is None:
            refuse_invalid(validated, screening.on_invalid)
            raise InvalidInputData("input validation stopped the run", validated.issues)
        _refuse_over_limit(loaded, result)
        _refuse_unapplied(loaded, result, folder)
        _record_screened(loaded, result)
        record = _finish(loaded, result, folder, outputs, destination)
    return record, result


def stream_to(loaded: LoadedRun, folder: Path, destination: Destination) -> StreamOutcome:
    """The default engine's streamed run of a loaded request into `folder`, with its
    recorded chunk rows and threads (`screen_and_write`, and `verify` re-running it)."""
    # A run that writes no criteria ledger has its chunks build none.
    screening = replace(screening_of(loaded), ledger=destination.writes("criteria_ledger"))
    return write_streamed(
        *loaded.streamed(),
        screening,
        folder,
        destination,
        loaded.request.chunk_rows or CHUNK_ROWS,
        loaded.request.threads or KERNELS,
    )


def _refuse_unapplied(loaded: LoadedRun, result: RunSummary, folder: Path) -> None:
    """An adjudicated subject no bucket held (the Dask engine reads the inputs on its
    workers, so this is where an unknown subject shows): InputError naming it, read
    from the decisions just written."""
    adjudications = loaded.adjudications
    if adjudications is None:
        return
    applied = result.counts().get("adjudicated", {}).get("subjects", 0)
    if applied == adjudications.rows:
        return
    from trdscreen.runs import read_table_file

    written = folder / "decisions.parquet"
    if not written.exists():
        written = folder / "decisions.csv"
    unknown_subjects(adjudications, [read_table_file(written).column("subject_id")])


def _write_on_dask(
    loaded: LoadedRun, screening: Screening, folder: Path, destination: Destination
) -> StreamOutcome:
    """The Dask engine's run (`trdscreen.engine`): each input is recorded once read,
    with its row count, and the validation once every bucket is screened."""
    from trdscreen import engine

    def on_validated(validated: ValidatedInputs) -> None:
        loaded.trail.record("inputs_validated", issues=issue_counts(validated.issues))

    def on_read(source: InputFile) -> None:
        loaded.trail.record("input_read", **input_record(source))

    assert loaded.request.dask is not None
    validated, outputs, result, read = engine.write_on_dask(
        *loaded.files(),
        screening,
        folder,
        destination,
        loaded.request.dask,
        on_read=on_read,
        on_validated=on_validated,
    )
    loaded.treatments, loaded.subjects = read
    return StreamOutcome(validated, outputs, result)


def run_tables(loaded: LoadedRun, result: ScreenResult | None) -> dict:
    """The tables a run folder holds: every table, or only the issues of an invalid input."""
    if result is None:
        return {"validation_issues": loaded.checked().issues}
    return result.tables()


def write_run(
    loaded: LoadedRun, result: ScreenResult | None, destination: Destination
) -> RunRecord:
    """Write the run folder atomically: tables, manifest.json and audit.jsonl.

    With a result: every table. Without one (invalid input): only the
    validation issues, and the audit log ends with run_aborted.
    """
    out = destination.out
    if result is None:  # an invalid input's folder always holds its issues
        destination = replace(destination, tables=None)
    with atomic_folder(out, destination.force, input_paths(loaded.request)) as folder:
        outputs = write_tables(run_tables(loaded, result), folder, destination)
        return _finish(loaded, result, folder, outputs, destination)


def _finish(
    loaded: LoadedRun,
    result: RunSummary | None,
    folder: Path,
    outputs: list[OutputFile],
    destination: Destination,
) -> RunRecord:
    """Record the written files, then write manifest.json and end audit.jsonl."""
    trail = loaded.trail
    trail.attach(folder)
    release_freed()  # the chunks are gone: the report below starts from a trimmed heap
    try:
        if "xlsx" in destination.formats:
            outputs = outputs + write_workbook(folder, SHEET_ORDER)
        for record in outputs:
            trail.record("output_written", **record.as_json())
        summary = folder / SUMMARY_FILE
        summary.write_text(summary_text(loaded, result), "utf-8")
        manifest = build_manifest(loaded, result, outputs, destination)
        manifest["summary"] = {"path": SUMMARY_FILE, "sha256": sha256_file(summary)}
        # The report is rendered from the folder as `trdscreen report` reads it: the
        # manifest as its file holds it (keys sorted), the tables unchecked (they were
        # hashed as they were written). `--tables` without the report: none.
        if destination.writes(REPORT):
            as_read = json.loads(json.dumps(manifest, sort_keys=True))
            report = write_report(
                RunFolder(folder, as_read), folder / REPORT_FILE, ReportOptions(), checked=False
            )
            manifest["report"] = {
                "path": REPORT_FILE,
                "sha256": sha256_file(report),
                "options": ReportOptions().as_json(),
            }
        path = folder / MANIFEST_FILE
        path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", "utf-8")
        final = {"manifest_sha256": sha256_file(path), "exit_code": manifest["exit_code"]}
        if result is None:
            head = trail.record(
                "run_aborted",
                reason="invalid_input",
                message=f"input validation found {loaded.checked().n_errors} error(s)",
                **final,
            )
        else:
            head = trail.record("run_finished", counts=result.counts(), **final)
    finally:
        trail.close()
    return RunRecord(Path(destination.out), manifest, head)


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
