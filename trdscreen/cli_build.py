"""`trdscreen build`: treatment courses from drug events and ratings."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from trdscreen.cliapp import (
    AsOfOpt,
    JsonOpt,
    MapOpt,
    QuietOpt,
    RulesOpt,
    app,
    emit_json,
    epilog,
    guard,
    notify,
    parse_date,
)
from trdscreen.printable import printable
from trdscreen.vocabulary import RecordsProfile


class Profile(StrEnum):
    """`build --profile`: RecordsProfile, or auto (omop when drug_exposure.* is there,
    courses when treatments.* is and drug_events.* is not, else events)."""

    auto = "auto"
    events = RecordsProfile.events.value
    omop = RecordsProfile.omop.value
    courses = RecordsProfile.courses.value


@app.command(
    epilog=epilog(
        [
            "trdscreen build examples/records --out built",
            "trdscreen build records/ --out built --map site-map.yaml --as-of 2025-06-30",
            "trdscreen build records/ --out built --rules my-rules.yaml --force --json",
            "trdscreen build omop-extract/ --profile omop --map omop-map.yaml --out built",
            "trdscreen build courses-export/ --profile courses --out built",
        ],
        "0 built; 2 usage; 3 rule file or map; 4 the records cannot be read or fail "
        "validation (nothing written); 5 --out exists (pass --force) or is not trdscreen's.",
    )
)
def build(
    input: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="A records folder: drug_events.* (one row per prescription, dispensing or "
            "administration), optional assessments.* and subjects.*; or a courses export: "
            "treatments.*, assessments.*, optional subjects.* (--profile courses)",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            metavar="DIR",
            help="The folder to write (screen it with `trdscreen screen DIR`).",
        ),
    ],
    profile: Annotated[
        Profile,
        typer.Option(
            "--profile",
            help="events: drug_events.* and friends; omop: OMOP CDM 5.4 tables; courses: "
            "treatments.* with their ratings in assessments.*; auto: omop when the folder "
            "holds drug_exposure.*, courses when it holds treatments.* and no drug_events.*",
        ),
    ] = Profile.auto,
    rules: RulesOpt = None,
    column_map: MapOpt = None,
    as_of: AsOfOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace --out when it is a folder trdscreen wrote.")
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Build treatment courses from drug events and ratings, every decision named: which
    input gave each duration and dose, which events were set aside and why, which
    ratings judge each course (the rule set's `build:` section)."""
    reference = parse_date(as_of)

    def body() -> None:
        from trdscreen.buildrun import BuildRequest, run_build

        result = run_build(
            BuildRequest(input, out, rules, column_map, reference, force, profile.value),
            ("trdscreen", "build", *_argv()),
        )
        manifest = result.manifest
        unread = note_unread_records(manifest)
        summary = "scores" if "scores" in manifest else "event_attrition"
        if as_json:
            emit_json(
                {
                    "status": "ok",
                    "exit_code": 0,
                    "out": str(out),
                    summary: manifest[summary],
                    **({"inputs_not_read": unread} if unread else {}),
                    "outputs": [o["path"] for o in manifest["outputs"]],
                }
            )
            return
        if quiet:
            return
        if summary == "scores":
            typer.echo(scores_text(manifest["scores"], str(out)))
            return
        counts = manifest["event_attrition"]
        aside = {k: v for k, v in counts.items() if k not in KEPT_STEPS and v}
        sessions = counts.get("session_courses", 0)
        typer.echo(
            f"built {counts['supply_runs'] + sessions} treatment row(s) in "
            f"{counts['courses'] + sessions} course(s) from {counts['read']} drug event(s)"
            + (f" and {counts['procedures_read']} procedure session(s)" if sessions else "")
            + f" into {printable(str(out))}"
        )
        if counts.get("codes_not_listed"):
            typer.echo(
                f"  {counts['codes_not_listed']} drug event(s) given as a code drug_codes does "
                "not list: kept under the code, the screen reports the drug unknown"
            )
        if aside:
            typer.echo(
                "  not rows of their own: "
                + ", ".join(f"{step} {count}" for step, count in aside.items())
                + (
                    " (course_events.parquet and procedure_sessions.parquet say which and why)"
                    if sessions
                    else " (course_events.parquet says which and why)"
                )
            )
        typer.echo(f"  next: trdscreen screen {printable(str(out))} --out SCREENING_DIR")

    guard(as_json, body)


def scores_text(counts: dict, out: str) -> str:
    """What `build --profile courses` did, in a line or three."""
    lines = [
        f"attached the assessments' ratings to {counts['assessments']} of {counts['rows']} "
        f"treatment row(s) into {printable(out)}; {counts['given']} gave their own "
        f"(kept), {counts['none']} have none in the rating windows"
    ]
    derived = [
        f"{counts[key]} {key.removesuffix('_derived')}"
        for key in ("hamd_screening_derived", "madrs_screening_derived")
        if counts.get(key)
    ]
    if derived:
        lines.append(f"  screening scores from the assessments: {', '.join(derived)}")
    lines.append(f"  next: trdscreen screen {printable(out)} --out SCREENING_DIR")
    return "\n".join(lines)


def note_unread_records(manifest: dict) -> list[str]:
    """A warning on stderr naming the tables of the records folder a build did not read
    (its manifest's `inputs_not_read`); returns them."""
    unread = manifest.get("inputs_not_read", [])
    if unread:
        from trdscreen.records import COURSES_TABLES, READ_TABLES
        from trdscreen.summarytext import unread_note

        reads = COURSES_TABLES if manifest.get("profile") == "courses" else READ_TABLES
        notify([unread_note(tuple(unread), reads)], "warning")
    return unread


KEPT_STEPS = (
    "read", "used", "supply_runs", "courses", "procedures_read", "procedures_used",
    "session_courses", "codes_listed", "codes_not_listed",
)  # fmt: skip


def _argv() -> list[str]:
    import sys

    return sys.argv[2:]
