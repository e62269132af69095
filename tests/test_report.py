"""report.html (issue 22): one self-contained page per run, and `trdscreen report`.

These tests parse the HTML with the standard library (no browser): nothing is loaded
from elsewhere, ids are unique, the flow diagram's numbers are the attrition table's,
text from the inputs is escaped, and the page renders again byte for byte from the
folder. tests/test_report_browser.py opens it in Chromium.

Expected subjects are worked from sample_data/README.md (cited per test), not copied
from the program's output.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import SAMPLE, preset_data, write_cohort
from tests.test_adjudication import FILE as ADJUDICATIONS
from trdscreen.cli import app
from trdscreen.errors import ExitCode


def invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def screen(out: Path, data: Path = SAMPLE, *more: object) -> Path:
    result = invoke("screen", data, "--out", out, "-q", *more)
    assert result.exit_code in (0, ExitCode.INVALID_INPUT), result.output
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "adjudications.csv").write_text(ADJUDICATIONS)
    broken = tmp / "broken"
    shutil.copytree(SAMPLE, broken)
    lines = (broken / "treatments.csv").read_text().splitlines()
    assert lines[4].startswith("S002,escitalopram,20,")
    lines[4] = lines[4].replace("escitalopram,20,", "escitalopram,abc,")  # line 5: not a dose
    (broken / "treatments.csv").write_text("\n".join(lines) + "\n")
    return {
        "sample": screen(tmp / "sample"),
        "atrq": screen(tmp / "atrq", SAMPLE, "--rules", "mgh-atrq"),
        "adjudicated": screen(tmp / "adj", SAMPLE, "--adjudications", tmp / "adjudications.csv"),
        "quarantine": screen(tmp / "quarantine", broken, "--on-invalid", "quarantine"),
        "invalid": screen(tmp / "invalid", broken),
        "tmp": tmp,
    }


class Page(HTMLParser):
    """Every element with its attributes, and the text, of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag):
        if tag not in ("span", "code", "strong", "a", "i", "b"):  # inline: no break
            self.text.append(" ")

    def handle_data(self, data):
        self.text.append(data)

    def all(self, tag: str | None = None, **attrs: str) -> list[dict[str, str | None]]:
        return [
            a
            for t, a in self.elements
            if (tag is None or t == tag)
            and all(a.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def words(self) -> str:
        """The text as a reader sees it: cells and blocks apart, runs of space as one."""
        return " ".join("".join(self.text).split())


def page(run: Path) -> Page:
    return Page((run / "report.html").read_text("utf-8"))


def attrition(run: Path) -> pd.DataFrame:
    return pd.read_csv(run / "attrition.csv", keep_default_na=False)


# --------------------------------------------------------------------------- self-contained


@pytest.mark.parametrize("name", ["sample", "adjudicated", "quarantine", "invalid"])
def test_the_page_loads_nothing_from_elsewhere_and_its_ids_are_unique(runs, name):
    text = (runs[name] / "report.html").read_text("utf-8")
    parsed = Page(text)
    tags = {t for t, _ in parsed.elements}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "base", "form"}
    assert not [a for _, a in parsed.elements if "src" in a or any(k.startswith("on") for k in a)]
    ids = [a["id"] for _, a in parsed.elements if "id" in a]
    assert len(ids) == len(set(ids)), "duplicate ids"
    hrefs = [a["href"] for _, a in parsed.elements if "href" in a]
    assert hrefs and all(h.startswith("#") and h[1:] in ids for h in hrefs), hrefs
    style = "".join(re.findall(r"<style>(.*?)</style>", text, re.S))
    assert "url(" not in style and "@import" not in style and "@font-face" not in style
    assert "This is a pre-screen." in parsed.words()


# --------------------------------------------------------------------------- flow = attrition


@pytest.mark.parametrize("name", ["sample", "atrq", "adjudicated", "quarantine"])
def test_every_flow_box_holds_the_attrition_tables_number(runs, name):
    run = runs[name]
    parsed = page(run)
    table = attrition(run)
    boxes = {(a["data-kind"], a.get("data-step")): a for a in parsed.all("g") if a.get("data-kind")}
    for row in table.itertuples():
        if row.title == "screened":
            assert boxes[("screened", "0")]["data-n"] == str(row.remaining)
        elif row.title in ("needs_review", "eligible"):
            assert boxes[(row.title, None)]["data-n"] == str(row.remaining)
        else:  # a criterion (or the quarantine): what remains after it, and what it excluded
            side = "quarantined" if row.title.startswith("quarantined") else "excluded"
            assert boxes[("remaining", str(row.step))]["data-n"] == str(row.remaining)
            assert boxes[(side, str(row.step))]["data-n"] == str(row.excluded_at_step)
    numbered = [a for a in parsed.all("g") if a.get("data-n") is not None]
    assert len(numbered) == 2 * len(table) - 3  # two boxes a step; screened, review, eligible one


def test_the_quarantined_subject_has_its_own_branch(runs):
    # S002's line 5 is not a dose: with --on-invalid quarantine S002 is held for review,
    # the step right after `screened` (1 held of 67, 66 go on to the criteria).
    parsed = page(runs["quarantine"])
    held = parsed.all("g", data_kind="quarantined")
    assert [(a["data-step"], a["data-n"]) for a in held] == [("1", "1")]
    assert parsed.all("g", data_kind="remaining", data_step="1")[0]["data-n"] == "66"


def test_adjudication_shows_as_the_final_box_overrides_and_log(runs):
    # The hand-written file (tests/test_adjudication.py) flips S020 (excluded -> eligible)
    # and S018 (needs_review -> excluded): 17/37/13 become 18 eligible, 37 excluded,
    # 12 to review. The flow stays the protocol's computed one (17 eligible).
    parsed = page(runs["adjudicated"])
    words = parsed.words()
    assert parsed.all("g", data_kind="eligible")[0]["data-n"] == "17"
    assert "after adjudication: eligible 18 \u00b7 needs review 12 \u00b7 excluded 37" in words
    assert "S018 needs review excluded Dr. Weber 2024-06-11" in words
    assert "S020 excluded eligible Dr. Weber 2024-06-10 TRD-MIN: Chart review" in words
    # Screening log on the final decision, the reviewer's reason as the failure reason.
    assert "S020 2024-06-01 yes (adjudicated)" in words
    assert "S018 2024-06-01 no (adjudicated) Setraline was sertraline at 25 mg/day" in words
    assert "S020: eligible (adjudicated; computed excluded)" in words
    assert "Adjudicated by Dr. Weber on 2024-06-10: TRD-MIN: Chart review" in words
    manifest = json.loads((runs["adjudicated"] / "manifest.json").read_text())
    assert manifest["report"]["path"] == "report.html"


# --------------------------------------------------------------------------- the tables


def test_criteria_counts_agree_with_the_ledger(runs):
    # met / not met / unknown per criterion are worked from attrition's totals; the
    # ledger (one row per subject and criterion) counts them independently.
    run = runs["atrq"]
    ledger = pd.read_csv(run / "criteria_ledger.csv", keep_default_na=False)
    counts = ledger.groupby(["criterion_id", "outcome"]).size().unstack(fill_value=0)
    words = page(run).words()
    for criterion, row in counts.iterrows():
        title = ledger.loc[ledger["criterion_id"] == criterion, "criterion_id"].iloc[0]
        alone = attrition(run).set_index("criterion_id").loc[criterion, "excluded_only_by_this"]
        met, not_met, unknown = (row.get(k, 0) for k in ("met", "not_met", "unknown"))
        pattern = (
            rf"{re.escape(title)} [^|]*?(inclusion|exclusion) {met} {not_met} {unknown} {alone}"
        )
        assert re.search(pattern, words), (criterion, met, not_met, unknown, alone)


def test_near_misses_fail_exactly_one_criterion_within_its_margin(runs):
    # mgh-atrq: TRD-MIN (>= 2 failed trials) has near_miss_within 1. S004 (one failure,
    # one partial response) misses it by 1: listed. S003 (a response, no failure) misses
    # it by 2: not within the margin. S021 also fails EX-KETAMINE-NONRESPONSE: near on
    # TRD-MIN but two criteria failed, so not a near miss (a careless reading of the
    # near_miss_criteria column would list it).
    words = page(runs["atrq"]).words()
    section = words.split("Near misses", 2)[2].split("Needs-review worklist")[0]
    assert (
        "S004 TRD-MIN At least 2 failed adequate trials (MGH-ATRQ) >= 2 -1 not by time alone"
        in section
    )
    assert "S003" not in section and "S021" not in section


def test_an_age_near_miss_gets_the_date_time_alone_would_bring(runs, tmp_path):
    # S017 (sample_data/README.md): born 2006-06-02, screened 2024-06-01: 17 in whole
    # years, excluded by AGE (18 to 65) only. With near_miss_within 1 on AGE the report
    # says it is a near miss that time alone resolves: 18 by 2025-06-01 at the latest
    # (the run holds whole years, not the birth date; the real day is 2024-06-02).
    rules = preset_data()
    for criterion in rules["criteria"]:
        if criterion["id"] == "AGE":
            criterion["near_miss_within"] = 1
    path = tmp_path / "rules.yaml"
    import yaml

    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    run = screen(tmp_path / "run", SAMPLE, "--rules", path)
    words = page(run).words()
    assert (
        "S017 AGE Adult aged 18 to 65 at screening between 18 and 65 -1 by 2025-06-01 at the latest"
        in words
    )
    # S016 is 74: above the range, time does not help; AGE has no margin for it (-9).
    assert "S016 AGE" not in words


def test_the_worklist_names_what_would_resolve_each_subject(runs):
    # S018's "Setraline" (sample README): the unknown drug on treatments.csv line 37.
    words = page(runs["sample"]).words()
    section = words.split("Needs-review worklist", 2)[2].split("Adjudicated decisions")[0]
    assert "S018 cannot decide: TRD-MIN" in section
    assert "treatments.csv line 37 (Setraline from 2023-09-01): drug 'Setraline' unknown" in section
    decisions = pd.read_csv(runs["sample"] / "decisions.csv", keep_default_na=False)
    assert section.count("cannot decide:") == (decisions["decision"] == "needs_review").sum()


def test_one_section_per_subject_with_its_courses_and_sources(runs):
    parsed = page(runs["sample"])
    sections = parsed.all("section")
    assert [a["id"] for a in sections] == [f"subject-{i}" for i in range(1, 68)]
    # S001 (sample README): two failed adequate trials, treatments.csv lines 2 and 3.
    words = parsed.words()
    s001 = words.split("S001: eligible", 1)[1].split("S002:", 1)[0]
    assert (
        "treatments.csv line 2 sertraline" in s001 and "treatments.csv line 3 escitalopram" in s001
    )
    first = parsed.elements.index(("section", sections[0]))
    second = parsed.elements.index(("section", sections[1]))
    bars = [a for t, a in parsed.elements[first:second] if t == "g" and "data-verdict" in a]
    assert [a["data-verdict"] for a in bars] == ["failed", "failed"]


def test_a_dictionary_column_is_tested_as_its_rows_would_be():
    # reportdata._where tests a dictionary-encoded column once per distinct text (each
    # Parquet row group has its own dictionary, nulls among the codes); the answer per
    # row must be what testing the decoded rows gives, with null as False.
    import pyarrow as pa
    import pyarrow.compute as pc

    from trdscreen.reportdata import _where

    texts = [["excluded", None, "eligible", ""], ["needs_review", "excluded", None], []]
    coded = pa.chunked_array([pa.array(t, pa.string()).dictionary_encode() for t in texts])
    plain = pa.chunked_array([pa.array(t, pa.string()) for t in texts])
    for test in (lambda c: pc.equal(c, "excluded"), lambda c: pc.not_equal(c, "")):
        got = _where(coded, test).to_pylist()
        assert got == _where(plain, test).to_pylist()
        assert got == [bool(v) and test(pa.array([v])).to_pylist()[0] for t in texts for v in t]
    assert _where(coded, lambda c: pc.equal(c, "excluded")).to_pylist() == [
        True, False, False, False, False, True, False,
    ]  # fmt: skip


def test_a_parquet_runs_report_lists_are_the_csv_runs(runs, tmp_path):
    # Read back from Parquet, the decisions' few-valued columns are dictionary-encoded
    # (reportdata.ENCODED); from CSV they are plain text. The lists must not differ.
    from trdscreen.reportdata import ReportOptions, report_data
    from trdscreen.runs import open_run

    parquet = screen(tmp_path / "parquet", SAMPLE, "--format", "parquet")
    lists = ("flow", "near_misses", "worklist", "screening_log", "overrides", "classifications")
    options = ReportOptions()
    from_csv = report_data(open_run(runs["sample"]), options)
    from_parquet = report_data(open_run(parquet), options)
    for name in lists:
        assert from_parquet[name] == from_csv[name], name
    assert from_csv["near_misses"]["total"] and from_csv["worklist"]["total"]


@pytest.mark.parametrize("name", ["sample", "quarantine"])
def test_each_section_is_the_subjects_own_explain_trace(runs, name):
    # The report reads every subject's rows at once and groups them; `explain` reads one
    # subject's rows alone. Both must give the same trace, course order and quarantined
    # rows included (the quarantine run holds S002's rows).
    from trdscreen.explain import explain_subject
    from trdscreen.reportdata import sections
    from trdscreen.runs import open_run

    run = open_run(runs[name])
    ids = run.read("decisions")["subject_id"].tolist()
    traced = sections(run, ids, checked=True)
    assert [t["subject_id"] for t in traced] == ids
    for subject, trace in zip(ids, traced, strict=True):
        assert trace == explain_subject(run, subject), subject
    if name == "quarantine":
        assert any(t["quarantine"] for t in traced)
    assert any(len(t["courses"]) > 1 for t in traced)  # an order to keep


def test_the_rule_set_is_printed_with_unverified_parameters_flagged(runs):
    text = (runs["sample"] / "report.html").read_text()
    shown = invoke("rules", "show", "sforzini-2021").stdout
    body = Page(text).words()
    assert "Unverified parameters (" in body and "Sforzini 2021 Delphi consensus" in body
    flagged = re.findall(r'<span class="flag">  ! ([^<]+)</span>', text)
    assert flagged and len(flagged) == sum(line.startswith("  ! ") for line in shown.splitlines())


def test_print_css_puts_one_subject_on_a_page(runs):
    text = (runs["sample"] / "report.html").read_text()
    print_css = text.split("@media print", 1)[1].split("</style>", 1)[0]
    assert ".subject { break-before: page;" in print_css and "break-inside: avoid" in print_css


# --------------------------------------------------------------------------- hostile text


def test_text_from_the_inputs_is_escaped(tmp_path):
    drug = "<script>alert('x')</script>"
    data = write_cohort(
        tmp_path / "data",
        [{"subject_id": "P<b>1</b>", "drug": drug, "daily_dose_mg": 100,
          "start_date": "2023-02-01", "end_date": "2023-04-01", "hamd_start": 24, "hamd_end": 22}],
        [{"subject_id": "P<b>1</b>"}],
    )  # fmt: skip
    run = screen(tmp_path / "run", data)
    text = (run / "report.html").read_text()
    parsed = Page(text)
    assert not parsed.all("script") and not parsed.all("b")
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in text
    assert drug in parsed.words() and "P<b>1</b>" in parsed.words()


def test_control_characters_from_the_inputs_are_not_written(tmp_path):
    data = write_cohort(
        tmp_path / "data",
        [{"subject_id": "P1", "drug": "sertra\u202eline\x1b[31m", "daily_dose_mg": 100,
          "start_date": "2023-02-01", "end_date": "2023-04-01", "hamd_start": 24, "hamd_end": 22}],
        [{"subject_id": "P1"}],
    )  # fmt: skip
    text = (screen(tmp_path / "run", data) / "report.html").read_text()
    assert "\u202e" not in text and "\x1b" not in text


# --------------------------------------------------------------------------- invalid input


def test_an_invalid_input_run_reports_why_it_stopped(runs):
    words = page(runs["invalid"]).words()
    assert "Input validation stopped the run" in words
    assert "error treatments.csv 5 daily_dose_mg S002 expected a dose in mg/day >= 0" in words


# --------------------------------------------------------------------------- trdscreen report


def test_report_renders_the_runs_own_file_again(runs, tmp_path):
    for name in ("sample", "quarantine", "invalid", "adjudicated"):
        out = tmp_path / f"{name}.html"
        result = invoke("report", runs[name], "--out", out)
        assert result.exit_code == 0, result.output
        assert out.read_bytes() == (runs[name] / "report.html").read_bytes(), name
    stdout = invoke("report", runs["sample"]).stdout
    assert stdout == (runs["sample"] / "report.html").read_text()


def test_verify_rerenders_the_report_and_notices_an_edit(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["sample"], run)
    result = invoke("verify", run, "--no-rerun")
    assert (
        "report.html: SHA-256 matches manifest.json; renders again byte for byte" in result.stdout
    )
    with open(run / "report.html", "a") as handle:
        handle.write("<!-- edited -->")
    result = invoke("verify", run, "--no-rerun")
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert "FAIL report.html: differs from the SHA-256 in manifest.json" in result.stdout


def test_report_checks_the_tables_first(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs["sample"], run)
    with open(run / "courses.csv", "a") as handle:
        handle.write("\n")
    result = invoke("report", run, "--out", tmp_path / "r.html")
    assert result.exit_code == ExitCode.NOT_VERIFIED
    assert (
        "courses.csv: the file differs from the SHA-256 recorded in manifest.json" in result.stderr
    )
    assert not (tmp_path / "r.html").exists()


def test_a_shareable_copy_suppresses_small_counts_and_names_nobody(runs, tmp_path):
    out = tmp_path / "share.html"
    assert invoke("report", runs["sample"], "--out", out, "--min-cell", "5").exit_code == 0
    text = out.read_text()
    parsed = Page(text)
    subjects = pd.read_csv(runs["sample"] / "decisions.csv", keep_default_na=False)["subject_id"]
    assert not [s for s in subjects if re.search(rf"\b{s}\b", text)]
    assert not parsed.all("section")
    shown = [int(a["data-n"]) for a in parsed.all("g") if a.get("data-n") is not None]
    assert shown and all(n == 0 or n >= 5 for n in shown)
    assert parsed.all("g", data_suppressed="true") and "&lt;5" in text
    # attrition's step 1 (AGE, 18 to 65) excluded 3 subjects (S016 74, S017 17, S036 70):
    # shown as <5.
    age = parsed.all("g", data_kind="excluded", data_step="1")[0]
    assert age == {"class": "excluded", "id": "flow-excluded-1", "data-kind": "excluded",
                   "data-step": "1", "data-suppressed": "true"}  # fmt: skip


def test_chosen_subjects_and_the_section_limit(runs, tmp_path):
    out = tmp_path / "two.html"
    result = invoke(
        "report", runs["sample"], "--subject", "S018", "--subject", "S020", "--out", out
    )
    assert result.exit_code == 0, result.output
    words = Page(out.read_text()).words()
    assert len(Page(out.read_text()).all("section")) == 2
    assert "S018: needs review" in words and "S020: excluded" in words
    limited = invoke("report", runs["sample"], "--max-subjects", "10").stdout
    assert not Page(limited).all("section")
    assert "67 subjects: more than 10, so no subject has a section here" in Page(limited).words()
    unknown = invoke("report", runs["sample"], "--subject", "NOPE", "--out", tmp_path / "x.html")
    assert unknown.exit_code == ExitCode.USAGE and "'NOPE' is not in this run" in unknown.stderr


def test_report_replaces_only_a_report_it_wrote_and_never_writes_into_the_run(runs, tmp_path):
    mine = tmp_path / "mine.html"
    mine.write_text("<html>my notes</html>")
    refused = invoke("report", runs["sample"], "--out", mine, "--force")
    assert refused.exit_code == ExitCode.OUTPUT_EXISTS
    assert mine.read_text() == "<html>my notes</html>"
    out = tmp_path / "r.html"
    assert invoke("report", runs["sample"], "--out", out).exit_code == 0
    assert invoke("report", runs["sample"], "--out", out).exit_code == ExitCode.OUTPUT_EXISTS
    assert invoke("report", runs["sample"], "--out", out, "--force").exit_code == 0
    inside = invoke("report", runs["sample"], "--out", runs["sample"] / "copy.html")
    assert inside.exit_code == ExitCode.OUTPUT_EXISTS
    assert not (runs["sample"] / "copy.html").exists()


def test_the_worklist_too_replaces_only_a_worklist(runs, tmp_path):
    mine = tmp_path / "mine.csv"
    mine.write_text("patient,notes\n")
    result = invoke("worklist", runs["sample"], "--out", mine, "--force")
    assert result.exit_code == ExitCode.OUTPUT_EXISTS and mine.read_text() == "patient,notes\n"
    out = tmp_path / "review.csv"
    assert invoke("worklist", runs["sample"], "--out", out).exit_code == 0
    assert invoke("worklist", runs["sample"], "--out", out, "--force").exit_code == 0


def test_the_rule_file_changing_later_does_not_change_the_report(runs, tmp_path):
    # The protocol text is drawn from the rule set and evidence tags the manifest
    # recorded: retagging (or deleting) the file afterwards changes nothing.
    rules = tmp_path / "protocol.yaml"
    shutil.copy(Path(__file__).parents[1] / "rules" / "sforzini-2021.yaml", rules)
    run = screen(tmp_path / "run", SAMPLE, "--rules", rules)
    before = (run / "report.html").read_text()
    assert before.count('<span class="flag">') > 10
    rules.write_text(rules.read_text().replace("[U]", "[V]"))
    assert invoke("report", run).stdout == before
    rules.unlink()
    assert invoke("report", run).stdout == before
