"""The sample cohort gets exactly the decisions documented in sample_data/README.md."""

from __future__ import annotations

import re

from conftest import SAMPLE


def documented() -> dict[str, tuple[str, str, str]]:
    rows = {}
    for line in (SAMPLE / "README.md").read_text().splitlines():
        match = re.match(r"^\|\s*(S\d{3})\s*\|\s*(\w+)\s*\|\s*(\w+)\s*\|\s*([\w-]*)\s*\|", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3), match.group(4))
    return rows


def test_readme_documents_every_subject(sample_result):
    assert len(documented()) == 67
    assert set(documented()) == set(sample_result.decisions["subject_id"])


def test_sample_decisions_match_the_readme(sample_result):
    expected = documented()
    decisions = sample_result.decisions.set_index("subject_id")
    wrong = {
        subject: (
            str(decisions.loc[subject, "decision"]),
            str(decisions.loc[subject, "classification"]),
            str(decisions.loc[subject, "first_failed_criterion"]),
        )
        for subject, want in expected.items()
        if (
            str(decisions.loc[subject, "decision"]),
            str(decisions.loc[subject, "classification"]),
            str(decisions.loc[subject, "first_failed_criterion"]),
        )
        != want
    }
    assert not wrong


def test_sample_totals(sample_result):
    counts = sample_result.counts()["decision"]
    assert counts == {"eligible": 17, "excluded": 37, "needs_review": 13}


def test_every_course_appears_once_with_its_line(sample_result):
    lines = sample_result.courses["source_line"].tolist()
    assert sorted(lines) == list(range(2, 138))  # 136 course rows after the header line


def test_unknown_drug_is_reported_with_suggestions(sample_result):
    issues = sample_result.issues
    unknown = issues[issues["check"] == "unknown_drug"]
    assert unknown["subject_id"].tolist() == ["S018"]
    assert "closest known: sertraline" in unknown["message"].iloc[0]


def test_attrition_adds_up(sample_result):
    attrition = sample_result.attrition
    steps = attrition[attrition["criterion_id"] != ""]
    assert steps["excluded_at_step"].sum() == 37
    final = attrition.set_index("title")["remaining"]
    assert final["needs_review"] + final["eligible"] == steps["remaining"].iloc[-1]
