"""The output folder: which one may be written or replaced, and writing it atomically.

A run (or a synthetic cohort) is written into a hidden draft beside `--out` and
renamed into place at the end, so a failed run leaves nothing. Safety rules:

- An existing folder is replaced (with `force`) only when trdscreen wrote it: its
  `manifest.json` says `"tool": "trdscreen"` and lists every other entry in it
  (regular files only). An empty folder may always be used. Anything else is
  refused with OutputExistsError, whatever the flag.
- `--out` may not be a symbolic link, the working folder, the file-system root or
  the home folder, and may not be equal to, above, or inside an input folder
  (nor equal to or above an input file).
- The final rename never replaces a folder that appeared meanwhile (Linux
  `renameat2(RENAME_NOREPLACE)`; elsewhere a rename, which POSIX refuses onto a
  non-empty folder): of two runs with the same new `--out`, one wins and the
  other gets OutputExistsError. A `force` swap happens under an exclusive lock
  on the parent folder, with SIGINT/SIGTERM held until the swap is complete.
- Drafts carry the owning host, process id and start time in their name; the
  next run in the same parent removes drafts whose process is gone and restores
  a folder a killed swap had moved aside, and says so (`remove_stale_drafts`).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from trdscreen.errors import Interrupted, OutputExistsError, OutputWriteError
from trdscreen.sources import MANIFEST_FILE

DRAFT_TAG = "trdscreen"
MAX_MANIFEST_BYTES = 64 << 20
"""No manifest trdscreen writes is larger; a larger one is not read."""


# --------------------------------------------------------------------------- what may be used


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def refuse_unsafe_out(out: Path, inputs: Iterable[Path | None] = ()) -> None:
    """Refuse an --out that is a symlink, `.`, `/`, home, or overlaps an input's place."""
    out = Path(out)
    if out.is_symlink():
        raise OutputExistsError(
            f"{out}: is a symbolic link; trdscreen does not write through or replace links. "
            "Give the real folder as --out"
        )
    where = _resolved(out)
    special = {Path("/"): "the file-system root", _resolved(Path.cwd()): "the working folder"}
    home = os.environ.get("HOME")
    if home:
        special.setdefault(_resolved(Path(home)), "the home folder")
    if where in special:
        raise OutputExistsError(
            f"{out}: is {special[where]}; --out must be a folder of its own (e.g. --out run-1)"
        )
    for given in inputs:
        if given is None:
            continue
        source = _resolved(Path(given))
        if _is_within(source, where):
            raise OutputExistsError(
                f"{out}: holds the input {given}; choose an --out outside the input's folder"
            )
        if source.is_dir() and _is_within(where, source):
            raise OutputExistsError(
                f"{out}: is inside the input folder {given}; choose an --out outside it"
            )


def _listed_entries(manifest: dict) -> set[str] | None:
    """The entries a trdscreen manifest accounts for, or None when it is not one."""
    if manifest.get("tool") != "trdscreen":
        return None
    names = {MANIFEST_FILE}
    outputs = manifest.get("outputs")
    if not isinstance(outputs, list):
        return None
    for record in outputs:
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            return None
        names.add(record["path"])
    for key in ("audit", "summary", "report"):
        entry = manifest.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            names.add(entry["path"])
    return names


def _run_manifest(folder: Path) -> tuple[str | None, dict | None]:
    """(why `folder` is not one trdscreen wrote, or None; its manifest when it is one):
    (None, None) for an empty folder."""
    entries = list(os.scandir(folder))
    if not entries:
        return None, None
    manifest = folder / MANIFEST_FILE
    if not any(e.name == MANIFEST_FILE for e in entries):
        return "it has no manifest.json", None
    try:
        if not stat.S_ISREG(manifest.lstat().st_mode):
            return "its manifest.json is not a regular file", None
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return "its manifest.json is too large to be trdscreen's", None
        data = json.loads(manifest.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return "its manifest.json is not trdscreen's", None
    listed = _listed_entries(data) if isinstance(data, dict) else None
    if listed is None:
        return "its manifest.json is not trdscreen's", None
    for entry in sorted(entries, key=lambda e: e.name):
        if entry.name not in listed:
            return "it holds entries its manifest does not list", None
        if not entry.is_file(follow_symlinks=False):
            return "it holds an entry that is not a regular file", None
    return None, data


def foreign_entry(folder: Path) -> str | None:
    """Why `folder` is not one trdscreen wrote (None when it is, or when it is empty)."""
    return _run_manifest(folder)[0]


def _invalid_input(manifest: dict | None) -> bool:
    """A run folder trdscreen wrote for an input that failed validation: the next run may
    replace it without --force, as it holds only the issues of inputs being fixed."""
    return manifest is not None and manifest.get("status") == "invalid_input"


def failed_run(folder: Path) -> bool:
    """True when `folder` is a run folder trdscreen wrote for an input that failed
    validation (its manifest says `invalid_input`)."""
    folder = Path(folder)
    try:
        return folder.is_dir() and _invalid_input(_run_manifest(folder)[1])
    except OSError:
        return False


def prepare_out_dir(out: Path, force: bool, inputs: Iterable[Path | None] = ()) -> bool:
    """Refuse an --out that may not be used (see the module docstring) or cannot be written.
    Returns whether an existing folder is to be replaced: with --force, or without it the
    folder of a failed run (`failed_run`)."""
    out = Path(out)
    refuse_unsafe_out(out, inputs)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: exists and is not a folder; choose another --out")
    if out.is_dir():
        force = _refuse_existing(out, force)
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputWriteError(f"{out}: {ancestor} is a file, not a folder; choose another --out")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputWriteError(f"{out}: folder {ancestor} is not writable; choose another --out")
    return force


def _refuse_existing(out: Path, force: bool) -> bool:
    try:
        why, manifest = _run_manifest(out)
    except OSError as exc:
        raise OutputExistsError(f"{out}: cannot read the folder ({exc.strerror})") from None
    if why is not None:
        raise OutputExistsError(
            f"{out}: folder exists and was not written by trdscreen ({why}); "
            "--force replaces only a trdscreen run folder or an empty folder. Choose another --out"
        )
    force = force or _invalid_input(manifest)  # the folder of a failed run is replaced
    if not force and any(out.iterdir()):
        raise OutputExistsError(
            f"{out}: folder exists and is not empty; choose another --out or pass --force "
            "(which replaces it: it is a trdscreen folder)"
        )
    return force


# --------------------------------------------------------------------------- drafts


_DRAFT = re.compile(
    rf"^\.(?P<target>.+)\.{DRAFT_TAG}-(?P<kind>draft|old)-(?P<host>[0-9a-f]{{8}})-"
    r"(?P<pid>[0-9]+)-(?P<start>[0-9]*)-[0-9a-f]{12}\.tmp$",
    re.S,
)


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), '' elsewhere: with the
    process id it tells a live owner from a new process that reused the id."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
        return text.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _draft_name(out: Path, kind: str) -> str:
    """A hidden name beside `out` that says who owns it: host, process id and start time."""
    pid = os.getpid()
    owner = f"{_host_tag()}-{pid}-{_process_start(pid)}"
    return f".{out.name}.{DRAFT_TAG}-{kind}-{owner}-{secrets.token_hex(6)}.tmp"


def _owner_gone(host: str, pid: int, start: str) -> bool:
    """Whether a draft's process has ended (a draft of another host is never judged gone)."""
    if host != _host_tag():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return bool(start) and _process_start(pid) not in ("", start)


def remove_stale_drafts(parent: Path) -> list[str]:
    """Remove the drafts in `parent` whose process is gone (killed with -9, or its machine
    crashed), and put back a folder that a killed `--force` swap had moved aside (or
    remove it when a new folder took its place). Returns one line per action."""
    done: list[str] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return done
    for entry in entries:
        match = _DRAFT.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False):
            continue
        if not _owner_gone(match["host"], int(match["pid"]), match["start"]):
            continue
        path, target = Path(entry.path), Path(parent) / match["target"]
        pid = match["pid"]
        try:
            if match["kind"] == "old" and not os.path.lexists(target):
                rename_no_replace(path, target)
                done.append(f"restored {target}: a run replacing it (process {pid}) was killed")
                continue
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)
        what = "the folder it was replacing" if match["kind"] == "old" else "its unfinished draft"
        done.append(f"removed {path}: {what}; the run (process {pid}) had died")
    return done


# --------------------------------------------------------------------------- renames


_RENAME_NOREPLACE = 1
_AT_FDCWD = -100
_renameat2: Any = None  # ctypes function, False where unavailable, None: not looked up


def _libc_renameat2():
    global _renameat2
    if _renameat2 is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            function = libc.renameat2
            function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
            function.argtypes += [ctypes.c_uint]
            function.restype = ctypes.c_int
            _renameat2 = function
        except (OSError, AttributeError):
            _renameat2 = False
    return _renameat2


def rename_no_replace(source: Path, target: Path) -> None:
    """Rename a folder to `target`, failing with FileExistsError when `target` exists.

    Linux: one atomic renameat2(RENAME_NOREPLACE). Elsewhere (or on a file system
    without it): a check, then rename, which POSIX refuses onto a non-empty folder,
    so a finished run folder that appeared in between is never replaced.
    """
    function = _libc_renameat2()
    if function:
        result = function(_AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target),
                          _RENAME_NOREPLACE)  # fmt: skip
        if result == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(target))
    if os.path.lexists(target):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target))
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(exc.errno, exc.strerror, str(target)) from None
        raise


@contextmanager
def _parent_lock(parent: Path) -> Iterator[None]:
    """An exclusive lock on the parent folder for a swap (flock; nothing where unavailable)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def _signals_held() -> Iterator[list[int]]:
    """SIGINT and SIGTERM that arrive in the block are noted, not acted on: the block runs
    to its end, and the caller reads the list. Python runs signal handlers in the main
    thread whichever thread the signal reaches, so swapping the handlers holds them
    where blocking the signal in one thread would not (elsewhere: nothing is held)."""
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return
    wanted = (signal.SIGINT, signal.SIGTERM)
    previous = {number: signal.signal(number, lambda n, _: noted.append(n)) for number in wanted}
    try:
        yield noted
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _write_failed(out: Path, exc: OSError) -> OutputWriteError:
    reason = exc.strerror or str(exc).splitlines()[0]
    return OutputWriteError(
        f"{out}: writing the run folder failed ({reason}); nothing was left behind. "
        "Free disk space or choose another --out"
    )


def _lost_race(out: Path) -> OutputExistsError:
    return OutputExistsError(
        f"{out}: another run wrote this folder while this one ran; this run's tables were "
        "discarded and the other run's folder was kept. Choose another --out"
    )


def _put_in_place(draft: Path, out: Path, force: bool) -> Path | None:
    """Rename the finished draft to `out`; with `force`, swap out the trdscreen folder there
    (checked again now, under the parent's lock). Returns the old folder's new name."""
    with _parent_lock(out.parent):
        if not out.is_symlink() and out.is_dir():
            try:
                out.rmdir()  # an empty folder is taken (rmdir refuses one that is not empty)
            except OSError:
                pass
        if not os.path.lexists(out):
            try:
                rename_no_replace(draft, out)
            except FileExistsError:
                raise _lost_race(out) from None
            return None
        if not force:
            raise _lost_race(out)
        refuse_unsafe_out(out)
        if not out.is_dir():
            raise OutputExistsError(f"{out}: exists and is not a folder; choose another --out")
        _refuse_existing(out, force)
        old = out.parent / _draft_name(out, "old")
        os.rename(out, old)
        try:
            rename_no_replace(draft, out)
        except BaseException:
            os.rename(old, out)
            raise
        return old


@contextmanager
def atomic_folder(out: Path, force: bool, inputs: Iterable[Path | None] = ()) -> Iterator[Path]:
    """Write a folder atomically: into a hidden draft beside `out`, renamed at the end.

    If the body raises (an error, a full disk, Ctrl-C), the draft is removed and
    `out` is untouched; an OSError becomes OutputWriteError. SIGINT and SIGTERM
    wait while the folder is put in place; one that came meanwhile then raises
    Interrupted saying that the folder is complete and in place.
    """
    out = Path(out)
    force = prepare_out_dir(out, force, list(inputs))  # or the folder of a failed run
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_failed(out, exc) from None
    remove_stale_drafts(out.parent)
    # The draft is named before it is made, inside the block that removes it: a Ctrl-C
    # or SIGTERM that lands just after it is made still finds its name.
    draft = out.parent / _draft_name(out, "draft")
    placed = False
    try:
        draft.mkdir(mode=0o700)
        yield draft
        with _signals_held() as noted:
            old = _put_in_place(draft, out, force)
            placed = True
        _remove(old)
        if noted:
            raise _interrupted_in_place(out)
    except KeyboardInterrupt:  # a signal before the swap, or just after it
        if not placed:
            shutil.rmtree(draft, ignore_errors=True)
            raise
        _remove(old)
        raise _interrupted_in_place(out) from None
    except OSError as exc:
        if not placed:
            shutil.rmtree(draft, ignore_errors=True)
        raise _write_failed(out, exc) from None
    except BaseException:
        if not placed:
            shutil.rmtree(draft, ignore_errors=True)
        raise


def _interrupted_in_place(out: Path) -> Interrupted:
    return Interrupted(
        f"interrupted (Ctrl-C or SIGTERM) as the run finished: the run folder {out} is "
        "complete and in place"
    )


def _remove(old: Path | None) -> None:
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def claim_out_file(out: Path, force: bool, ours: bytes, run_folder: Path) -> None:
    """Before writing a single-file --out (a report, a worklist): refuse a file that
    exists without --force, and even with it one that does not begin as trdscreen
    writes that kind of file (`ours` among its first bytes: never replace a user's
    file), a folder, or a path inside the run folder (that would alter the run)."""
    out = Path(out)
    if out.absolute().parent.resolve() == Path(run_folder).resolve():
        raise OutputExistsError(
            f"{out}: inside the run folder {run_folder}; a file added there alters the run "
            "(verify reports it): write it elsewhere"
        )
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() or out.is_symlink():
        raise OutputExistsError(f"{out}: a folder or link, not a file trdscreen wrote")
    if not force:
        raise OutputExistsError(f"{out}: exists; pass --force to replace it")
    with open(out, "rb") as handle:
        head = handle.read(2048)
    if ours not in head:
        raise OutputExistsError(
            f"{out}: exists and is not a file trdscreen wrote; --force replaces only those"
        )
