"""Benchmark: `trdscreen screen` end to end on synthetic cohorts, with figures per stage.

Not collected by pytest (no test_ prefix): timings belong in printed figures,
not in assertions that flake on a busy machine. Run it on a quiet machine:

    python tests/benchmark.py                   # 1 M subjects, Parquet and CSV input
    python tests/benchmark.py --subjects 250000 # a quicker look
    python tests/benchmark.py --linear          # also 4 M subjects (needs ~20 GiB disk/RAM)
    python tests/benchmark.py --dask --worker-memory 2GiB   # the Dask engine too
    python tests/benchmark.py --dask-only --subjects 4000000 --worker-memory 2GiB
    python tests/benchmark.py --build 10000000  # `trdscreen build` on 10 M drug events only
    python tests/benchmark.py --against ../old  # this tree against another, runs in turns
    python tests/benchmark.py --kernel-profile 4  # cProfile of the kernel of 4 chunks

Each run is the real CLI in a child process (`trdscreen screen ... --format
parquet --json`), so the figures include start-up, imports and the manifest.
Stage boundaries come from the run's own audit log (millisecond timestamps;
the default engine validates, screens and writes chunk by chunk, so those are
one stage, "stream");
resident memory is sampled from /proc every 5 ms, and the total peak is the
child's ru_maxrss (with `--engine dask`: the sampled peak of the process
running trdscreen, and, on their own line, the peaks of the local cluster's
processes). Targets (issue 6) are printed beside the figures.

After each default-engine run, the I/O floor of that run is measured in a fresh
process: pyarrow alone reads and hashes the input files (as every run must, for
the manifest), then writes the run's own output tables (loaded beforehand, text
already dictionary-encoded, the most favourable case) with trdscreen's Parquet
options, two at a time, and hashes them. No validation or screening: what no
implementation writing these tables with pyarrow on this machine can beat.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

STAGES = (  # default engine: (name, audit event that ends it; the last event of that name)
    ("start-up", "run_started"),
    ("rules", "formulary_loaded"),
    ("read", "input_read"),
    # Validation, screening and writing run a chunk of subjects at a time, interleaved,
    # so they are one stage: from the inputs read to every table written.
    ("stream", "inputs_validated"),
    ("manifest", "run_finished"),
)
DASK_STAGES = (  # --engine dask: the client reads and routes, the workers screen buckets,
    # then the client fetches and writes an interval of subjects at a time
    ("start-up", "run_started"),
    ("rules", "formulary_loaded"),
    ("read+route", "input_read"),
    ("buckets", "inputs_validated"),
    ("merge+write", "decisions_computed"),
    ("manifest", "run_finished"),
)
FLOOR_RATIO = 2.0
"""Target (issue 24): a run's wall time at most this times its own I/O floor."""
CPU_PER_MILLION = 10.0
"""Target (issue 24): CPU seconds (user + system) per million synth subjects."""
MIB = 1 << 20


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as handle:
                    children = [int(c) for c in handle.read().split()]
                found += children
                todo += children
        except OSError:
            continue
    return found


TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    """CPU seconds (user + system, every thread) `pid` has used so far."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    except (OSError, IndexError, ValueError):
        return float("nan")


def _rss_sampler(
    pid: int,
    samples: list[tuple[float, int, float]],
    others: dict[int, int],
    stop: threading.Event,
) -> None:
    """RSS and CPU seconds of `pid` every 5 ms; with `others`, the peak RSS of each of
    its descendants (the Dask engine's local cluster: nanny and worker processes),
    every 50 ms."""
    tick = 0
    while not stop.is_set():
        rss = _rss(pid)
        if not rss:
            return
        samples.append((time.time(), rss, _cpu(pid)))
        if tick % 10 == 0:
            for child in _descendants(pid):
                others[child] = max(others.get(child, 0), _rss(child))
        tick += 1
        stop.wait(0.005)


def _stage_ends(audit: Path) -> dict[str, float]:
    ends = {}
    for line in audit.read_text().splitlines():
        event = json.loads(line)
        ends[event["event"]] = datetime.fromisoformat(event["time"]).timestamp()
    return ends


def _machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}"
    )


def synth(subjects: int, fmt: str, folder: Path) -> tuple[int, float]:
    started = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "trdscreen",
            "synth",
            "--n-subjects",
            str(subjects),
            "--out",
            str(folder),
            "--format",
            fmt,
            "--seed",
            "2026",
            "--json",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)["courses"], time.perf_counter() - started


def _child(checkout: Path | None) -> dict:
    """How to start a child that imports trdscreen from `checkout` (None: this one): in
    that folder (`python -m` puts its working folder first on the path) with it on
    PYTHONPATH too. Children may write bytecode (`warm_up`), whatever this shell says."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if checkout is None:
        return {"env": env}
    where = str(checkout.resolve())
    return {"cwd": where, "env": {**env, "PYTHONPATH": where}}


def warm_up(checkout: Path | None) -> str:
    """Import every module a screen uses once, so their bytecode is cached as an installed
    trdscreen's is (pip compiles it at install; an editable install writes it on the
    first run). A shell with PYTHONDONTWRITEBYTECODE set would otherwise have every run
    compile trdscreen's modules again (about 0.1 s of start-up here)."""
    modules = "trdscreen.cli, trdscreen.api, trdscreen.report, trdscreen.verify, trdscreen.build"
    command = [sys.executable, "-c", f"import {modules}"]
    subprocess.run(command, check=True, capture_output=True, **_child(checkout))
    unset = "PYTHONDONTWRITEBYTECODE" in os.environ
    return "bytecode cached before timing" + (
        " (this shell sets PYTHONDONTWRITEBYTECODE; the runs are started without it)"
        if unset
        else ""
    )


def screen(cohort: Path, out: Path, extra: list[str], checkout: Path | None = None) -> dict:
    """One CLI run; returns wall time, per-stage seconds and peak RSS, total peak RSS.
    With `checkout`, the trdscreen of that source tree runs (`--against`)."""
    command = [
        sys.executable,
        "-m",
        "trdscreen",
        "screen",
        str(cohort.resolve()),
        "--out",
        str(out.resolve()),
        "--format",
        "parquet",
        "--json",
        "--force",
        *extra,
    ]
    samples: list[tuple[float, int, float]] = []
    others: dict[int, int] = {}
    stop = threading.Event()
    load = os.getloadavg()[0]
    started = time.time()
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_child(checkout)
    )
    sampler = threading.Thread(target=_rss_sampler, args=(child.pid, samples, others, stop))
    sampler.start()
    _pid, status, usage = os.wait4(child.pid, 0)
    ended = time.time()
    stop.set()
    sampler.join()
    stdout, stderr = child.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"screen failed: {stderr.decode()[-2000:]}")
    ends = _stage_ends(out / "audit.jsonl")
    cpu_total = usage.ru_utime + usage.ru_stime

    def cpu_at(moment: float) -> float:  # the last sample at or before `moment`
        before = [c for t, _, c in samples if t <= moment and c == c]
        return before[-1] if before else 0.0

    stages, begin = [], started
    for name, event in DASK_STAGES if "dask" in extra else STAGES:
        end = ends[event]
        peak = max((rss for t, rss, _ in samples if begin <= t <= end), default=0)
        stages.append((name, end - begin, peak, cpu_at(end) - cpu_at(begin)))
        begin = end
    peak_tail = max((rss for t, rss, _ in samples if t >= begin), default=0)
    stages.append(("exit", ended - begin, peak_tail, cpu_total - cpu_at(begin)))
    return {
        "wall": ended - started,
        "cpu": cpu_total,
        "load": (load, os.getloadavg()[0]),
        "stages": stages,
        # Linux reports KiB, the largest of the process and its descendants: with a
        # local Dask cluster that is a worker, so the client's own peak is sampled.
        "peak": max((rss for _, rss, _ in samples), default=0)
        if others
        else usage.ru_maxrss * 1024,
        "counts": json.loads(stdout)["counts"],
        "others": sorted(others.values(), reverse=True),
    }


BUILD_DRUGS = ("sertraline", "venlafaxine", "fluoxetine", "citalopram", "mirtazapine",
               "aripiprazole", "Zoloft")  # fmt: skip


def build_events(events: int, folder: Path) -> None:
    """`events` drug events, ten per subject over two years: fills of 28, 30 or 56 days or
    of unknown supply (the next issue decides), a brand name among the generics."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(23)
    subject = np.arange(events) // 10
    day = np.datetime64("2022-01-01") + rng.integers(0, 700, events).astype("timedelta64[D]")
    table = pa.table({
        "subject_id": pa.array(np.char.add("P", subject.astype(str))),
        "drug": pa.array(np.asarray(BUILD_DRUGS)[rng.integers(0, len(BUILD_DRUGS), events)]),
        "event_date": pa.array(day.astype("datetime64[D]")),
        "days_supply": pa.array(rng.choice([28.0, 30.0, 56.0, np.nan], events), from_pandas=True),
        "daily_dose_mg": pa.array(rng.choice([20.0, 50.0, 100.0, 150.0], events)),
    })  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / "drug_events.parquet")


def build_run(events: int, work: Path) -> None:
    """One `trdscreen build` in a child process: wall and CPU seconds, peak memory."""
    folder = work / f"events-{events}"
    if not folder.exists():
        begin = time.perf_counter()
        build_events(events, folder)
        print(f"\nwrote {events:,} drug events in {time.perf_counter() - begin:.1f} s")
    command = [sys.executable, "-m", "trdscreen", "build", str(folder), "--out",
               str(work / f"built-{events}"), "--force", "--json"]  # fmt: skip
    started = time.time()
    child = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **_child(None)
    )
    _pid, status, usage = os.wait4(child.pid, 0)
    wall = time.time() - started
    stdout, stderr = child.communicate()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed: {stderr.decode()[-2000:]}")
    counts = json.loads(stdout)["event_attrition"]
    cpu = usage.ru_utime + usage.ru_stime
    print(
        f"build {events:,} events -> {counts['supply_runs']:,} rows, {counts['courses']:,} "
        f"courses: {wall:.1f} s wall, {cpu:.1f} CPU-s, peak {usage.ru_maxrss / 1024:.0f} MiB "
        f"({events / wall / 1e6:.2f} M events/s; target: 10 M events well under 60 s); "
        f"load average {os.getloadavg()[0]:.1f} (wall time is noise on a busy machine)"
    )


def io_floor(cohort: Path, run: Path) -> dict[str, float]:
    """Seconds to read and hash the inputs, and to write and hash the run's output
    tables, with pyarrow alone (see the module's docstring). Runs in this process."""
    import hashlib
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from trdscreen.output import ROW_GROUP_ROWS, parquet_options

    def digest(path: Path) -> str:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()

    begin = time.perf_counter()
    for path in sorted(p for p in cohort.iterdir() if p.suffix in (".csv", ".parquet")):
        digest(path)  # the inputs only (synth also writes its manifest.json beside them)
        if path.suffix == ".parquet":
            pq.read_table(path)
        else:
            with open(path) as handle:
                header = handle.readline().rstrip("\n").split(",")
            types = pacsv.ConvertOptions(column_types={name: pa.string() for name in header})
            pacsv.read_csv(path, convert_options=types)
    read = time.perf_counter() - begin

    tables = {}
    for path in sorted(run.glob("*.parquet")):
        table = pq.read_table(path).combine_chunks()
        for index, field in enumerate(table.schema):
            column = table.column(index)
            # Text of few values arrives dictionary-encoded, as trdscreen's categoricals do.
            if pa.types.is_string(field.type) and pc.count_distinct(column).as_py() * 10 < len(
                column
            ):
                table = table.set_column(index, field.name, column.dictionary_encode())
        tables[path.name] = table.combine_chunks()
    scratch = Path(tempfile.mkdtemp(prefix="trdscreen-floor-"))

    def write(name: str) -> None:
        table = tables[name]
        options = parquet_options(table.schema)
        with pq.ParquetWriter(scratch / name, table.schema, **options) as writer:
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
        digest(scratch / name)

    try:
        begin = time.perf_counter()
        biggest_first = sorted(tables, key=lambda name: -tables[name].nbytes)
        with ThreadPoolExecutor(max_workers=2) as pool:
            list(pool.map(write, biggest_first))
        written = time.perf_counter() - begin
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"read": read, "write": written}


def report_floor(run: dict, floor: dict[str, float], subjects: int) -> None:
    """The run against the I/O floor measured right after it, and the CPU target."""
    total = floor["read"] + floor["write"]
    ratio = run["wall"] / total
    cpu_limit = CPU_PER_MILLION * subjects / 1e6
    print(
        f"  I/O floor: read+hash inputs {floor['read']:.2f} s, write+hash these tables "
        f"{floor['write']:.2f} s: {total:.2f} s; the run took {ratio:.2f}x the floor "
        f"(target <= {FLOOR_RATIO:.1f}x: {'met' if ratio <= FLOOR_RATIO else 'NOT met'}), "
        f"{run['cpu']:.1f} CPU-s (target <= {cpu_limit:.1f}: "
        f"{'met' if run['cpu'] <= cpu_limit else 'NOT met'})"
    )


def report(label: str, rows: int, run: dict) -> None:
    print(f"\n{label}: {rows:,} course rows, {run['counts']['subjects']['total']:,} subjects")
    print(f"  {'stage':<10} {'seconds':>8} {'CPU-s':>7} {'rows/s':>12} {'peak RSS MiB':>13}")
    for name, seconds, peak, cpu in run["stages"]:
        rate = f"{rows / seconds:,.0f}" if seconds > 0 else "-"
        print(f"  {name:<10} {seconds:8.2f} {cpu:7.2f} {rate:>12} {peak / MIB:13.0f}")
    limit = 250 * rows / 1e6 + 150
    print(
        f"  {'total':<10} {run['wall']:8.2f} {run['cpu']:7.2f} {rows / run['wall']:12,.0f} "
        f"{run['peak'] / MIB:13.0f}   memory target <= {limit:,.0f} MiB "
        f"({'met' if run['peak'] / MIB <= limit else 'NOT met'}); load average "
        f"{run['load'][0]:.2f} at start, {run['load'][1]:.2f} at end"
    )
    if run["others"]:
        peaks = ", ".join(f"{rss / MIB:,.0f}" for rss in run["others"])
        print(f"  peak RSS of the local cluster's processes (MiB; nannies are small): {peaks}")


def report_spread(runs: list[dict]) -> None:
    """The spread of repeated runs of one screen (the one reported has the median CPU)."""

    def spread(values: list[float], unit: str) -> str:
        values = sorted(values)
        return f"{values[0]:,.1f} / {values[len(values) // 2]:,.1f} / {values[-1]:,.1f} {unit}"

    print(
        f"  {len(runs)} runs, min / median / max: "
        f"{spread([r['wall'] for r in runs], 's')}, {spread([r['cpu'] for r in runs], 'CPU-s')}, "
        f"{spread([r['peak'] / MIB for r in runs], 'MiB')}"
    )


def kernel_profile(cohort: Path, count: int, top: int = 30) -> None:
    """The kernel of `count` chunks of `cohort` (validation, screening and the tables
    made into Arrow, as the writer gets them), in this process and one thread, under
    cProfile: CPU per chunk and input row, and the trdscreen steps by cumulative time.
    A sampling profiler of the real run (py-spy) counts a thread waiting for the GIL as
    busy, so it overstates Python steps while the writer runs; this does not."""
    import cProfile
    import pstats
    from itertools import islice

    from trdscreen.api import load, screening_of
    from trdscreen.manifest import ScreenRequest
    from trdscreen.output import canonical_dictionaries, to_arrow
    from trdscreen.pipeline import decide_part
    from trdscreen.stream import STREAMED, chunks

    loaded = load(ScreenRequest(input=cohort), ["benchmark"])
    screening = screening_of(loaded)
    treatments, subjects = loaded.tables()
    pieces = list(islice(chunks(treatments, subjects, 1 << 18), count))
    rows = sum(piece.rows for piece, _ in pieces)

    def work() -> None:
        for piece, people in pieces:
            tables = decide_part(piece, people, screening).result.tables()
            for name in STREAMED:
                canonical_dictionaries(to_arrow(tables[name]))

    begin = time.process_time()
    work()
    cpu = time.process_time() - begin
    print(
        f"\nkernel of {len(pieces)} chunks ({rows:,} input rows), one thread: {cpu:.2f} CPU-s, "
        f"{cpu / len(pieces) * 1000:.0f} ms a chunk, {cpu / rows * 1e6:.2f} microseconds a row"
    )
    profile = cProfile.Profile()
    profile.runcall(work)
    stats = pstats.Stats(profile)
    steps = sorted(
        ((entry[3], entry[1], f"{path.split('trdscreen/')[-1]}:{line} {name}")
         for (path, line, name), entry in stats.stats.items()  # type: ignore[attr-defined]
         if "/trdscreen/" in path),
        reverse=True,
    )  # fmt: skip
    print(f"  {'cumulative s':>12} {'calls':>6}  step (under cProfile, which adds its own cost)")
    for cumulative, calls, where in steps[:top]:
        print(f"  {cumulative:12.3f} {calls:6d}  {where}")


def same_tables(one: Path, other: Path) -> str:
    """Whether two run folders hold the same table files, byte for byte."""
    names = sorted(p.name for p in one.iterdir() if p.suffix in (".parquet", ".csv"))
    if names != sorted(p.name for p in other.iterdir() if p.suffix in (".parquet", ".csv")):
        return "NOT the same tables"
    differ = [n for n in names if (one / n).read_bytes() != (other / n).read_bytes()]
    return f"differ: {', '.join(differ)}" if differ else f"all {len(names)} byte-identical"


def compare(source: Path, work: Path, label: str, options: list[str], against: Path,
            pairs: int) -> None:  # fmt: skip
    """This checkout against another, run by run in turns (the machine's drift then falls on
    both alike): median wall, CPU and peak of each, and whether their tables are the same."""
    here, there = work / f"run-{label}-here", work / f"run-{label}-against"

    def version(checkout: Path | None) -> str:
        command = [sys.executable, "-m", "trdscreen", "--version"]
        done = subprocess.run(command, capture_output=True, text=True, **_child(checkout))
        return done.stdout.strip()

    ours, theirs = f"this checkout ({version(None)})", f"{against} ({version(against)})"
    runs: dict[str, list[dict]] = {ours: [], theirs: []}
    for _ in range(pairs):
        runs[ours].append(screen(source, here, options))
        runs[theirs].append(screen(source, there, options, checkout=against))
    print(f"\n{label}: {pairs} runs each, in turns")
    for name, done in runs.items():
        mid = len(done) // 2
        wall = sorted(r["wall"] for r in done)
        cpu = sorted(r["cpu"] for r in done)
        peak = sorted(r["peak"] / MIB for r in done)
        print(
            f"  {name}: median {wall[mid]:.2f} s ({wall[0]:.2f}-{wall[-1]:.2f}), "
            f"{cpu[mid]:.2f} CPU-s ({cpu[0]:.2f}-{cpu[-1]:.2f}), {peak[mid]:,.0f} MiB"
        )
    print(f"  tables: {same_tables(here, there)}")


def shuffled(cohort: Path, folder: Path) -> None:
    """The cohort as an unsorted export: every table's rows in a random order."""
    import numpy as np
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(24)
    for path in cohort.glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.take(rng.permutation(table.num_rows)), folder / path.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--formats", default="parquet,csv")
    parser.add_argument("--linear", action="store_true", help="also run 4x the subjects")
    parser.add_argument("--dask", action="store_true", help="also run --engine dask")
    parser.add_argument("--dask-only", action="store_true", help="run --engine dask only")
    parser.add_argument("--worker-memory", default="3GiB")
    parser.add_argument("--chunk-rows", type=int, help="passed to screen (default engine)")
    parser.add_argument("--keep", type=Path, help="keep cohorts and runs in this folder")
    parser.add_argument("--io-floor", nargs=2, type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--build", type=int, metavar="EVENTS", help="time `build` only")
    parser.add_argument(
        "--no-shuffled", dest="shuffled", action="store_false",
        help="skip the unsorted (shuffled) copy of the Parquet cohort",
    )  # fmt: skip
    parser.add_argument(
        "--repeat", type=int, default=1, metavar="N",
        help="run each screen N times and report the one with the median CPU time, with the "
        "spread (this machine's neighbours move single figures by 10-20 %%)",
    )  # fmt: skip
    parser.add_argument(
        "--extra", default="", help='more options for `screen`, e.g. --extra="--threads 1"'
    )
    parser.add_argument(
        "--kernel-profile",
        type=int,
        metavar="CHUNKS",
        help="profile the kernel of this many chunks of the Parquet cohort in one thread "
        "(cProfile) and stop",
    )
    parser.add_argument(
        "--against", type=Path, metavar="CHECKOUT",
        help="compare with the trdscreen of another source tree (a `git worktree` of an "
        "earlier commit): runs in turns, --repeat pairs (at least 3), medians, and whether "
        "the tables are byte-identical; no floor",
    )  # fmt: skip
    args = parser.parse_args()
    if args.io_floor:  # the child process measuring one run's I/O floor
        print(json.dumps(io_floor(*args.io_floor)))
        return

    print(f"machine: {_machine()}")
    print(warm_up(None))
    if args.against:
        warm_up(args.against)
    if args.build:
        work = args.keep or Path(tempfile.mkdtemp(prefix="trdscreen-bench-"))
        try:
            build_run(args.build, work)
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
        return
    started = time.perf_counter()
    for flag in ("--version", "--help"):
        begin = time.perf_counter()
        command = [sys.executable, "-m", "trdscreen", flag]
        subprocess.run(command, check=True, capture_output=True, **_child(None))
        print(f"trdscreen {flag}: {time.perf_counter() - begin:.3f} s (target < 0.3 s)")

    work = args.keep or Path(tempfile.mkdtemp(prefix="trdscreen-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.kernel_profile:
        cohort = work / f"cohort-{args.subjects}-parquet"
        try:
            if not cohort.exists():
                synth(args.subjects, "parquet", cohort)
            kernel_profile(cohort, args.kernel_profile)
        finally:
            if args.keep is None:
                shutil.rmtree(work, ignore_errors=True)
        return
    figures: dict[tuple, dict] = {}
    try:
        sizes = [args.subjects] + ([4 * args.subjects] if args.linear else [])
        for fmt in args.formats.split(","):
            for n in sizes:
                cohort = work / f"cohort-{n}-{fmt}"
                if not cohort.exists():
                    rows, seconds = synth(n, fmt, cohort)
                    print(f"\nsynth {n:,} subjects as {fmt}: {rows:,} rows in {seconds:.1f} s")
                variants: list[tuple[str, Path, list[str]]] = [("", cohort, [])]
                if fmt == "parquet" and args.shuffled and n == args.subjects:
                    mixed = work / f"cohort-{n}-{fmt}-shuffled"
                    if not mixed.exists():
                        shuffled(cohort, mixed)
                    variants.append((", shuffled rows", mixed, []))
                if fmt == "parquet" and n == args.subjects:
                    variants.append((", --tables decisions", cohort, ["--tables", "decisions"]))
                for index, (label, source, options) in enumerate(variants):
                    if args.dask_only:
                        break
                    chunking = ["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else []
                    if args.against is not None:
                        compare(
                            source, work, f"{n}-{fmt}-{index}",
                            [*chunking, *options, *shlex.split(args.extra)],
                            args.against, max(3, args.repeat),
                        )  # fmt: skip
                        continue
                    out = work / f"run-{n}-{fmt}-{index}"
                    runs = [
                        screen(source, out, [*chunking, *options, *shlex.split(args.extra)])
                        for _ in range(max(1, args.repeat))
                    ]
                    run = sorted(runs, key=lambda r: r["cpu"])[len(runs) // 2]
                    rows = run["counts"]["courses"]["total"]
                    report(f"{fmt} input{label}, default engine", rows, run)
                    if len(runs) > 1:
                        report_spread(runs)
                    floor = subprocess.run(
                        [sys.executable, __file__, "--io-floor", str(source), str(out)],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    report_floor(run, json.loads(floor.stdout), n)
                    figures[(fmt + label, n)] = run
                if args.dask or args.dask_only:
                    run = screen(
                        cohort,
                        work / f"run-{n}-{fmt}-dask",
                        ["--engine", "dask", "--worker-memory", args.worker_memory],
                    )
                    rows = run["counts"]["courses"]["total"]
                    report(f"{fmt} input, --engine dask (2 workers)", rows, run)
                    figures[(fmt + " dask", n)] = run
        if args.linear:
            for (label, n), small in list(figures.items()):
                big = figures.get((label, 4 * n))
                if n != args.subjects or big is None:
                    continue
                wall, cpu = big["wall"] / small["wall"], big["cpu"] / small["cpu"]
                worst = max(wall, cpu)
                print(
                    f"\nlinear scaling ({label}): 4x subjects took {wall:.2f}x the time and "
                    f"{cpu:.2f}x the CPU (target <= 4.5x: {'met' if worst <= 4.5 else 'NOT met'})"
                )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nbenchmark wall time {time.perf_counter() - started:.0f} s (own peak {own:.0f} MiB)")


if __name__ == "__main__":
    main()
