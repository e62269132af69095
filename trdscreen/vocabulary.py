"""The closed vocabularies of the input contract and of rule sets, each declared once:
the CLI's choices, the schemas' checks and the rule-set models read them from here."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

Resolution = Literal["unknown", "assume_met", "assume_not_met"]
Evidence = Literal["V", "S", "U"]
Scalar = bool | int | float | str

Role = Literal["monotherapy", "augmentation", "combination"]
ROLES: tuple[Role, ...] = ("monotherapy", "augmentation", "combination")
MODALITIES = ("pharmacotherapy", "ect", "rtms", "psychotherapy", "esketamine")
DRUG_MODALITIES = ("pharmacotherapy", "esketamine")
"""Modalities whose courses name a drug (dose, formulary and segments apply)."""
STOP_REASONS = (
    "nonresponse",
    "partial_response",
    "intolerance",
    "remission",
    "relapse",
    "patient_choice",
    "ongoing",
    "other",
)

Agent = Literal["antidepressant", "augmentation"]
AGENTS: tuple[Agent, ...] = ("antidepressant", "augmentation")
HamdVersion = Literal[17, 21, 24]


class Engine(StrEnum):
    """`screen --engine`: the default (pandas/pyarrow, in chunks) or a Dask cluster."""

    pandas = "pandas"
    dask = "dask"


class TableFormat(StrEnum):
    """The formats a table is written in (run folders, `synth`)."""

    csv = "csv"
    parquet = "parquet"


class RecordsProfile(StrEnum):
    """`build --profile` and `screen --profile`: what kind of records folder INPUT is."""

    events = "events"
    omop = "omop"
    courses = "courses"


class OutputFormat(StrEnum):
    """`screen --format`: one table format or both."""

    csv = "csv"
    parquet = "parquet"
    both = "both"
    xlsx = "xlsx"


class CsvDialect(StrEnum):
    """`screen --csv-dialect`: how CSV tables are written."""

    standard = "standard"
    excel_eu = "excel-eu"


class LogFormat(StrEnum):
    """`--log-format`: a progress display on a terminal, or JSON lines."""

    text = "text"
    json = "json"


class OnInvalid(StrEnum):
    """`--on-invalid`: what rows that fail validation do (`trdscreen.quarantine`)."""

    fail = "fail"
    quarantine = "quarantine"


TABLE_FORMATS = tuple(f.value for f in TableFormat)
ON_INVALID = tuple(o.value for o in OnInvalid)

EPISODE_SOURCES = (
    "given", "derived", "no_depression_diagnosis", "no_current_treatment", "no_treatment",
    "no_diagnoses_table",
)  # fmt: skip
"""How a subjects table's `episode_start` was found (`trdscreen build` writes it): given
by the site, derived from the records, or why it could not be."""
