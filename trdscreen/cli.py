"""Command-line adapter: parse options, call the library, render, map errors to exit codes.

The only module that imports typer. Heavy libraries (pandas, pyarrow,
pandera) are imported inside commands so that `--help` and `--version` start
fast. No screening logic lives here.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from trdscreen import __version__
from trdscreen.errors import ExitCode, InvalidInputData, TrdscreenError, UsageError
from trdscreen.printable import printable, printable_lines
from trdscreen.vocabulary import TABLE_FORMATS, Engine, OnInvalid, OutputFormat, TableFormat

app = typer.Typer(
    name="trdscreen",
    help="Screen antidepressant treatment histories for treatment-resistant-depression "
    "(TRD) trial eligibility.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"trdscreen {__version__}")
        raise typer.Exit(ExitCode.OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Screen antidepressant treatment histories for TRD trial eligibility."""


def _parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("expected an ISO date YYYY-MM-DD", param_hint="--as-of") from None


InputArg = Annotated[
    Path,
    typer.Argument(
        help="Treatments file (CSV or Parquet) or a folder holding treatments.* and subjects.*",
        show_default=False,
    ),
]
SubjectsOpt = Annotated[
    Path | None, typer.Option("--subjects", help="Subjects file (CSV or Parquet).")
]
RulesOpt = Annotated[
    str | None,
    typer.Option("--rules", help="Rule file or preset name [default: sforzini-2021]."),
]
MapOpt = Annotated[
    Path | None,
    typer.Option("--map", help="Column-map YAML (site headers -> canonical names)."),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        help="Screen as on this date YYYY-MM-DD: it is every subject's reference date, and "
        "courses and scores recorded after it are not used.",
    ),
]
ReportOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--report",
        help="Also report this preset's staging scores (e.g. maudsley-2009); repeatable.",
    ),
]
EncodingOpt = Annotated[
    str,
    typer.Option("--encoding", help="Text encoding of CSV inputs (e.g. cp1252, latin-1, utf-16)."),
]
DelimiterOpt = Annotated[
    str, typer.Option("--delimiter", help="Field delimiter of CSV inputs (e.g. ';' or '\\t').")
]


def _csv_options(encoding: str, delimiter: str):
    from trdscreen.io import CsvOptions

    return CsvOptions(encoding, "\t" if delimiter in ("\\t", "tab") else delimiter)


JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON summary object on stdout and nothing else.")
]


def _emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")


def _fail(exc: BaseException, as_json: bool, extra: dict[str, Any] | None = None) -> NoReturn:
    """The one place exceptions become a message on stderr and an exit code."""
    from trdscreen.render import console, render_error

    if isinstance(exc, TrdscreenError):
        code = exc.exit_code
        message = str(exc)
        details = list(getattr(exc, "problems", []))
    else:  # a bug: never print the exception text, it may quote data
        code = ExitCode.INTERNAL_ERROR
        message = (
            f"internal error ({type(exc).__name__}); please report it. "
            "Set TRDSCREEN_DEBUG=1 to see the traceback (it shows no data values)."
        )
        details = []
        if os.environ.get("TRDSCREEN_DEBUG"):
            # Frames and the exception type only: the exception's text may quote data.
            sys.stderr.write("".join(traceback.format_tb(exc.__traceback__)))
            sys.stderr.write(f"{type(exc).__module__}.{type(exc).__qualname__}\n")
    render_error(console(stderr=True), message, details)
    if as_json:
        _emit_json(
            {
                "status": code.name.lower(),
                "exit_code": int(code),
                "message": message,
                "problems": details,
                **(extra or {}),
            }
        )
    raise typer.Exit(int(code))


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _guard(as_json: bool, body: Callable[[], None]) -> None:
    """Run a command body; every exception and Ctrl-C/SIGTERM becomes a message and a code."""
    from trdscreen.errors import Interrupted
    from trdscreen.tuning import tune_for_large_tables

    tune_for_large_tables()
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        body()
    except (typer.Exit, typer.BadParameter):
        raise
    except KeyboardInterrupt:
        _fail(
            Interrupted(
                "interrupted (Ctrl-C or SIGTERM); no run folder was written and an existing "
                "--out was left as it was"
            ),
            as_json,
        )
    except Exception as exc:  # noqa: BLE001 - translated once, here
        _fail(exc, as_json)
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def screen(
    input: InputArg,
    out: Annotated[Path, typer.Option("--out", help="Output folder (created atomically).")],
    subjects: SubjectsOpt = None,
    rules: RulesOpt = None,
    column_map: MapOpt = None,
    fmt: Annotated[
        OutputFormat, typer.Option("--format", help="Output table format.")
    ] = OutputFormat.csv,
    as_of: AsOfOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty --out folder.")
    ] = False,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print no summary.")] = False,
    report: ReportOpt = None,
    on_invalid: Annotated[
        OnInvalid,
        typer.Option(
            "--on-invalid",
            help="fail: any input error stops the run (only validation_issues is written). "
            "quarantine: rows with errors go to quarantine tables and their subjects get "
            "needs_review; everyone else is screened.",
        ),
    ] = OnInvalid.fail,
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
            help="pandas: in this process. dask: one task per hash bucket of subject_id on a "
            "Dask cluster (same tables, byte for byte).",
        ),
    ] = Engine.pandas,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            help="Dask scheduler address (tcp://host:8786); default: a local cluster on 127.0.0.1.",
        ),
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option(
            "--partitions",
            min=1,
            help="Hash buckets for --engine dask (default: 4 per worker, and at most about "
            "262,144 input rows per bucket).",
        ),
    ] = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Local Dask cluster: worker processes.")
    ] = 2,
    worker_memory: Annotated[
        str,
        typer.Option(
            "--worker-memory", help="Local Dask cluster: memory limit per worker, e.g. 2GiB."
        ),
    ] = "auto",
    chunk_rows: Annotated[
        int | None,
        typer.Option(
            "--chunk-rows",
            min=1,
            help="--engine pandas: input rows per chunk of subjects validated, screened and "
            "written at a time (default 262144); bounds memory, never changes the tables.",
        ),
    ] = None,
) -> None:
    """Screen a cohort and write decisions, ledger, courses, attrition and a manifest."""
    reference = _parse_date(as_of)
    formats = TABLE_FORMATS if fmt is OutputFormat.both else (fmt.value,)

    def body() -> None:
        from trdscreen import api
        from trdscreen.issues import issue_counts

        dask = None
        if engine is Engine.dask:
            dask = api.DaskOptions(scheduler, partitions, workers, worker_memory)
        elif scheduler is not None or partitions is not None:
            raise UsageError("--scheduler and --partitions need --engine dask")
        if dask is not None and chunk_rows is not None:
            raise UsageError("--chunk-rows is for --engine pandas (Dask uses --partitions)")
        request = api.ScreenRequest(
            input,
            subjects,
            rules,
            column_map,
            reference,
            tuple(report or ()),
            _csv_options(encoding, delimiter),
            on_invalid.value,
            dask,
            None if dask is not None else (chunk_rows or api.CHUNK_ROWS),
        )
        _notify(api.check_out_dir(out, force, api.input_paths(request)))
        loaded = api.load(request, sys.argv)
        try:
            record, result = api.screen_and_write(loaded, out, formats, force, escape_formulas)
        except InvalidInputData as exc:
            record = api.write_run(loaded, None, out, formats, force, escape_formulas)
            _report_issues(loaded.checked().issues)
            _fail(
                exc,
                as_json,
                {
                    "out": str(out),
                    "issues": issue_counts(exc.issues),
                    "run_id": record.manifest["run_id"],
                    "audit_head_sha256": record.audit_head,
                },
            )
        if result.quarantine is not None and len(result.quarantine.held) and not as_json:
            from trdscreen.render import console, render_quarantine

            render_quarantine(console(stderr=True), result.quarantine, str(out))
        if as_json:
            _emit_json(
                {
                    "status": "ok",
                    "exit_code": 0,
                    "out": str(out),
                    "rules": loaded.rules.id,
                    "run_id": record.manifest["run_id"],
                    "counts": result.counts(),
                    "decisions_content_sha256": record.manifest["decisions_content_sha256"],
                    "audit_head_sha256": record.audit_head,
                    "outputs": [o["path"] for o in record.manifest["outputs"]]
                    + ["manifest.json", "audit.jsonl"],
                }
            )
        elif not quiet and sys.stdout.isatty():
            from trdscreen.render import console, render_summary

            render_summary(console(), result, loaded.rules.title, str(out))

    _guard(as_json, body)


def _notify(lines: list[str]) -> None:
    """Notes for the user on stderr (drafts of dead runs removed, and the like)."""
    if lines:
        from trdscreen.render import console, render_notes

        render_notes(console(stderr=True), lines)


def _report_issues(issues: Any) -> None:
    from trdscreen.render import console, render_issues

    render_issues(console(stderr=True), issues)


@app.command()
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
) -> None:
    """Check the inputs against the schemas and the rule set; report every problem."""
    reference = _parse_date(as_of)

    def body() -> None:
        from trdscreen import api
        from trdscreen.issues import issue_counts

        request = api.ScreenRequest(
            input,
            subjects,
            rules,
            column_map,
            reference,
            tuple(report or ()),
            _csv_options(encoding, delimiter),
        )
        loaded = api.load_and_validate(request)
        issues = loaded.checked().issues
        n_errors = loaded.checked().n_errors
        if as_json:
            _emit_json(
                {
                    "status": "invalid_input" if n_errors else "ok",
                    "exit_code": int(ExitCode.INVALID_INPUT if n_errors else ExitCode.OK),
                    "counts": issue_counts(issues),
                    "issues": issues.to_dict(orient="records"),
                }
            )
        else:
            from trdscreen.render import console, render_issues

            render_issues(console(), issues, rest="use --json for every group")
        if n_errors:
            raise typer.Exit(int(ExitCode.INVALID_INPUT))

    _guard(as_json, body)


DIFF_SHOWN = 50
"""Changed subjects shown in detail by `diff` without --json (all with it)."""
RunArg = Annotated[Path, typer.Argument(help="A run folder written by `trdscreen screen`.")]


@app.command()
def verify(
    run: RunArg,
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs", help="Look for the recorded input files by name in this folder instead."
        ),
    ] = None,
    no_rerun: Annotated[
        bool, typer.Option("--no-rerun", help="Check hashes only; do not re-run the screening.")
    ] = False,
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            help="The audit head SHA-256 kept from `screen --json` (detects a rewritten log).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a run folder's audit chain and hashes, then re-run it and compare (exit 6 if not)."""

    def body() -> None:
        from trdscreen.verify import verify_run

        verification = verify_run(run, inputs, rerun=not no_rerun, head=head)
        code = ExitCode.OK if verification.ok else ExitCode.NOT_VERIFIED
        if as_json:
            _emit_json(
                {
                    "status": "verified" if verification.ok else "not_verified",
                    "exit_code": int(code),
                    "run_id": verification.run.run_id,
                    "reran": verification.reran,
                    "checks": [
                        {"subject": c.subject, "ok": c.ok, "detail": c.detail}
                        for c in verification.checks
                    ],
                    "problems": verification.problems,
                }
            )
        else:
            from trdscreen.render import console, render_verify

            render_verify(console(), verification)
        raise typer.Exit(int(code))

    _guard(as_json, body)


@app.command()
def explain(
    run: RunArg,
    subject_id: Annotated[str, typer.Argument(help="The subject key, as in the decisions table.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the same trace as one JSON object.")
    ] = False,
) -> None:
    """Explain one subject's decision: courses, counts, criteria and the decision."""

    def body() -> None:
        from trdscreen.explain import explain_subject
        from trdscreen.runs import open_run

        data = explain_subject(open_run(run), subject_id)
        if as_json:
            _emit_json(data)
            return
        from trdscreen.render import console, render_explain

        render_explain(console(), data)

    _guard(as_json, body)


@app.command()
def diff(
    run_a: Annotated[Path, typer.Argument(help="The earlier (or reference) run folder.")],
    run_b: Annotated[Path, typer.Argument(help="The later (or amended) run folder.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every change as one JSON object.")
    ] = False,
) -> None:
    """Compare two runs: who changed decision, which criteria flipped, attrition side by side."""

    def body() -> None:
        from trdscreen.rundiff import diff_runs
        from trdscreen.runs import open_run

        data = diff_runs(open_run(run_a), open_run(run_b), None if as_json else DIFF_SHOWN)
        if as_json:
            _emit_json(data)
            return
        from trdscreen.render import console, render_diff

        render_diff(console(), data)

    _guard(as_json, body)


rules_app = typer.Typer(
    name="rules",
    help="The shipped TRD definitions (presets) and custom rule files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(rules_app, name="rules")
RuleArg = Annotated[str, typer.Argument(help="Preset name (see `rules list`) or rule file path.")]


@rules_app.command("list")
def rules_list(as_json: JsonOpt = False) -> None:
    """List the presets with title, source and a one-line summary."""

    def body() -> None:
        from trdscreen.protocol import catalog
        from trdscreen.rulefile import DEFAULT_PRESET, preset_dir

        presets = catalog(preset_dir())
        if as_json:
            _emit_json(
                {
                    "status": "ok",
                    "default": DEFAULT_PRESET,
                    "presets": [
                        {
                            "id": p.id,
                            "title": p.title,
                            "source": p.source,
                            "summary": p.summary,
                            "staging": p.staging,
                        }
                        for p in presets
                    ],
                }
            )
            return
        from trdscreen.render import console, render_presets

        render_presets(console(), presets, DEFAULT_PRESET)

    _guard(as_json, body)


@rules_app.command("show")
def rules_show(name: RuleArg) -> None:
    """Print a rule set as protocol text generated from its YAML, unverified parameters flagged."""

    def body() -> None:
        from trdscreen import api
        from trdscreen.protocol import protocol_text

        checked = api.check_rules(name)
        text = protocol_text(checked.rules, checked.tags, str(checked.path), checked.file_sha256)
        typer.echo(printable_lines(text), nl=False)

    _guard(False, body)


@rules_app.command("check")
def rules_check(name: RuleArg, as_json: JsonOpt = False) -> None:
    """Validate a rule file; report every problem with its key path and line (exit 3)."""

    def body() -> None:
        from trdscreen import api

        checked = api.check_rules(name)
        rules = checked.rules
        if as_json:
            _emit_json(
                {
                    "status": "ok",
                    "exit_code": 0,
                    "id": rules.id,
                    "path": str(checked.path),
                    "file_sha256": checked.file_sha256,
                    "normalized_sha256": rules.sha256(),
                    "criteria": [c.id for c in rules.criteria],
                    "notes": list(checked.notes),
                }
            )
            return
        typer.echo(
            printable(
                f"ok: {checked.path}: rule set {rules.id}, {len(rules.criteria)} criteria, "
                f"normalized sha256 {rules.sha256()}"
            )
        )
        for note in checked.notes:
            typer.echo(printable(f"note: {note}"))

    _guard(as_json, body)


@app.command()
def formulary(
    drug: Annotated[
        str | None, typer.Argument(help="Drug name, brand or synonym to look up.")
    ] = None,
    rules: Annotated[
        str | None,
        typer.Option(
            "--rules",
            help="Show the formulary as this rule set uses it (its file, dose column, overrides).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List the formulary or look up one drug: class, minimum dose and its source."""

    def body() -> None:
        from trdscreen import api

        table, rule_set = api.formulary_for(rules)
        if drug is None:
            rows = api.formulary_rows(table, rule_set)
        else:
            row = api.formulary_lookup(table, rule_set, drug)
            if row is None:
                hints = table.suggest(table.match(drug).normalized)
                raise UsageError(
                    f"{drug!r} is not in the formulary ({table.source})"
                    + (f"; did you mean: {', '.join(hints)}?" if hints else "")
                )
            rows = [row]
        if as_json:
            _emit_json(
                {"status": "ok", "source": table.source, "sha256": table.sha256, "drugs": rows}
            )
            return
        from trdscreen.render import console, render_drug, render_formulary

        if drug is not None:
            render_drug(console(), rows[0])
        else:
            render_formulary(console(), rows, table.source, table.sha256)

    _guard(as_json, body)


@app.command()
def synth(
    subjects: Annotated[int, typer.Option("--subjects", help="How many subjects.", min=1)],
    out: Annotated[Path, typer.Option("--out", help="Folder for treatments and subjects.")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed: same seed, same files.")] = 0,
    fmt: Annotated[
        TableFormat, typer.Option("--format", help="File format.")
    ] = TableFormat.parquet,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty --out folder.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Write a synthetic cohort (about 4.2 courses per subject) for demos and load tests."""

    def body() -> None:
        import time

        from trdscreen.api import check_out_dir
        from trdscreen.synth import synthesize, write_synthetic

        started = time.perf_counter()
        _notify(check_out_dir(out, force))  # fail before drawing a large cohort
        cohort = synthesize(subjects, seed)
        paths = write_synthetic(cohort, out, fmt.value, force)
        payload = {
            "status": "ok",
            "subjects": cohort.subjects.num_rows,
            "courses": cohort.treatments.num_rows,
            "seed": seed,
            "files": [str(p) for p in paths],
            "seconds": round(time.perf_counter() - started, 2),
        }
        if as_json:
            _emit_json(payload)
            return
        typer.echo(
            f"wrote {payload['subjects']} subjects and {payload['courses']} courses "
            f"(seed {seed}) to {printable(out)} in {payload['seconds']} s"
        )

    _guard(as_json, body)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
