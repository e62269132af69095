"""Recognising an input that is not what its name says, before reading it as CSV.

A compressed file, archive, workbook or Parquet file named `.csv`; UTF-16 text
without a byte-order mark; a first line that is a data row (the header lost);
a subjects file given as treatments or the reverse. Each is named as what it
is, with the fix, and never by quoting the file's cells.
"""

from __future__ import annotations

import re
from pathlib import Path

from trdscreen.errors import InputError

_MAGIC = {
    b"\x1f\x8b": "a gzip-compressed file; decompress it first (gunzip)",
    b"PK\x03\x04": "a zip archive (or an Excel .xlsx workbook); extract or export it as CSV",
    b"PAR1": "a Parquet file; name it .parquet",
    b"\xd0\xcf\x11\xe0": "an Excel .xls workbook; export it as CSV",
    b"BZh": "a bzip2-compressed file; decompress it first",
    b"\xfd7zXZ": "an xz-compressed file; decompress it first",
    b"%PDF": "a PDF document; export the data as CSV",
}


def refuse_binary(path: Path, is_utf8: bool, boms: tuple[bytes, ...]) -> None:
    """A file named .csv that is something else: say what it is, not 'bad CSV'."""
    with open(path, "rb") as handle:
        head = handle.read(4096)
    for magic, what in _MAGIC.items():
        if head.startswith(magic):
            raise InputError(f"{path}: is {what}; expected CSV text")
    if b"\x00" not in head or not is_utf8 or head.startswith(boms):
        return
    even = head[0::2].count(0)
    odd = head[1::2].count(0)
    if odd > len(head) // 4 and even == 0:
        encoding = "utf-16-le"
    elif even > len(head) // 4 and odd == 0:
        encoding = "utf-16-be"
    else:
        raise InputError(f"{path}: holds NUL bytes, so it is not CSV text; expected a text file")
    raise InputError(
        f"{path}: looks like UTF-16 text without a byte-order mark; pass --encoding {encoding}"
    )


_DATA_CELL = re.compile(
    r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)([eE][+-]?\d+)?$|^\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}\b"
)


def looks_like_data(header: list[str]) -> bool:
    """A first line with a number or a date in it is a data row, not column names."""
    return any(_DATA_CELL.match(name) for name in header)


_OTHER_TABLE = {
    "treatments": ("subjects", ("drug", "start_date"), ("birth_date", "age", "episode_start",
                   "screening_date", "hamd_screening", "sex", "diagnosis")),
    "subjects": ("treatments", ("birth_date", "age", "episode_start", "screening_date",
                 "hamd_screening"), ("drug", "start_date", "daily_dose_mg", "end_date")),
}  # fmt: skip


def refuse_other_table(path: Path, name: str, header: list[str], rename: dict) -> None:
    """A subjects file given as treatments (or the reverse) is named as such, by its columns."""
    if name not in _OTHER_TABLE:
        return
    other, own, theirs = _OTHER_TABLE[name]
    names = {str(rename.get(h, h)).strip().lower() for h in header}
    if names & set(own):
        return
    found = [c for c in theirs if c in names]
    if len(found) >= 2:
        option = "--subjects FILE" if other == "subjects" else "it as the input (treatments)"
        raise InputError(
            f"{path}: looks like a {other} table (it has columns {', '.join(found)} and none of "
            f"{', '.join(own)}); expected the {name} table. Pass {option}"
        )
