"""The rule-set and data commands: `rules list | show | check`, `formulary`, `synth`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from trdscreen.cliapp import JsonOpt, QuietOpt, app, command_group, emit_json, epilog, guard, notify
from trdscreen.errors import UsageError
from trdscreen.printable import printable, printable_lines
from trdscreen.vocabulary import TableFormat

rules_app = command_group("rules", "The shipped TRD definitions (presets) and custom rule files.")
map_app = command_group(
    "map", "Site maps (--map): an export's headers and conventions declared once."
)
RuleArg = Annotated[
    str,
    typer.Argument(metavar="PRESET|FILE", help="Preset name (see `rules list`) or rule file path."),
]


@rules_app.command(
    "list", epilog=epilog(["trdscreen rules list", "trdscreen rules list --json"], "0 listed.")
)
def rules_list(as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """List the presets with title, source and a one-line summary."""

    def body() -> None:
        from trdscreen.protocol import catalog
        from trdscreen.rulefile import DEFAULT_PRESET, preset_dir

        presets = catalog(preset_dir())
        if as_json:
            emit_json(
                {
                    "status": "ok",
                    "default": DEFAULT_PRESET,
                    "presets": [
                        {
                            "id": p.id,
                            "title": p.title,
                            "source": p.source,
                            "summary": p.summary,
                            "staging": p.staging,
                        }
                        for p in presets
                    ],
                }
            )
            return
        if quiet:
            return
        from trdscreen.render import console, render_presets

        render_presets(console(), presets, DEFAULT_PRESET)

    guard(as_json, body)


@rules_app.command(
    "show",
    epilog=epilog(
        ["trdscreen rules show sforzini-2021", "trdscreen rules show my-protocol.yaml --json"],
        "0 shown; 2 no such preset or file; 3 the rule file is invalid.",
    ),
)
def rules_show(name: RuleArg, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Print a rule set as protocol text generated from its YAML, unverified parameters flagged."""

    def body() -> None:
        from trdscreen import api
        from trdscreen.protocol import protocol_text

        checked = api.check_rules(name)
        rules = checked.rules
        text = protocol_text(rules, checked.tags, str(checked.path), checked.file_sha256)
        if as_json:
            emit_json(
                {
                    "status": "ok",
                    "id": rules.id,
                    "title": rules.title,
                    "source": rules.source,
                    "path": str(checked.path),
                    "file_sha256": checked.file_sha256,
                    "normalized_sha256": rules.sha256(),
                    "rules": rules.model_dump(mode="json"),
                    "evidence_tags": {
                        ".".join(str(k) for k in key): tag for key, tag in checked.tags.items()
                    },
                    "protocol_text": text,
                }
            )
        elif not quiet:
            typer.echo(printable_lines(text), nl=False)

    guard(as_json, body)


@rules_app.command(
    "check",
    epilog=epilog(
        ["trdscreen rules check my-protocol.yaml", "trdscreen rules check my-protocol.yaml --json"],
        "0 valid; 2 no such preset or file; 3 invalid (every problem listed with its key and line).",
    ),
)
def rules_check(name: RuleArg, as_json: JsonOpt = False, quiet: QuietOpt = False) -> None:
    """Validate a rule file; report every problem with its key path and line (exit 3)."""

    def body() -> None:
        from trdscreen import api

        checked = api.check_rules(name)
        rules = checked.rules
        if as_json:
            emit_json(
                {
                    "status": "ok",
                    "exit_code": 0,
                    "id": rules.id,
                    "path": str(checked.path),
                    "file_sha256": checked.file_sha256,
                    "normalized_sha256": rules.sha256(),
                    "criteria": [c.id for c in rules.criteria],
                    "notes": list(checked.notes),
                }
            )
            return
        if quiet:
            return
        typer.echo(
            printable(
                f"ok: {checked.path}: rule set {rules.id}, {len(rules.criteria)} criteria, "
                f"normalized sha256 {rules.sha256()}"
            )
        )
        for note in checked.notes:
            typer.echo(printable(f"note: {note}"))

    guard(as_json, body)


@app.command(
    epilog=epilog(
        ["trdscreen formulary Zoloft", "trdscreen formulary --rules mgh-atrq --json"],
        "0 shown (an unknown name is reported, with the closest names); 2 usage; 3 the rule file is invalid.",
    )
)
def formulary(
    drug: Annotated[
        str | None, typer.Argument(metavar="DRUG", help="Drug name, brand or synonym to look up.")
    ] = None,
    rules: Annotated[
        str | None,
        typer.Option(
            "--rules",
            metavar="PRESET|FILE",
            help="Show the formulary as this rule set uses it (its file, dose column, overrides).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """List the formulary or look up one drug: class, minimum dose and its source."""

    def body() -> None:
        from trdscreen import api

        table, rule_set = api.formulary_for(rules)
        if drug is None:
            rows = api.formulary_rows(table, rule_set)
        else:
            row = api.formulary_lookup(table, rule_set, drug)
            if row is None:
                hints = table.suggest(table.match(drug).normalized)
                raise UsageError(
                    f"{drug!r} is not in the formulary ({table.source})"
                    + (f"; did you mean: {', '.join(hints)}?" if hints else "")
                )
            rows = [row]
        if as_json:
            emit_json(
                {"status": "ok", "source": table.source, "sha256": table.sha256, "drugs": rows}
            )
            return
        if quiet:  # looked up only: exit 2 when the drug is unknown
            return
        from trdscreen.render import console, render_drug, render_formulary

        if drug is not None:
            render_drug(console(), rows[0])
        else:
            render_formulary(console(), rows, table.source, table.sha256)

    guard(as_json, body)


@app.command(
    epilog=epilog(
        [
            "trdscreen synth --n-subjects 1000 --out cohort --format csv",
            "trdscreen synth --n-subjects 1000000 --seed 11 --out big --json",
        ],
        "0 written; 2 usage; 5 --out in the way; 7 output failed.",
    )
)
def synth(
    n_subjects: Annotated[
        int, typer.Option("--n-subjects", metavar="N", help="How many subjects.", min=1)
    ],
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", help="Folder for treatments and subjects.")
    ],
    seed: Annotated[
        int, typer.Option("--seed", metavar="N", help="Random seed: same seed, same files.")
    ] = 0,
    fmt: Annotated[
        TableFormat, typer.Option("--format", metavar="csv|parquet", help="File format.")
    ] = TableFormat.parquet,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a non-empty --out folder.")
    ] = False,
    records: Annotated[
        bool,
        typer.Option(
            "--records",
            help="Write it as drug events, sessions and ratings for `trdscreen build`.",
        ),
    ] = False,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a synthetic cohort (about 4.2 courses per subject) for demos and load tests."""

    def body() -> None:
        import time

        from trdscreen.api import check_out_dir
        from trdscreen.synth import synthesize, write_synthetic

        started = time.perf_counter()
        notify(check_out_dir(out, force))  # fail before drawing a large cohort
        cohort = synthesize(n_subjects, seed)
        paths = write_synthetic(cohort, out, fmt.value, force, records)
        payload = {
            "status": "ok",
            "subjects": cohort.subjects.num_rows,
            "courses": cohort.treatments.num_rows,
            "seed": seed,
            "files": [str(p) for p in paths],
            "seconds": round(time.perf_counter() - started, 2),
        }
        if as_json:
            emit_json(payload)
            return
        if quiet:
            return
        typer.echo(
            f"wrote {payload['subjects']} subjects and {payload['courses']} courses "
            + ("as drug events, sessions and ratings " if records else "")
            + f"(seed {seed}) to {printable(out)} in {payload['seconds']} s"
        )

    guard(as_json, body)


@map_app.command(
    "init",
    epilog=epilog(
        [
            "trdscreen map init export.csv --subjects patients.csv > site-map.yaml",
            "trdscreen map init export-folder/ --rules mgh-atrq > site-map.yaml",
        ],
        "0 printed; 2 usage; 4 the export cannot be read.",
    ),
)
def map_init(
    export: Annotated[
        Path,
        typer.Argument(
            metavar="EXPORT",
            help="The treatments export (CSV or Parquet), or a folder with treatments.* and "
            "subjects.*",
        ),
    ],
    subjects: Annotated[
        Path | None, typer.Option("--subjects", metavar="FILE", help="The subjects export.")
    ] = None,
    rules: Annotated[
        str | None,
        typer.Option(
            "--rules",
            metavar="PRESET",
            help="Propose the subject columns this rule set's criteria read (default: those "
            "of every preset).",
        ),
    ] = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Print a commented site map proposed from an export: the canonical column of each
    header (with its score), the CSV dialect, the date, decimal, unit, percent and yes/no
    conventions seen in the cells, and the distinct values of coded columns. Check and edit
    it, then screen with --map.
    """

    def body() -> None:
        from trdscreen.mapinit import template

        text = template(export, subjects, rules)
        if as_json:  # the template, and what loads from it as it stands
            import yaml

            emit_json({"status": "ok", "template": text, "proposed": yaml.safe_load(text)})
        elif not quiet:
            sys.stdout.write(text)

    guard(as_json, body)
