"""A run's record: the request as the user gave it, the loaded run, and the manifest that
describes the run folder (JSON Schema: trdscreen/data/manifest.schema.json), with its
inverse, `request_from_manifest`, which `verify` re-runs from."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from trdscreen import __version__
from trdscreen.adjudication import Adjudications
from trdscreen.audit import AUDIT_FILE, AUDIT_FORMAT, AuditTrail
from trdscreen.engine import DaskOptions
from trdscreen.errors import ExitCode, TrdscreenError, UsageError
from trdscreen.formulary import Formulary
from trdscreen.io import CsvOptions, InputFile, SourceTable
from trdscreen.output import Destination, OutputFile
from trdscreen.pipeline import RunSummary
from trdscreen.quarantine import parse_limit
from trdscreen.resolve import ReportRules
from trdscreen.ruleset import RuleSet
from trdscreen.runs import MANIFEST_SCHEMA_VERSION
from trdscreen.sources import STDIN, url_of
from trdscreen.validate import ValidatedInputs
from trdscreen.vocabulary import ON_INVALID


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
    on_invalid: str = "fail"  # vocabulary.ON_INVALID: what rows that fail validation do
    max_quarantine: str | None = None  # quarantine at most N subjects or P% of them
    adjudications: Path | None = None  # reviewers' decisions (--adjudications)
    dask: DaskOptions | None = None  # --engine dask: run the kernel per hash bucket
    chunk_rows: int | None = None  # screen_and_write: rows per chunk; None: the whole cohort
    threads: int | None = None  # chunks screened at once (None: stream.KERNELS)

    def __post_init__(self) -> None:
        if self.chunk_rows is not None and self.chunk_rows < 1:
            raise UsageError(f"--chunk-rows {self.chunk_rows}: expected at least 1")
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"--threads {self.threads}: expected at least 1")
        if self.max_quarantine is not None:
            parse_limit(self.max_quarantine)  # UsageError now, not after the screening
            if self.on_invalid != "quarantine":
                raise UsageError("--max-quarantine limits --on-invalid quarantine; pass both")
        if self.on_invalid not in ON_INVALID:
            raise UsageError(
                f"on_invalid {self.on_invalid!r}: expected one of {', '.join(ON_INVALID)}"
            )


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
    conventions: dict = field(default_factory=dict)  # the declared site conventions applied
    adjudications: Adjudications | None = None  # reviewers' decisions, checked
    unread: tuple[str, ...] = ()  # tables in the input folder the run does not read

    def tables(self) -> tuple[SourceTable, SourceTable | None]:
        """The inputs as read (every engine but Dask reads them when loading; a streamed
        run's file of treatments, only counted then, is read whole here)."""
        assert self.request.dask is None, "the Dask engine reads inputs as it goes"
        treatments, subjects = self.streamed()
        if isinstance(treatments, InputFile):
            treatments = treatments.read()
        return treatments, subjects

    def streamed(self) -> tuple[SourceTable | InputFile, SourceTable | None]:
        """The inputs of a streamed run: the subjects read, the treatments read or (one
        Parquet or CSV file) only counted, read a chunk at a time as the run goes."""
        treatments, subjects = self.treatments, self.subjects
        assert subjects is None or isinstance(subjects, SourceTable)
        return treatments, subjects

    def files(self) -> tuple[InputFile, InputFile | None]:
        """The inputs as opened, not read (a request for the Dask engine)."""
        treatments, subjects = self.treatments, self.subjects
        assert isinstance(treatments, InputFile), "inputs already read"
        assert subjects is None or isinstance(subjects, InputFile)
        return treatments, subjects

    def checked(self) -> ValidatedInputs:
        """The validation's outcome (a streamed run has one once its parts are validated)."""
        if self.validated is None:
            raise UsageError("the inputs of this run have not been validated yet")
        return self.validated


@dataclass(frozen=True)
class RunRecord:
    out: Path
    manifest: dict
    audit_head: str  # SHA-256 of the audit log's last line: keep it to detect a rewrite


def input_record(source: SourceTable | InputFile) -> dict[str, object]:
    url = url_of(source.path)
    return {
        "role": source.name,
        "path": url or str(source.path),
        "resolved_path": url
        or (STDIN if str(source.path) == STDIN else str(source.path.resolve())),
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


def evidence_tags(path: Path) -> dict[str, str]:
    """A rule file's evidence tags by dotted key (`adequacy.duration.weeks`: `S`), as
    `rules show --json` gives them: the report prints the protocol text from these
    long after the file has changed. Empty when the file cannot be read now."""
    from trdscreen.evidence import read_tagged

    try:
        tags, _ = read_tagged(path)
    except (OSError, ValueError, TrdscreenError):
        return {}
    return {".".join(str(k) for k in key): tag for key, tag in tags.items()}


def tags_from_record(record: dict) -> dict[tuple, str]:
    """`evidence_tags` of a manifest's rule record, as `protocol_text` takes them."""
    return {
        tuple(int(k) if k.isdigit() else k for k in key.split(".")): tag
        for key, tag in (record.get("evidence_tags") or {}).items()
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
    result: RunSummary | None,
    outputs: list[OutputFile],
    destination: Destination,
) -> dict:
    """The run's self-description (JSON Schema: trdscreen/data/manifest.schema.json)."""
    rules = loaded.rules
    request = loaded.request
    as_of = request.as_of
    inputs = [input_record(loaded.treatments)]
    if loaded.subjects is not None:
        inputs.append(input_record(loaded.subjects))
    origin = loaded.trail.origin  # user, host and working folder from run_started
    decisions = [o for o in outputs if o.table == "decisions"]
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
            "adjudications": str(request.adjudications) if request.adjudications else None,
            "as_of": as_of.isoformat() if as_of else None,
            "reports": list(request.reports),
            "formats": list(destination.formats),
            "force": destination.force,
            "encoding": request.csv.encoding,
            "delimiter": request.csv.delimiter,
            "on_invalid": request.on_invalid,
            **(
                {"max_quarantine": request.max_quarantine}
                if request.max_quarantine is not None
                else {}
            ),
            "escape_formulas": destination.escape_formulas,
            **(
                {"csv_dialect": destination.csv_dialect}
                if destination.csv_dialect != "standard"
                else {}
            ),
            "engine": _engine_record(request),
            **({"tables": list(destination.tables)} if destination.tables is not None else {}),
        },
        "reference_date": (
            {"source": "as_of", "value": as_of.isoformat()}
            if as_of
            else {"source": "subjects column", "column": rules.reference_date.column}
        ),
        "rules": {
            **_rule_record(rules, loaded.rules_path, loaded.rules_file_sha256, loaded.formulary),
            "evidence_tags": evidence_tags(loaded.rules_path),
        },
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
        **({"site_conventions": loaded.conventions} if loaded.conventions else {}),
        "adjudications": (
            {
                "path": str(loaded.adjudications.path),
                "resolved_path": str(loaded.adjudications.path.resolve()),
                "sha256": loaded.adjudications.sha256,
                "rows": loaded.adjudications.rows,
            }
            if loaded.adjudications is not None
            else None
        ),
        "reports": [
            {
                **_rule_record(r.rules, r.path, r.file_sha256, r.formulary),
                "staging_model": r.model,
            }
            for r in loaded.reports
        ],
        "inputs": inputs,
        **({"inputs_not_read": list(loaded.unread)} if loaded.unread else {}),
        "outputs": [o.as_json() for o in outputs],
        "decisions_content_sha256": decisions[0].content_sha256 if decisions else None,
        "counts": result.counts() if result is not None else None,
        "audit": {"path": AUDIT_FILE, "format": AUDIT_FORMAT},
    }


def _engine_record(request: ScreenRequest) -> dict[str, object]:
    if request.dask is None:
        record: dict[str, object] = {"name": "pandas", "chunk_rows": request.chunk_rows}
        if request.threads is not None:
            record["threads"] = request.threads
        return record
    return {
        "name": "dask",
        "scheduler": request.dask.scheduler,
        "partitions": request.dask.partitions,
    }


def request_from_manifest(
    manifest: dict[str, Any],
    treatments: Path,
    subjects: Path | None = None,
    column_map: Path | None = None,
    adjudications: Path | None = None,
) -> ScreenRequest:
    """The request a manifest records (the inverse of its `options`), reading the inputs
    and column map from the paths given (where `verify` found them). The run's own
    chunking is kept (0.2.0 and later CLI runs), so a re-run needs no more memory than
    the run did; older and whole-cohort runs are re-run whole. The tables do not depend
    on it either way. A Dask run is re-run by the default engine: same tables."""
    options = manifest["options"]
    return ScreenRequest(
        input=treatments,
        subjects=subjects,
        rules=options["rules"],
        column_map=column_map,
        adjudications=adjudications,
        as_of=date.fromisoformat(options["as_of"]) if options["as_of"] else None,
        reports=tuple(options["reports"]),
        csv=CsvOptions(options.get("encoding", "utf-8"), options.get("delimiter", ",")),
        on_invalid=options.get("on_invalid", "fail"),
        max_quarantine=options.get("max_quarantine"),
        chunk_rows=(options.get("engine") or {}).get("chunk_rows"),
        threads=(options.get("engine") or {}).get("threads"),
    )
