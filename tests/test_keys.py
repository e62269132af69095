"""Subject codes (trdscreen.keys): computed once, they must sort and match as the ids do."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from trdscreen.keys import (
    cohort_codes,
    day_numbers,
    first_rows,
    lex_order,
    pack,
    slots,
    sorted_codes,
    stable_order,
    subject_keys,
)


def _text(values):
    return pd.Series(pd.array(values, dtype="str"))


def test_codes_are_ranks_of_the_sorted_distinct_ids_of_both_tables():
    # Distinct non-null ids: S01, S02, S10, s01 (byte order puts upper case first).
    courses = _text(["S10", "S01", None, "S10", "s01"])
    subjects = _text(["S02", "S01", None])
    keys = subject_keys(courses, subjects)
    assert keys.ids.to_pylist() == ["S01", "S02", "S10", "s01"]
    assert keys.courses.tolist() == [2, 0, -1, 2, 3]
    assert keys.subjects.tolist() == [1, 0, -1]


def test_codes_of_empty_tables():
    keys = subject_keys(_text([]), _text([]))
    assert keys.ids.to_pylist() == [] and len(keys.courses) == 0 and len(keys.subjects) == 0


def test_cohort_codes_renumber_the_subjects_left_after_filtering():
    keys = subject_keys(_text(["A", "B", "C", "B"]), _text(["D", "A"]))
    # Drop every row of B (as quarantine would): A, C, D are left and renumbered 0, 1, 2,
    # in id order; the id text comes from each subject's first row.
    keep = np.array([True, False, True, False])
    ids, course_codes, subject_codes = cohort_codes(
        keys.courses[keep],
        keys.subjects,
        _text(["A", "C"]),
        _text(["D", "A"]),
    )
    assert list(ids) == ["A", "C", "D"]
    assert course_codes.tolist() == [0, 1]
    assert subject_codes.tolist() == [2, 0]


def test_cohort_codes_keep_null_ids_null():
    ids, course_codes, subject_codes = cohort_codes(
        np.array([1, -1]), np.array([-1]), _text(["B", None]), _text([None])
    )
    assert (
        list(ids) == ["B"] and course_codes.tolist() == [0, -1] and subject_codes.tolist() == [-1]
    )


def test_first_rows_and_slots():
    codes = np.array([3, 1, 3, -1, 1, 0])
    assert first_rows(codes).tolist() == [0, 1, 5]  # first 3, first 1, first 0; -1 skipped
    # Codes 0..3 plus the last slot that the null code -1 reads.
    assert slots(codes) == 5 and slots(np.array([], dtype=np.int64)) == 1


def test_lex_order_is_np_lexsort_whether_packed_or_not():
    rng = np.random.default_rng(7)
    n = 5000
    # Few distinct values so that ties on the leading keys are common.
    small = [rng.integers(-3, 4, n), rng.integers(0, 5, n), rng.integers(100, 103, n)]
    expected = np.lexsort(small[::-1])  # np.lexsort sorts by its last key first
    assert lex_order(*small).tolist() == expected.tolist()
    # Ranges of 2**40 and 2**30 need 71 bits: not packable, np.lexsort is used.
    wide = [rng.integers(0, 2**40, n), rng.integers(0, 2**30, n)]
    assert lex_order(*wide).tolist() == np.lexsort(wide[::-1]).tolist()
    assert lex_order(np.array([], dtype=np.int64)).tolist() == []


def test_day_numbers_sort_as_the_dates_with_nat_last():
    dates = np.array(["2020-01-02", "NaT", "2019-12-31", "2020-01-01"], dtype="datetime64[s]")
    days = day_numbers(dates)
    assert np.argsort(days, kind="stable").tolist() == [2, 3, 0, 1]
    assert days[0] - days[3] == 1  # whole days when every value is a date
    # A time of day keeps seconds, so 12:00 sorts after midnight of the same day.
    times = np.array(["2020-01-01T12:00", "2020-01-01T00:00"], dtype="datetime64[s]")
    assert np.argsort(day_numbers(times)).tolist() == [1, 0]


def test_distinct_counter_counts_distinct_keys_per_subject_under_each_mask():
    from trdscreen.subjects import DistinctCounter

    rng = np.random.default_rng(11)
    n_subjects, rows = 50, 2000
    codes = rng.integers(0, n_subjects, rows)
    keys = rng.integers(0, 6, rows)
    counter = DistinctCounter(codes, keys, n_subjects)
    for _ in range(3):
        mask = rng.random(rows) < 0.3
        # By hand: the set of keys each subject has among the selected rows.
        expected = [
            len({k for c, k, m in zip(codes, keys, mask, strict=True) if m and c == s})
            for s in range(n_subjects)
        ]
        assert counter.count(mask).tolist() == expected
    assert counter.count(np.zeros(rows, bool)).tolist() == [0] * n_subjects
    # Negative keys (Thase-Rush marks unmapped classes -1) count for their own subject:
    # unshifted, subject 1's key -1 and subject 0's key 2 would share the pair id 2.
    counter = DistinctCounter(np.array([0, 1]), np.array([2, -1]), 2)
    assert counter.count(np.array([False, True])).tolist() == [0, 1]
    assert counter.count(np.array([True, True])).tolist() == [1, 1]


def test_pack_compares_as_the_key_tuple():
    a = np.array([2, 1, 2, 1, -5])
    b = np.array([0, 9, 3, 9, 4])
    packed = pack(a, b)
    tuples = list(zip(a.tolist(), b.tolist(), strict=True))
    for i in range(len(a)):
        for j in range(len(a)):
            assert (packed[i] < packed[j]) == (tuples[i] < tuples[j])
            assert (packed[i] == packed[j]) == (tuples[i] == tuples[j])
    assert pack(np.array([0, 2**40]), np.array([0, 2**30])) is None  # 71 bits


def test_courses_table_lists_same_day_courses_in_line_order(tmp_path):
    """The courses table is sorted by subject, start date, then source line. The line is
    not a sort key (rows arrive in line order and the sort is stable), so check a tie:
    S2's two courses start on the same day; line 3 must come before line 4, and S1
    (line 5) before S2 although it comes later in the file."""
    from conftest import run_cohort, write_cohort

    course = {"daily_dose_mg": 100, "end_date": "2023-03-28", "hamd_start": 24, "hamd_end": 22}
    rows = [
        {**course, "subject_id": "S2", "drug": "sertraline", "start_date": "2023-05-01"},
        {**course, "subject_id": "S2", "drug": "venlafaxine", "start_date": "2023-01-01"},
        {**course, "subject_id": "S2", "drug": "escitalopram", "start_date": "2023-01-01"},
        {**course, "subject_id": "S1", "drug": "sertraline", "start_date": "2023-02-01"},
    ]
    for row in rows:
        if row["start_date"] == "2023-05-01":
            row["end_date"] = "2023-07-01"
    folder = write_cohort(tmp_path / "in", rows, [{"subject_id": "S1"}, {"subject_id": "S2"}])
    _, result = run_cohort(folder)
    listed = result.courses[["subject_id", "source_line"]].values.tolist()
    assert listed == [["S1", 5], ["S2", 3], ["S2", 4], ["S2", 2]]


@pytest.mark.parametrize(
    ("low", "high"),
    [
        (0, 3),  # many ties: rows of one key keep their order
        (-1, 60_000),  # one 16-bit pass (a chunk's key ranks, -1 for no key)
        (-1, 1_000_000),  # two passes
        (-(2**40), 2**40),  # three passes, negative values
        (-(2**61), 2**61),  # four passes
    ],
)
def test_stable_order_is_numpys_stable_argsort(low, high):
    rng = np.random.default_rng(high)
    for n in (0, 1, 2, 1000, 70_000):
        values = rng.integers(low, high, n, dtype=np.int64)
        for typed in (values, values.astype(np.int32)) if high < 2**31 else (values,):
            want = np.argsort(typed, kind="stable")
            assert np.array_equal(stable_order(typed), want), (low, high, n, typed.dtype)
    same = np.full(5, 7, dtype=np.int32)
    assert stable_order(same).tolist() == [0, 1, 2, 3, 4]


def test_sorted_codes_of_pieces_are_those_of_the_values_in_one_array():
    # Ranks among the sorted distinct values: a 0, b 1, c 2, d 3; null -1. The pieces
    # repeat values across one another and one piece is empty.
    pieces = [["c", None, "a"], [], ["a", "d"], ["b", "c"]]
    codes, distinct = sorted_codes(pa.chunked_array(pieces, pa.string()))
    assert codes.tolist() == [2, -1, 0, 0, 3, 1, 2]
    assert distinct.to_pylist() == ["a", "b", "c", "d"]
    whole, _ = sorted_codes(pa.array([v for piece in pieces for v in piece], pa.string()))
    assert codes.tolist() == whole.tolist()
    none, nothing = sorted_codes(pa.chunked_array([], pa.string()))
    assert none.tolist() == [] and nothing.to_pylist() == []
