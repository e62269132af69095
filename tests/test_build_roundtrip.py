"""Round trip: courses exploded into regular fills and ratings, then built back, give the
same courses and the same decisions.

A synthetic cohort of clean courses (one generic at one dose, 15 to 150 days, a
baseline HAM-D17 on the first day and an end rating on the last; different drugs
never overlapping; a course of the same drug right after it only after more than
`gap_days`, but after another drug it may come back sooner, which the build makes
one course of two rows, each with its own ratings, as the screen merges them) is
written as the dispensing export a pharmacy system would give:
one fill every 28 or 30 days, the last one for the days left, as days' supply
or as tablets and tablets a day. Built back, every course must come out with
its drug, dose, dates and ratings, and screening both tables must decide every
subject alike.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import run_cohort, write_cohort, write_csv
from trdscreen.buildrun import BuildRequest, run_build

DRUGS = {
    "sertraline": (50, 100, 150, 200),
    "venlafaxine": (75, 150, 225),
    "fluoxetine": (20, 40),
    "citalopram": (20, 40),
    "escitalopram": (10, 20),
    "mirtazapine": (15, 30, 45),
    "duloxetine": (30, 60, 120),
}
FIRST = date(2022, 9, 1)
LAST = date(2024, 5, 1)  # before the screening date of conftest's subjects (2024-06-01)


def courses(rng: np.random.Generator, n_subjects: int) -> list[dict]:
    rows = []
    for k in range(n_subjects):
        day, previous = FIRST + timedelta(days=int(rng.integers(0, 60))), None
        for _ in range(int(rng.integers(1, 5))):
            drug = str(rng.choice(list(DRUGS)))
            length = int(rng.integers(15, 151))  # the end rating >= 14 days after the start
            if drug == previous:
                day += timedelta(days=int(rng.integers(31, 90)))  # a new course of it
            end = day + timedelta(days=length - 1)
            if end > LAST:
                break
            rows.append({
                "subject_id": f"X{k:04d}", "drug": drug,
                "daily_dose_mg": int(rng.choice(DRUGS[drug])),
                "start_date": day.isoformat(), "end_date": end.isoformat(),
                "hamd_start": int(rng.integers(18, 31)), "hamd_end": int(rng.integers(4, 31)),
            })  # fmt: skip
            day, previous = end + timedelta(days=int(rng.integers(1, 60))), drug
    return rows


def explode(rows: list[dict], rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    """Each course as fills and two ratings."""
    events, ratings = [], []
    for row in rows:
        start, end = date.fromisoformat(row["start_date"]), date.fromisoformat(row["end_date"])
        step = int(rng.choice([28, 30]))
        as_tablets = bool(rng.integers(0, 2))
        day = start
        while day <= end:
            supply = min(step, (end - day).days + 1)
            event = {"subject_id": row["subject_id"], "drug": row["drug"],
                     "event_date": day.isoformat()}  # fmt: skip
            if as_tablets:  # one tablet of the daily dose a day
                event |= {"quantity": supply, "units_per_day": 1,
                          "strength_mg": row["daily_dose_mg"]}  # fmt: skip
            else:
                event |= {"days_supply": supply, "daily_dose_mg": row["daily_dose_mg"]}
            events.append(event)
            day += timedelta(days=supply)
        for when, total in ((start, row["hamd_start"]), (end, row["hamd_end"])):
            ratings.append({"subject_id": row["subject_id"], "date": when.isoformat(),
                            "instrument": "HAMD17", "total": total})  # fmt: skip
    order = rng.permutation(len(events))  # an export is in no particular order
    return [events[i] for i in order], ratings


COLUMNS = [
    "subject_id",
    "drug",
    "daily_dose_mg",
    "start_date",
    "end_date",
    "hamd_start",
    "hamd_end",
]


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "subject_id": frame["subject_id"].astype(str),
        "drug": frame["drug"].astype(str),
        "daily_dose_mg": frame["daily_dose_mg"].astype(float),
        "start_date": pd.to_datetime(frame["start_date"]).astype("datetime64[s]"),
        "end_date": pd.to_datetime(frame["end_date"]).astype("datetime64[s]"),
        "hamd_start": frame["hamd_start"].astype("Int64"),
        "hamd_end": frame["hamd_end"].astype("Int64"),
    })  # fmt: skip
    return out.sort_values(["subject_id", "start_date"]).reset_index(drop=True)


COMPARED = ["decision", "classification", "n_courses", "n_adequate_trials", "n_failed_trials"]


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
# 704: mirtazapine 19 -> 4 (remission), fluoxetine, mirtazapine again 25 days later 20 ->
# 17. Built with the course's ends alone (19 -> 17) it was a failed trial; from the course
# table the rows disagree (unknown).
@example(seed=704)
# 4504: mirtazapine 3 weeks, duloxetine 3 weeks, mirtazapine again 31 days after the first
# ended: one built course whose pdc counted the duloxetine days as missed (0.77, under
# 0.8: not adequate); the course table, without adherence, assumed it met. Days on
# another antidepressant are now left out of the pdc (0.91).
@example(seed=4504)
def test_courses_exploded_into_fills_build_back_to_the_same_courses_and_decisions(
    tmp_path_factory, seed
):
    rng = np.random.default_rng(seed)
    original = courses(rng, 60)
    subjects = [{"subject_id": s} for s in sorted({r["subject_id"] for r in original})]
    tmp = tmp_path_factory.mktemp("roundtrip")
    write_cohort(tmp / "courses", original, subjects)
    events, ratings = explode(original, rng)
    records = tmp / "records"
    records.mkdir()
    write_csv(records / "drug_events.csv", events, [
        "subject_id", "drug", "event_date", "days_supply", "quantity", "units_per_day",
        "strength_mg", "daily_dose_mg",
    ])  # fmt: skip
    write_csv(records / "assessments.csv", ratings, ["subject_id", "date", "instrument", "total"])
    (records / "subjects.csv").write_text((tmp / "courses" / "subjects.csv").read_text())
    run_build(BuildRequest(records, tmp / "built"))

    built = pd.read_parquet(tmp / "built" / "treatments.parquet")
    assert len(built) == len(original)
    # Every cell, an empty one included (`ne` on a missing value is missing, and `any`
    # skipped it: an end rating lost in the build went unseen).
    pd.testing.assert_frame_equal(_canonical(built), _canonical(pd.DataFrame(original)))
    assert set(built["role"]) == {"monotherapy"}

    decided = run_cohort(tmp / "built")[1].decisions.set_index("subject_id")[COMPARED]
    expected = run_cohort(tmp / "courses")[1].decisions.set_index("subject_id")[COMPARED]
    pd.testing.assert_frame_equal(decided.sort_index(), expected.sort_index())
