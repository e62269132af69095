"""Reading a run folder back: its manifest and its tables, checked against their hashes.

Used by `verify`, `explain` and `diff`. A table is read from Parquet when the
run wrote it (types kept), else from CSV; before reading, the file's SHA-256
is compared with the manifest so that nothing is explained from an altered
file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from trdscreen.errors import RunFolderError, UsageError
from trdscreen.io import sha256_file
from trdscreen.outdir import MANIFEST_FILE, MAX_MANIFEST_BYTES
from trdscreen.output import unescape_formulas
from trdscreen.printable import printable

SUPPORTED_MANIFEST_VERSIONS = (2, 3)
TEXT_COLUMNS = (
    "subject_id",
    "decision",
    "classification",
    "reason",
    "first_failed_criterion",
    "failed_criteria",
    "unknown_criteria",
    "near_miss_criteria",
    "criterion_id",
    "kind",
    "outcome",
    "observed_text",
    "threshold",
    "source_file",
    "drug",
    "drug_generic",
    "drug_class",
    "role",
    "modality",
    "min_dose_source",
    "reasons",
    "title",
    "msm_band",
)
"""Columns read as text from a CSV run (ids that look like numbers stay ids)."""


@dataclass(frozen=True)
class RunFolder:
    path: Path
    manifest: dict[str, Any]

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id"))

    def output(self, table: str, fmt: str | None = None) -> dict[str, Any] | None:
        """The manifest record of a table's file: in `fmt`, else Parquet preferred."""
        records = [
            o
            for o in self.manifest.get("outputs", [])
            if o.get("table") == table and fmt in (None, o.get("format"))
        ]
        records.sort(key=lambda o: o.get("format") != "parquet")
        return records[0] if records else None

    def read(self, table: str, subject_id: str | None = None, **options: Any) -> pd.DataFrame:
        """`arrow` as pandas, text as Arrow-backed strings."""
        return to_frame(self.arrow(table, subject_id, **options))

    def arrow(
        self,
        table: str,
        subject_id: str | None = None,
        fmt: str | None = None,
        subjects: list[str] | None = None,
        columns: list[str] | None = None,
        checked: bool = True,
        dictionary: list[str] | None = None,
    ) -> pa.Table:
        """A table of the run, after checking its hash (unless `checked` is False: files
        the caller has just written and hashed): only one subject's rows or `subjects`'
        rows if given, only `columns` if given, the `dictionary` columns
        dictionary-encoded when read from Parquet (a million rows' few distinct texts
        read once)."""
        if subject_id is not None:
            subjects = [subject_id]
        record = self.output(table, fmt)
        if record is None:
            chosen = (self.manifest.get("options") or {}).get("tables")
            if chosen and table not in chosen:
                raise UsageError(
                    f"{self.path}: the run has no {table} table: it was written with "
                    f"--tables {','.join(chosen)}; screen again with {table} among them"
                )
            raise UsageError(
                f"{self.path}: the run has no {table} table (status "
                f"{self.manifest.get('status')!r}; an invalid-input run holds only its issues)"
            )
        path = self.path / record["path"]
        if not path.is_file():
            raise RunFolderError(f"{path}: listed in manifest.json but missing; run `verify`")
        if checked and sha256_file(path) != record["sha256"]:
            raise RunFolderError(
                f"{path}: the file differs from the SHA-256 recorded in manifest.json; "
                "the run folder was altered; run `trdscreen verify` for details"
            )
        if record["format"] == "parquet":
            filters = [("subject_id", "in", subjects)] if subjects is not None else None
            names = pq.read_schema(path).names
            if columns is not None:
                columns = [c for c in columns if c in names]
            encoded = [c for c in dictionary or () if c in names]
            return pq.read_table(
                path, columns=columns, filters=filters, read_dictionary=encoded or None
            )
        options = self.manifest.get("options", {})
        data = read_table_file(
            path,
            unescape=options.get("escape_formulas", False),
            dialect=str(options.get("csv_dialect", "standard")),
            columns=columns,
        )
        if subjects is not None:
            data = data.filter(
                pa.compute.is_in(data["subject_id"], pa.array(subjects, pa.string()))
            )
        return data


def to_frame(table: pa.Table) -> pd.DataFrame:
    """An Arrow table of a run as pandas, text as pandas' Arrow-backed strings."""
    return table.to_pandas(types_mapper=_types)


def _types(dtype: pa.DataType):
    return pd.StringDtype("pyarrow", na_value=pd.NA) if pa.types.is_string(dtype) else None


def read_table_file(
    path: Path, unescape: bool = False, dialect: str = "standard", columns: list[str] | None = None
) -> pa.Table:
    """A table file a run wrote, as Arrow: Parquet as stored; CSV with text columns read
    as the writer wrote them (in its `--csv-dialect`), and formula escaping undone with
    `unescape`. Only `columns` (those the file has) when given."""
    if path.suffix == ".parquet":
        return pq.read_table(path, columns=columns)
    data = _read_csv(path, dialect, columns)
    return unescape_formulas(data) if unescape else data


def _read_csv(path: Path, dialect: str = "standard", columns: list[str] | None = None) -> pa.Table:
    split = pacsv.ParseOptions(delimiter=";" if dialect == "excel-eu" else ",")
    header = pacsv.open_csv(path, parse_options=split).schema.names
    text = {name: pa.string() for name in header if name in TEXT_COLUMNS}
    # The writer writes null as an empty field and "" as a quoted empty string.
    options = pacsv.ConvertOptions(
        column_types=text,
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        include_columns=[c for c in columns if c in header] if columns is not None else None,
    )
    data = pacsv.read_csv(path, parse_options=split, convert_options=options)
    if dialect == "excel-eu":  # decimal commas: the numbers the standard text would hold
        for index, field in enumerate(data.schema):
            if pa.types.is_string(field.type) and field.name not in TEXT_COLUMNS:
                points = pa.compute.replace_substring(data.column(index), ",", ".")
                try:
                    data = data.set_column(index, field.name, points.cast(pa.float64()))
                except pa.ArrowInvalid:
                    pass  # text after all
    return data


def check_outputs(run: RunFolder) -> None:
    """RunFolderError naming the first table file of the run that is missing or differs
    from the SHA-256 in its manifest."""
    for record in run.manifest.get("outputs", []):
        path = run.path / record["path"]
        if not path.is_file():
            raise RunFolderError(f"{path}: listed in manifest.json but missing; run `verify`")
        if sha256_file(path) != record["sha256"]:
            raise RunFolderError(
                f"{path}: the file differs from the SHA-256 recorded in manifest.json; "
                "the run folder was altered; run `trdscreen verify` for details"
            )


def open_run(path: Path) -> RunFolder:
    """A run folder and its manifest; UsageError when the folder is not one."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not path.is_dir():
        raise UsageError(f"{path}: no such run folder")
    if not manifest_path.is_file():
        raise UsageError(f"{path}: not a trdscreen run folder (no {MANIFEST_FILE})")
    if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
        raise RunFolderError(f"{manifest_path}: larger than any manifest trdscreen writes")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RunFolderError(
            f"{manifest_path}: not valid JSON; the run folder was altered"
        ) from None
    version = manifest.get("manifest_schema_version") if isinstance(manifest, dict) else None
    if version not in SUPPORTED_MANIFEST_VERSIONS:
        raise RunFolderError(
            f"{manifest_path}: manifest_schema_version {printable(repr(version))[:40]} is not "
            f"supported by this trdscreen (supports "
            f"{', '.join(map(str, SUPPORTED_MANIFEST_VERSIONS))})"
        )
    if version == MANIFEST_SCHEMA_VERSION:
        problems = schema_problems(manifest)
        if problems:
            raise RunFolderError(
                f"{manifest_path}: {problems[0]}; the run folder was altered or was not "
                "written by trdscreen",
                problems,
            )
    return RunFolder(path, manifest)


MANIFEST_SCHEMA_VERSION = 3


def schema_problems(manifest: dict[str, Any]) -> list[str]:
    """Where a manifest breaks its published JSON Schema (data/manifest.schema.json), as
    `field `a.b.0`: expected ...` lines; the field's value is never quoted."""
    from importlib import resources

    import jsonschema

    schema = json.loads(
        resources.files("trdscreen").joinpath("data/manifest.schema.json").read_text("utf-8")
    )
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(manifest), key=lambda e: list(map(str, e.path))):
        field = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        expected = error.validator_value
        if error.validator == "additionalProperties":
            expected = "no other fields"
        elif isinstance(expected, dict | list) and error.validator != "required":
            expected = error.validator
        problems.append(printable(f"field `{field}`: expected {error.validator} {expected}"))
        if len(problems) >= 20:
            break
    return problems


def json_value(value: Any) -> Any:
    """A JSON-ready scalar: NA/NaN become None, numpy scalars Python ones, dates ISO text."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()[:10]
    if hasattr(value, "item"):
        return json_value(value.item())
    return value


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    columns = list(frame.columns)
    return [
        {c: json_value(v) for c, v in zip(columns, row, strict=True)}
        for row in frame.itertuples(index=False, name=None)
    ]


def read_summary(path: Path) -> tuple[RunFolder, str]:
    """A run's summary.txt, after checking it against the manifest's SHA-256."""
    run = open_run(path)
    record = run.manifest.get("summary")
    if not isinstance(record, dict) or not isinstance(record.get("path"), str):
        raise UsageError(
            f"{run.path}: the run has no summary.txt (runs written before trdscreen 0.6.0); "
            "its counts are in manifest.json"
        )
    file = run.path / Path(record["path"]).name
    if not file.is_file():
        raise RunFolderError(f"{file}: listed in manifest.json but missing; run `verify`")
    if sha256_file(file) != record.get("sha256"):
        raise RunFolderError(
            f"{file}: differs from the SHA-256 recorded in manifest.json; the run folder was "
            "altered; run `trdscreen verify` for details"
        )
    return run, file.read_text("utf-8")
