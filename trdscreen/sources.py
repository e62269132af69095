"""Where an input's bytes come from: a local file, standard input (`-`), a compressed
CSV (`.csv.gz`, `.csv.zst`, `.csv.bz2`), a folder of Parquet files (a dataset), or an
object-store URL (`s3://`, `gs://`, ... through pyarrow's filesystems, or fsspec where
installed: `pip install 'trdscreen[cloud]'`).

Everything but a local file or Parquet folder is copied once into a private temporary
file that the readers read like any CSV or Parquet file, while messages and the manifest
name the input as the user gave it and record the SHA-256 of its bytes as given (the
compressed file, the stdin stream, the object). Nothing is guessed: the format comes
from the name (`.csv.gz` is gzip-compressed CSV). An export folder's files are found
here too (`find_inputs`: `treatments.*`, `subjects.*`).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from trdscreen.errors import InputError

STDIN = "-"
COMPRESSION = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}
"""Compressed CSV by its last suffix (`treatments.csv.gz`)."""
_URL = re.compile(r"^([a-z][a-z0-9+.\-]*):/+", re.IGNORECASE)
_BLOCK = 1 << 22


@dataclass(frozen=True)
class Located:
    """An input as given (`shown`) and the local file or folder its rows are read from."""

    shown: Path  # what messages and the manifest name
    data: Path  # a local CSV or Parquet file, or a folder of Parquet files
    sha256: str | None = None  # of the bytes as given, when `data` is a copy
    size: int | None = None

    @property
    def copied(self) -> bool:
        return self.data != self.shown


def url_of(given: str | Path) -> str | None:
    """The URL an input names, or None for a local path. A URL passed through Path has
    lost a slash (`s3:/bucket`): it is given back (`s3://bucket`, `file:///tmp/x`)."""
    text = str(given)
    match = _URL.match(text)
    if match is None or len(match.group(1)) < 2:  # `C:/...` is a Windows drive, not a URL
        return None
    scheme, rest = match.group(1).lower(), text[match.end() :]
    return f"{scheme}:///{rest}" if scheme == "file" else f"{scheme}://{rest}"


def display(given: str | Path) -> str:
    """An input as the user gave it: a URL with its slashes, else the path."""
    return url_of(given) or str(given)


def is_remote(given: str | Path) -> bool:
    return str(given) == STDIN or url_of(given) is not None


def data_name(path: Path) -> str:
    """The name the readers go by: `treatments.csv.gz` is read as `treatments.csv`."""
    if path.suffix.lower() in COMPRESSION:
        return path.with_suffix("").name
    return path.name


_scratch: list[Path] = []


def scratch_folder() -> Path:
    """A new private folder (mode 700) in this process's scratch folder, which is
    removed when the process ends: for copies of inputs and other rows on their way."""
    if not _scratch:
        folder = Path(tempfile.mkdtemp(prefix="trdscreen-input-"))
        atexit.register(shutil.rmtree, folder, True)
        _scratch.append(folder)
    return Path(tempfile.mkdtemp(dir=_scratch[0]))


def _scratch_file(name: str) -> Path:
    return scratch_folder() / name


def _copy(source: BinaryIO, target: Path, given: BinaryIO | None = None) -> tuple[str, int]:
    """Copy `source` to `target`; the SHA-256 and size of `given` (the bytes as given,
    read alongside) or of `source`."""
    digest = hashlib.sha256()
    size = 0
    hashed = given if given is not None else source
    with open(target, "wb") as out:
        while chunk := source.read(_BLOCK):
            out.write(chunk)
            if given is None:
                digest.update(chunk)
                size += len(chunk)
    if given is not None:
        hashed.seek(0)
        while chunk := hashed.read(_BLOCK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def locate(given: str | Path) -> Located:
    """Where to read an input from, copying it locally when it is not a local file."""
    if str(given) == STDIN:
        target = _scratch_file("stdin.csv")
        sha, size = _copy(sys.stdin.buffer, target)
        return Located(Path(STDIN), target, sha, size)
    url = url_of(given)
    if url is not None:
        return _fetch(url)
    path = Path(given)
    compression = COMPRESSION.get(path.suffix.lower())
    if compression is None or not path.is_file():
        return Located(path, path)
    import pyarrow as pa

    target = _scratch_file(data_name(path))
    try:
        with pa.input_stream(str(path), compression=compression) as stream, open(path, "rb") as raw:
            sha, size = _copy(stream, target, raw)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(
            f"{path}: cannot be decompressed as {compression} ({type(exc).__name__}); "
            f"expected a {compression}-compressed CSV file"
        ) from None
    return Located(path, target, sha, size)


def _fetch(url: str) -> Located:
    """An object in a store, copied locally (pyarrow's filesystems, else fsspec)."""
    name = url.rstrip("/").rsplit("/", 1)[-1] or "input"
    shown = Path(url)
    target = _scratch_file(data_name(Path(name)))
    compression = COMPRESSION.get(Path(name).suffix.lower())
    try:
        handle = _open_url(url)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - every filesystem's error, named
        raise InputError(f"{url}: cannot be opened ({type(exc).__name__})") from None
    with handle:
        copy = _scratch_file(name)
        sha, size = _copy(handle, copy)
    if compression is not None:
        import pyarrow as pa

        with pa.input_stream(str(copy), compression=compression) as stream:
            _copy(stream, target)
    else:
        copy.replace(target)
    return Located(shown, target, sha, size)


def _open_url(url: str) -> BinaryIO:
    import pyarrow.fs as pafs

    try:
        filesystem, path = pafs.FileSystem.from_uri(url)
    except Exception:  # noqa: BLE001 - a scheme pyarrow lacks: try fsspec below
        filesystem = None
    if filesystem is not None:
        info = filesystem.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"{url}: no such object")
        return filesystem.open_input_stream(path)
    try:
        import fsspec
    except ImportError:
        raise InputError(
            f"{url}: pyarrow cannot open this URL and fsspec is not installed; install "
            "trdscreen[cloud] (and the store's fsspec driver, e.g. s3fs or gcsfs)"
        ) from None
    try:
        return fsspec.open(url, "rb").open()
    except FileNotFoundError:
        raise InputError(f"{url}: no such object") from None


def folder_sha256(folder: Path, files: list[Path]) -> tuple[str, int]:
    """The SHA-256 of a Parquet dataset: each file's name and bytes, in name order."""
    digest = hashlib.sha256()
    size = 0
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(_BLOCK):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


# --------------------------------------------------------------------------- finding inputs


def find_inputs(path: Path, subjects: Path | None) -> tuple[Path, Path | None]:
    """Resolve INPUT (a treatments file, or a folder with treatments.* / subjects.*)."""
    if is_remote(path):  # stdin or a URL: read as given
        return Path(path), subjects
    path = Path(path)
    if path.is_dir():
        treatments = one_of(path, "treatments")
        if treatments is None and _is_dataset(path):
            return path, subjects  # the folder is itself a dataset of treatments
        if treatments is None:
            raise InputError(
                f"{path}: folder has no treatments.csv, treatments.parquet or treatments/ "
                "folder of Parquet files; name the treatments file directly or rename it"
            )
        if subjects is None:
            subjects = one_of(path, "subjects")
        return treatments, subjects
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return path, subjects


INPUT_SUFFIXES = (".csv", ".parquet", ".pq", ".csv.gz", ".csv.zst", ".csv.bz2")

MANIFEST_FILE = "manifest.json"
"""What every run and build folder holds about itself (`outdir` writes it)."""


def build_manifest(folder: Path) -> dict | None:
    """The manifest of a folder `trdscreen build` wrote, None when `folder` is not one."""
    try:
        data = json.loads((Path(folder) / MANIFEST_FILE).read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == "build" else None


BUILD_TRAIL = ("course_events", "event_attrition", "procedure_sessions")
"""Tables `trdscreen build` writes beside the treatments and subjects it built: its
account of them (read by `explain`), not inputs of a screen."""


def _table_stem(path: Path) -> str | None:
    """The table name of a file an export folder may hold (`assessments` of
    `assessments.csv.gz`, of a folder of Parquet files `assessments/`), else None."""
    if path.is_dir():
        return path.name if _is_dataset(path) else None
    name = path.name.lower()
    ext = next((e for e in INPUT_SUFFIXES if name.endswith(e) and len(name) > len(e)), None)
    return path.name[: -len(ext)] if ext is not None and path.is_file() else None


def unread_tables(folder: Path, read: list[Path]) -> list[str]:
    """The tables in an input folder that a screen does not read (an `assessments.csv`,
    a `diagnoses.parquet`, a `subjects.csv` beside `--subjects` naming another file), by
    file name: the files read, and `trdscreen build`'s own account of a built folder,
    aside. Nothing in a folder is passed over without a word: the run names these."""
    used = {p.resolve() for p in read}
    return sorted(
        p.name
        for p in folder.iterdir()
        if not p.name.startswith((".", "_"))
        and p.resolve() not in used
        and (stem := _table_stem(p)) is not None
        and stem not in BUILD_TRAIL
    )


def one_of(folder: Path, stem: str) -> Path | None:
    found = [folder / f"{stem}{ext}" for ext in INPUT_SUFFIXES]
    found = [p for p in found if p.exists()]
    if (folder / stem).is_dir() and _is_dataset(folder / stem):
        found.append(folder / stem)  # a dataset: a folder of Parquet files
    if len(found) > 1:
        raise InputError(
            f"{folder}: both {found[0].name} and {found[1].name} exist; keep one or name it"
        )
    return found[0] if found else None


def _visible_files(folder: Path) -> list[Path]:
    """The files of a folder and its subfolders, hidden and `_`-prefixed ones (and those
    in such subfolders: Spark's `_temporary`, `.crc` files) skipped."""
    return [
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    ]


def _is_parquet(path: Path) -> bool:
    return path.suffix.lower() in (".parquet", ".pq")


def parquet_files(folder: Path) -> list[Path]:
    """The Parquet files of a dataset folder (its subfolders too, as Spark and Hive
    partitions lay them out), in name order; hidden and `_`-prefixed files skipped."""
    return sorted(p for p in _visible_files(folder) if _is_parquet(p))


def _is_dataset(folder: Path) -> bool:
    """A folder of Parquet files and nothing else (hidden and `_` files aside)."""
    files = _visible_files(folder)
    return bool(files) and all(_is_parquet(p) for p in files)
