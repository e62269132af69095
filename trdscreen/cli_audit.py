"""The audit commands: `verify` a run folder, `explain` one subject's decision, `diff` two
runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trdscreen.cliapp import JsonOpt, QuietOpt, app, emit_json, epilog, guard
from trdscreen.errors import ExitCode
from trdscreen.printable import printable

DIFF_SHOWN = 50
"""Changed subjects shown in detail by `diff` without --json (all with it)."""
RunArg = Annotated[
    Path, typer.Argument(metavar="RUN_DIR", help="A run folder written by `trdscreen screen`.")
]


@app.command(
    epilog=epilog(
        [
            "trdscreen verify run",
            "trdscreen verify run --inputs copies/ --head SHA256 --json",
            "trdscreen verify run --no-rerun",
        ],
        "0 verified; 2 not a run folder; 6 not verified (a file, the audit chain or the re-run differs).",
    )
)
def verify(
    run: RunArg,
    inputs: Annotated[
        Path | None,
        typer.Option(
            "--inputs",
            metavar="DIR",
            help="Look for the recorded input files by name in this folder instead.",
        ),
    ] = None,
    no_rerun: Annotated[
        bool, typer.Option("--no-rerun", help="Check hashes only; do not re-run the screening.")
    ] = False,
    head: Annotated[
        str | None,
        typer.Option(
            "--head",
            metavar="SHA256",
            help="The audit head SHA-256 kept from `screen --json` (detects a rewritten log).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check a run folder's audit chain and hashes, then re-run it and compare (exit 6 if
    not); a folder `trdscreen build` wrote is checked and built again."""

    def body() -> None:
        from trdscreen.buildverify import verify_build
        from trdscreen.sources import build_manifest
        from trdscreen.verify import Verification, verify_run

        verification: Verification
        if build_manifest(run) is not None:  # a folder `trdscreen build` wrote
            verification = verify_build(run, inputs, rerun=not no_rerun)
        else:
            verification = verify_run(run, inputs, rerun=not no_rerun, head=head)
        code = ExitCode.OK if verification.ok else ExitCode.NOT_VERIFIED
        if as_json:
            emit_json(
                {
                    "status": "verified" if verification.ok else "not_verified",
                    "exit_code": int(code),
                    "run_id": verification.run.run_id,
                    "reran": verification.reran,
                    "checks": [
                        {"subject": c.subject, "ok": c.ok, "detail": c.detail}
                        for c in verification.checks
                    ],
                    "problems": verification.problems,
                }
            )
        elif not quiet:
            from trdscreen.render import console, render_verify

            render_verify(console(), verification)
        raise typer.Exit(int(code))

    guard(as_json, body)


@app.command(
    epilog=epilog(
        ["trdscreen explain run S020", "trdscreen explain run S020 --json"],
        "0 explained; 2 no such run or subject; 6 a run file no longer matches its manifest.",
    )
)
def explain(
    run: RunArg,
    subject_id: Annotated[
        str,
        typer.Argument(metavar="SUBJECT_ID", help="The subject key, as in the decisions table."),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the same trace as one JSON object.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Explain one subject's decision: courses, counts, criteria and the decision."""

    def body() -> None:
        from trdscreen.explain import explain_subject
        from trdscreen.runs import open_run

        data = explain_subject(open_run(run), subject_id)
        if as_json:
            emit_json(data)
            return
        if quiet:
            return
        from trdscreen.render import console, render_explain

        render_explain(console(), data)

    guard(as_json, body)


@app.command(
    epilog=epilog(
        ["trdscreen diff run-sforzini run-mgh", "trdscreen diff last-month this-month --json"],
        "0 compared (whether or not anything changed); 2 no such run; 6 a run file no longer matches its manifest.",
    )
)
def diff(
    run_a: Annotated[
        Path, typer.Argument(metavar="RUN_A", help="The earlier (or reference) run folder.")
    ],
    run_b: Annotated[
        Path, typer.Argument(metavar="RUN_B", help="The later (or amended) run folder.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print every change as one JSON object.")
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare two runs: who changed decision, which criteria flipped, attrition side by side."""

    def body() -> None:
        from trdscreen.rundiff import diff_runs
        from trdscreen.runs import open_run

        data = diff_runs(open_run(run_a), open_run(run_b), None if as_json else DIFF_SHOWN)
        if as_json:
            emit_json(data)
            return
        if quiet:
            return
        from trdscreen.render import console, render_diff

        render_diff(console(), data)

    guard(as_json, body)


@app.command(
    epilog=epilog(
        ["trdscreen summary run", "trdscreen summary run --json"],
        "0 printed; 2 not a run folder, or one written before summary.txt existed; 6 summary.txt was altered.",
    )
)
def summary(run: RunArg, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Print a run's summary again (its summary.txt, checked against manifest.json)."""

    def body() -> None:
        from trdscreen.runs import read_summary

        folder, text = read_summary(run)
        if as_json:
            emit_json(
                {
                    "status": "ok",
                    "run_id": folder.run_id,
                    "counts": folder.manifest.get("counts"),
                    "summary": text,
                }
            )
            return
        if quiet:  # checked only: the exit code says whether it is intact
            return
        from trdscreen.printable import printable_lines

        typer.echo(printable_lines(text), nl=False)

    guard(as_json, body)


@app.command(
    epilog=epilog(
        [
            "trdscreen worklist run --out review.csv",
            "trdscreen worklist run --out review.csv --force --json",
        ],
        "0 written; 2 not a run folder; 5 --out exists (pass --force) or is not a worklist "
        "trdscreen wrote; 6 the run was altered.",
    )
)
def worklist(
    run: RunArg,
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="The worklist CSV to write.")],
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    escape_formulas: Annotated[
        bool,
        typer.Option(
            "--escape-formulas/--no-escape-formulas",
            help="Prefix ' to text cells a spreadsheet would run as a formula (as screen's "
            "CSVs); --adjudications reads them back.",
        ),
    ] = True,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write the subjects still to review, with what to resolve and empty decision, reason,
    reviewer, date and criterion columns: filled in, it is an --adjudications file."""

    def body() -> None:
        from trdscreen.adjudication import WORKLIST_MARK, filled_rows
        from trdscreen.adjudication import worklist as review_list
        from trdscreen.errors import OutputExistsError
        from trdscreen.outdir import claim_out_file
        from trdscreen.output import write_worklist
        from trdscreen.runs import open_run

        folder = open_run(run)
        claim_out_file(out, force, WORKLIST_MARK, folder.path)
        filled = filled_rows(out) if out.is_file() else 0
        if filled:  # a reviewer's work, not what trdscreen wrote
            raise OutputExistsError(
                f"{out}: {filled} row(s) hold a reviewer's decision; --force replaces only "
                "an unfilled worklist (pass it to screen --adjudications, or write elsewhere)"
            )
        table = review_list(folder.read("decisions"))
        write_worklist(table, out, escape_formulas)
        if as_json:
            emit_json({"status": "ok", "out": str(out), "subjects": len(table)})
        elif not quiet:
            typer.echo(f"wrote {len(table)} subject(s) to review to {printable(str(out))}")

    guard(as_json, body)


@app.command(
    epilog=epilog(
        [
            "trdscreen report run --out screening.html",
            "trdscreen report run --out shareable.html --min-cell 5",
            "trdscreen report run --subject S018 --subject S020 --out two.html",
            "trdscreen report run > screening.html",
        ],
        "0 written; 2 not a run folder or an unknown --subject; 5 --out exists (pass --force) "
        "or is not a report trdscreen wrote; 6 the run was altered.",
    )
)
def report(
    run: RunArg,
    out: Annotated[
        Path | None,
        typer.Option("--out", metavar="FILE", help="The HTML file to write (default: stdout)."),
    ] = None,
    min_cell: Annotated[
        int | None,
        typer.Option(
            "--min-cell",
            metavar="N",
            min=2,
            help="A shareable copy: counts from 1 to N-1 shown as <N, no subject named.",
        ),
    ] = None,
    subject: Annotated[
        list[str] | None,
        typer.Option(
            "--subject", metavar="ID", help="Draw this subject's section (repeat for more)."
        ),
    ] = None,
    max_subjects: Annotated[
        int | None,
        typer.Option(
            "--max-subjects",
            metavar="N",
            min=0,
            help="Draw every subject's section when the run has at most N subjects [default: 200].",
        ),
    ] = None,
    max_rows: Annotated[
        int | None,
        typer.Option(
            "--max-rows",
            metavar="N",
            min=0,
            help="Rows of each list in the report [default: 1000].",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Render a run's report.html again from its folder, every table checked against
    manifest.json first: e.g. a shareable copy with small counts suppressed, or chosen
    subjects' sections."""

    def body() -> None:
        import sys

        from trdscreen.errors import UsageError
        from trdscreen.outdir import claim_out_file
        from trdscreen.report import GENERATOR, render_report
        from trdscreen.reportdata import MAX_ROWS, MAX_SUBJECTS, ReportOptions
        from trdscreen.runs import check_outputs, open_run

        if out is None and (as_json or quiet):
            raise UsageError("--json and --quiet need --out FILE (else the HTML is on stdout)")
        if min_cell is not None and subject:
            raise UsageError("--min-cell writes a copy that names no subject: drop --subject")
        folder = open_run(run)
        if out is not None:
            claim_out_file(out, force, GENERATOR.encode(), folder.path)
        check_outputs(folder)
        options = ReportOptions(
            min_cell,
            tuple(subject or ()),
            MAX_SUBJECTS if max_subjects is None else max_subjects,
            MAX_ROWS if max_rows is None else max_rows,
        )
        text = render_report(folder, options, checked=False)
        if out is None:
            sys.stdout.write(text)
            sys.stdout.flush()
            return
        draft = out.with_name(f".{out.name}.draft")
        draft.write_text(text, "utf-8", newline="\n")
        draft.replace(out)
        if as_json:
            emit_json({"status": "ok", "out": str(out), "options": options.as_json()})
        elif not quiet:
            typer.echo(f"wrote the report of run {folder.run_id} to {printable(str(out))}")

    guard(as_json, body)
