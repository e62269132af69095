"""One YAML case file per criterion family and per preset (tests/cases/*.yaml), one
parametrized test. A file may name its `preset` (default sforzini-2021) and
`subject_defaults` (columns that preset's criteria read); a case may add
`rules` overrides and `report` (presets whose staging scores are added).

Each case is a few hand-made patients, the rule overrides it needs, and the
expected course checks and subject decisions, each with a comment saying why
(worked out from the clinical definition, not copied from program output).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import run_cohort, write_cohort, write_rules

CASES = Path(__file__).parent / "cases"


def _load_cases():
    for path in sorted(CASES.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        shared = {k: data[k] for k in ("preset", "subject_defaults") if k in data}
        for case in data["cases"]:
            yield pytest.param({**shared, **case}, id=f"{path.stem}:{case['name']}")


@pytest.mark.parametrize("case", list(_load_cases()))
def test_case(case, tmp_path):
    assert case.get("why"), "every case says why its expectation holds"
    subjects = case.get("subjects")
    if subjects is None:
        subjects = [
            {"subject_id": s} for s in dict.fromkeys(t["subject_id"] for t in case["treatments"])
        ]
    folder = write_cohort(
        tmp_path / "in", case["treatments"], subjects or None, case.get("subject_defaults")
    )
    rules = write_rules(tmp_path, case.get("rules"), case.get("preset", "sforzini-2021"))
    _, result = run_cohort(folder, rules, case.get("as_of"), case.get("report", ()))

    courses = result.courses.set_index("source_line")
    for index, expected in enumerate(case["expect"].get("courses", [])):
        if expected is None:
            continue
        row = courses.loc[index + 2]  # line 1 is the header
        for key, value in expected.items():
            actual = row["reasons"] if key == "reasons_absent" else row[key]
            if key == "reasons":
                assert set(value) <= set(str(actual).split(";")), (index, key, actual)
            elif key == "reasons_absent":
                reasons = set(str(row["reasons"]).split(";"))
                assert not set(value) & reasons, (index, key, row["reasons"])
            elif isinstance(value, float):
                assert actual == pytest.approx(value, abs=1e-6), (index, key, actual)
            else:
                assert str(actual) == str(value), (index, key, actual)

    decisions = result.decisions.set_index("subject_id")
    for subject, expected in case["expect"].get("subjects", {}).items():
        row = decisions.loc[subject]
        for key, value in expected.items():
            actual = row[key]
            if isinstance(value, float | int) and not isinstance(value, bool):
                assert float(actual) == pytest.approx(float(value)), (subject, key, actual)
            else:
                assert str(actual) == str(value), (subject, key, actual)
