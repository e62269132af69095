"""Cell conversion, the first layer of validation (`schemas`): each canonical column
from its raw form (CSV text or a Parquet type) to its working type, with vectorized Arrow
kernels, each distinct text converted once; every cell that cannot be converted is
logged (file, line, column, what was expected), emptied and never carried on as a value.
No patient value enters a message."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa_arrow
import pyarrow.compute as pc

from trdscreen.conventions import adapt, fitting_date_formats, is_number, is_text, text_as_read
from trdscreen.io import SourceTable
from trdscreen.issues import IssueLog
from trdscreen.schemas import ColumnSpec

_NUMBER = r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$"
_INTEGER = r"^[+-]?\d+(?:\.0*)?$"
_ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


# --------------------------------------------------------------------------- dtype pre-check


def _encoded(column: pa_arrow.ChunkedArray | pa_arrow.Array) -> pa_arrow.DictionaryArray:
    """The column as one dictionary array of text (as read, or encoded here)."""
    whole = column.combine_chunks() if isinstance(column, pa_arrow.ChunkedArray) else column
    if pa_arrow.types.is_dictionary(whole.type):
        return whole
    return pc.dictionary_encode(whole.cast(pa_arrow.string()))


def _per_text(
    column: pa_arrow.ChunkedArray, change: Callable[[pa_arrow.Array], pa_arrow.Array]
) -> pa_arrow.Array:
    """`change` applied to every cell's text; to each distinct text once when the column
    is dictionary-encoded (`io.InputFile.read`), then spread to the rows."""
    if pa_arrow.types.is_dictionary(column.type):
        encoded = _encoded(column)
        return change(encoded.dictionary).take(encoded.indices)
    return change(column)


def _by_distinct(
    column: pa_arrow.ChunkedArray,
    parse: Callable[[pa_arrow.Array], tuple[pa_arrow.Array, pa_arrow.Array]],
) -> tuple[pa_arrow.Array, np.ndarray]:
    """Parse a text column once per distinct text and spread the results to the rows.

    `parse` gets the distinct texts (trimmed, empty as null) and returns (values,
    ok). Returns the values per row and the rows whose non-empty text is not ok.
    Exports repeat a few thousand dates and doses over millions of rows, so this
    parses thousands of texts instead of millions.
    """
    encoded = _encoded(column)
    text = text_as_read(encoded.dictionary)
    values, ok = parse(text)
    rows = encoded.indices  # null where the cell is null
    bad = pc.fill_null(_bad(text, ok).take(rows), False)
    return values.take(rows), np.flatnonzero(bad.to_numpy(zero_copy_only=False))


def _bad(valid_input: pa_arrow.Array, ok: pa_arrow.Array) -> pa_arrow.Array:
    """Where a non-empty input is not ok."""
    return pc.and_(pc.is_valid(valid_input), pc.invert(pc.fill_null(ok, False)))


def _invalid(valid_input: pa_arrow.ChunkedArray, ok: pa_arrow.ChunkedArray) -> np.ndarray:
    return np.flatnonzero(_bad(valid_input, ok).to_numpy(zero_copy_only=False))


def _to_float(column: pa_arrow.ChunkedArray, integral: bool) -> tuple[np.ndarray, np.ndarray, str]:
    """Convert to float64 (NaN = missing); return values, bad rows, check code."""
    if pa_arrow.types.is_integer(column.type) or pa_arrow.types.is_floating(column.type):
        # Unsafe: an integer above 2^53 becomes an inexact float, which `unbounded` flags.
        values = column.cast(pa_arrow.float64(), safe=False).to_numpy(zero_copy_only=False)
        values = np.asarray(values, dtype=np.float64)
        if integral:
            bad = np.flatnonzero(~np.isnan(values) & (values != np.round(values)))
            return values, bad, "not_an_integer"
        return values, np.empty(0, np.int64), "not_a_number"
    if pa_arrow.types.is_null(column.type):
        return np.full(len(column), np.nan), np.empty(0, np.int64), "not_a_number"

    def parse(text: pa_arrow.Array) -> tuple[pa_arrow.Array, pa_arrow.Array]:
        ok = pc.match_substring_regex(text, _INTEGER if integral else _NUMBER)
        clean = pc.if_else(pc.fill_null(ok, False), text, pa_arrow.scalar(None, pa_arrow.string()))
        return clean.cast(pa_arrow.float64()), ok

    parsed, bad = _by_distinct(column, parse)
    values = np.asarray(parsed.to_numpy(zero_copy_only=False), dtype=np.float64)
    return values, bad, "not_an_integer" if integral else "not_a_number"


def _to_date(column: pa_arrow.ChunkedArray) -> tuple[np.ndarray, np.ndarray, str]:
    """Convert to datetime64[s]; only ISO dates (YYYY-MM-DD) are accepted from text."""
    if pa_arrow.types.is_date(column.type) or pa_arrow.types.is_timestamp(column.type):
        if pa_arrow.types.is_timestamp(column.type) and column.type.tz is not None:
            # The calendar date where the time was recorded, not in UTC: 00:30 in Berlin
            # on 1 March is 1 March (shifting it to UTC would make it 29 February).
            column = pc.local_timestamp(column)
        days = column.cast(pa_arrow.date32()).cast(pa_arrow.int32()).to_numpy(zero_copy_only=False)
        return _days_to_datetime(days), np.empty(0, np.int64), "not_iso_date"
    if pa_arrow.types.is_null(column.type):
        return (
            np.full(len(column), np.datetime64("NaT", "s")),
            np.empty(0, np.int64),
            "not_iso_date",
        )

    def parse(text: pa_arrow.Array) -> tuple[pa_arrow.Array, pa_arrow.Array]:
        shape_ok = pc.fill_null(pc.match_substring_regex(text, _ISO_DATE), False)
        candidate = pc.if_else(shape_ok, text, pa_arrow.scalar(None, pa_arrow.string()))
        parsed = pc.strptime(candidate, format="%Y-%m-%d", unit="s", error_is_null=True)
        # strptime rolls impossible days over (2023-02-30 -> 2023-03-02): require a round trip.
        exact = pc.equal(pc.strftime(parsed, format="%Y-%m-%d"), candidate)
        parsed = pc.if_else(pc.fill_null(exact, False), parsed, pa_arrow.scalar(None, parsed.type))
        return parsed.cast(pa_arrow.date32()).cast(pa_arrow.int32()), pc.is_valid(parsed)

    days, bad = _by_distinct(column, parse)
    return _days_to_datetime(days.to_numpy(zero_copy_only=False)), bad, "not_iso_date"


LARGEST_EXACT = float(2**53)
"""Numbers above this (in size) are not exact as float64: refused, not rounded."""
FIRST_DATE = np.datetime64("1900-01-01", "s")
LAST_DATE = np.datetime64("2100-12-31", "s")
"""Dates outside these are refused (a treatment history lies well within them)."""


def unbounded(values: np.ndarray) -> np.ndarray:
    """Rows of a converted number or date column that no real value has: infinite or
    beyond 2^53 (an overflowed or uint64 number), or a date outside 1900-2100."""
    if values.dtype.kind == "M":
        present = ~np.isnat(values)
        return np.flatnonzero(present & ((values < FIRST_DATE) | (values > LAST_DATE)))
    with np.errstate(invalid="ignore"):
        return np.flatnonzero(np.abs(values) > LARGEST_EXACT)


_UNBOUNDED_MESSAGES = {
    "M": "expected {expected} from 1900-01-01 to 2100-12-31; the date is outside that range",
    "f": "expected {expected}; the number is infinite or too large to be exact (above 2^53)",
}


def _days_to_datetime(days: np.ndarray) -> np.ndarray:
    days = np.asarray(days, dtype=np.float64)
    out = np.full(days.shape, np.datetime64("NaT", "s"))
    ok = ~np.isnan(days)
    out[ok] = (days[ok].astype(np.int64) * 86400).astype("datetime64[s]")
    return out


def _to_bool(column: pa_arrow.ChunkedArray) -> tuple[pd.array, np.ndarray, str]:
    if pa_arrow.types.is_boolean(column.type):  # as Arrow holds it: no Python object per cell
        whole = column.combine_chunks() if isinstance(column, pa_arrow.ChunkedArray) else column
        values = whole.fill_null(False).to_numpy(zero_copy_only=False)
        missing = whole.is_null().to_numpy(zero_copy_only=False)
        return pd.arrays.BooleanArray(values, missing), np.empty(0, np.int64), "not_boolean"
    if pa_arrow.types.is_integer(column.type) or pa_arrow.types.is_floating(column.type):
        column = column.cast(pa_arrow.string())
        column = pc.replace_substring_regex(column, r"\.0+$", "")
    text = _per_text(column, lambda values: pc.utf8_lower(text_as_read(values)))
    is_true = pc.fill_null(pc.is_in(text, pa_arrow.array(_TRUE)), False)
    is_false = pc.fill_null(pc.is_in(text, pa_arrow.array(_FALSE)), False)
    bad = _invalid(text, pc.or_(is_true, is_false))
    values = pd.array(
        np.where(is_true.to_numpy(zero_copy_only=False), True, False), dtype="boolean"
    )
    values[~(np.asarray(is_true) | np.asarray(is_false))] = pd.NA
    return values, bad, "not_boolean"


MAX_TEXT_LENGTH = 1000
"""Longest text cell accepted (characters): ids, drug names and codes are far shorter."""


def _to_text(column: pa_arrow.ChunkedArray, lower: bool) -> tuple[pd.Series, np.ndarray, str]:
    whole = column.combine_chunks() if isinstance(column, pa_arrow.ChunkedArray) else column
    # A dictionary column's distinct texts are cleaned once, then spread to the rows.
    encoded = whole if pa_arrow.types.is_dictionary(whole.type) else None
    text = text_as_read(encoded.dictionary if encoded is not None else whole)
    too_long = pc.fill_null(pc.greater(pc.utf8_length(text), MAX_TEXT_LENGTH), False)
    bad = np.empty(0, np.int64)
    if pc.any(too_long).as_py():
        text = pc.if_else(too_long, pa_arrow.scalar(None, pa_arrow.string()), text)
        if encoded is not None:
            too_long = pc.fill_null(too_long.take(encoded.indices), False)
        bad = np.flatnonzero(too_long.to_numpy(zero_copy_only=False))
    if lower:
        text = pc.utf8_lower(text)
    if encoded is not None:
        text = text.take(encoded.indices)
    return pd.Series(pd.array(text, dtype="str")), bad, "too_long"


_ACCEPTED_TYPES = {
    "string": ("text or integers", lambda t: is_text(t) or pa_arrow.types.is_integer(t)),
    "category": ("text", is_text),
    "float": ("numbers or numeric text", lambda t: is_text(t) or is_number(t)),
    "int": ("integers or numeric text", lambda t: is_text(t) or is_number(t)),
    "date": (
        "dates, timestamps or ISO date text",
        lambda t: is_text(t) or pa_arrow.types.is_date(t) or pa_arrow.types.is_timestamp(t),
    ),
    "bool": (
        "booleans, 0/1 or true/false text",
        lambda t: is_text(t) or pa_arrow.types.is_boolean(t) or pa_arrow.types.is_integer(t),
    ),
}
"""Arrow (Parquet) column types each working type can be converted from."""


def _plain(column: pa_arrow.ChunkedArray, keep_text: bool = False) -> pa_arrow.ChunkedArray:
    """A dictionary-encoded column (pandas categorical in Parquet) as its values; with
    `keep_text`, a dictionary of text stays encoded (the converters read it so)."""
    if pa_arrow.types.is_dictionary(column.type):
        if keep_text and pa_arrow.types.is_string(column.type.value_type):
            return column
        return column.cast(column.type.value_type)
    return column


_CONVERSION_MESSAGES = {
    "not_a_number": "expected {expected}; the cell is not a number",
    "not_an_integer": "expected {expected}; the cell is not a whole number",
    "not_iso_date": "expected {expected}; the cell is not an ISO date (other formats are "
    "ambiguous and are not guessed)",
    "not_boolean": "expected true/false (also yes/no, y/n, 1/0)",
    "too_long": f"expected at most {MAX_TEXT_LENGTH} characters; the cell is longer",
}
_AMBIGUOUS_DATE = r"^\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}$"
_AMBIGUOUS_MESSAGE = (
    "expected {expected}; the cell looks like a day/month/year or month/day/year date, which "
    "is ambiguous and is not guessed: {fits}; declare the export's format under "
    "`formats: {column}: dates:` in the column map (--map), or convert the column to YYYY-MM-DD"
)


_DECLARED = {
    "bool": ColumnSpec("bool", expected="true or false (a criterion compares it with them)"),
    "float": ColumnSpec("float", expected="a number (a criterion compares it with numbers)"),
}
"""A criteria column's spec when its criteria declare its type."""


def infer_kind(column: pa_arrow.ChunkedArray) -> str:
    """Working type of a subject column that the contract does not name."""
    if pa_arrow.types.is_boolean(column.type):
        return "bool"
    if pa_arrow.types.is_integer(column.type) or pa_arrow.types.is_floating(column.type):
        return "float"
    if pa_arrow.types.is_date(column.type) or pa_arrow.types.is_timestamp(column.type):
        return "date"
    if not is_text(column.type):
        return "string"  # e.g. a nested Parquet type: refused by the type check
    text = pc.utf8_lower(text_as_read(column))
    present = pc.drop_null(text)
    if len(present) == 0:
        return "string"
    if pc.all(pc.is_in(present, pa_arrow.array(_TRUE + _FALSE))).as_py():
        return "bool"
    if pc.all(pc.match_substring_regex(present, _NUMBER)).as_py():
        return "float"
    return "string"


def _declared_words(source: SourceTable, name: str) -> pa_arrow.ChunkedArray:
    """A column a criterion reads, with the true/false words the site declared for it
    read as true and false, so its type is inferred as the site meant it."""
    column = _plain(source.table.column(name))
    if source.site is not None:
        declared = adapt(column, name, "bool", "", source.site)
        if declared is not None:
            return pa_arrow.chunked_array([declared.column])
    return column


def coerce(
    source: SourceTable,
    specs: dict[str, ColumnSpec],
    log: IssueLog,
    extra: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Convert a source table to working dtypes, logging every unconvertible cell.

    Contract columns are converted by their spec; `extra` names further
    columns (used by criteria), each with the working type its criteria declare
    (`subjectcolumns.criteria_column_kinds`) or None, inferred from the cells then. Other
    columns are not carried forward. Missing required columns are logged and left out.
    """
    table = source.table
    present = set(table.column_names)
    missing = [name for name, spec in specs.items() if spec.required and name not in present]
    for name in missing:
        log.add(
            source,
            None,
            name,
            "missing_column",
            f"required column `{name}` not found; columns are: {', '.join(table.column_names)}; "
            f"map a site header to it under `columns: {source.name}:` in the rule file or --map "
            "(`trdscreen map init` proposes a site map from the export)",
        )
    out: dict[str, object] = {}
    wanted = [(n, s) for n, s in specs.items() if n in present]
    wanted += [
        (
            n,
            _DECLARED[kind]
            if kind
            else ColumnSpec(infer_kind(_declared_words(source, n)), expected="a consistent type"),
        )
        for n, kind in (extra or {}).items()
        if n in present and n not in specs
    ]
    ids = None
    for name, spec in wanted:
        column = _plain(table.column(name), keep_text=True)
        accepted, compatible = _ACCEPTED_TYPES[spec.kind]
        kind = column.type.value_type if pa_arrow.types.is_dictionary(column.type) else column.type
        if not compatible(kind):
            log.add(
                source,
                None,
                name,
                "wrong_type",
                f"column `{name}` has type {kind}; expected {accepted} "
                f"({spec.expected or spec.kind}); the column is not used",
            )
            continue
        declared = None
        if source.site is not None and name != "subject_id":
            declared = adapt(column, name, spec.kind, spec.expected, source.site)
            if declared is not None:
                column = pa_arrow.chunked_array([declared.column])
        bad = np.empty(0, np.int64)
        check = ""
        if spec.kind in ("string", "category"):
            out[name], bad, check = _to_text(column, lower=spec.kind == "category")
            if name == "subject_id":
                ids = out[name]
        elif spec.kind in ("float", "int"):
            out[name], bad, check = _to_float(column, integral=spec.kind == "int")
        elif spec.kind == "date":
            out[name], bad, check = _to_date(column)
        elif spec.kind == "bool":
            out[name], bad, check = _to_bool(column)
        if bad.size:
            message = _CONVERSION_MESSAGES[check].format(expected=spec.expected or "a value")
            if check == "not_iso_date" and is_text(kind):
                message = _date_messages(column, bad, message, spec, name)
            log.add(source, bad, name, check, message, ids)
        if declared is not None and declared.bad.size:  # emptied by the adapter
            log.add(source, declared.bad, name, declared.check, declared.message, ids)
            bad = np.union1d(bad, declared.bad)
        if spec.kind in ("float", "int", "date"):
            values = np.asarray(out[name])
            wild = unbounded(values)
            if wild.size:  # never carried on: the cell is empty from here, and an error
                values = values.copy()  # the converted array may be Arrow's, read-only
                values[wild] = np.datetime64("NaT") if values.dtype.kind == "M" else np.nan
                out[name] = values
                message = _UNBOUNDED_MESSAGES[values.dtype.kind].format(
                    expected=spec.expected or "a value"
                )
                log.add(source, wild, name, "out_of_range", message, ids)
                bad = np.union1d(bad, wild)
        if bad.size:
            log.unconverted[(source.name, name)] = bad
        if spec.plausible_low is not None:
            with np.errstate(invalid="ignore"):
                odd = np.flatnonzero(np.asarray(out[name], dtype=np.float64) < spec.plausible_low)
            if odd.size:
                message = (
                    f"the value is below {spec.plausible_low:g} ({spec.expected}); "
                    "implausible: check the value and its scale"
                )
                log.add(source, odd, name, "implausible_value", message, ids, severity="warning")
    frame = pd.DataFrame(out, index=pd.RangeIndex(table.num_rows))
    for name, series in frame.items():
        if series.dtype.kind == "M":
            frame[name] = series.astype("datetime64[s]")
    return frame


def _date_messages(
    column: pa_arrow.ChunkedArray, bad: np.ndarray, message: str, spec: ColumnSpec, name: str
) -> pd.Series:
    """Per-row messages for unparsed dates: where a cell is a d/m/y-or-m/d/y date, say so
    and which formats would read every such date of the column."""
    cells = pc.take(text_as_read(column), pa_arrow.array(bad))
    looks = pc.fill_null(pc.match_substring_regex(cells, _AMBIGUOUS_DATE), False)
    messages = np.full(len(column), message, dtype=object)
    if not pc.any(looks).as_py():
        return pd.Series(messages)
    fits = fitting_date_formats(pc.unique(pc.filter(cells, looks)))
    wording = (
        f"the column's dates fit {' and '.join(fits)}"
        if fits
        else "no one day/month/year or month/day/year format fits every date of the column"
    )
    ambiguous = _AMBIGUOUS_MESSAGE.format(
        expected=spec.expected or "a date", fits=wording, column=name
    )
    messages[bad[np.asarray(looks.to_numpy(zero_copy_only=False))]] = ambiguous
    return pd.Series(messages)
