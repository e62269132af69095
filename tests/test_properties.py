"""Invariants: row order never changes decisions; every subject gets exactly one decision;
a stricter threshold never admits more patients."""

from __future__ import annotations

import pandas as pd
from conftest import SAMPLE, run_cohort, write_rules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXPECTED = run_cohort(SAMPLE)[1].decisions


def _shuffled_copy(folder, seed):
    folder.mkdir(parents=True, exist_ok=True)
    for stem in ("treatments", "subjects"):
        frame = pd.read_csv(SAMPLE / f"{stem}.csv", dtype=str, keep_default_na=False)
        frame.sample(frac=1.0, random_state=seed).to_csv(folder / f"{stem}.csv", index=False)
    return folder


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_row_order_changes_no_decision(tmp_path_factory, seed):
    folder = _shuffled_copy(tmp_path_factory.mktemp("shuffled"), seed)
    decisions = run_cohort(folder)[1].decisions
    pd.testing.assert_frame_equal(decisions, EXPECTED)


def test_every_subject_gets_exactly_one_decision():
    treatments = pd.read_csv(SAMPLE / "treatments.csv", dtype=str)
    subjects = pd.read_csv(SAMPLE / "subjects.csv", dtype=str)
    ids = set(treatments["subject_id"]) | set(subjects["subject_id"])
    assert EXPECTED["subject_id"].is_unique
    assert set(EXPECTED["subject_id"]) == ids
    assert EXPECTED["decision"].notna().all()


STRICTER = [
    {"adequacy": {"duration": {"min_weeks": 8}}},
    {"adequacy": {"dose": {"multiple": 1.5}}},
    {"outcome": {"nonresponse": {"op": "<", "pct": 10}}},
    {"adequacy": {"adherence": {"minimum": 0.95}}},
]


@settings(
    max_examples=len(STRICTER),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(change=st.sampled_from(STRICTER))
def test_stricter_thresholds_never_admit_more(tmp_path_factory, change):
    rules = write_rules(tmp_path_factory.mktemp("rules"), change)
    stricter = run_cohort(SAMPLE, rules)[1].decisions.set_index("subject_id")["decision"]
    before = EXPECTED.set_index("subject_id")["decision"]
    newly_eligible = (stricter == "eligible") & (before != "eligible")
    assert not newly_eligible.any(), list(stricter[newly_eligible].index)
