"""Text from inputs, rule files and run folders made safe for a terminal or a log.

A subject id, drug name, header or rule title may hold escape sequences (CSI,
OSC), C1 controls, bidi overrides or line breaks. Shown raw they can recolour
or rewrite a terminal, hide text, or forge a log line. `printable` escapes
every character that `str.isprintable` refuses, visibly and reversibly enough
to read (`\\x1b`, `\\u202e`, `\\n`); written tables keep the true values.
Rendering (`trdscreen.render`) and the CLI's plain output apply it at the one
point where text leaves for a terminal.
"""

from __future__ import annotations

from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet may run a text cell that starts with one of these as a formula."""
ESCAPE_MARK = "'"
"""Put before such a cell in a CSV trdscreen writes (and before one that starts with the
mark itself, so the escaping can be undone exactly: `unmarked`)."""


def unmarked(cell: str) -> str:
    """A CSV cell as trdscreen's formula escaping wrote it, back to its value."""
    return cell[1:] if cell.startswith(ESCAPE_MARK) else cell


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """`text` as a string of printable characters only (line breaks escaped too)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def printable_lines(text: str) -> str:
    """Like `printable`, but line breaks stay: for a multi-line document we laid out."""
    return "\n".join(printable(line) for line in str(text).split("\n"))


def printable_data(value: Any) -> Any:
    """Every string in a nest of dicts, lists and tuples made `printable` (keys too)."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_data(k): printable_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(printable_data(v) for v in value)
    return value
