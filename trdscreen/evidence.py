"""Evidence tags of a rule file: the comment on a parameter's line carries `[V]`
(verified), `[S]` (secondary source) or `[U]` (unverified), the convention of the shipped
presets. Read from the YAML text itself; `protocol` prints each parameter with its tag,
and a shipped preset must tag every parameter of its clinical sections."""

from __future__ import annotations

import re
from pathlib import Path

from trdscreen.rulefile import key_lines, load_yaml

TAG = re.compile(r"\[(V|S|U)\]")
Tags = dict[tuple, str]

CLINICAL_SECTIONS = (
    "formulary.dose_source",
    "formulary.overrides",
    "formulary.also_count",
    "adequacy",
    "outcome",
    "early_stop",
    "counting",
    "resistance",
    "staging",
)
"""Key paths whose every parameter must carry an evidence tag in a shipped preset."""


def _comment(line: str) -> str:
    """The comment part of a YAML line (a `#` outside quotes, after a space or at the start)."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1] in " \t"):
            return line[index + 1 :]
    return ""


def _tags(node, text: str) -> Tags:
    lines = text.splitlines()
    tags: Tags = {}
    line_tags: dict[int, str | None] = {}  # many keys share a line (a flow list): read it once
    for path, number in key_lines(node).items():
        if not path or number > len(lines):
            continue
        if number not in line_tags:
            found = TAG.search(_comment(lines[number - 1]))
            line_tags[number] = found.group(1) if found else None
        tag = line_tags[number]
        if tag is not None:
            tags[path] = tag
    return tags


def tag_of(tags: Tags, *path: str | int) -> str:
    """The tag of a key path, else of its nearest tagged parent; '-' if none."""
    key = tuple(path)
    while key:
        if key in tags:
            return tags[key]
        key = key[:-1]
    return "-"


def untagged_parameters(data: dict, tags: Tags) -> list[str]:
    """Leaf parameters of the clinical sections that carry no evidence tag."""
    missing = []

    def walk(value: object, path: tuple) -> None:
        if isinstance(value, dict) and value:
            for key, child in value.items():
                walk(child, (*path, key))
        elif path not in tags:
            missing.append(".".join(str(p) for p in path))

    for section in CLINICAL_SECTIONS:
        path = tuple(section.split("."))
        value: object = data
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None or path[-1] in data:
            walk(value, path)
    return missing


def read_tagged(path: Path) -> tuple[Tags, list[str]]:
    """A rule file's evidence tags and its untagged clinical parameters (one read, one parse)."""
    text = Path(path).read_text(encoding="utf-8")
    node, data = load_yaml(text, str(path))
    if node is None:
        return {}, []
    tags = _tags(node, text)
    return tags, untagged_parameters(data, tags)
