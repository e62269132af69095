"""Process-wide memory settings for screening millions of rows (called by the CLI).

A screen allocates and frees many column-sized temporaries (tens of MB each).
With glibc's defaults each one is a fresh mmap that is returned to the kernel
when freed and faulted in again, page by page, for the next column; numpy also
asks for transparent huge pages, which on a machine with THP defrag set to
`madvise` may stall in page compaction. Keeping freed memory in the process and
using normal pages cut a 1M-subject screen from about 26 s to 19 s on the
benchmark machine (kernel time from 11 s to 6 s), for about 10 % more peak
memory. Library callers (trdscreen.api) keep their process's own settings.

Arrow's memory goes through jemalloc where the pyarrow build has it (Linux and
macOS wheels): mimalloc, Arrow's default, keeps more freed memory in the process,
and the 1M-subject benchmark peaked about 80 MiB higher with it (1,253 MiB
against 1,177 MiB), at the same speed.

The heap is one arena for every thread: glibc gives each thread that allocates its own
arena (up to eight per core), and since freed memory stays in the process, each of the
chunk kernels and the writer kept its own high-water mark. One shared arena peaked
about 150 MiB lower on the 1M-subject benchmark with two kernels (1,143 to 1,181 MiB
against 1,301 to 1,307), at the same CPU time (lock waits are rare: the large blocks
are a few per column).

Since the heap keeps what is freed, a run ends its stream holding its chunks' high-water
mark, and the report read after it (the decisions table back from disk) used to add
its own memory on top: the run's peak came at its end (a shuffled 1M-subject export:
1,240 MiB after a stream that peaked at 1,178). `release_freed` gives the freed memory
back once the stream is done (1,052 to 1,103 MiB for the report instead of 1,082 to
1,179); trimming after every chunk too lowered the stream's own peak by about 40 MiB
but cost 1.5 to 3 CPU-s of pages faulted in again, so it is not done.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def _glibc(name: str):
    """A function of glibc, the C library the process already runs on (no search for
    the file), or None: not Linux, or another C library (which lacks these)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None


_tuned = False
"""Whether this process took `tune_for_large_tables` (the CLI does; a library caller's
process keeps its own settings, and `release_freed` leaves its memory alone)."""


def tune_for_large_tables() -> None:
    """Keep freed memory for reuse in one heap, skip huge-page advice, and give Arrow jemalloc;
    silently a no-op where the C library, numpy or pyarrow does not offer the setting.
    Before numpy is loaded, its BLAS gets one thread: trdscreen does no linear algebra,
    and OpenBLAS's worker threads, started with numpy, spent about 0.1 CPU-second of a
    1M-subject screen waiting for work."""
    global _tuned
    _tuned = True
    if "numpy" not in sys.modules:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    mallopt = _glibc("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, 1 << 30)  # blocks below 1 GiB come from the heap
        mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)  # and stay there when freed
        mallopt(_M_TOP_PAD, 256 << 20)
        mallopt(_M_ARENA_MAX, 1)  # every thread's blocks in one heap
    import pyarrow as pa

    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
    except NotImplementedError:  # a build without jemalloc keeps its default
        pass
    try:
        from numpy._core.multiarray import _set_madvise_hugepage  # type: ignore[attr-defined]
    except ImportError:
        return
    _set_madvise_hugepage(False)


def release_freed() -> None:
    """In a tuned process, give the memory freed so far back to the system: glibc's heap
    (`malloc_trim`) and Arrow's pool; silently a no-op where neither offers it."""
    if not _tuned:
        return
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
