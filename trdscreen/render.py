"""Terminal rendering with rich. The only module that imports rich.

Renderers take finished results (plain tables and dicts) and print them;
they compute nothing that a written table does not already hold.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, cast

from rich.console import Console, JustifyMethod
from rich.table import Table
from rich.text import Text

from trdscreen.buildtables import SET_ASIDE
from trdscreen.buildtrace import export_text, rating_text
from trdscreen.explain import course_verdict, num, observed, state
from trdscreen.issues import is_summary
from trdscreen.printable import printable, printable_data, printable_lines

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from trdscreen.pipeline import RunSummary


class _Console(Console):
    def _render_buffer(self, buffer) -> str:
        """The last net: no text segment reaches the terminal with a control character, escape
        sequence or bidi override in it (rich's own styles and cursor controls are separate
        segments and stay). Line breaks are layout here; renderers escape those that come
        from data with `printable` before laying text out."""
        return super()._render_buffer(
            segment if segment.control else segment._replace(text=printable_lines(segment.text))
            for segment in buffer
        )

    def on_broken_pipe(self) -> None:
        """The reader went away (`trdscreen ... | head`): stop printing, keep the exit code.

        Rich's default exits 1, which pipelines would read as an internal error.
        """
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (sys.stderr if self.stderr else sys.stdout).fileno())


PIPED_WIDTH = 200
"""Columns of tables written to a pipe or file (no terminal to fit): wide enough that
criteria titles and drug names are not cut, unless COLUMNS says otherwise."""


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty() and "COLUMNS" not in os.environ:
        width = PIPED_WIDTH
    return _Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def _row(table: Table, *cells: str) -> None:
    """Add a row of literal text (never parsed as rich markup)."""
    table.add_row(*(Text(printable(cell)) for cell in cells))


def _counts_table(title: str, counts: dict[str, int], total: int) -> Table:
    table = Table(title=title, title_justify="left", show_edge=False)
    table.add_column(title.split()[0].lower())
    table.add_column("subjects", justify="right")
    table.add_column("share", justify="right")
    for label, count in counts.items():
        share = f"{100 * count / total:.0f}%" if total else "-"
        _row(table, label, str(count), share)
    return table


def render_summary(out: Console, result: RunSummary, rules_title: str, folder: str) -> None:
    counts = result.counts()
    total = counts["subjects"]["total"]
    out.print(
        Text.assemble(
            (f"Screened {total} subjects", "bold"),
            f" ({counts['courses']['total']} courses) with ",
            (printable(rules_title), "bold"),
        )
    )
    folder = printable(folder)
    out.print(_counts_table("Decision", counts["decision"], total))
    out.print(_counts_table("Classification", counts["classification"], total))
    out.print(render_attrition(result.attrition))
    from trdscreen.summarytext import notes

    for line in notes(result):
        out.print(line, markup=False, soft_wrap=True)
    out.print(Text.assemble("Output: ", (folder, "bold")))
    out.print(
        f"Report for the investigator: {folder}/report.html (open it in a browser).",
        markup=False,
        soft_wrap=True,
    )
    out.print(
        f"Audit record: manifest.json and audit.jsonl; check it with `trdscreen verify {folder}`, "
        f"read one decision with `trdscreen explain {folder} SUBJECT_ID`.",
        markup=False,
        soft_wrap=True,
    )


def render_quarantine(out: Console, quarantine, folder: str) -> None:
    """One warning line: how many subjects --on-invalid quarantine held, and where the rows are."""
    counts = quarantine.counts()
    folder = printable(folder)
    rejected = counts["treatment_rows_rejected"] + counts["subject_rows_rejected"]
    out.print(
        f"warning: {counts['subjects_held']} subject(s) held for review: {rejected} input row(s) "
        f"failed validation. Their decision is needs_review; their rows are in "
        f"quarantine_treatments and quarantine_subjects in {folder}.",
        markup=False,
        soft_wrap=True,
    )


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
        ("on assumptions", "right"),
    ):
        table.add_column(name, justify=cast(JustifyMethod, justify))
    for row in attrition.to_dict("records"):  # one row per protocol step, not per patient
        step = bool(row["criterion_id"])
        label = f"{row['criterion_id']}: {row['title']}" if step else row["title"]
        _row(
            table,
            str(row["step"]),
            label,
            str(row["excluded_at_step"]) if step or row["excluded_at_step"] else "",
            str(row["remaining"]),
            str(row["not_met_total"]) if step else "",
            str(row["unknown_total"]) if step else "",
            str(row["excluded_only_by_this"]) if step else "",
            str(row["with_assumptions"]) if row["title"] in ("eligible", "needs_review") else "",
        )
    return table


def render_issues(
    out: Console, issues: pd.DataFrame, limit: int = 30, rest: str = "see validation_issues"
) -> None:
    """Issues grouped by file, column and check, with counts and first lines; `rest` says
    where the groups not shown can be read."""
    if issues.empty:
        out.print("No input issues found.")
        return
    listed = issues[~is_summary(issues)]
    grouped = (
        listed.groupby(["severity", "file", "column", "check", "message"], sort=False)
        .agg(count=("rows", "sum"), min=("line", "min"))
        .reset_index()
    )
    more = issues[is_summary(issues)]
    if len(more):  # the rows a capped group did not list count on its first shown row
        key = ["severity", "file", "column", "check"]
        extra = more.groupby(key, as_index=False)["rows"].sum()
        grouped = grouped.merge(extra, on=key, how="left")
        first = ~grouped.duplicated(key)
        grouped["count"] += grouped["rows"].fillna(0).where(first, 0).astype("int64")
        grouped = grouped.drop(columns="rows")
    order = {"error": 0, "warning": 1, "info": 2}
    grouped = grouped.sort_values(
        ["severity", "file", "min"], key=lambda s: s.map(order) if s.name == "severity" else s
    )
    if not out.is_terminal:  # pipes and logs: one plain line per group, never folded
        for row in grouped.head(limit).to_dict("records"):
            where = f"{row['file']}:{row['min']}" if row["min"] else row["file"]
            rows = f" ({row['count']} rows)" if row["count"] > 1 else ""
            out.print(
                printable(
                    f"{row['severity']}: {where}{rows} column {row['column']}: {row['check']}: "
                    f"{row['message']}"
                ),
                markup=False,
                soft_wrap=True,
            )
    else:
        _issue_table(out, grouped, limit)
    if len(grouped) > limit:
        out.print(f"... and {len(grouped) - limit} more groups ({rest}).")


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
    # soft_wrap: one line per message however narrow the terminal, so logs can be grepped
    err.print(Text.assemble(("error: ", "bold red"), printable(message)), soft_wrap=True)
    for line in details or []:
        err.print(f"  {printable(line)}", markup=False, soft_wrap=True)


def render_notes(err: Console, lines: list[str], kind: str = "note") -> None:
    for line in lines:
        err.print(Text(f"{kind}: {printable(line)}"), soft_wrap=True)


def render_presets(out: Console, presets: list, default: str) -> None:
    """The shipped presets, one block each: id and title, generated summary, source."""
    for preset in presets:
        marker = " (default)" if preset.id == default else ""
        title = printable(f"{preset.id}{marker}: {preset.title}")
        out.print(Text(title, style="bold"))
        out.print(Text(f"    {printable(preset.summary)}"))
        out.print(Text(f"    source: {printable(preset.source)}"))
    out.print(Text(f"{len(presets)} presets. Protocol text: trdscreen rules show NAME"))


def render_formulary(out: Console, rows: list[dict], source: str, sha256: str) -> None:
    rows, source = printable_data(rows), printable(source)
    table = Table(title=f"Formulary: {source}", title_justify="left", show_edge=False)
    for name, justify in (
        ("generic", "left"),
        ("class", "left"),
        ("counts as", "left"),
        ("min mg/day", "right"),
        ("minimum from", "left"),
    ):
        table.add_column(name, justify=cast(JustifyMethod, justify), overflow="fold")
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
    row = printable_data(row)
    minimum = row["min_mg_per_day"]
    unit = row.get("dose_unit") or "mg"
    per = unit if unit.endswith("/session") else f"{unit}/day"
    lines = [
        f"{row['looked_up']} -> {row['generic']}"
        + (f" ({row['formulation']})" if row["formulation"] else ""),
        f"  class: {row['drug_class']} (ATC {row['atc_code']}); counts as: {row['counts_as']}",
        "  minimum adequate dose: "
        + ("none known" if minimum is None else f"{minimum:g} {per}")
        + (f" [{row['min_source']}]" if row["min_source"] else "")
        + f" (dose column: {row['dose_source']})",
    ]
    if row.get("any_dose"):
        lines.append(
            "  the rule set counts any recorded dose as adequate (adequacy.dose.any_dose_for)"
        )
    if "weekly" in (row["formulation"] or "").split():
        lines.append(
            "  a weekly product: its dose is compared as dose / 7 (unless dose_every_days says)"
        )
    if unit.endswith("/session"):
        lines.append(f"  dosed in {unit}: a row's dose is never turned into a daily amount")
    elif unit != "mg":
        lines.append(
            f"  dosed in {unit}: a row's dose is converted to it (dose_unit) before comparing"
        )
    if row["alt_min_mg_per_day"] is not None:
        lines.append(
            f"  alternative minimum: {row['alt_min_mg_per_day']:g} {per} [{row['alt_source']}]"
        )
    if row["formulation_minimums"]:
        forms = ", ".join(f"{k} {v:g} {unit}" for k, v in row["formulation_minimums"].items())
        lines.append(f"  formulation minimums: {forms}")
    if row.get("moiety") and row["moiety"] != row["generic"]:
        lines.append(
            f"  active moiety: {row['moiety']} (one trial with it under `distinct: moiety`)"
        )
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


# --------------------------------------------------------------------------- audit commands


def render_verify(out: Console, verification) -> None:
    """Each check as a line: OK or FAIL, what was checked, what was found."""
    manifest = printable_data(verification.run.manifest)
    if manifest.get("kind") == "build":
        out.print(
            f"Build of {manifest.get('profile')} records ({manifest.get('rules', {}).get('id')}, "
            f"trdscreen {manifest.get('versions', {}).get('trdscreen')})",
            markup=False,
        )
    else:
        out.print(
            f"Run {manifest.get('run_id')} ({manifest.get('rules', {}).get('id')}, finished "
            f"{manifest.get('finished_at')}, by {manifest.get('user')} on {manifest.get('host')})",
            markup=False,
        )
    ok_groups: dict[str, list[str]] = {}
    for check in verification.checks:  # many files share one verdict: print it once
        if check.ok:
            ok_groups.setdefault(check.detail, []).append(check.subject)
    printed: set[str] = set()
    for check in verification.checks:
        if check.ok and check.detail in printed:
            continue
        subject = printable(check.subject)
        if check.ok:
            printed.add(check.detail)
            names = ok_groups[check.detail]
            subject = names[0] if len(names) == 1 else f"{len(names)} files ({', '.join(names)})"
            subject = printable(subject)
        mark = Text("  ok  ", "green") if check.ok else Text(" FAIL ", "bold red")
        out.print(Text.assemble(mark, f"{subject}: {printable(check.detail)}"), soft_wrap=True)
    problems = verification.problems
    if not problems:
        what = "re-run gives identical outputs" if verification.reran else "not re-run"
        out.print(Text.assemble(("verified: ", "bold green"), f"intact; {what}"))
    else:
        out.print(Text.assemble(("NOT verified: ", "bold red"), f"{len(problems)} problem(s)"))


def _course_lines(number: int, c: dict, ratings_file: str = "") -> list[str]:
    """One course as a short block a coordinator can read top to bottom."""
    drug = c["drug"]
    if c["drug_generic"] not in (None, c["drug"]):
        drug += f" = {c['drug_generic']}"
    details = [d for d in (c.get("drug_class"),) if d]
    details += [
        c[k]
        for k in ("role", "modality")
        if c.get(k) not in (None, "monotherapy", "pharmacotherapy")
    ]
    if details:
        drug += f" ({', '.join(details)})"
    end = "ongoing (to the reference date)" if c["ongoing"] else c["end_date"]
    weeks = num(c["weeks"]) if c["weeks"] is not None else "unknown"
    dose = f"{num(c['daily_dose_mg'])} mg/day" if c["daily_dose_mg"] is not None else "missing"
    if c["min_dose_mg"] is not None:
        dose += (
            f", minimum {num(c['min_dose_mg'])} mg/day ({c['min_dose_source']}): "
            f"{state(c['dose_check'])}"
        )
    else:
        dose += f": {state(c['dose_check'])}"
    adherence = num(c["adherence"]) if c["adherence"] is not None else "missing"
    pct = c["pct_improvement"]
    improvement = f"{num(pct)} %" if pct is not None else "no scores"
    why = "; ".join(r["text"] for r in c["reasons"]) or "-"
    rows = c.get("course_rows") or 1
    part = f" (course {c.get('course_id')}, one of {rows} rows)" if rows > 1 else ""
    counted = num(c["exposure_weeks"]) if c.get("exposure_weeks") is not None else "unknown"
    exposure = (
        f"     counted: {c.get('exposure_start')} to {c.get('exposure_end') or 'unknown'}, "
        f"{counted} weeks at an adequate dose"
    )
    if c.get("sessions") is not None:
        exposure += f"; {num(c['sessions'])} sessions"
    return [
        f"  {number}. {c['source_file']} line {c['source_line']}: {drug}: {course_verdict(c)}"
        + part,
        f"     {c['start_date']} to {end}, {weeks} weeks: duration {state(c['duration_check'])}",
        exposure,
        f"     dose {dose}",
        f"     adherence {adherence}: {state(c['adherence_check'])}; current episode: "
        f"{state(c['episode_check'])}",
        f"     improvement {improvement}: {state(c['outcome'])}",
        f"     why: {why}",
        *[
            t
            for t in (
                export_text(c.get("built_ratings") or {}),
                rating_text(c.get("built_ratings") or {}, ratings_file),
            )
            if t
        ],
        *(_event_line(e) for e in c.get("built_from") or ()),
    ]


def _event_line(event: dict) -> str:
    """One drug event a built course came from (`trdscreen build`)."""
    where = f"     event line {event['source_line']}: {event['drug']} on {event['event_date']}"
    if event["status"] != "used":  # a duplicate, or a strength summed into another event
        return f"{where}: {SET_ASIDE.get(event['status'], state(event['status']))}"
    days = event["days"]
    length = f"{num(days)} days ({event['duration_source']})" if days else "days unknown"
    dose = event["daily_dose_mg"]
    amount = f"{num(dose)} mg/day ({event['dose_source']})" if dose is not None else "dose unknown"
    return f"{where}, {length}, {amount}"


def render_explain(out: Console, data: dict) -> None:
    """A coordinator's reading of one decision: courses, counts, criteria, decision."""
    data = printable_data(data)
    run = data["run"]
    decision = data["decision"]
    style = {"eligible": "bold green", "excluded": "bold red"}.get(decision, "bold yellow")
    out.print(Text.assemble((f"{data['subject_id']}: ", "bold"), (decision.upper(), style)))
    out.print(f"  {data['reason']}", markup=False)
    if data.get("to_resolve"):
        out.print(f"  to resolve first: {data['to_resolve']}", markup=False)
    review = data.get("adjudication")
    if review:
        out.print(
            f"  adjudicated: {data['final_decision'].upper()} by {review['reviewer']} on "
            f"{review['date']} ({review['reason']}); computed: {decision}",
            markup=False,
        )
    out.print(
        f"Run {run['run_id']} ({run['finished_at']}), rules {run['rules_id']}: "
        f"{run['rules_title']} (normalized SHA-256 {run['rules_normalized_sha256'][:12]}...); "
        f"reference date {data['reference_date'] or 'unknown'}; age "
        f"{num(data['age']) if data['age'] is not None else 'unknown'}",
        markup=False,
        soft_wrap=True,
    )
    if run.get("rules_summary"):
        out.print(f"Rule set in brief: {run['rules_summary']}", markup=False, soft_wrap=True)
    build = data.get("build")
    if build:
        out.print(
            build["note"]
            or (
                f"Courses built by `trdscreen build`: under each, the {build['events_file']} "
                "events it was made from"
                if build["events_file"]
                else "Courses given by the export; under each, the ratings `trdscreen build "
                f"--profile courses` attached from {build['ratings_file']}"
            ),
            markup=False,
            soft_wrap=True,
        )
    if data.get("quarantine"):
        out.print(Text("Held for review by --on-invalid quarantine: nothing was counted", "bold"))
        for row in data["quarantine"]:
            out.print(
                f"  {row['source_file']} line {row['source_line']}: {row['status']}: "
                f"{row['reasons']}",
                markup=False,
                soft_wrap=True,
            )
        out.print(Text.assemble(("Decision: ", "bold"), (decision, style)))
        return
    out.print(Text(f"Treatment courses ({len(data['courses'])}), by start date", "bold"))
    for number, course in enumerate(data["courses"], start=1):
        for line in _course_lines(number, course, (build or {}).get("ratings_file") or ""):
            out.print(line, markup=False, soft_wrap=True)
    counts = "; ".join(
        f"{v['certain']} {v['label']}"
        + (f" (up to {v['at_most']})" if v["at_most"] != v["certain"] else "")
        for v in data["counts"].values()
    )
    out.print(f"Counts: {counts}.", markup=False, soft_wrap=True)
    out.print(f"Classification: {data['classification']}", markup=False)
    assumptions = data.get("assumptions") or []
    out.print(
        "Rests on assumptions: "
        + ("; ".join(f"{a['code']} ({a['text']})" for a in assumptions) if assumptions else "none"),
        markup=False,
        soft_wrap=True,
    )
    for column, value in data["staging"].items():
        out.print(f"  {column}: {num(value) if value is not None else 'unknown'}", markup=False)
    criteria = Table(title="Criteria (protocol order)", title_justify="left", show_edge=False)
    for name in ("#", "criterion", "observed", "threshold", "margin", "outcome"):
        criteria.add_column(name, overflow="fold")
    for c in data["criteria"]:
        outcome = c["outcome"].replace("_", " ")
        if c.get("resolved_from_unknown"):
            outcome += " (unknown, resolved by the rule set)"
        _row(
            criteria,
            str(c["order"]),
            f"{c['criterion_id']}: {c['title']}",
            observed(c),
            c["threshold"],
            num(c["margin"]),
            outcome,
        )
    out.print(criteria)
    out.print(Text.assemble(("Decision: ", "bold"), (decision, style), f" ({data['reason']})"))


def render_diff(out: Console, data: dict, limit: int = 50) -> None:
    """Context note, subjects that changed decision with flipped criteria, attritions."""
    data = printable_data(data)

    a, b = data["a"], data["b"]
    out.print(f"A: {a['path']} (rules {a['rules_id']}, run {a['run_id']})", markup=False)
    out.print(f"B: {b['path']} (rules {b['rules_id']}, run {b['run_id']})", markup=False)
    out.print(Text.assemble(("Note: ", "bold"), data["context"]["note"]))
    if data["context"]["versions_differ"]:
        out.print(f"  versions differ: {', '.join(data['context']['versions_differ'])}")
    subjects = data["subjects"]
    out.print(
        f"{subjects['changed_decision']} of {subjects['in_both']} subjects changed decision"
        + "".join(f"; {n} {direction}" for direction, n in sorted(data["directions"].items()))
        + (
            f"; {subjects['changed_by_adjudication']} changed final decision by adjudication"
            if subjects.get("changed_by_adjudication")
            else ""
        ),
        markup=False,
        soft_wrap=True,
    )
    for change in data.get("adjudication_changes", [])[:limit]:
        reviewer = change["reviewer_b"] or change["reviewer_a"]
        reason = change["reason_b"] or change["reason_a"]
        out.print(
            f"  {change['subject_id']}: {change['direction']} by adjudication "
            f"({reviewer}: {reason}); the computed decision is the same",
            markup=False,
        )
    for side in ("a", "b"):
        only = subjects[f"only_in_{side}"]
        if only:
            shown = ", ".join(only[:limit]) + (" ..." if len(only) > limit else "")
            out.print(f"{len(only)} subject(s) only in {side.upper()}: {shown}", markup=False)
    if data["changes"]:
        out.print(Text("Changed decisions", "bold"))
    for change in data["changes"][:limit]:
        out.print(
            f"  {change['subject_id']}: {change['direction']} "
            f"({change['classification_a']} -> {change['classification_b']})",
            markup=False,
        )
        for c in change["criteria_flipped"]:
            out.print(
                f"     criterion {c['criterion_id']}: {c['outcome_a']} -> {c['outcome_b']}",
                markup=False,
            )
        for c in change["courses_changed"]:
            pct = c["pct_improvement"]
            improvement = f", improvement {num(pct)} %" if pct is not None else ""
            out.print(
                f"     {c['source_file']} line {c['source_line']} {c['drug']}{improvement}: "
                f"failed {c['failed_a']} -> {c['failed_b']} (outcome {c['outcome_a']} -> "
                f"{c['outcome_b']}; adequate {c['adequate_a']} -> {c['adequate_b']})",
                markup=False,
                soft_wrap=True,
            )
    hidden = data["subjects"]["changed_decision"] - min(len(data["changes"]), limit)
    if hidden > 0:
        out.print(f"  ... and {hidden} more (use --json for all).")
    counts = Table(title="Decisions", title_justify="left", show_edge=False)
    for name in ("decision", "A", "B"):
        counts.add_column(name, justify="right")
    for row in data["attrition"]["decisions"]:
        _row(counts, row["decision"], str(row["a"]), str(row["b"]))
    out.print(counts)
    out.print(Text("Attrition (excluded at each step, in protocol order)", "bold"))
    for side in ("a", "b"):
        line = _attrition_line(data["attrition"][side])
        out.print(f"  {side.upper()}: {line}", markup=False, soft_wrap=True)


def _attrition_line(steps: list[dict]) -> str:
    """screened 40 -> AGE -3 -> ... -> needs_review 8 -> eligible 12."""
    parts = []
    for step in steps:
        if step["criterion_id"]:
            parts.append(f"{step['criterion_id']} -{step['excluded_at_step']}")
        elif step["excluded_at_step"]:  # the quarantine step
            parts.append(f"{step['title'].split(':')[0]} -{step['excluded_at_step']}")
        else:
            parts.append(f"{step['title']} {step['remaining']}")
    return " -> ".join(parts)
