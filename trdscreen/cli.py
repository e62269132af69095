"""Command-line adapter: parse options, call the library, render, map errors to exit codes.

`screen` and `validate` live here; the audit commands (`verify`, `explain`, `diff`) in
`cli_audit`, the rule-set and data commands (`rules`, `formulary`, `synth`) in `cli_rules`,
the shared frame in `cliapp`. No screening logic lives in any of them.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer

from trdscreen.cliapp import (
    AsOfOpt,
    DelimiterOpt,
    EncodingOpt,
    InputArg,
    JsonOpt,
    LogFormatOpt,
    MapOpt,
    QuietOpt,
    ReportOpt,
    RulesOpt,
    SubjectsOpt,
    app,
    csv_options,
    emit_json,
    epilog,
    fail,
    guard,
    notify,
    parse_date,
    reader_gone,
    report_issues,
    watching,
)
from trdscreen.errors import ExitCode, InvalidInputData, UsageError
from trdscreen.printable import printable
from trdscreen.vocabulary import (
    TABLE_FORMATS,
    CsvDialect,
    Engine,
    LogFormat,
    OnInvalid,
    OutputFormat,
    RecordsProfile,
)


def _request(
    input: Path, subjects: Path | None, rules: str | None, column_map: Path | None,
    as_of: date | None, report: list[str] | None, encoding: str, delimiter: str, **more: Any,
):  # fmt: skip
    """The ScreenRequest of the options `screen` and `validate` share (and `more`)."""
    from trdscreen import api

    return api.ScreenRequest(
        input=input,
        subjects=subjects,
        rules=rules,
        column_map=column_map,
        as_of=as_of,
        reports=tuple(report or ()),
        csv=csv_options(encoding, delimiter),
        **more,
    )


@app.command(
    epilog=epilog(
        [
            "trdscreen screen sample_data --rules sforzini-2021 --out run",
            "trdscreen screen export.csv --subjects patients.csv --map site-map.yaml --format xlsx --csv-dialect excel-eu --out run",
            "trdscreen screen data/ --format parquet --on-invalid quarantine --max-quarantine 1% --json -q --out run",
            "trdscreen screen examples/records --profile events --out run",
            "trdscreen screen export/ --profile courses --out run",
        ],
        "0 screened; 2 usage; 3 rule file or map; 4 invalid input; 5 --out in the way; 7 output failed; 130 interrupted.",
    )
)
def screen(
    input: InputArg,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Output folder (created atomically).")
    ],
    subjects: SubjectsOpt = None,
    rules: RulesOpt = None,
    column_map: MapOpt = None,
    fmt: Annotated[
        OutputFormat,
        typer.Option(
            "--format",
            metavar="csv|parquet|both|xlsx",
            help="Output table format. both: CSV and Parquet. xlsx: the CSV tables and "
            "screening.xlsx, one sheet per table.",
        ),
    ] = OutputFormat.csv,
    csv_dialect: Annotated[
        CsvDialect,
        typer.Option(
            "--csv-dialect",
            metavar="standard|excel-eu",
            help="standard: comma-separated, decimal points. excel-eu: ; between fields, "
            "decimal commas and a UTF-8 byte-order mark, as a European spreadsheet opens.",
        ),
    ] = CsvDialect.standard,
    as_of: AsOfOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty --out folder.")
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    report: ReportOpt = None,
    on_invalid: Annotated[
        OnInvalid,
        typer.Option(
            "--on-invalid",
            metavar="fail|quarantine",
            help="fail: any input error stops the run (only validation_issues is written). "
            "quarantine: rows with errors go to quarantine tables and their subjects get "
            "needs_review; everyone else is screened.",
        ),
    ] = OnInvalid.fail,
    adjudications: Annotated[
        Path | None,
        typer.Option(
            "--adjudications",
            metavar="FILE",
            help="Reviewers' decisions (CSV or Parquet: subject_id, decision, reason, reviewer, "
            "date, optional criterion): they set final_decision; the computed decision stays.",
        ),
    ] = None,
    max_quarantine: Annotated[
        str | None,
        typer.Option(
            "--max-quarantine",
            metavar="N|P%",
            help="With --on-invalid quarantine: hold at most N subjects (or P% of those "
            "screened); above it the run stops and exits 4, as with --on-invalid fail.",
        ),
    ] = None,
    escape_formulas: Annotated[
        bool,
        typer.Option(
            "--escape-formulas/--no-escape-formulas",
            help="Prefix ' to CSV text cells starting with = + - @ tab or CR so spreadsheets "
            "do not run them; turn off only for machine consumers (Parquet is never escaped).",
        ),
    ] = True,
    encoding: EncodingOpt = "utf-8",
    delimiter: DelimiterOpt = ",",
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            metavar="pandas|dask",
            help="pandas: in this process. dask: one task per hash bucket of subject_id on a "
            "Dask cluster (same tables, byte for byte).",
        ),
    ] = Engine.pandas,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="Dask scheduler address (tcp://host:8786); default: a local cluster on 127.0.0.1.",
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            metavar="N",
            min=1,
            help="Hash buckets for --engine dask (default: 4 per worker, and at most about "
            "262,144 input rows per bucket).",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option("--workers", metavar="N", min=1, help="Local Dask cluster: worker processes."),
    ] = 2,
    worker_memory: Annotated[
        str,
        typer.Option(
            "--worker-memory",
            metavar="SIZE",
            help="Local Dask cluster: memory limit per worker, e.g. 2GiB.",
        ),
    ] = "auto",
    log_format: LogFormatOpt = LogFormat.text,
    chunk_rows: Annotated[
        int | None,
        typer.Option(
            "--chunk-rows",
            metavar="N",
            min=1,
            help="--engine pandas: input rows per chunk of subjects validated, screened and "
            "written at a time (default 262144); bounds memory, never changes the tables.",
        ),
    ] = None,
    tables: Annotated[
        list[str] | None,
        typer.Option(
            "--tables",
            metavar="NAMES",
            help="Write only these tables (comma-separated or repeated: decisions, "
            "included, excluded, needs_review, criteria_ledger, courses, attrition, "
            "validation_issues, quarantine_treatments, quarantine_subjects, report); "
            "decisions, summary.txt, the manifest and the audit log are always written.",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            metavar="N",
            min=1,
            help="--engine pandas: chunks screened at once, in threads (default 2 on a "
            "machine with two or more cores); each holds a chunk in memory; never changes "
            "the tables.",
        ),
    ] = None,
    profile: Annotated[
        RecordsProfile | None,
        typer.Option(
            "--profile",
            help="INPUT is a records folder (events), an OMOP CDM extract (omop) or a "
            "courses export with an assessments table (courses): build the courses (or "
            "attach the ratings) first, into --build-out, then screen them.",
        ),
    ] = None,
    build_out: Annotated[
        Path | None,
        typer.Option(
            "--build-out",
            metavar="DIR",
            help="With --profile: the folder the built courses go to [default: OUT-built].",
        ),
    ] = None,
) -> None:
    """Screen a cohort and write decisions, ledger, courses, attrition and a manifest."""
    reference = parse_date(as_of)
    formats = {OutputFormat.both: TABLE_FORMATS, OutputFormat.xlsx: ("csv", "xlsx")}.get(
        fmt, (fmt.value,)
    )

    def body() -> None:
        from trdscreen import api
        from trdscreen.issues import issue_counts

        dask = None
        if engine is Engine.dask:
            dask = api.DaskOptions(scheduler, partitions, workers, worker_memory)
        elif scheduler is not None or partitions is not None:
            raise UsageError("--scheduler and --partitions need --engine dask")
        if dask is not None and (chunk_rows is not None or threads is not None):
            raise UsageError(
                "--chunk-rows and --threads are for --engine pandas (Dask uses --partitions "
                "and --workers)"
            )
        built = None
        if profile is not None:
            built = _build_first(input, subjects, out, build_out, rules, column_map, reference,
                                 force, profile.value)  # fmt: skip
        request = _request(
            built or input, subjects, rules, None if built else column_map, reference, report,
            encoding, delimiter,
            on_invalid=on_invalid.value,
            max_quarantine=max_quarantine,
            adjudications=adjudications,
            dask=dask,
            chunk_rows=None if dask is not None else (chunk_rows or api.CHUNK_ROWS),
            threads=threads,
        )  # fmt: skip
        notify(api.check_out_dir(out, force, api.input_paths(request)))
        from trdscreen.tables import chosen_tables

        try:
            chosen = chosen_tables(tables)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        destination = api.Destination(
            out, formats, force, escape_formulas, csv_dialect.value, chosen
        )
        try:
            with watching(log_format, quiet, as_json):
                loaded = api.load(request, sys.argv)
                record, result = api.run_to_folder(loaded, destination)
        except InvalidInputData as exc:
            record = exc.record
            report_issues(loaded.checked().issues)
            fail(
                exc,
                as_json,
                {
                    "out": str(out),
                    "issues": issue_counts(exc.issues),
                    "run_id": record.manifest["run_id"],
                    "audit_head_sha256": record.audit_head,
                },
            )
        _note_unread(loaded)
        if result.quarantine is not None and len(result.quarantine.held) and not as_json:
            from trdscreen.render import console, render_quarantine

            render_quarantine(console(stderr=True), result.quarantine, str(out))
        if as_json:
            emit_json(
                {
                    "status": "ok",
                    "exit_code": 0,
                    "out": str(out),
                    "rules": loaded.rules.id,
                    "run_id": record.manifest["run_id"],
                    "counts": result.counts(),
                    "decisions_content_sha256": record.manifest["decisions_content_sha256"],
                    "audit_head_sha256": record.audit_head,
                    **({"build": str(built)} if built else {}),
                    **({"inputs_not_read": list(loaded.unread)} if loaded.unread else {}),
                    "outputs": [o["path"] for o in record.manifest["outputs"]]
                    + [
                        record.manifest[k]["path"]
                        for k in ("summary", "report")
                        if k in record.manifest
                    ]
                    + ["manifest.json", "audit.jsonl"],
                }
            )
        elif not quiet and sys.stdout.isatty():
            from trdscreen.render import console, render_summary

            render_summary(console(), result, loaded.rules.title, str(out))

    guard(as_json, body)


def _build_first(
    input: Path, subjects: Path | None, out: Path, build_out: Path | None, rules: str | None,
    column_map: Path | None, as_of: date | None, force: bool, profile: str,
) -> Path:  # fmt: skip
    """`screen --profile`: build the records into their own folder (a build folder, with
    its manifest, that `verify` checks) and return it: the screen reads it as its input."""
    from trdscreen import api
    from trdscreen.buildrun import BuildRequest, run_build
    from trdscreen.cli_build import note_unread_records

    if subjects is not None:
        raise UsageError("--subjects with --profile: put subjects.* in the records folder")
    folder = build_out or out.with_name(f"{out.name}-built")
    notify(api.check_out_dir(out, force, [input, folder]))
    built = run_build(
        BuildRequest(input, folder, rules, column_map, as_of, force, profile),
        ("trdscreen", "screen", *sys.argv[2:]),
    )
    note_unread_records(built.manifest)
    notify([f"built the courses of {printable(str(input))} into {printable(str(folder))}"])
    return folder


@app.command(
    epilog=epilog(
        [
            "trdscreen validate sample_data",
            "trdscreen validate export.csv --subjects patients.csv --map site-map.yaml --json",
        ],
        "0 no errors (warnings allowed); 2 usage; 3 rule file or map; 4 input errors.",
    )
)
def validate(
    input: InputArg,
    subjects: SubjectsOpt = None,
    rules: RulesOpt = None,
    column_map: MapOpt = None,
    as_of: AsOfOpt = None,
    as_json: JsonOpt = False,
    report: ReportOpt = None,
    encoding: EncodingOpt = "utf-8",
    delimiter: DelimiterOpt = ",",
    quiet: QuietOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
) -> None:
    """Check the inputs against the schemas and the rule set; report every problem."""
    reference = parse_date(as_of)

    def body() -> None:
        from trdscreen import api
        from trdscreen.issues import issue_counts

        request = _request(
            input, subjects, rules, column_map, reference, report, encoding, delimiter
        )
        with watching(log_format, quiet, as_json):
            loaded = api.load_and_validate(request)
        _note_unread(loaded)
        issues = loaded.checked().issues
        n_errors = loaded.checked().n_errors
        if as_json:
            emit_json(
                {
                    "status": "invalid_input" if n_errors else "ok",
                    "exit_code": int(ExitCode.INVALID_INPUT if n_errors else ExitCode.OK),
                    "counts": issue_counts(issues),
                    "issues": issues.to_dict(orient="records"),
                }
            )
        elif not quiet:
            from trdscreen.render import console, render_issues

            render_issues(console(), issues, rest="use --json for every group")
        if n_errors:
            raise typer.Exit(int(ExitCode.INVALID_INPUT))

    guard(as_json, body)


def _note_unread(loaded) -> None:
    """A note on stderr naming the tables of the input folder the run did not read."""
    if loaded.unread:
        from trdscreen.summarytext import unread_note

        notify([unread_note(loaded.unread)], "warning")


# The other commands register themselves on `app` when imported.
from trdscreen import cli_audit, cli_build, cli_rules  # noqa: E402,F401

__all__ = ["app", "main"]


def main() -> None:
    """The console entry point. With --json anywhere on the line, a usage error (an
    unknown option, a value outside its choices, a missing argument) is also one JSON
    object on stdout, so a pipeline reading stdout never gets nothing."""
    try:
        code = app(standalone_mode=False)  # a command's typer.Exit comes back as its code
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        sys.exit(int(ExitCode.INTERRUPTED))
    except Exception as exc:  # click's own errors (usage errors) carry show and exit_code
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if show is None or not isinstance(exit_code, int):
            raise
        show()
        if exit_code == ExitCode.USAGE and "--json" in sys.argv[1:]:
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            emit_json(
                {"status": "usage", "exit_code": exit_code, "message": message, "problems": []}
            )
        sys.exit(exit_code)
    try:
        sys.stdout.flush()  # a reader gone by now would make the exit's flush complain
    except BrokenPipeError:
        reader_gone()
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
