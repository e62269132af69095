"""Typed exceptions raised by the library, and the exit codes the CLI maps them to.

Library code raises; only `trdscreen.cli` turns an exception into a one-line
message and an exit code. Messages name files, rows, columns and rule keys,
never patient values beyond the subject key.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


class ExitCode(IntEnum):
    """Process exit codes. Stable: pipelines branch on them."""

    OK = 0  # the run finished (also when nobody is eligible)
    INTERNAL_ERROR = 1  # a bug in trdscreen: please report it
    USAGE = 2  # bad command line (same code click/typer use)
    INVALID_RULES = 3  # the rule file or column map cannot be used
    INVALID_INPUT = 4  # the input data failed validation; see validation_issues
    OUTPUT_EXISTS = 5  # the output folder exists and is not empty; pass --force
    NOT_VERIFIED = 6  # verify found a difference, or a run folder was altered
    OUTPUT_FAILED = 7  # the run folder could not be written (unwritable, disk full); none left
    INTERRUPTED = 130  # stopped by SIGINT (Ctrl-C) or SIGTERM; no run folder left (128 + 2)


class TrdscreenError(Exception):
    """Base class of every error the CLI reports without a traceback."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR


class UsageError(TrdscreenError):
    exit_code = ExitCode.USAGE


class RuleError(TrdscreenError):
    """A rule file, column map or formulary file is unreadable or invalid.

    `problems` holds one line per problem (file, key path, what was expected).
    """

    exit_code = ExitCode.INVALID_RULES

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class InputError(TrdscreenError):
    """An input file cannot be read at all (missing, unreadable, wrong format);
    `problems` may list one line per problem (an adjudication file's rows)."""

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])


class InvalidInputData(TrdscreenError):
    """The inputs were read but failed validation.

    `issues` is the full validation-issues table (no patient values beyond the
    subject key), so the caller can write it before exiting.
    """

    exit_code = ExitCode.INVALID_INPUT

    def __init__(self, message: str, issues: pd.DataFrame) -> None:
        super().__init__(message)
        self.issues = issues
        self.record: Any = None  # the run record of the invalid-input folder, once written


class OutputExistsError(TrdscreenError):
    exit_code = ExitCode.OUTPUT_EXISTS


class OutputWriteError(TrdscreenError):
    """The run folder could not be created or written; nothing was left behind."""

    exit_code = ExitCode.OUTPUT_FAILED


class Interrupted(TrdscreenError):
    """The run was stopped by a signal; no run folder was left behind."""

    exit_code = ExitCode.INTERRUPTED


class RunFolderError(TrdscreenError):
    """A run folder was altered (a hash does not match) or cannot be re-run as recorded.

    `problems` lists every difference found.
    """

    exit_code = ExitCode.NOT_VERIFIED

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [])
