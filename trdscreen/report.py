"""`report.html`: the screening as one self-contained page a PI, monitor or IRB reads.

No script, no font, no stylesheet or image from elsewhere: inline CSS and SVG only,
rendered by Jinja2 with autoescape (a drug named `<script>` is text), from what
`trdscreen.reportdata` reads out of the run folder. The bytes depend on the folder
and the options only (no clock, no path of the folder), so `trdscreen report
RUN_DIR` renders the run's own file again and `verify` compares the two.
"""

from __future__ import annotations

import datetime as dt
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2

from trdscreen.explain import course_verdict, num, observed, state
from trdscreen.printable import printable_data
from trdscreen.reportdata import ReportOptions, report_data
from trdscreen.runs import RunFolder

REPORT_FILE = "report.html"
GENERATOR = '<meta name="generator" content="trdscreen '
"""How a report trdscreen wrote begins (what --force may replace)."""

# Flow diagram geometry (px): a main column of remaining counts, side boxes of exclusions.
FLOW_WIDTH, MAIN_X, MAIN_W, SIDE_X, SIDE_W = 820, 10, 400, 470, 340
BOX_H, ROW_H, TOP = 58, 78, 10
# Course timeline geometry.
TL_WIDTH, TL_LABEL, TL_LANE, TL_TOP = 820, 230, 26, 24

VERDICT_CLASS = {
    "FAILED trial": "failed",
    "FAILED trial (inferred)": "inferred",
    "adequate, not failed": "adequate",
    "not adequate": "inadequate",
    "not a trial": "inadequate",
}


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "\u2026"


def flow_boxes(flow: dict[str, Any]) -> dict[str, Any]:
    """Positions of the flow diagram's boxes (data only; the template draws them)."""
    main, side = [], []
    y = TOP
    main.append({"kind": "screened", "step": 0, "n": flow["screened"], "y": y,
                 "lines": ["Subjects screened"], "title": "screened"})  # fmt: skip
    for s in flow["steps"]:
        y += ROW_H
        label = f"{s['criterion_id']}: {s['title']}" if s["criterion_id"] else s["title"]
        if s["kind"] == "quarantined":
            side_lines = ["held for review (quarantined)", "rows rejected by validation"]
            side_kind = "quarantined"
        else:
            side_lines = [f"excluded: {s['criterion_id'] or s['title']} not met"]
            margins = [(lab, n) for lab, n in s["reasons"] if lab != "not met"]
            side_lines.append(" \u00b7 ".join(f"{lab}: {n}" for lab, n in margins))
            side_kind = "excluded"
        side.append({"kind": side_kind, "step": s["step"], "n": s["excluded"], "y": y - ROW_H // 2,
                     "lines": [_short(t, 52) for t in side_lines if t], "title": label})  # fmt: skip
        main.append({"kind": "remaining", "step": s["step"], "n": s["remaining"], "y": y,
                     "lines": [_short(f"{s['step']}. {label}", 60)], "title": label})  # fmt: skip
    y += ROW_H
    side.append({"kind": "needs_review", "step": None, "n": flow["needs_review"],
                 "y": y - ROW_H // 2, "lines": ["needs review (an unknown criterion)"],
                 "title": "needs_review"})  # fmt: skip
    main.append({"kind": "eligible", "step": None, "n": flow["eligible"], "y": y,
                 "lines": ["eligible (computed)"], "title": "eligible"})  # fmt: skip
    final = None
    if flow.get("final"):
        y += ROW_H
        order = ("eligible", "needs_review", "excluded")
        parts = [f"{d.replace('_', ' ')} {flow['final'].get(d, 0)}" for d in order]
        final = {"y": y, "text": "after adjudication: " + " \u00b7 ".join(parts)}
    return {"main": main, "side": side, "final": final, "height": y + BOX_H + TOP,
            "width": FLOW_WIDTH, "main_x": MAIN_X, "main_w": MAIN_W, "side_x": SIDE_X,
            "side_w": SIDE_W, "box_h": BOX_H}  # fmt: skip


def _day(value: Any) -> dt.date | None:
    try:
        return dt.date.fromisoformat(str(value)[:10]) if value else None
    except ValueError:
        return None


def timeline(subject: dict[str, Any]) -> dict[str, Any] | None:
    """One subject's courses as bars on a date axis, coloured by verdict."""
    reference = _day(subject.get("reference_date"))
    bars = []
    for number, c in enumerate(subject["courses"], start=1):
        start = _day(c.get("start_date"))
        end = reference if c.get("ongoing") else _day(c.get("end_date"))
        bars.append((number, c, start, end))
    days = [d for _, _, s, e in bars for d in (s, e) if d is not None]
    if reference is not None:
        days.append(reference)
    if not days or not subject["courses"]:
        return None
    first, last = min(days), max(days)
    span = max((last - first).days, 1)
    scale = (TL_WIDTH - TL_LABEL - 20) / span

    def x(day: dt.date) -> float:
        return round(TL_LABEL + (day - first).days * scale, 1)

    lanes = []
    for i, (number, c, start, end) in enumerate(bars):
        verdict = course_verdict(c)
        dose = num(c.get("daily_dose_mg")) if c.get("daily_dose_mg") is not None else "?"
        minimum = f" (min {num(c['min_dose_mg'])})" if c.get("min_dose_mg") is not None else ""
        pct = c.get("pct_improvement")
        score = f"{num(pct)} % better" if pct is not None else "no scores"
        lane = {
            "y": TL_TOP + i * TL_LANE,
            "label": _short(f"{number}. {c.get('drug')} {dose}{minimum} mg", 34),
            "verdict": verdict,
            "css": VERDICT_CLASS.get(verdict, "unknown"),
            "note": f"{verdict}; {score}; {state(c.get('outcome'))}",
            "ongoing": bool(c.get("ongoing")),
        }
        if start is not None:
            stop = end if end is not None and end >= start else start
            lane.update(x=x(start), w=max(x(stop) - x(start), 3.0))
        lanes.append(lane)
    ticks = []
    for year in range(first.year + 1, last.year + 1):
        ticks.append({"x": x(dt.date(year, 1, 1)), "label": str(year)})
    return {
        "width": TL_WIDTH,
        "height": TL_TOP + len(lanes) * TL_LANE + 24,
        "label_w": TL_LABEL,
        "lanes": lanes,
        "ticks": ticks,
        "first": first.isoformat(),
        "last": last.isoformat(),
        "reference_x": x(reference) if reference is not None else None,
        "reference": reference.isoformat() if reference is not None else "",
    }


def _cell(min_cell: int | None):
    def cell(value: Any) -> str:
        if value is None:
            return ""
        if min_cell is not None and isinstance(value, int) and 0 < value < min_cell:
            return f"<{min_cell}"
        return str(value)

    return cell


def _template(min_cell: int | None) -> jinja2.Template:
    env = jinja2.Environment(
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(cell=_cell(min_cell), num=num, state=state)
    env.globals.update(observed=observed, course_verdict=course_verdict)
    env.globals["suppressed"] = lambda n: (
        min_cell is not None and isinstance(n, int) and 0 < n < min_cell
    )
    source = resources.files("trdscreen").joinpath("data/report.html.j2").read_text("utf-8")
    return env.from_string(source)


def render_report(run: RunFolder, options: ReportOptions, checked: bool = True) -> str:
    """The report of a run folder as HTML text."""
    data = printable_data(report_data(run, options, checked))
    if "flow" in data:
        data["flow_svg"] = flow_boxes(data["flow"])
    for subject in data.get("sections", []):
        subject["timeline"] = timeline(subject)
    return _template(options.min_cell).render(**data)


def write_report(run: RunFolder, path: Path, options: ReportOptions, checked: bool = True) -> Path:
    """Render the report into `path` (written whole or not at all)."""
    text = render_report(run, options, checked)
    part = path.with_name(f".{path.name}.part")
    part.write_text(text, "utf-8", newline="\n")
    part.replace(path)
    return path
