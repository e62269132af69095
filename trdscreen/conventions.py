"""A site's declared conventions applied to its cells: what a column map's `formats:` and
`values:` say (dates as dd/mm/yyyy, decimal commas, units after numbers, percentages,
Ja/Nein, the export's own stop reasons), turned into the canonical text the input
contract reads (YYYY-MM-DD, 37.5, 0.6, true, nonresponse).

Nothing is guessed: only what the map declares is converted. A cell that does not fit the
declaration is reported (never passed on as read), so a `37.5` in a column declared to
use decimal commas is an error, not 37.5 or 375. Vectorized with Arrow, on each distinct
text once where the column is dictionary-encoded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.sitemap import DATE_DIRECTIVES, TIME_DIRECTIVES, ColumnMap, ValueFormats

_NULL_TEXT = pa.scalar(None, pa.string())
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
TWO_DIGIT_YEAR_PIVOT = 69
"""`%y`: 69-99 are 1969-1999, 00-68 are 2000-2068 (POSIX, as Python's strptime)."""


@dataclass(frozen=True)
class Adapted:
    """A column in canonical text, and the rows whose cells broke the declaration."""

    column: pa.Array
    bad: np.ndarray  # row positions
    check: str  # the issue code of the bad rows
    message: str


def adapt(
    column: pa.ChunkedArray | pa.Array, name: str, kind: str, expected: str, site: ColumnMap
) -> Adapted | None:
    """`column` (text, or numbers for `percent`) as the contract reads it under `site`'s
    declarations for `name`; None when nothing is declared for it."""
    formats = site.formats_of(name)
    mapping = site.value_map(name)
    if formats is None and not mapping:
        return None
    whole = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind_of = whole.type.value_type if pa.types.is_dictionary(whole.type) else whole.type
    if formats is not None and kind in ("float", "int") and is_number(kind_of):
        if not formats.percent:
            return None
        scaled = pc.divide(whole.cast(pa.float64()), 100.0)
        return Adapted(scaled.cast(pa.string()), np.empty(0, np.int64), "", "")
    if not is_text(kind_of):
        return None
    change: Callable[[pa.Array], tuple[pa.Array, pa.Array]] | None = None
    check, message = "", ""
    if mapping:
        change = _mapped(mapping)
    elif formats is None:
        return None
    elif kind == "date" and formats.dates:
        change = _dates(formats.dates)
        check = "not_iso_date"
        message = (
            f"expected a date written as {' or '.join(formats.dates)} "
            "(declared under `formats:` in the column map) or as YYYY-MM-DD; the cell is "
            "neither, or not a real date"
        )
    elif kind in ("float", "int") and _declares_numbers(formats):
        change = _numbers(formats)
        check = "not_an_integer" if kind == "int" else "not_a_number"
        message = f"expected {expected or 'a number'}, {_number_wording(formats)}"
    elif kind == "bool" and formats.booleans is not None:
        change = _booleans(formats)
    if change is None:
        return None
    text, bad = _on_distinct(whole, change)
    return Adapted(text, bad, check, message)


def is_text(kind: pa.DataType) -> bool:
    """An Arrow type that holds text (or nothing: an all-empty column)."""
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_null(kind)
    )


def is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)


def text_as_read(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A column as validation reads text: cast to text, trimmed, empty as null."""
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    return pc.if_else(pc.equal(text, ""), _NULL_TEXT, text)


def _on_distinct(
    whole: pa.Array, change: Callable[[pa.Array], tuple[pa.Array, pa.Array]]
) -> tuple[pa.Array, np.ndarray]:
    """`change` (text -> (text, bad)) on each distinct text once, spread to the rows."""
    if pa.types.is_dictionary(whole.type):
        text, bad = change(text_as_read(whole.dictionary))
        rows = whole.indices  # stays encoded: the converters read each distinct text once
        text = pa.DictionaryArray.from_arrays(rows, text.cast(pa.string()), safe=False)
        bad = pc.fill_null(bad.take(rows), False)
    else:
        text, bad = change(text_as_read(whole))
    return text, np.flatnonzero(pc.fill_null(bad, False).to_numpy(zero_copy_only=False))


def _none_bad(text: pa.Array) -> pa.Array:
    return pa.array(np.zeros(len(text), dtype=bool))


# --------------------------------------------------------------------------- values


def _mapped(mapping: dict[str, str]) -> Callable[[pa.Array], tuple[pa.Array, pa.Array]]:
    """The export's codes as vocabulary values; an unmapped one stays as read, so the
    vocabulary check reports it (naming the value)."""
    keys = pa.array(list(mapping))
    targets = pa.array(list(mapping.values()))

    def change(text: pa.Array) -> tuple[pa.Array, pa.Array]:
        position = pc.index_in(pc.utf8_lower(text), value_set=keys)
        mapped = targets.take(position)
        return pc.if_else(pc.is_valid(position), mapped, text), _none_bad(text)

    return change


def _booleans(formats: ValueFormats) -> Callable[[pa.Array], tuple[pa.Array, pa.Array]]:
    assert formats.booleans is not None
    yes = pa.array([w.strip().lower() for w in formats.booleans.yes])
    no = pa.array([w.strip().lower() for w in formats.booleans.no])

    def change(text: pa.Array) -> tuple[pa.Array, pa.Array]:
        lower = pc.utf8_lower(text)
        out = pc.if_else(pc.fill_null(pc.is_in(lower, yes), False), "true", text)
        out = pc.if_else(pc.fill_null(pc.is_in(lower, no), False), "false", out)
        return out, _none_bad(text)  # anything else: the boolean check reports it

    return change


# --------------------------------------------------------------------------- dates


def date_pattern(fmt: str) -> str:
    """A declared date format as an anchored regular expression with named groups."""
    out, index = [], 0
    groups = {"%d": r"(?P<day>\d{1,2})", "%m": r"(?P<month>\d{1,2})", "%Y": r"(?P<year>\d{4})"}
    groups["%y"] = r"(?P<year2>\d{2})"
    groups.update({d: r"\d{1,2}" for d in TIME_DIRECTIVES})
    while index < len(fmt):
        piece = fmt[index : index + 2]
        if piece in groups:
            out.append(groups[piece])
            index += 2
        else:
            out.append(re.escape(fmt[index]))
            index += 1
    assert set(DATE_DIRECTIVES) <= set(groups)
    return "^" + "".join(out) + "$"


def _iso_of(text: pa.Array, fmt: str) -> pa.Array:
    """ISO text of each cell that has the shape of `fmt` (null elsewhere); not yet
    checked to be a real date."""
    parts = pc.extract_regex(text, date_pattern(fmt))
    names = [parts.type.field(i).name for i in range(parts.type.num_fields)]
    if "year" in names:
        year = pc.struct_field(parts, "year")
    else:
        short = pc.struct_field(parts, "year2").cast(pa.int32())
        century = pc.if_else(pc.less(short, TWO_DIGIT_YEAR_PIVOT), 2000, 1900)
        year = pc.add(short, century).cast(pa.string())

    def padded(field: str) -> pa.Array:
        return pc.utf8_lpad(pc.struct_field(parts, field), width=2, padding="0")

    iso = pc.binary_join_element_wise(year, padded("month"), padded("day"), "-")
    return pc.if_else(pc.is_valid(parts), iso, _NULL_TEXT)


def real_dates(iso: pa.Array) -> pa.Array:
    """Where ISO text is a real calendar date (strptime rolls 2023-02-30 over: round trip)."""
    parsed = pc.strptime(iso, format="%Y-%m-%d", unit="s", error_is_null=True)
    return pc.fill_null(pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), iso), False)


CANDIDATE_DATE_FORMATS = (
    "%d/%m/%Y", "%m/%d/%Y", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y", "%d/%m/%y", "%m/%d/%y",
    "%d.%m.%y", "%d-%m-%y",
)  # fmt: skip
"""The day/month/year formats an undeclared date is tried against, to say which fit."""


def fitting_date_formats(texts: pa.Array) -> list[str]:
    """The candidate formats that read every one of `texts` as a real date."""
    fits = []
    for fmt in CANDIDATE_DATE_FORMATS:
        iso = _iso_of(texts, fmt)
        if pc.all(pc.and_(pc.is_valid(iso), real_dates(pc.fill_null(iso, "")))).as_py():
            fits.append(fmt)
    return fits


def _dates(formats: tuple[str, ...]) -> Callable[[pa.Array], tuple[pa.Array, pa.Array]]:
    def change(text: pa.Array) -> tuple[pa.Array, pa.Array]:
        iso = pc.fill_null(pc.match_substring_regex(text, _ISO_DATE), False)
        out = pc.if_else(iso, text, _NULL_TEXT)
        for fmt in formats:  # in order: the first format a cell fits decides
            out = pc.coalesce(out, _iso_of(text, fmt))
        ok = pc.and_(pc.is_valid(out), real_dates(pc.fill_null(out, "")))
        return pc.if_else(ok, out, _NULL_TEXT), pc.and_(pc.is_valid(text), pc.invert(ok))

    return change


# --------------------------------------------------------------------------- numbers


def _declares_numbers(formats: ValueFormats) -> bool:
    return bool(formats.decimal or formats.thousands or formats.units or formats.percent)


def _number_wording(formats: ValueFormats) -> str:
    parts = [f"with the decimal mark {formats.decimal or '.'!r}"]
    if formats.thousands:
        parts.append(f"thousands separated by {formats.thousands!r} in groups of three")
    if formats.units:
        parts.append(f"optionally followed by {' or '.join(formats.units)}")
    if formats.percent:
        parts.append("as a percentage (0-100, % optional)")
    return "written " + ", ".join(parts) + " (declared under `formats:` in the column map)"


def number_pattern(formats: ValueFormats) -> str:
    """The shape a number must have under these formats (after units and % are removed)."""
    decimal = re.escape(formats.decimal or ".")
    whole = r"\d*"
    if formats.thousands:
        whole = rf"(?:\d{{1,3}}(?:{re.escape(formats.thousands)}\d{{3}})+|\d*)"
    return rf"^[+-]?{whole}(?:{decimal}\d+)?$"


def _numbers(formats: ValueFormats) -> Callable[[pa.Array], tuple[pa.Array, pa.Array]]:
    suffixes = sorted(formats.units, key=len, reverse=True)
    unit = r"(?i)\s*(?:" + "|".join(re.escape(u) for u in suffixes) + r")$" if suffixes else ""
    shape = number_pattern(formats)

    def change(text: pa.Array) -> tuple[pa.Array, pa.Array]:
        bare = text
        if formats.percent:
            bare = pc.utf8_rtrim_whitespace(pc.replace_substring_regex(bare, r"%$", ""))
        if unit:
            bare = pc.replace_substring_regex(bare, unit, "")
        ok = pc.and_(
            pc.fill_null(pc.match_substring_regex(bare, shape), False),
            pc.fill_null(pc.match_substring_regex(bare, r"\d"), False),
        )
        if formats.thousands:
            bare = pc.replace_substring(bare, formats.thousands, "")
        if formats.decimal == ",":
            bare = pc.replace_substring(bare, ",", ".")
        if formats.percent:
            number = pc.if_else(ok, bare, _NULL_TEXT).cast(pa.float64())
            bare = pc.divide(number, 100.0).cast(pa.string())
        return pc.if_else(ok, bare, _NULL_TEXT), pc.and_(pc.is_valid(text), pc.invert(ok))

    return change
