"""Where a run is, for whoever watches it: stages (the audit trail's events) and rows
screened. The CLI installs an observer (a progress display on a terminal, JSON lines
with `--log-format json`); a library caller gets none. Only event names, times, counts
and file names pass through here, never a patient value."""

from __future__ import annotations

import time
from typing import Any, Protocol


class Observer(Protocol):
    def stage(self, event: str, elapsed: float, duration: float, facts: dict[str, Any]) -> None:
        """An audit event was recorded `elapsed` seconds into the run, `duration` seconds
        after the previous one."""

    def rows(self, done: int, total: int) -> None:
        """`done` of `total` input rows are screened."""


SHOWN_FACTS = ("role", "rows", "path", "table", "format", "issues", "counts", "exit_code")
"""The fields of an audit event an observer sees (no hashes, no host or user)."""


class _Watch:
    observer: Observer | None = None
    started = 0.0
    last = 0.0


_watch = _Watch()


def observe(observer: Observer | None) -> None:
    """Install (or, with None, remove) the observer of the runs in this process."""
    _watch.observer = observer
    _watch.started = _watch.last = time.perf_counter()


def stage(event: str, fields: dict[str, Any]) -> None:
    observer = _watch.observer
    if observer is None:
        return
    now = time.perf_counter()
    facts = {k: fields[k] for k in SHOWN_FACTS if k in fields}
    observer.stage(event, now - _watch.started, now - _watch.last, facts)
    _watch.last = now


def rows(done: int, total: int) -> None:
    if _watch.observer is not None:
        _watch.observer.rows(done, total)
