"""`trdscreen verify RUN_DIR`: is this run folder intact, and does it reproduce?

1. the audit log's hash chain is unbroken and ends with run_finished or
   run_aborted, whose manifest SHA-256 matches manifest.json;
2. every output file matches the size and SHA-256 in the manifest, and the
   folder holds nothing else;
3. the screening is re-run from the recorded inputs, column map, normalized
   rule sets and formulary, each first checked against its recorded SHA-256
   (a changed input is named and the re-run refused), and every re-run table
   must give the recorded bytes.

Nothing in the run folder is written or changed.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from trdscreen.audit import AUDIT_FILE, FINAL_EVENTS, AuditTrail, check_chain
from trdscreen.errors import InputError
from trdscreen.io import sha256_file
from trdscreen.manifest import LoadedRun, request_from_manifest
from trdscreen.output import Destination, write_workbook
from trdscreen.runs import MANIFEST_FILE, RunFolder, open_run, read_table_file
from trdscreen.sources import STDIN, folder_sha256, locate, parquet_files, url_of
from trdscreen.tables import SHEET_ORDER


@dataclass(frozen=True)
class Check:
    subject: str  # what was checked: a file, the audit log, the re-run
    ok: bool
    detail: str


@dataclass
class Verification:
    run: RunFolder | Any  # a run folder, or a build folder (buildverify.BuildFolder)
    checks: list[Check] = field(default_factory=list)
    reran: bool = False

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[str]:
        return [f"{c.subject}: {c.detail}" for c in self.checks if not c.ok]

    def add(self, subject: str, ok: bool, detail: str) -> None:
        self.checks.append(Check(subject, ok, detail))


def verify_run(
    path: Path, inputs_dir: Path | None = None, rerun: bool = True, head: str | None = None
) -> Verification:
    run = open_run(path)
    result = Verification(run)
    _check_audit(run, result, head)
    _check_outputs(run, result)
    if rerun:
        _rerun(run, result, inputs_dir)
    return result


def _check_audit(run: RunFolder, result: Verification, head: str | None) -> None:
    chain = check_chain(run.path / AUDIT_FILE)
    for problem in chain.problems:
        result.add(AUDIT_FILE, False, problem)
    if not chain.problems:
        result.add(
            AUDIT_FILE,
            True,
            f"{len(chain.events)} events, hash chain intact, ends with {chain.events[-1]['event']}",
        )
    if head is not None:
        result.add(
            AUDIT_FILE,
            chain.head == head,
            "head SHA-256 matches the one kept outside the run"
            if chain.head == head
            else f"head SHA-256 is {chain.head}, not {head}: the log was rewritten or cut",
        )
    final = [e for e in chain.events if e.get("event") in FINAL_EVENTS]
    manifest_sha = sha256_file(run.path / MANIFEST_FILE)
    if not final:
        result.add(MANIFEST_FILE, False, "no run_finished/run_aborted event records its SHA-256")
    elif final[-1].get("manifest_sha256") != manifest_sha:
        result.add(
            MANIFEST_FILE,
            False,
            "SHA-256 differs from the one recorded at the end of the audit log: the manifest "
            "was changed",
        )
    else:
        result.add(MANIFEST_FILE, True, "SHA-256 matches the audit log")
    ids = {e.get("run_id") for e in chain.events}
    if chain.events and ids != {run.run_id}:
        result.add(AUDIT_FILE, False, f"run id {sorted(map(str, ids))} is not the manifest's")
    written = {
        (e.get("path"), e.get("sha256")) for e in chain.events if e.get("event") == "output_written"
    }
    listed = {(o.get("path"), o.get("sha256")) for o in run.manifest.get("outputs", [])}
    if chain.events and written != listed:
        result.add(AUDIT_FILE, False, "the outputs in the audit log and in manifest.json disagree")


def _check_outputs(run: RunFolder, result: Verification) -> None:
    outputs = run.manifest.get("outputs", [])
    failed_before = len(result.problems)
    for record in outputs:
        name = record["path"]
        path = run.path / name
        if not path.is_file():
            result.add(name, False, "missing (listed in manifest.json)")
        elif path.stat().st_size != record["size"] or sha256_file(path) != record["sha256"]:
            result.add(
                name, False, "differs from the SHA-256 in manifest.json: the file was changed"
            )
        else:
            result.add(name, True, "SHA-256 matches manifest.json")
    expected = {o["path"] for o in outputs} | {MANIFEST_FILE, AUDIT_FILE}
    tables_intact = len(result.problems) == failed_before
    for key in ("summary", "report"):  # texts that name the run: hashed, not re-run
        record = run.manifest.get(key)
        if not isinstance(record, dict):
            continue
        name = record["path"]
        expected.add(name)
        path = run.path / name
        if not path.is_file():
            result.add(name, False, "missing (listed in manifest.json)")
        elif sha256_file(path) != record["sha256"]:
            result.add(name, False, "differs from the SHA-256 in manifest.json")
        elif key == "report" and tables_intact:
            _check_report(run, path, record, result)
        elif key == "report":
            result.add(
                name, True, "SHA-256 matches manifest.json (not rendered again: a table differs)"
            )
        else:
            result.add(name, True, "SHA-256 matches manifest.json")
    for extra in sorted(p.name for p in run.path.iterdir() if p.name not in expected):
        result.add(extra, False, "not part of the run (not listed in manifest.json)")


def _check_report(run: RunFolder, path: Path, record: dict[str, Any], result: Verification) -> None:
    """report.html is what the folder's tables render to (with the options it was
    rendered with), when this version wrote it (another version's template differs)."""
    from trdscreen import __version__
    from trdscreen.errors import TrdscreenError
    from trdscreen.report import render_report
    from trdscreen.reportdata import ReportOptions

    written_by = run.manifest.get("versions", {}).get("trdscreen")
    if written_by != __version__:
        result.add(path.name, True, f"SHA-256 matches manifest.json (written by {written_by})")
        return
    options = record.get("options") or {}
    try:
        again = render_report(
            run,
            ReportOptions(
                min_cell=options.get("min_cell"),
                subjects=tuple(options.get("subjects", ())),
                max_subjects=int(options.get("max_subjects", 0)),
                max_rows=int(options.get("max_rows", 0)),
            ),
            checked=False,  # the tables were checked above
        )
    except (TrdscreenError, ValueError, KeyError) as exc:
        result.add(path.name, False, f"cannot be rendered again from the folder: {exc}")
        return
    if again.encode("utf-8") != path.read_bytes():
        result.add(path.name, False, "differs from what the folder's tables render to")
    else:
        result.add(path.name, True, "SHA-256 matches manifest.json; renders again byte for byte")


def _locate(record: dict[str, Any], inputs_dir: Path | None) -> Path:
    if inputs_dir is not None:  # stdin is looked for as stdin.csv
        name = "stdin.csv" if record["path"] == STDIN else Path(record["path"]).name
        return Path(inputs_dir) / name
    return Path(record["resolved_path"])


def _recorded_file(
    label: str, record: dict[str, Any], inputs_dir: Path | None, result: Verification
) -> Path | None:
    """The recorded file (or Parquet folder, or URL) if it still has its SHA-256; else a
    failed check and None."""
    url = url_of(record["path"]) if inputs_dir is None else None
    if url is not None:  # fetched again: the object must still hold the same bytes
        try:
            digest = locate(url).sha256
        except InputError as exc:
            result.add(label, False, f"{exc}; pass --inputs DIR holding a copy")
            return None
        path = Path(url)
    else:
        path = _locate(record, inputs_dir)
        if record["path"] == STDIN and inputs_dir is None:
            result.add(
                label, False, "read from stdin; pass --inputs DIR holding a copy named stdin.csv"
            )
            return None
        if path.is_dir():
            digest = folder_sha256(path, parquet_files(path))[0]
        elif path.is_file():
            digest = sha256_file(path)
        else:
            result.add(label, False, f"not found at {path}; pass --inputs DIR to look elsewhere")
            return None
    if digest != record["sha256"]:
        result.add(
            label,
            False,
            f"{path} changed since the run (SHA-256 {str(digest)[:12]}..., recorded "
            f"{record['sha256'][:12]}...): refusing to re-run on different data",
        )
        return None
    result.add(label, True, f"{path}: SHA-256 matches")
    return path


def _recorded_rules(record: dict[str, Any], label: str, result: Verification):
    """A rule set re-parsed from its normalized form in the manifest, hash and formulary checked."""
    from trdscreen import api
    from trdscreen.errors import RuleError
    from trdscreen.ruleset import RuleSet

    try:
        rules = RuleSet.model_validate(record["normalized"])
    except ValueError:
        result.add(label, False, "the normalized rule set in manifest.json no longer parses")
        return None
    if rules.sha256() != record["normalized_sha256"]:
        result.add(
            label,
            False,
            "the normalized rule set re-parses to a different SHA-256 (a different trdscreen "
            "version reads it differently)",
        )
        return None
    path = Path(record["resolved_path"])
    _check_rule_file(record, rules, path, label, result)
    try:
        formulary = api.formulary_of(rules, path)
    except RuleError as exc:
        result.add(label, False, f"its formulary cannot be loaded: {exc}")
        return None
    if formulary.sha256 != record["formulary"]["sha256"]:
        result.add(
            label,
            False,
            f"formulary ({formulary.source}) differs from the one recorded: refusing to re-run",
        )
        return None
    result.add(label, True, f"rule set {rules.id}: normalized SHA-256 and formulary match")
    return rules, path, formulary


def _check_rule_file(record: dict, rules, path: Path, label: str, result: Verification) -> None:
    """The rule file at its recorded path, normalized again: a file that now says something
    else under the same id is reported even when the manifest was rewritten to match
    itself. A missing file is only noted (runs outlive their rule files)."""
    from trdscreen.errors import RuleError
    from trdscreen.rulefile import read_rule_file

    if not path.is_file():
        result.add(f"{label} file", True, f"{path} is no longer there; the manifest's copy is used")
        return
    try:
        current, _ = read_rule_file(path)
    except RuleError as exc:
        result.add(f"{label} file", False, f"{path} no longer loads: {exc}")
        return
    if current.sha256() == record["normalized_sha256"]:
        result.add(f"{label} file", True, f"{path} still normalizes to the recorded rule set")
    elif current.id == rules.id:
        result.add(
            f"{label} file",
            False,
            f"{path} now holds a different rule set under the same id {rules.id} (normalized "
            f"SHA-256 {current.sha256()[:12]}..., recorded {record['normalized_sha256'][:12]}...)",
        )
    else:
        result.add(f"{label} file", True, f"{path} now holds another rule set ({current.id})")


def _rerun(run: RunFolder, result: Verification, inputs_dir: Path | None) -> None:
    from trdscreen import api
    from trdscreen.errors import InvalidInputData, TrdscreenError
    from trdscreen.output import write_tables

    manifest = run.manifest
    files = {
        record["role"]: _recorded_file(f"input {record['role']}", record, inputs_dir, result)
        for record in manifest["inputs"]
    }
    column_map = None
    if manifest.get("column_map"):
        column_map = _recorded_file("column map", manifest["column_map"], inputs_dir, result)
    adjudications = None
    if manifest.get("adjudications"):
        adjudications = _recorded_file(
            "adjudications", manifest["adjudications"], inputs_dir, result
        )
    main = _recorded_rules(manifest["rules"], "rules", result)
    reports = []
    for record in manifest.get("reports", []):
        loaded_report = _recorded_rules(record, f"report {record['id']}", result)
        if loaded_report is not None:
            rules, path, formulary = loaded_report
            reports.append(api.ReportRules(rules, path, record["file_sha256"], formulary))
    versions = manifest.get("versions", {})
    current = api.versions()
    changed = sorted(k for k in current if versions.get(k) != current[k])
    if changed:
        result.add(
            "versions",
            True,
            "re-run with "
            + ", ".join(f"{k} {current[k]} (run: {versions.get(k)})" for k in changed),
        )
    unavailable = (
        any(path is None for path in files.values())
        or (manifest.get("column_map") and column_map is None)
        or (manifest.get("adjudications") and adjudications is None)
        or main is None
        or len(reports) != len(manifest.get("reports", []))
    )
    if unavailable:
        result.add("re-run", False, "not attempted: the recorded inputs or rules are not available")
        return
    treatments = files["treatments"]
    assert treatments is not None and main is not None  # else unavailable, above
    options = manifest["options"]
    request = request_from_manifest(
        manifest, treatments, files.get("subjects"), column_map, adjudications
    )
    rules, path, _ = main
    try:
        loaded = api.load_with(
            request,
            api.RuleFile(rules, path, manifest["rules"]["file_sha256"]),
            tuple(reports),
            AuditTrail("verify"),
            ("trdscreen", "verify", str(run.path)),
            datetime.now(UTC),
        )
        screened = None
        if request.chunk_rows is None:
            try:
                screened = api.screen(loaded)
            except InvalidInputData:
                pass
    except TrdscreenError as exc:
        result.add("re-run", False, f"failed: {exc}")
        return
    result.reran = True
    declared = manifest.get("site_conventions", {})
    if declared or loaded.conventions:  # the map and rules are checked: this must agree
        same = json.loads(json.dumps(loaded.conventions)) == declared
        result.add(
            "site conventions",
            same,
            "applied as recorded"
            if same
            else "the re-run reads the inputs under other conventions than manifest.json records",
        )
    recorded = {o["path"]: o["sha256"] for o in manifest["outputs"]}
    with tempfile.TemporaryDirectory(prefix="trdscreen-verify-") as folder:
        destination = Destination(
            Path(folder),
            tuple(options["formats"]),
            escape_formulas=bool(options.get("escape_formulas", False)),  # v2 did not escape
            csv_dialect=str(options.get("csv_dialect", "standard")),
            tables=tuple(options["tables"]) if options.get("tables") else None,
        )
        try:
            if request.chunk_rows is None:
                records = write_tables(
                    api.run_tables(loaded, screened), destination.out, destination
                )
                decisions = screened.decisions if screened is not None else None
            else:
                records, decisions = _rerun_streamed(loaded, destination)
        except TrdscreenError as exc:
            result.add("re-run", False, f"failed: {exc}")
            return
        if "xlsx" in destination.formats:
            records = [*records, *write_workbook(destination.out, SHEET_ORDER)]
        again = {r.path: r.sha256 for r in records}
        for name in sorted(set(again) | set(recorded)):
            if again.get(name) == recorded.get(name):
                result.add(f"re-run {name}", True, "identical bytes")
            elif name not in recorded or name not in again:
                where = "the re-run" if name not in again else "the recorded run"
                result.add(f"re-run {name}", False, f"missing from {where}")
            else:
                changes = _decision_changes(run, name, decisions)
                result.add(f"re-run {name}", False, "different bytes" + changes)


def _rerun_streamed(loaded: LoadedRun, destination: Destination):
    """Re-run chunk by chunk into the destination's folder, as the CLI ran it; the written
    records and the re-run's subject_id and decision columns (None for an invalid input)."""
    from trdscreen import api
    from trdscreen.output import write_tables

    folder = destination.out
    assert loaded.request.chunk_rows is not None  # a streamed run is re-run streamed
    validated, records, streamed = api.stream_to(loaded, folder, destination)
    if records is None or streamed is None:  # an invalid input: the issues alone
        loaded.validated = validated
        return write_tables(api.run_tables(loaded, None), folder, destination), None
    fmt = "parquet" if "parquet" in destination.formats else "csv"
    table = read_table_file(
        folder / f"decisions.{fmt}",
        unescape=destination.escape_formulas,
        dialect=destination.csv_dialect,
    )
    return records, table.select(["subject_id", "decision"]).to_pandas()


def _decision_changes(run: RunFolder, name: str, decisions) -> str:
    """For the decisions table: which subjects' decisions differ (keys only)."""
    if decisions is None or not name.startswith("decisions."):
        return ""
    fmt = "parquet" if name.endswith(".parquet") else "csv"
    recorded = run.read("decisions", fmt=fmt)[["subject_id", "decision"]]
    merged = recorded.merge(
        decisions[["subject_id", "decision"]].astype({"decision": "str"}),
        on="subject_id",
        how="outer",
        suffixes=("_run", "_now"),
    )
    differ = merged[merged["decision_run"].astype("str") != merged["decision_now"].astype("str")]
    if differ.empty:
        return " (same decisions; other columns differ)"
    ids = differ["subject_id"].astype("str").tolist()
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    return f"; {len(ids)} subject(s) now get another decision: {shown}"
