"""Command-line adapter: parse options, call the library, render, map errors to exit codes.

The only module that imports typer. Heavy libraries (pandas, pyarrow,
pandera) are imported inside commands so that `--help` and `--version` start
fast. No screening logic lives here.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from trdscreen import __version__
from trdscreen.errors import ExitCode, InvalidInputData, RuleError, TrdscreenError

app = typer.Typer(
    name="trdscreen",
    help="Screen antidepressant treatment histories for treatment-resistant-depression "
    "(TRD) trial eligibility.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


class Format(StrEnum):
    csv = "csv"
    parquet = "parquet"
    both = "both"


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
        "--as-of", help="Reference date YYYY-MM-DD (instead of the subjects' screening date)."
    ),
]
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
        details = exc.problems if isinstance(exc, RuleError) else []
    else:  # a bug: never print the exception text, it may quote data
        code = ExitCode.INTERNAL_ERROR
        message = (
            f"internal error ({type(exc).__name__}); please report it. "
            "Set TRDSCREEN_DEBUG=1 to see the traceback (it shows no data values)."
        )
        details = []
        if os.environ.get("TRDSCREEN_DEBUG"):
            traceback.print_exception(type(exc), exc, exc.__traceback__, limit=None, chain=False)
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


def _guard(as_json: bool, body: Callable[[], None]) -> None:
    try:
        body()
    except (typer.Exit, typer.BadParameter):
        raise
    except Exception as exc:  # noqa: BLE001 - translated once, here
        _fail(exc, as_json)


@app.command()
def screen(
    input: InputArg,
    out: Annotated[Path, typer.Option("--out", help="Output folder (created atomically).")],
    subjects: SubjectsOpt = None,
    rules: RulesOpt = None,
    column_map: MapOpt = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output table format.")] = Format.csv,
    as_of: AsOfOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty --out folder.")
    ] = False,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print no summary.")] = False,
) -> None:
    """Screen a cohort and write decisions, ledger, courses, attrition and a manifest."""
    reference = _parse_date(as_of)
    formats = ("csv", "parquet") if fmt is Format.both else (fmt.value,)

    def body() -> None:
        from trdscreen import api

        api.check_out_dir(out, force)
        request = api.ScreenRequest(input, subjects, rules, column_map, reference)
        loaded = api.load(request)
        try:
            result = api.screen(loaded)
        except InvalidInputData as exc:
            api.write_run(loaded, None, out, formats, force, sys.argv)
            _report_issues(loaded.validated.issues)
            _fail(exc, as_json, {"out": str(out), "issues": _issue_counts(exc.issues)})
        record = api.write_run(loaded, result, out, formats, force, sys.argv)
        if as_json:
            _emit_json(
                {
                    "status": "ok",
                    "exit_code": 0,
                    "out": str(out),
                    "rules": loaded.rules.id,
                    "counts": result.counts(),
                    "outputs": [o["path"] for o in record.manifest["outputs"]] + ["manifest.json"],
                }
            )
        elif not quiet and sys.stdout.isatty():
            from trdscreen.render import console, render_summary

            render_summary(console(), result, loaded.rules.title, str(out))

    _guard(as_json, body)


def _issue_counts(issues: Any) -> dict[str, int]:
    return {str(k): int(v) for k, v in issues["severity"].value_counts().items()}


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
) -> None:
    """Check the inputs against the schemas and the rule set; report every problem."""
    reference = _parse_date(as_of)

    def body() -> None:
        from trdscreen import api

        loaded = api.load(api.ScreenRequest(input, subjects, rules, column_map, reference))
        issues = loaded.validated.issues
        n_errors = loaded.validated.n_errors
        if as_json:
            _emit_json(
                {
                    "status": "invalid_input" if n_errors else "ok",
                    "exit_code": int(ExitCode.INVALID_INPUT if n_errors else ExitCode.OK),
                    "counts": _issue_counts(issues),
                    "issues": issues.to_dict(orient="records"),
                }
            )
        else:
            from trdscreen.render import console, render_issues

            render_issues(console(), issues)
        if n_errors:
            raise typer.Exit(int(ExitCode.INVALID_INPUT))

    _guard(as_json, body)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
