"""Site maps: how a site's export is written, declared once (a `--map` file or a rule
set's `columns:` section). The export's headers mapped to canonical columns, the CSV
dialect, value formats (dates, decimal marks, units, percentages, yes/no words), value
maps for coded columns and drug aliases, as strict pydantic models. Applied to cells by
`trdscreen.conventions`; checked against the input contract by `trdscreen.resolve`."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from trdscreen.criterion import RuleModel

DATE_DIRECTIVES = {"%d": "day", "%m": "month", "%Y": "year", "%y": "year2"}
"""What a declared date format may hold, besides literal characters: day, month, four- or
two-digit year, and a time of day (`%H`, `%M`, `%S`, read and ignored)."""
TIME_DIRECTIVES = ("%H", "%M", "%S")


def _check_date_format(text: str) -> str:
    parts = re.findall(r"%.", text)
    unknown = sorted(set(parts) - set(DATE_DIRECTIVES) - set(TIME_DIRECTIVES))
    if unknown:
        raise ValueError(
            f"date format {text!r} uses {', '.join(unknown)}; a format may use %d, %m, %Y or "
            "%y (and %H, %M, %S, ignored) between literal characters, e.g. '%d/%m/%Y'"
        )
    years = parts.count("%Y") + parts.count("%y")
    if parts.count("%d") != 1 or parts.count("%m") != 1 or years != 1:
        raise ValueError(
            f"date format {text!r} must hold a day (%d), a month (%m) and a year (%Y or %y) "
            "once each"
        )
    return text


DateFormat = Annotated[str, AfterValidator(_check_date_format)]


class BooleanWords(RuleModel):
    """Words an export uses for true and false (matched trimmed, ignoring case); the
    standard words (true/false, yes/no, y/n, 1/0) are read too."""

    yes: tuple[str, ...] = Field(min_length=1)
    no: tuple[str, ...] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _yaml_words(cls, data: object) -> object:
        """YAML reads an unquoted yes/no (as keys or words) as true/false and 1 as a
        number: take them as the words they were written as."""
        if not isinstance(data, dict):
            return data
        words = {True: "yes", False: "no"}
        data = {words.get(k, k) if isinstance(k, bool) else k: v for k, v in data.items()}
        for key in ("yes", "no"):
            if isinstance(data.get(key), list | tuple):
                data[key] = [
                    words[w] if isinstance(w, bool) else str(w) if isinstance(w, int) else w
                    for w in data[key]
                ]
        return data

    @model_validator(mode="after")
    def _disjoint(self) -> BooleanWords:
        both = {w.strip().lower() for w in self.yes} & {w.strip().lower() for w in self.no}
        if both:
            raise ValueError(f"words listed as both yes and no: {', '.join(sorted(both))}")
        return self


class ValueFormats(RuleModel):
    """How an export writes the values of a column (or of every column: key `all`)."""

    dates: tuple[DateFormat, ...] = Field(
        (),
        description="date formats tried in order, e.g. ['%d/%m/%Y']; ISO dates are always read",
    )
    decimal: Literal[".", ","] | None = Field(None, description="the decimal mark")
    thousands: Literal[".", ",", " ", "'", "\u00a0"] | None = Field(
        None, description="the thousands separator (groups of three digits are required)"
    )
    units: tuple[str, ...] = Field(
        (), description="units written after numbers and removed, e.g. [mg, mg/day]"
    )
    percent: bool | None = Field(
        None,
        description="values are percentages (0-100, with or without %): divided by 100",
    )
    booleans: BooleanWords | None = None

    @model_validator(mode="after")
    def _marks_differ(self) -> ValueFormats:
        if self.decimal is not None and self.decimal == self.thousands:
            raise ValueError(f"decimal and thousands are both {self.decimal!r}")
        for unit in self.units:
            if not unit.strip() or any(c.isdigit() for c in unit):
                raise ValueError(f"unit {unit!r} must be a word without digits, e.g. mg")
        return self

    def under(self, default: ValueFormats | None) -> ValueFormats:
        """These formats, with what they leave unset taken from `default` (key `all`)."""
        if default is None:
            return self
        mine = self.model_dump(exclude_unset=True)
        return default.model_copy(update={k: getattr(self, k) for k in mine})


class CsvDialect(RuleModel):
    """How a site's CSV files are split and decoded (like --delimiter and --encoding,
    which win when given)."""

    delimiter: str | None = Field(None, min_length=1, max_length=1)
    encoding: str | None = Field(None, min_length=1)


class OmopMap(RuleModel):
    """`trdscreen build --profile omop`: the concept ids a site uses for what has no
    standard concept the build may assume (HAM-D and MADRS totals, ECT and rTMS)."""

    ratings: dict[Literal["hamd17", "hamd21", "hamd24", "madrs"], tuple[int, ...]] = Field(
        {}, description="measurement or observation concept ids whose value is the total"
    )
    procedures: dict[Literal["ect", "rtms", "esketamine"], tuple[int, ...]] = Field(
        {}, description="procedure concept ids of one session"
    )


RECORD_TABLES = (
    "drug_events", "assessments", "procedures", "diagnoses", "observation_periods", "drug_codes",
)  # fmt: skip
"""The records tables `trdscreen build` reads, whose headers a map may rename too (left
out of the hash when empty, as the site conventions are)."""
_SITE_KEYS = ("csv", "formats", "values", "drug_aliases")
"""The site conventions of a column map, left out of a rule set's hash when empty (rule
sets hashed before the conventions existed keep their hash)."""


class ColumnMap(RuleModel):
    """A site adapter: the export's headers mapped to canonical columns, and the
    conventions its values are written in. A rule set's `columns:` or a `--map` file."""

    treatments: dict[str, str] = {}
    subjects: dict[str, str] = {}
    drug_events: dict[str, str] = Field({}, description="`trdscreen build`: drug event headers")
    assessments: dict[str, str] = Field({}, description="`trdscreen build`: rating headers")
    procedures: dict[str, str] = Field({}, description="`trdscreen build`: session headers")
    diagnoses: dict[str, str] = Field({}, description="`trdscreen build`: diagnosis headers")
    observation_periods: dict[str, str] = Field(
        {}, description="`trdscreen build`: observation period headers"
    )
    drug_codes: dict[str, str] = Field({}, description="`trdscreen build`: code list headers")
    csv: CsvDialect = CsvDialect()
    formats: dict[str, ValueFormats] = Field(
        {}, description="per canonical column, or `all` for every column"
    )
    values: dict[str, dict[str, str]] = Field(
        {},
        description="per coded column: the export's value -> a vocabulary value, e.g. "
        "stop_reason: {No effect: nonresponse}",
    )
    drug_aliases: dict[str, str] = Field(
        {}, description="the export's drug names -> formulary generics (like formulary.aliases)"
    )
    omop: OmopMap = Field(OmopMap(), description="`trdscreen build --profile omop` concept ids")

    @model_serializer(mode="wrap")
    def _without_empty_conventions(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        for key in (*_SITE_KEYS, *RECORD_TABLES):
            if not data.get(key) or data[key] == {"delimiter": None, "encoding": None}:
                data.pop(key, None)
        if data.get("omop") in ({}, {"ratings": {}, "procedures": {}}):
            data.pop("omop", None)
        return data

    def formats_of(self, column: str) -> ValueFormats | None:
        """The formats declared for a column: its own over those of `all`."""
        own, default = self.formats.get(column), self.formats.get("all")
        if own is None:
            return default
        return own.under(default)

    def value_map(self, column: str) -> dict[str, str]:
        """The column's value map, keyed by the export's value trimmed and lower-cased."""
        return {k.strip().lower(): v for k, v in self.values.get(column, {}).items()}

    @property
    def has_conventions(self) -> bool:
        return bool(self.formats or self.values)

    def conventions(self) -> dict:
        """The declared conventions as plain data (recorded in the manifest)."""
        return self.model_dump(mode="json", include=set(_SITE_KEYS))
