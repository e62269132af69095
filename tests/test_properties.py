"""Invariants: row order never changes decisions; every subject gets exactly one decision;
a stricter threshold never admits more patients."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import SAMPLE, preset_data, run_cohort, write_rules
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trdscreen.rulefile import preset_dir

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

    # to_resolve names a course by its line, which the shuffle moved: the same fact of
    # the same course, at another line.
    def unlined(frame: pd.DataFrame) -> pd.DataFrame:
        lines = frame["to_resolve"].str.replace(r"line \d+", "line N", regex=True)
        return frame.assign(to_resolve=lines)

    pd.testing.assert_frame_equal(unlined(decisions), unlined(EXPECTED))


def test_every_subject_gets_exactly_one_decision():
    treatments = pd.read_csv(SAMPLE / "treatments.csv", dtype=str)
    subjects = pd.read_csv(SAMPLE / "subjects.csv", dtype=str)
    ids = set(treatments["subject_id"]) | set(subjects["subject_id"])
    assert EXPECTED["subject_id"].is_unique
    assert set(EXPECTED["subject_id"]) == ids
    assert EXPECTED["decision"].notna().all()


def _stricter(preset: str) -> list[dict]:
    """Tightenings of each numeric threshold the preset has (never loosening anything)."""
    data = preset_data(preset)
    adequacy, outcome = data["adequacy"], data["outcome"]
    duration = adequacy["duration"]
    changes = [
        {"adequacy": {"duration": {"min_weeks": duration["min_weeks"] + 4}}}
        if "min_weeks" in duration
        else {"adequacy": {"duration": {"min_days": duration["min_days"] + 14}}},
        {"adequacy": {"dose": {"multiple": 1.5}}},
        {"adequacy": {"adherence": {"minimum": 0.95}}},
        {"resistance": {"min_failed_trials": data["resistance"]["min_failed_trials"] + 1}},
    ]
    if outcome.get("nonresponse"):
        cut = outcome["nonresponse"]
        changes.append({"outcome": {"nonresponse": {"op": "<", "pct": cut["pct"] - 10}}})
    # The clinical semantics v2 thresholds, each moved to its stricter side: a higher
    # remission cut and baseline floor (fewer rated failures), no tolerance before the
    # episode onset, a longer shortest failing early stop, more sessions per course.
    if outcome.get("remission_max") is not None:
        changes.append({"outcome": {"remission_max": outcome["remission_max"] + 3}})
    if outcome.get("min_baseline") is not None:
        changes.append({"outcome": {"min_baseline": outcome["min_baseline"] + 4}})
    if adequacy["episode"]["current_only"] and adequacy["episode"]["scope"] != "overlap":
        changes.append({"adequacy": {"episode": {"tolerance_days": 0}}})
    if data.get("early_stop"):
        changes.append({"early_stop": {"min_days": data["early_stop"]["min_days"] + 7}})
    if duration.get("min_sessions_for"):
        more = {k: v + 5 for k, v in duration["min_sessions_for"].items()}
        changes.append({"adequacy": {"duration": {"min_sessions_for": more}}})
    for criterion in data[
        "criteria"
    ]:  # a higher minimum of failed trials where a criterion counts them
        if criterion["column"] == "n_failed_trials" and criterion["op"] == "ge":
            raised = [
                {**c, "value": c["value"] + 1} if c is criterion else c for c in data["criteria"]
            ]
            changes.append({"criteria": raised})
    return changes


PRESETS = sorted(p.stem for p in preset_dir().glob("*.yaml"))
CHANGES = [(preset, change) for preset in PRESETS for change in _stricter(preset)]
BEFORE = {preset: run_cohort(SAMPLE, preset)[1].decisions for preset in PRESETS}


@pytest.mark.parametrize(
    ("preset", "change"), CHANGES, ids=[f"{p}-{i}" for i, (p, _) in enumerate(CHANGES)]
)
def test_stricter_thresholds_never_admit_more(tmp_path, preset, change):
    """Tightening weeks, dose multiple, adherence, the improvement cut, the number of failed
    trials, the remission cut, the baseline floor, the episode tolerance, the shortest failing
    early stop or the session counts never makes a subject eligible who was not, under any
    preset (each change alone)."""
    rules = write_rules(tmp_path, change, preset)
    stricter = run_cohort(SAMPLE, rules)[1].decisions.set_index("subject_id")["decision"]
    before = BEFORE[preset].set_index("subject_id")["decision"]
    newly_eligible = (stricter == "eligible") & (before != "eligible")
    assert not newly_eligible.any(), (preset, change, list(stricter[newly_eligible].index))
