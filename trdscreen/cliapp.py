"""The command-line app's frame: the typer app, the options commands share, and the one
place exceptions become a message and an exit code. The `trdscreen.cli*` modules are the
only ones that import typer; heavy libraries are imported inside commands so that `--help`
and `--version` start fast."""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from trdscreen import __version__
from trdscreen.errors import ExitCode, TrdscreenError
from trdscreen.vocabulary import LogFormat

CONTEXT: dict[str, Any] = {
    "help_option_names": ["-h", "--help"],
    "max_content_width": 120,
    # piped or redirected, help is not cut to an 80-column terminal that is not there
    **({} if sys.stdout.isatty() else {"terminal_width": 120}),
}
"""Every command answers -h as --help; help fills up to 120 columns."""


def _named_arguments_only() -> None:
    """Typer lists an argument as `INPUT <path>`; an argument given a placeholder name
    (INPUT, RUN_DIR, PRESET|FILE) says what it takes, so its type is left out."""
    from typer.core import TyperArgument

    shown = TyperArgument.display_type_rich

    def display_type_rich(self: TyperArgument, ctx: Any) -> str | None:
        return None if self.metavar else shown(self, ctx)

    TyperArgument.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]


_named_arguments_only()

_SETTINGS: dict[str, Any] = {
    "no_args_is_help": True,
    "pretty_exceptions_enable": False,
    "rich_markup_mode": None,
    "context_settings": CONTEXT,
}
"""How the app and each command group behave: help when called bare, errors as our
messages (never rich tracebacks), plain help text, -h."""

app = typer.Typer(
    name="trdscreen",
    help="Screen antidepressant treatment histories for treatment-resistant-depression "
    "(TRD) trial eligibility.",
    add_completion=True,  # --install-completion SHELL, --show-completion SHELL
    **_SETTINGS,
)


def command_group(name: str, help: str) -> typer.Typer:
    """A group of subcommands (`rules ...`, `map ...`) under the app, set up as the app is."""
    group = typer.Typer(name=name, help=help, add_completion=False, **_SETTINGS)
    app.add_typer(group, name=name)
    return group


def epilog(examples: list[str], codes: str) -> str:
    """A command's help ending: examples, then its exit codes (kept as written)."""
    lines = "\n".join(f"  {e}" for e in examples)
    return f"\b\nExamples:\n{lines}\n\n\b\nExit codes: {codes}"


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


def parse_date(value: str | None) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter("expected an ISO date YYYY-MM-DD", param_hint="--as-of") from None


InputArg = Annotated[
    Path,
    typer.Argument(
        metavar="INPUT",
        help="Treatments file (CSV or Parquet; also .csv.gz, - for stdin, a URL) or a folder "
        "holding treatments.* and subjects.*",
        show_default=False,
    ),
]
SubjectsOpt = Annotated[
    Path | None, typer.Option("--subjects", metavar="FILE", help="Subjects file (CSV or Parquet).")
]
RulesOpt = Annotated[
    str | None,
    typer.Option(
        "--rules", metavar="PRESET|FILE", help="Rule file or preset name [default: sforzini-2021]."
    ),
]
MapOpt = Annotated[
    Path | None,
    typer.Option(
        "--map", metavar="FILE", help="Column-map YAML (site headers -> canonical names)."
    ),
]
AsOfOpt = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        metavar="DATE",
        help="Screen as on this date YYYY-MM-DD: it is every subject's reference date, and "
        "courses and scores recorded after it are not used.",
    ),
]
ReportOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--report",
        metavar="PRESET",
        help="Also report this preset's staging scores (e.g. maudsley-2009); repeatable.",
    ),
]
EncodingOpt = Annotated[
    str,
    typer.Option(
        "--encoding",
        metavar="ENC",
        help="Text encoding of CSV inputs (e.g. cp1252, latin-1, utf-16).",
    ),
]
DelimiterOpt = Annotated[
    str,
    typer.Option(
        "--delimiter", metavar="CHAR", help="Field delimiter of CSV inputs (e.g. ';' or '\\t')."
    ),
]


def csv_options(encoding: str, delimiter: str):
    from trdscreen.io import CsvOptions

    return CsvOptions(encoding, "\t" if delimiter in ("\\t", "tab") else delimiter)


LogFormatOpt = Annotated[
    LogFormat,
    typer.Option(
        "--log-format",
        metavar="text|json",
        help="text: a progress display on stderr when it is a terminal, nothing otherwise. "
        "json: one JSON object per stage on stderr (event, elapsed_s, duration_s, counts).",
    ),
]


class JsonLines:
    """`--log-format json`: each stage (and each chunk of rows) as one JSON line on stderr."""

    def __enter__(self) -> JsonLines:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def stage(self, event: str, elapsed: float, duration: float, facts: dict) -> None:
        line = {"event": event, "elapsed_s": round(elapsed, 3), "duration_s": round(duration, 3)}
        sys.stderr.write(json.dumps({**line, **facts}, sort_keys=True, default=str) + "\n")
        sys.stderr.flush()

    def rows(self, done: int, total: int) -> None:
        sys.stderr.write(json.dumps({"event": "rows_screened", "done": done, "total": total}))
        sys.stderr.write("\n")
        sys.stderr.flush()


@contextmanager
def watching(log_format: LogFormat, quiet: bool, as_json: bool) -> Iterator[None]:
    """Show where a run is while it works: JSON lines (`--log-format json`), or a progress
    display when stderr is a terminal (not with --quiet or --json); nothing otherwise."""
    from trdscreen import progress

    observer: Any = None
    if log_format is LogFormat.json:
        observer = JsonLines()
    elif sys.stderr.isatty() and not quiet and not as_json:
        from trdscreen.render_progress import TerminalProgress

        observer = TerminalProgress()
    if observer is None:
        yield
        return
    with observer:
        progress.observe(observer)
        try:
            yield
        finally:
            progress.observe(None)


QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print nothing on stdout; the exit code tells.")
]
JsonOpt = Annotated[
    bool, typer.Option("--json", help="Print one JSON summary object on stdout and nothing else.")
]


def emit_json(payload: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")


def fail(exc: BaseException, as_json: bool, extra: dict[str, Any] | None = None) -> NoReturn:
    """The one place exceptions become a message on stderr and an exit code."""
    from trdscreen.render import console, render_error

    if isinstance(exc, BrokenPipeError):  # the reader went away (`| head`): its choice
        reader_gone()
        raise typer.Exit(int(ExitCode.OK))
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
        emit_json(
            {
                "status": code.name.lower(),
                "exit_code": int(code),
                "message": message,
                "problems": details,
                **(extra or {}),
            }
        )
    raise typer.Exit(int(code))


def reader_gone() -> None:
    """Stop printing to a stdout nobody reads: later writes (and the flush at exit) go
    to /dev/null instead of raising BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def guard(as_json: bool, body: Callable[[], None]) -> None:
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
        fail(
            Interrupted(
                "interrupted (Ctrl-C or SIGTERM); no run folder was written and an existing "
                "--out was left as it was"
            ),
            as_json,
        )
    except Exception as exc:  # noqa: BLE001 - translated once, here
        fail(exc, as_json)
    finally:
        signal.signal(signal.SIGTERM, previous)


def notify(lines: list[str], kind: str = "note") -> None:
    """Notes (or warnings) for the user on stderr (drafts of dead runs removed, and the
    like)."""
    if lines:
        from trdscreen.render import console, render_notes

        render_notes(console(stderr=True), lines, kind)


def report_issues(issues: Any) -> None:
    from trdscreen.render import console, render_issues

    render_issues(console(stderr=True), issues)
