"""`summary.txt`: the run's summary as plain text, written into every run folder.

The terminal summary (`render.render_summary`) is for a person at a screen; this is
the same account of the run kept with it, for whoever opens the folder later (and
`trdscreen summary RUN_DIR` prints it again). Its bytes depend on the run only: no
folder path, no colours, fixed-width columns. It is hashed in the manifest.
"""

from __future__ import annotations

from trdscreen import __version__
from trdscreen.manifest import LoadedRun
from trdscreen.pipeline import RunSummary
from trdscreen.printable import printable

SUMMARY_FILE = "summary.txt"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def _counts(title: str, counts: dict[str, int], total: int) -> list[str]:
    rows = [
        [label, str(n), f"{100 * n / total:.0f}%" if total else "-"] for label, n in counts.items()
    ]
    return _table([title, "subjects", "share"], rows, {1, 2})


def notes(result: RunSummary) -> list[str]:
    """The sentences after the tables: assumptions, near misses, reviews, input issues
    (the terminal summary prints them too)."""
    counts = result.counts()
    lines = []
    assumed = counts.get("assumptions", {}).get("eligible", 0)
    if assumed:
        lines.append(
            f"{assumed} of {counts['decision'].get('eligible', 0)} eligible decision(s) rest on "
            "assumptions (the assumptions column; `trdscreen explain` names them)."
        )
    near = result.near_misses()
    if near:
        lines.append(f"{near} excluded subject(s) are near misses (near_miss_criteria).")
    review = counts["decision"].get("needs_review", 0)
    if review:
        lines.append(f"{review} subject(s) need review: needs_review.csv, column to_resolve.")
    adjudicated = counts.get("adjudicated")
    if adjudicated:
        final = ", ".join(f"{n} {d}" for d, n in counts["final_decision"].items())
        lines.append(
            f"{adjudicated['subjects']} decision(s) adjudicated by reviewers, "
            f"{adjudicated['changed']} changed; final decisions: {final} (final_decision)."
        )
        if adjudicated.get("held"):
            lines.append(
                f"{adjudicated['held']} reviewer's eligible held for review: the computed "
                "decision or its unknown criteria changed since the review "
                "(adjudication_reason); `trdscreen worklist` lists them again."
            )
    issues = counts["issues"]
    if issues:
        listed = ", ".join(f"{n} {severity}" for severity, n in issues.items())
        lines.append(f"Input issues: {listed} (validation_issues).")
    return lines


def unread_note(files: tuple[str, ...], build_reads: tuple[str, ...] = ()) -> str:
    """What a screen (or a build, given the tables it reads) says of the tables in its
    input folder that it did not read."""
    listed = ", ".join(printable(f) for f in files)
    if build_reads:
        return (
            f"Not read: {listed} in the records folder. A build reads "
            f"{', '.join(build_reads)} (CSV or Parquet, by those names); rename a table it "
            "should read."
        )
    return (
        f"Not read: {listed} in the input folder. A screen reads treatments and subjects "
        "only: scores, diagnoses and dates belong in their columns (`--profile courses` "
        "attaches the ratings of an assessments table to the treatments first; `trdscreen "
        "build` makes both tables from records such as drug_events and assessments)."
    )


def summary_text(loaded: LoadedRun, result: RunSummary | None) -> str:
    """The summary of a finished run (or of one whose input validation stopped it)."""
    rules = loaded.rules
    as_of = loaded.request.as_of
    reference = f"--as-of {as_of.isoformat()}" if as_of else rules.reference_date.column
    lines = [
        f"trdscreen {__version__}, run {loaded.trail.run_id}",
        f"Rules: {printable(rules.id)}: {printable(rules.title)} "
        f"(normalized SHA-256 {rules.sha256()[:12]}...)",
        f"Reference date: {reference}",
        "This is a pre-screen: the investigator confirms each eligibility decision.",
        *([unread_note(loaded.unread)] if loaded.unread else []),
        "",
    ]
    if result is None:
        issues = loaded.checked().issues
        errors = int(issues["rows"][issues["severity"] == "error"].sum())
        lines += [
            f"Input validation stopped the run: {errors} error(s). Nothing was screened.",
            "Every problem is in validation_issues (file, line, column, what was expected);",
            "correct the export (or pass --on-invalid quarantine) and run again.",
        ]
        return "\n".join(lines) + "\n"
    counts = result.counts()
    total = counts["subjects"]["total"]
    lines += [f"Screened {total} subjects ({counts['courses']['total']} courses)", ""]
    lines += _counts("decision", counts["decision"], total) + [""]
    lines += _counts("classification", counts["classification"], total) + [""]
    lines += ["Attrition (protocol order)"]
    rows = []
    for row in result.attrition.to_dict("records"):  # one row per protocol step
        step = bool(row["criterion_id"])
        label = f"{row['criterion_id']}: {row['title']}" if step else str(row["title"])
        on_assumptions = row["title"] in ("eligible", "needs_review")
        rows.append(
            [
                str(row["step"]),
                printable(label),
                str(row["excluded_at_step"]) if step or row["excluded_at_step"] else "",
                str(row["remaining"]),
                str(row["not_met_total"]) if step else "",
                str(row["unknown_total"]) if step else "",
                str(row["with_assumptions"]) if on_assumptions else "",
            ]
        )
    header = ["step", "criterion", "excluded here", "remaining", "not met", "unknown",
              "on assumptions"]  # fmt: skip
    lines += _table(header, rows, {0, 2, 3, 4, 5, 6}) + [""]
    lines += notes(result)
    lines += [
        "",
        "Check this run with `trdscreen verify RUN_DIR`; read one decision with",
        "`trdscreen explain RUN_DIR SUBJECT_ID`; report.html shows the whole screening.",
    ]
    return "\n".join(lines) + "\n"
