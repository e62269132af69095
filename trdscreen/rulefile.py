"""Reading rule files: YAML through a safe loader (no tags, no aliases, bounded size and
nesting), parsed into a `RuleSet`, with every problem reported at once by file, line and
key; preset lookup; site column maps."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from trdscreen.errors import RuleError
from trdscreen.io import read_config_file
from trdscreen.ruleset import RuleSet
from trdscreen.sitemap import ColumnMap

MAX_RULE_FILE_BYTES = 1_000_000


class _NoAliasSafeLoader(yaml.SafeLoader):
    """Safe loader that refuses YAML aliases (no billion-laughs expansion)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in rule files", event.start_mark
            )
        return super().compose_node(parent, index)


def key_lines(node: yaml.Node, path: tuple[Any, ...] = ()) -> dict[tuple[Any, ...], int]:
    """Map each key path of a composed YAML document to its 1-based line (one pass, no
    recursion: linear in the document's size, whatever its shape)."""
    lines: dict[tuple[Any, ...], int] = {}
    stack: list[tuple[yaml.Node, tuple[Any, ...], int | None]] = [(node, path, None)]
    while stack:
        current, where, key_line = stack.pop()
        lines[where] = key_line if key_line is not None else current.start_mark.line + 1
        if isinstance(current, yaml.MappingNode):
            for key_node, value_node in current.value:
                stack.append((value_node, (*where, key_node.value), key_node.start_mark.line + 1))
        elif isinstance(current, yaml.SequenceNode):
            for index, item in enumerate(current.value):
                stack.append((item, (*where, index), None))
    return lines


MAX_YAML_DEPTH = 64
"""Deepest nesting of mappings and lists in a rule file or column map (a real one is
about 5 deep); deeper files are refused before the parser recurses into them."""


def _nesting_depth(text: str) -> int:
    """An upper bound of a YAML text's nesting: open flow brackets plus indentation levels."""
    depth = flow = 0
    for char in text:
        if char in "[{":
            flow += 1
            depth = max(depth, flow)
        elif char in "]}":
            flow = max(flow - 1, 0)
    indents = {len(line) - len(line.lstrip(" ")) for line in text.splitlines() if line.strip()}
    return depth + len(indents)


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names allowed at `loc` (the parent of an unknown key), if a model sits there."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        annotation = fields[part].annotation
        current = _first_model(annotation)
        if current is None:
            return None
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(
    error: ValidationError,
    source: str,
    lines: dict,
    model: type[BaseModel] = None,  # type: ignore[assignment]
) -> list[str]:
    model = model or RuleSet
    problems = []
    for item in error.errors():
        loc = tuple(item["loc"])
        path = ".".join(str(p) for p in loc) or "(top level)"
        line = lines.get(loc) or lines.get(loc[:-1]) or lines.get(())
        where = f"{source}:{line}" if line else source
        kind = item["type"]
        if kind == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            problems.append(f"{where}: key `{path}` is not a known key{hint}")
            continue
        if kind == "missing":
            problems.append(f"{where}: key `{path}` is required")
            continue
        got = item.get("input")
        shown = json.dumps(got, default=str) if not isinstance(got, dict) else "a mapping"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        message = item["msg"].removeprefix("Value error, ")
        expected = item.get("ctx", {}).get("expected")
        if expected:
            message = f"expected one of {expected}"
        problems.append(f"{where}: key `{path}`: got {shown}; {message}")
    return problems


def load_yaml(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """Safe-load YAML (aliases refused, nesting bounded); RuleError names the file and line."""
    if _nesting_depth(text) > MAX_YAML_DEPTH:
        raise RuleError(
            f"{source}: nested more than {MAX_YAML_DEPTH} levels deep; a rule file or column "
            "map is a few levels of keys and lists"
        )
    try:
        node = yaml.compose(text, Loader=_NoAliasSafeLoader)
        data = yaml.load(text, Loader=_NoAliasSafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RuleError(f"{where}: not valid YAML ({problem})") from None
    except RecursionError:
        raise RuleError(f"{source}: nested too deeply to read") from None
    return node, data


def _validated(model: type[BaseModel], data: Any, node: yaml.Node | None, source: str, what: str):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = _format_errors(exc, source, key_lines(node) if node else {}, model)
        raise RuleError(f"{source}: invalid {what} ({len(problems)} problems)", problems) from None


def parse_rules(text: str, source: str) -> RuleSet:
    """Parse rule-file text; raise RuleError listing every problem."""
    if len(text.encode("utf-8")) > MAX_RULE_FILE_BYTES:
        raise RuleError(f"{source}: rule file is larger than {MAX_RULE_FILE_BYTES} bytes")
    node, data = load_yaml(text, source)
    if not isinstance(data, dict):
        raise RuleError(f"{source}: a rule file is a YAML mapping (keys such as id, criteria)")
    return _validated(RuleSet, data, node, source, "rule file")


def read_rule_file(path: Path) -> tuple[RuleSet, str]:
    """Load a rule file; returns the rule set and the SHA-256 of its bytes."""
    text, digest = read_config_file(Path(path), "rule file", MAX_RULE_FILE_BYTES)
    return parse_rules(text, str(path)), digest


DEFAULT_PRESET = "sforzini-2021"


def preset_dir() -> Path:
    """Folder of the shipped rule sets: inside the wheel, or rules/ in a checkout."""
    packaged = Path(str(resources.files("trdscreen"))) / "_rules"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "rules"


def resolve_rules(name_or_path: str | None) -> Path:
    """A preset name (e.g. sforzini-2021) or a path to a rule file."""
    if name_or_path is None:
        name_or_path = DEFAULT_PRESET
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        return candidate
    preset = preset_dir() / f"{name_or_path}.yaml"
    if preset.exists():
        return preset
    known = sorted(p.stem for p in preset_dir().glob("*.yaml"))
    raise RuleError(
        f"rules {name_or_path!r}: no such file and no such preset; presets: {', '.join(known)}"
    )


def load_column_map(path: Path) -> ColumnMap:
    """A separate column-map file: the same shape as a rule file's `columns:`."""
    text, _ = read_config_file(Path(path), "column map", MAX_RULE_FILE_BYTES)
    node, data = load_yaml(text, str(path))
    if isinstance(data, dict) and set(data) == {"columns"}:
        data = data["columns"]
    return _validated(ColumnMap, data or {}, node, str(path), "column map")
