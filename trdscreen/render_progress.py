"""The progress display a run shows on a terminal while it works (rich's live progress).
With `render.py`, the only module that imports rich."""

from __future__ import annotations

from trdscreen.render import console

_NEXT_WORK = {
    "run_started": "loading the rules",
    "rules_loaded": "loading the rules",
    "formulary_loaded": "reading the inputs",
    "input_read": "validating and screening",
    "inputs_validated": "screening",
    "quarantine_planned": "screening",
    "decisions_computed": "writing the tables",
    "output_written": "writing the tables",
    "run_finished": "done",
    "run_aborted": "stopped",
}
"""What a run does after each audit event, as the progress display says it."""


class TerminalProgress:
    """Stages and rows screened, on stderr, while a run works (only on a terminal); the
    display is removed when the run ends, so the summary follows on a clean screen."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.display = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("rows"),
            TimeElapsedColumn(),
            console=console(stderr=True),
            transient=True,
        )
        self.task = self.display.add_task("starting", total=None)

    def __enter__(self) -> TerminalProgress:
        self.display.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.display.stop()

    def stage(self, event: str, elapsed: float, duration: float, facts: dict) -> None:
        self.display.update(self.task, description=_NEXT_WORK.get(event, event))

    def rows(self, done: int, total: int) -> None:
        self.display.update(self.task, completed=done, total=total, description="screening")
