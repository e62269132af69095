"""Outputs a coordinator can open (issue 21): `--csv-dialect excel-eu` and `--format
xlsx` hold the same values as the standard tables, and a workbook never runs a formula."""

from __future__ import annotations

import codecs
import datetime as dt
import json
import math
from pathlib import Path

import openpyxl
import pandas as pd
import pyarrow.parquet as pq
import pyarrow.types as pa_types
import pytest
from typer.testing import CliRunner

from tests.conftest import SAMPLE
from trdscreen import api, output
from trdscreen.cli import app
from trdscreen.output import Destination, column_title
from trdscreen.tables import SHEET_ORDER
from trdscreen.verify import verify_run


def run(out: Path, formats: tuple[str, ...], dialect: str = "standard", input=SAMPLE) -> Path:
    request = api.ScreenRequest(input=input, rules="sforzini-2021")
    destination = Destination(out, formats, csv_dialect=dialect)
    api.run_to_folder(api.load(request, ["test"]), destination)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("coordinator")
    return {
        "standard": run(tmp / "standard", ("csv", "parquet")),
        "eu": run(tmp / "eu", ("csv", "xlsx"), "excel-eu"),
    }


def tables_of(folder: Path) -> list[str]:
    return sorted(p.stem for p in folder.glob("*.csv"))


def test_excel_eu_tables_read_back_to_the_standard_values(runs):
    standard, eu = runs["standard"], runs["eu"]
    assert tables_of(eu) == tables_of(standard) and len(tables_of(eu)) >= 8
    for name in tables_of(eu):
        raw = (eu / f"{name}.csv").read_bytes()
        assert raw.startswith(codecs.BOM_UTF8), name
        header = raw[3:].split(b"\n", 1)[0].decode()
        assert ";" in header and '","' not in header, name
        european = pd.read_csv(eu / f"{name}.csv", sep=";", decimal=",", encoding="utf-8-sig")
        plain = pd.read_csv(standard / f"{name}.csv")
        pd.testing.assert_frame_equal(european, plain, check_exact=True, obj=name)
    # A number with decimals is written with a comma (S001's first course: 8.3333 weeks
    # of 10 mg/day... whichever: at least one cell shows the comma).
    assert ",3333" in (eu / "courses.csv").read_text(encoding="utf-8-sig")


def test_excel_eu_keeps_the_content_hashes_and_verifies(runs):
    def content(folder: Path) -> dict[str, str]:
        manifest = json.loads((folder / "manifest.json").read_text())
        return {
            o["table"]: o["content_sha256"] for o in manifest["outputs"] if o["format"] == "csv"
        }

    assert content(runs["eu"]) == content(runs["standard"])
    manifest = json.loads((runs["eu"] / "manifest.json").read_text())
    assert manifest["options"]["csv_dialect"] == "excel-eu"
    assert verify_run(runs["eu"]).ok
    # explain reads the excel-eu tables back
    result = CliRunner().invoke(app, ["explain", str(runs["eu"]), "S020"])
    assert result.exit_code == 0 and "S020" in result.output


def _sheet_frame(sheet) -> pd.DataFrame:
    rows = list(sheet.iter_rows(values_only=True))
    return pd.DataFrame(rows[1:], columns=rows[0], dtype=object)


def test_the_workbook_has_a_sheet_per_table_with_the_parquet_values(runs):
    path = runs["eu"] / "screening.xlsx"
    book = openpyxl.load_workbook(path)
    written = tables_of(runs["eu"])
    assert book.sheetnames == [t for t in SHEET_ORDER if t in written]
    assert book.sheetnames[:4] == ["decisions", "included", "excluded", "needs_review"]
    for name in book.sheetnames:
        sheet = book[name]
        assert sheet.freeze_panes == "A2", name
        assert sheet.auto_filter.ref is not None, name
        parquet = pq.read_table(runs["standard"] / f"{name}.parquet")
        assert [c.value for c in sheet[1]] == [column_title(n) for n in parquet.column_names]
        assert all(c.font.b for c in sheet[1])
        frame = _sheet_frame(sheet)
        assert len(frame) == parquet.num_rows, name
        for column, title in zip(parquet.column_names, frame.columns, strict=True):
            expected = parquet[column].to_pylist()
            got = frame[title].tolist()
            if isinstance(next((v for v in expected if v is not None), None), dt.date):
                got = [v.date() if isinstance(v, dt.datetime) else None for v in got]
            # A sheet has no NaN and no empty text: both are an empty cell.
            expected = [None if v == "" or (isinstance(v, float) and v != v) else v
                        for v in expected]  # fmt: skip
            got = [None if isinstance(v, float) and v != v else v for v in got]
            if pa_types.is_floating(parquet.schema.field(column).type):
                # xlsxwriter stores 16 significant digits (Excel shows 15): 90/7 comes
                # back as 12.85714285714286, within 1e-15 of the value, not bit-equal.
                assert [v is None for v in got] == [v is None for v in expected]
                pairs = [(a, b) for a, b in zip(got, expected, strict=True) if a is not None]
                assert all(math.isclose(a, b, rel_tol=1e-15) for a, b in pairs), column
            else:
                assert got == expected, (name, column)


def test_the_workbook_never_holds_a_formula(tmp_path):
    # A drug named as a formula: in a CSV it is escaped with ', in the workbook it is a
    # text cell (type "s"), never a formula (type "f") that a spreadsheet would run.
    folder = tmp_path / "in"
    folder.mkdir()
    treatments = pd.read_csv(SAMPLE / "treatments.csv", dtype=str, keep_default_na=False)
    treatments.loc[0, "drug"] = '=HYPERLINK("http://x.invalid","click")'
    treatments.loc[1, "drug"] = "+1+1"
    treatments.to_csv(folder / "treatments.csv", index=False)
    (folder / "subjects.csv").write_bytes((SAMPLE / "subjects.csv").read_bytes())
    out = run(tmp_path / "out", ("csv", "xlsx"), input=folder)
    sheet = openpyxl.load_workbook(out / "screening.xlsx")["courses"]
    drugs = [row[5] for row in sheet.iter_rows(min_row=2)]
    assert {c.value for c in drugs} >= {'=HYPERLINK("http://x.invalid","click")', "+1+1"}
    assert {c.data_type for c in drugs} == {"s"}
    assert "'=HYPERLINK" in (out / "courses.csv").read_text()


def test_a_table_longer_than_a_sheet_continues_on_the_next(tmp_path, monkeypatch):
    monkeypatch.setattr(output, "SHEET_ROWS", 50)
    out = run(tmp_path / "out", ("csv", "xlsx"))
    book = openpyxl.load_workbook(out / "screening.xlsx")
    courses = pd.read_csv(out / "courses.csv")
    pieces = [n for n in book.sheetnames if n.startswith("courses")]
    assert pieces == ["courses", "courses (2)", "courses (3)"]  # 136 rows: 50 + 50 + 36
    frame = pd.concat([_sheet_frame(book[n]) for n in pieces], ignore_index=True)
    assert frame[column_title("source_line")].tolist() == courses["source_line"].tolist()


def test_the_cli_writes_the_workbook_and_the_excel_tables(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(
        app,
        [
            "screen",
            str(SAMPLE),
            "--out",
            str(out),
            "--format",
            "xlsx",
            "--csv-dialect",
            "excel-eu",
            "--json",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    outputs = json.loads(result.output)["outputs"]
    assert "screening.xlsx" in outputs and "decisions.csv" in outputs
    assert (out / "decisions.csv").read_bytes().startswith(codecs.BOM_UTF8)
    # The per-table parts the workbook is built from were in the run's own draft, and
    # are gone: the folder holds what the manifest lists and nothing else.
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {o["path"] for o in manifest["outputs"]} | {
        "manifest.json",
        "audit.jsonl",
        "summary.txt",
        "report.html",
    }
    assert {p.name for p in out.iterdir()} == listed


# --------------------------------------------------------------------------- summary.txt


def test_the_summary_is_kept_in_the_run_and_printed_again(runs):
    folder = runs["standard"]
    text = (folder / "summary.txt").read_text()
    # The sample's documented totals (sample_data/README.md): 17 / 37 / 13 of 67.
    assert "Screened 67 subjects (136 courses)" in text
    for line in ("eligible            17    25%", "excluded            37    55%",
                 "needs_review        13    19%"):  # fmt: skip
        assert line in text
    assert str(folder) not in text  # no path: the text depends on the run only
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["summary"]["path"] == "summary.txt"
    result = CliRunner().invoke(app, ["summary", str(folder)])
    assert result.exit_code == 0 and result.output == text
    as_json = json.loads(CliRunner().invoke(app, ["summary", str(folder), "--json"]).output)
    assert as_json["summary"] == text and as_json["counts"] == manifest["counts"]


def test_a_changed_summary_is_refused_and_fails_verify(tmp_path):
    folder = run(tmp_path / "run", ("csv",))
    with open(folder / "summary.txt", "a") as handle:
        handle.write("eligible 67\n")
    result = CliRunner().invoke(app, ["summary", str(folder)])
    assert result.exit_code == 6 and "differs from the SHA-256" in result.output
    verification = verify_run(folder, rerun=False)
    assert not verification.ok
    assert any(c.subject == "summary.txt" and not c.ok for c in verification.checks)


def test_a_run_stopped_by_bad_input_says_so_in_its_summary(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    treatments = (
        (SAMPLE / "treatments.csv")
        .read_text()
        .replace("S001,sertraline,100,", "S001,sertraline,lots,", 1)
    )
    (folder / "treatments.csv").write_text(treatments)
    (folder / "subjects.csv").write_bytes((SAMPLE / "subjects.csv").read_bytes())
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["screen", str(folder), "--out", str(out)])
    assert result.exit_code == 4
    text = (out / "summary.txt").read_text()
    assert "Input validation stopped the run: 1 error(s). Nothing was screened." in text
    # The folder of a failed run is still trdscreen's: the next run replaces it.
    (folder / "treatments.csv").write_bytes((SAMPLE / "treatments.csv").read_bytes())
    again = CliRunner().invoke(app, ["screen", str(folder), "--out", str(out)])
    assert again.exit_code == 0, again.output
