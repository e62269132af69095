"""The audit log: one JSON line per step of a run, each holding the SHA-256 of the line before.

Follows what 21 CFR 11.10(e) and ALCOA+ ask of computer-generated records:
every entry is time-stamped (UTC), attributable (run id; the run_started
entry names user and host), append-only, and never rewritten. Because each
line carries the hash of the previous line, editing, inserting or deleting a
line breaks the chain at the next line; the last line (run_finished or
run_aborted) records the manifest's SHA-256, and its own hash (the *head*) is
printed by `screen --json` so it can be kept outside the run folder.

Events are buffered until the run folder exists (the folder is created
atomically at the end of a run) and written in order with the times at
which they happened.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from trdscreen import progress

AUDIT_FILE = "audit.jsonl"
AUDIT_FORMAT = "trdscreen-audit/1"
GENESIS = "0" * 64
"""prev_sha256 of the first line."""

EVENTS = {
    "run_started": "the run began (command line, options, user, host)",
    "rules_loaded": "a rule set was parsed (id, file and normalized SHA-256)",
    "formulary_loaded": "the formulary was loaded (source, SHA-256)",
    "input_read": "an input file was read (role, path, size, rows, SHA-256)",
    "inputs_not_read": "tables in the input folder that the run does not read (file names)",
    "inputs_validated": "validation finished (issue counts by severity)",
    "quarantine_planned": "--on-invalid quarantine set rows aside (subjects held, rows)",
    "adjudications_loaded": "the adjudication file was read and checked (path, rows, SHA-256)",
    "decision_adjudicated": "a reviewer's decision overrides a subject's (subject key, "
    "decision, line of the adjudication file)",
    "adjudications_held": "reviewers' eligible decisions held for review because the "
    "computed decision or its unknown criteria changed since the review (how many; the "
    "decisions' adjudication_reason names them)",
    "decisions_computed": "screening finished (counts by decision)",
    "output_written": "an output file was written (path, rows, size, SHA-256)",
    "run_finished": "the run ended with decisions (manifest SHA-256, exit code)",
    "run_aborted": "the run ended without decisions (reason, manifest SHA-256, exit code)",
}
"""Stable event codes, in the order a run records them."""
FINAL_EVENTS = ("run_finished", "run_aborted")


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def line_sha256(line: bytes) -> str:
    """The hash the next line records: SHA-256 of the line's bytes without its newline."""
    return hashlib.sha256(line).hexdigest()


def _encode(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")


@dataclass
class AuditTrail:
    """The events of one run, chained; written to a file once one is attached."""

    run_id: str
    head: str = GENESIS
    origin: dict[str, str] = field(default_factory=dict)  # user, host, cwd of run_started
    _seq: int = 0
    _pending: list[bytes] = field(default_factory=list)
    _handle: IO[bytes] | None = None

    def record(self, event: str, **fields: Any) -> str:
        """Append one event; return its line hash (the new head)."""
        if event not in EVENTS:
            raise ValueError(f"unknown audit event {event!r}")
        progress.stage(event, fields)
        entry = {
            **fields,
            "seq": self._seq,
            "time": utc_now(),
            "run_id": self.run_id,
            "event": event,
            "prev_sha256": self.head,
        }
        line = _encode(entry)
        self.head = line_sha256(line)
        self._seq += 1
        if self._handle is None:
            self._pending.append(line)
        else:
            self._write(line)
        return self.head

    def _write(self, line: bytes) -> None:
        assert self._handle is not None
        self._handle.write(line + b"\n")
        self._handle.flush()

    def attach(self, folder: Path) -> None:
        """Start writing to `folder/audit.jsonl` (append-only), flushing buffered events."""
        self._handle = open(Path(folder) / AUDIT_FILE, "ab")  # noqa: SIM115 - closed in close()
        for line in self._pending:
            self._write(line)
        self._pending.clear()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


@dataclass(frozen=True)
class ChainCheck:
    events: list[dict[str, Any]]
    problems: list[str]
    head: str  # hash of the last line


def check_chain(path: Path) -> ChainCheck:
    """Read an audit log and report every break in its chain (file and line)."""
    name = Path(path).name
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return ChainCheck([], [f"{name}: cannot read ({exc.strerror})"], GENESIS)
    problems: list[str] = []
    events: list[dict[str, Any]] = []
    if raw and not raw.endswith(b"\n"):
        problems.append(f"{name}: the last line is incomplete (no newline): the log was cut")
    prev = GENESIS
    for number, line in enumerate(raw.splitlines(), start=1):
        where = f"{name} line {number}"
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError
        except ValueError:
            problems.append(f"{where}: not a JSON object")
            prev = line_sha256(line)
            continue
        if entry.get("prev_sha256") != prev:
            problems.append(
                f"{where}: chain broken: prev_sha256 does not match the line before "
                "(a line was edited, inserted or deleted)"
            )
        if entry.get("seq") != number - 1:
            problems.append(f"{where}: sequence number {entry.get('seq')!r}, expected {number - 1}")
        if entry.get("event") not in EVENTS:
            problems.append(f"{where}: unknown event {entry.get('event')!r}")
        events.append(entry)
        prev = line_sha256(line)
    if not events:
        problems.append(f"{name}: the log is empty")
    elif events[-1].get("event") not in FINAL_EVENTS:
        problems.append(
            f"{name}: the last event is {events[-1].get('event')!r}, not run_finished or "
            "run_aborted: the log was cut or the run did not finish"
        )
    run_ids = {e.get("run_id") for e in events}
    if len(run_ids) > 1:
        problems.append(f"{name}: events from more than one run id")
    return ChainCheck(events, problems, prev)
