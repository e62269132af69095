"""`trdscreen build`: a screening score the subjects table leaves empty, from the ratings.

A site's subjects table often gives the screening date but not the HAM-D rated at
screening, which sits among the ratings; left empty, every built subject needs review
for HAMD-SCREEN. The build takes the latest HAM-D17 (or MADRS) total rated from
`build.ratings.screening_within_days` (28 [U]) before the screening date to that date,
never after the reference date (--as-of), and says which score it took
(`hamd_screening_source`: given, derived or none; `hamd_screening_line`: the ratings line).

Every expected value is worked out by hand: the screening date is 2024-06-01 (conftest),
so the window is 2024-05-04 .. 2024-06-01; ratings lines count the header as line 1.
"""

from __future__ import annotations

import pandas as pd

from tests.conftest import run_cohort
from tests.test_build import built, ev, rating, table

SUBJECTS = ("A", "B", "C", "D", "E", "F")
RATINGS = [
    # A: 42 days before (outside), 22 and 7 days before, and 4 days after the screening.
    rating("A", "2024-04-20", 30),  # line 2
    rating("A", "2024-05-10", 21),  # line 3
    rating("A", "2024-05-25", 24),  # line 4
    rating("A", "2024-06-05", 10),  # line 5
    rating("B", "2024-05-25", 12),  # line 6: B's row gives its own score
    rating("C", "2024-04-20", 26),  # line 7: older than 28 days
    rating("D", "2024-05-30", 30, "MADRS"),  # line 8
    rating("E", "2024-05-30", 25, "HAMD24"),  # line 9: not a HAM-D17 total
    rating("F", "2024-05-25", 19),  # line 10
]


def build_them(tmp_path, **request):
    events = [ev(s, "sertraline", "2024-01-02", 28, 100) for s in SUBJECTS]
    subjects = [{"subject_id": s, "hamd_screening": ""} for s in SUBJECTS]
    subjects[1]["hamd_screening"] = 20  # B: given
    return built(tmp_path, events, RATINGS, subjects, **request)


def test_the_latest_rating_before_screening_fills_an_empty_screening_score(tmp_path):
    # A: 24 (25 May), the latest in the window; read carelessly the latest rating of all
    # (10 on 5 June, after screening: A would fail HAM-D >= 18) or the first (30, six
    # weeks old). B keeps its given 20 though 12 was rated in the window. C: its only
    # rating is 42 days old: none, the screen still needs a score. D: MADRS 30 on 30 May
    # fills madrs_screening, not hamd_screening. E: a HAM-D24 total is not a HAM-D17
    # one: none. F: 19 (25 May, line 10).
    subjects = table(build_them(tmp_path), "subjects").set_index("subject_id")
    hamd = subjects[["hamd_screening", "hamd_screening_source", "hamd_screening_line"]]
    assert hamd.astype(object).where(hamd.notna(), None).to_dict("index") == {
        "A": {"hamd_screening": 24.0, "hamd_screening_source": "derived", "hamd_screening_line": 4},
        "B": {"hamd_screening": 20.0, "hamd_screening_source": "given", "hamd_screening_line": None},
        "C": {"hamd_screening": None, "hamd_screening_source": "none", "hamd_screening_line": None},
        "D": {"hamd_screening": None, "hamd_screening_source": "none", "hamd_screening_line": None},
        "E": {"hamd_screening": None, "hamd_screening_source": "none", "hamd_screening_line": None},
        "F": {"hamd_screening": 19.0, "hamd_screening_source": "derived", "hamd_screening_line": 10},
    }  # fmt: skip
    assert subjects.loc["D", ["madrs_screening", "madrs_screening_source"]].tolist() == [
        30.0, "derived"
    ]  # fmt: skip
    assert subjects.loc["A", "madrs_screening_source"] == "none"


def test_two_totals_on_the_screening_day_stop_the_build(tmp_path):
    # F rated 19 and 27 on 25 May, lines 10 and 11. 0.8.9 took the first by line (19):
    # had it been 15 beside 27, HAMD-SCREEN (>= 18) would turn on the export's row
    # order. Which total is F's rating cannot be told: the build stops naming both.
    import pytest

    from trdscreen.errors import InputError

    events = [ev("F", "sertraline", "2024-01-02", 28, 100)]
    ratings = [*RATINGS, rating("F", "2024-05-25", 27)]  # line 11
    with pytest.raises(InputError) as error:
        built(tmp_path, events, ratings, [{"subject_id": "F", "hamd_screening": ""}])
    assert error.value.problems == [
        "assessments.csv line 10, column total: line 11 gives another total of this instrument "
        "for this subject on this day: one total per subject, instrument and day; correct "
        "or remove the wrong one",
        "assessments.csv line 11, column total: line 10 gives another total of this instrument "
        "for this subject on this day: one total per subject, instrument and day; correct "
        "or remove the wrong one",
    ]


def test_a_derived_score_is_read_as_a_ham_d17_total(tmp_path):
    # A's row names HAM-D24 for the score it left empty; the score derived is a HAM-D17
    # total (24 on 25 May), so its version is 17 (kept at 24, the screen would not
    # compare it with the HAM-D17 threshold). B's given score keeps its row's version.
    events = [ev(s, "sertraline", "2024-01-02", 28, 100) for s in ("A", "B")]
    subjects = [{"subject_id": "A", "hamd_screening": "", "hamd_version": 24},
                {"subject_id": "B", "hamd_screening": 30, "hamd_version": 24}]  # fmt: skip
    out = built(tmp_path, events, RATINGS[:5], subjects)
    rows = table(out, "subjects").set_index("subject_id")
    assert rows.loc["A", ["hamd_screening", "hamd_version"]].tolist() == [24.0, 17]
    assert rows.loc["B", ["hamd_screening", "hamd_version"]].tolist() == [30.0, 24]


def test_as_of_takes_no_rating_after_it(tmp_path):
    # As of 2024-05-20 the window ends that day: A's latest is 21 (10 May); F's 25 May
    # ratings are later: none.
    subjects = table(build_them(tmp_path, as_of=pd.Timestamp("2024-05-20").date()), "subjects")
    rows = subjects.set_index("subject_id")
    assert rows.loc["A", "hamd_screening"] == 21.0
    assert pd.isna(rows.loc["F", "hamd_screening"])


def test_the_screen_decides_on_the_derived_score(tmp_path):
    # The built folder screened: A's HAMD-SCREEN (>= 18) is met on 24, C's is unknown
    # (no score) and says so; the window is recorded in the manifest as [U].
    out = build_them(tmp_path)
    ledger = run_cohort(out)[1].ledger
    state = ledger[ledger["criterion_id"] == "HAMD-SCREEN"].set_index("subject_id")["outcome"]
    assert (state["A"], state["C"]) == ("met", "unknown")
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    params = {p["key"]: p for p in manifest["parameters"]}
    assert (params["ratings.screening_within_days"]["value"],
            params["ratings.screening_within_days"]["tag"]) == (28, "U")  # fmt: skip


def test_a_build_section_hashes_as_before_unless_it_sets_the_window():
    # Rule sets written before 0.8.7 with a `build:` section must keep their normalized
    # hash (verify compares it): the default window is left out of it, a chosen one not.
    from trdscreen.buildrules import BuildRules

    assert "screening_within_days" not in BuildRules().model_dump()["ratings"]
    chosen = BuildRules.model_validate({"ratings": {"screening_within_days": 14}})
    assert chosen.model_dump()["ratings"]["screening_within_days"] == 14
