"""Terminal rendering with rich. The only module that imports rich.

Renderers take finished results (plain tables and dicts) and print them;
they compute nothing that a written table does not already hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from trdscreen.pipeline import ScreenResult


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def _row(table: Table, *cells: str) -> None:
    """Add a row of literal text (never parsed as rich markup)."""
    table.add_row(*(Text(str(cell)) for cell in cells))


def _counts_table(title: str, counts: dict[str, int], total: int) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column(title.split()[0].lower())
    table.add_column("subjects", justify="right")
    table.add_column("share", justify="right")
    for label, count in counts.items():
        share = f"{100 * count / total:.0f}%" if total else "-"
        _row(table, label, str(count), share)
    return table


def render_summary(out: Console, result: ScreenResult, rules_title: str, folder: str) -> None:
    counts = result.counts()
    total = counts["subjects"]["total"]
    out.print(
        f"[bold]Screened {total} subjects[/bold] ({counts['courses']['total']} courses) "
        f"with [bold]{rules_title}[/bold]"
    )
    out.print(_counts_table("Decision", counts["decision"], total))
    out.print(_counts_table("Classification", counts["classification"], total))
    out.print(render_attrition(result.attrition))
    near = int((result.decisions["near_miss_criteria"].fillna("") != "").sum())
    if near:
        out.print(f"{near} excluded subject(s) are near misses (see near_miss_criteria).")
    issues = counts["issues"]
    if issues:
        listed = ", ".join(f"{n} {severity}" for severity, n in issues.items())
        out.print(f"Input issues: {listed} (validation_issues in the output folder).")
    out.print(f"Output: [bold]{folder}[/bold]")


def render_attrition(attrition: pd.DataFrame) -> Table:
    table = Table(title="Attrition (protocol order)", title_justify="left", show_edge=False)
    for name, justify in (
        ("step", "right"),
        ("criterion", "left"),
        ("excluded here", "right"),
        ("remaining", "right"),
        ("not met (all)", "right"),
        ("unknown", "right"),
        ("excluded by this alone", "right"),
    ):
        table.add_column(name, justify=justify)
    for row in attrition.to_dict("records"):  # one row per protocol step, not per patient
        step = bool(row["criterion_id"])
        label = f"{row['criterion_id']}: {row['title']}" if step else row["title"]
        _row(
            table,
            str(row["step"]),
            label,
            str(row["excluded_at_step"]) if step else "",
            str(row["remaining"]),
            str(row["not_met_total"]) if step else "",
            str(row["unknown_total"]) if step else "",
            str(row["excluded_only_by_this"]) if step else "",
        )
    return table


def render_issues(out: Console, issues: pd.DataFrame, limit: int = 30) -> None:
    """Issues grouped by file, column and check, with counts and first lines."""
    if issues.empty:
        out.print("No input issues found.")
        return
    grouped = (
        issues.groupby(["severity", "file", "column", "check", "message"], sort=False)["line"]
        .agg(["count", "min"])
        .reset_index()
    )
    order = {"error": 0, "warning": 1, "info": 2}
    grouped = grouped.sort_values(
        ["severity", "file", "min"], key=lambda s: s.map(order) if s.name == "severity" else s
    )
    if not out.is_terminal:  # pipes and logs: one plain line per group, never folded
        for row in grouped.head(limit).to_dict("records"):
            where = f"{row['file']}:{row['min']}" if row["min"] else row["file"]
            rows = f" ({row['count']} rows)" if row["count"] > 1 else ""
            out.print(
                f"{row['severity']}: {where}{rows} column {row['column']}: {row['check']}: "
                f"{row['message']}",
                markup=False,
                soft_wrap=True,
            )
    else:
        _issue_table(out, grouped, limit)
    if len(grouped) > limit:
        out.print(f"... and {len(grouped) - limit} more groups (see validation_issues).")


def _issue_table(out: Console, grouped: pd.DataFrame, limit: int) -> None:
    table = Table(title="Input issues", title_justify="left", show_edge=False, show_lines=False)
    for name in ("severity", "file", "first line", "rows", "column", "check", "expected / detail"):
        table.add_column(name, overflow="fold")
    for row in grouped.head(limit).to_dict("records"):  # issue groups, not patients
        line = str(row["min"]) if row["min"] else "-"
        _row(
            table,
            row["severity"],
            row["file"],
            line,
            str(row["count"]),
            row["column"],
            row["check"],
            row["message"],
        )
    out.print(table)


def render_error(err: Console, message: str, details: list[str] | None = None) -> None:
    err.print(Text.assemble(("error: ", "bold red"), message))
    for line in details or []:
        err.print(f"  {line}", markup=False)


def render_presets(out: Console, presets: list, default: str) -> None:
    """The shipped presets, one block each: id and title, generated summary, source."""
    for preset in presets:
        marker = " (default)" if preset.id == default else ""
        out.print(Text(f"{preset.id}{marker}: {preset.title}", style="bold"))
        out.print(Text(f"    {preset.summary}"))
        out.print(Text(f"    source: {preset.source}"))
    out.print(Text(f"{len(presets)} presets. Protocol text: trdscreen rules show NAME"))


def render_formulary(out: Console, rows: list[dict], source: str, sha256: str) -> None:
    table = Table(title=f"Formulary: {source}", title_justify="left", show_edge=False)
    for name, justify in (
        ("generic", "left"),
        ("class", "left"),
        ("counts as", "left"),
        ("min mg/day", "right"),
        ("minimum from", "left"),
    ):
        table.add_column(name, justify=justify, overflow="fold")
    for row in rows:
        minimum = row["min_mg_per_day"]
        _row(
            table,
            row["generic"],
            row["drug_class"],
            row["counts_as"],
            "-" if minimum is None else f"{minimum:g}",
            row["min_source"] or "no minimum in the sources",
        )
    out.print(table)
    out.print(Text(f"{len(rows)} drugs; sha256 {sha256}. Look one up: trdscreen formulary DRUG"))


def render_drug(out: Console, row: dict) -> None:
    minimum = row["min_mg_per_day"]
    lines = [
        f"{row['looked_up']} -> {row['generic']}"
        + (f" ({row['formulation']})" if row["formulation"] else ""),
        f"  class: {row['drug_class']} (ATC {row['atc_code']}); counts as: {row['counts_as']}",
        "  minimum adequate dose: "
        + ("none known" if minimum is None else f"{minimum:g} mg/day")
        + (f" [{row['min_source']}]" if row["min_source"] else "")
        + f" (dose column: {row['dose_source']})",
    ]
    if row["alt_min_mg_per_day"] is not None:
        lines.append(
            f"  alternative minimum: {row['alt_min_mg_per_day']:g} mg/day [{row['alt_source']}]"
        )
    if row["formulation_minimums"]:
        forms = ", ".join(f"{k} {v:g} mg" for k, v in row["formulation_minimums"].items())
        lines.append(f"  formulation minimums: {forms}")
    if row["synonyms"]:
        lines.append(f"  names: {', '.join(row['synonyms'])}")
    if row["non_depression_brands"]:
        lines.append(f"  never an antidepressant trial: {', '.join(row['non_depression_brands'])}")
    if row["non_depression_product"]:
        lines.append("  NOTE: this name is a non-depression product; it never counts as a trial")
    if row["notes"]:
        lines.append(f"  notes: {row['notes']}")
    for line in lines:
        out.print(Text(line))
