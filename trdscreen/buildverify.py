"""`trdscreen verify BUILD_DIR`: check a folder `trdscreen build` wrote, and build it again.

Every output is checked against the SHA-256 in its manifest; every input file
against the hash recorded when it was read (at its recorded path, or by name
in `--inputs DIR`); then the build is run again from those inputs with the
recorded rule set, map, reference date and profile into a scratch folder, and
each table must come out byte for byte the same.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from trdscreen.errors import RunFolderError, TrdscreenError
from trdscreen.io import has_sha256
from trdscreen.sources import build_manifest
from trdscreen.verify import Verification


@dataclass
class BuildFolder:
    path: Path
    manifest: dict

    @property
    def run_id(self) -> str:
        return "build"


def verify_build(path: Path, inputs_dir: Path | None = None, rerun: bool = True) -> Verification:
    """The checks of the module doc (RunFolderError when the folder is not a build's)."""
    path = Path(path)
    manifest = build_manifest(path)
    if manifest is None:
        raise RunFolderError(f"{path}: not a folder `trdscreen build` wrote")
    result = Verification(BuildFolder(path, manifest))
    outputs = [o for o in manifest.get("outputs", []) if isinstance(o, dict)]
    for output in outputs:
        name = str(output.get("path"))
        same = has_sha256(path / Path(name).name, output.get("sha256"))
        result.add(name, same, "matches the manifest" if same else "differs from the manifest")
    inputs_ok = True
    for record in manifest.get("inputs", []):
        file = Path(str(record.get("path")))
        if inputs_dir is not None:
            file = Path(inputs_dir) / file.name
        same = has_sha256(file, record.get("sha256"))
        inputs_ok &= same
        result.add(
            f"input {file.name}",
            same,
            "the file the build read" if same else f"{file}: missing or changed since the build",
        )
    if rerun and inputs_ok and result.ok:
        _rebuild(manifest, outputs, result, inputs_dir)
    return result


def _rebuild(
    manifest: dict, outputs: list[dict], result: Verification, inputs_dir: Path | None
) -> None:
    from trdscreen.buildrun import BuildRequest, run_build

    request = manifest.get("request") or {}
    folder = Path(inputs_dir) if inputs_dir is not None else Path(str(request.get("input")))
    scratch = Path(tempfile.mkdtemp(prefix="trdscreen-verify-build-"))
    try:
        run_build(
            BuildRequest(
                folder,
                scratch / "again",
                request.get("rules"),
                Path(request["column_map"]) if request.get("column_map") else None,
                date.fromisoformat(request["as_of"]) if request.get("as_of") else None,
                profile=str(request.get("profile") or "auto"),
            )
        )
        result.reran = True
        for output in outputs:
            name = Path(str(output.get("path"))).name
            same = has_sha256(scratch / "again" / name, output.get("sha256"))
            result.add(name, same, "built again: identical" if same else "built again: differs")
    except TrdscreenError as exc:
        result.add("re-build", False, f"could not build again: {exc}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
