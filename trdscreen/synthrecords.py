"""`trdscreen synth --records`: a synthetic cohort as a records folder for `trdscreen build`.

The synthetic treatment courses are written as a pharmacy system would export
them: each drug course as fills of 28 days (the last one for the days left;
an ongoing course filled up to the screening date), each ECT, rTMS or
esketamine course as its sessions spread over its dates, and its HAM-D totals
as ratings on its first and last day (one a day: where two fall on one day, the
first listed). Subjects are written as they are. For
demos and load tests: what the screen would decide from the built courses is
close to, not the same as, its decision on the synthetic courses (improvement
without scores and stop reasons are not records, and are left out).
Vectorized: `np.repeat` and per-row offsets, no per-course Python.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

FILL_DAYS = 28
PROCEDURES = {"ect": "ECT", "rtms": "rTMS", "esketamine": "esketamine"}


def _days(column: pa.ChunkedArray) -> np.ndarray:
    """date32 as float day numbers, NaN where empty."""
    values = pc.cast(column, pa.int32()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64)


def _date(days: np.ndarray) -> pa.Array:
    return pa.array(days.astype(np.int32), pa.int32()).cast(pa.date32())


def _offsets(counts: np.ndarray) -> np.ndarray:
    """0, 1, ... counts[i]-1 for each row i, concatenated."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def records(treatments: pa.Table, subjects: pa.Table) -> dict[str, pa.Table]:
    """The tables of a records folder (drug_events, procedures, assessments, subjects)."""
    subject = treatments.column("subject_id").to_numpy(zero_copy_only=False).astype(object)
    drug = treatments.column("drug").to_numpy(zero_copy_only=False).astype(object)
    dose = treatments.column("daily_dose_mg").to_numpy(zero_copy_only=False)
    start = _days(treatments.column("start_date"))
    end = _days(treatments.column("end_date"))
    modality = (
        treatments.column("modality").to_numpy(zero_copy_only=False).astype(object)
        if "modality" in treatments.column_names
        else np.full(len(start), None, dtype=object)
    )
    people = pd.Index(subjects.column("subject_id").to_numpy(zero_copy_only=False))
    at = people.get_indexer(subject)
    screening = np.r_[_days(subjects.column("screening_date")), np.nan]
    reference = screening[np.where(at < 0, len(people), at)]
    last = np.where(np.isnan(end), reference, end)
    ok = ~np.isnan(start) & ~np.isnan(last) & (last >= start)
    session = ok & np.isin(modality, list(PROCEDURES))
    pharmacy = ok & ~session
    tables = {"drug_events": _fills(subject, drug, dose, start, last, pharmacy)}
    sessions = _sessions(treatments, subject, modality, start, last, session)
    if sessions is not None:
        tables["procedures"] = sessions
    tables["assessments"] = _ratings(treatments, subject, start, end, ok)
    tables["subjects"] = subjects
    return tables


def _fills(subject, drug, dose, start, last, rows) -> pa.Table:
    rows = np.flatnonzero(rows)
    length = (last[rows] - start[rows] + 1).astype(np.int64)
    counts = -(-length // FILL_DAYS)
    row = np.repeat(rows, counts)
    k = _offsets(counts)
    day = start[row] + k * FILL_DAYS
    supply = np.minimum(FILL_DAYS, last[row] - day + 1)
    return pa.table(
        {
            "subject_id": pa.array(subject[row], pa.string()),
            "drug": pa.array(drug[row], pa.string()),
            "event_date": _date(day),
            "event_type": pa.array(np.full(len(row), "dispensed"), pa.string()),
            "days_supply": pa.array(supply),
            "daily_dose_mg": pa.array(dose[row], from_pandas=True),
        }
    )


def _sessions(treatments, subject, modality, start, last, rows) -> pa.Table | None:
    rows = np.flatnonzero(rows)
    if len(rows) == 0:
        return None
    given = (
        treatments.column("sessions").to_numpy(zero_copy_only=False)[rows]
        if "sessions" in treatments.column_names
        else np.full(len(rows), np.nan)
    )
    length = last[rows] - start[rows] + 1
    counts = np.where(np.isnan(given), np.maximum(length // 3, 1), given).astype(np.int64)
    counts = np.clip(counts, 1, length.astype(np.int64))
    row = np.repeat(np.arange(len(rows)), counts)
    k = _offsets(counts)
    spread = np.where(counts[row] > 1, k * (length[row] - 1) // np.maximum(counts[row] - 1, 1), 0)
    names = np.asarray([PROCEDURES[m] for m in modality[rows]], dtype=object)
    return pa.table(
        {
            "subject_id": pa.array(subject[rows][row], pa.string()),
            "date": _date(start[rows][row] + spread),
            "procedure": pa.array(names[row], pa.string()),
        }
    )


def _ratings(treatments, subject, start, end, rows) -> pa.Table:
    parts = []
    for column, day in (("hamd_start", start), ("hamd_end", end)):
        total = treatments.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        keep = rows & ~np.isnan(total) & ~np.isnan(day)
        parts.append((subject[keep], day[keep], total[keep]))
    who = np.concatenate([p[0] for p in parts])
    day = np.concatenate([p[1] for p in parts])
    total = np.concatenate([p[2] for p in parts])
    order = np.lexsort((day, who))
    # One rating a subject a day, as a rater records one: where two courses' totals fall
    # on one day (one ends as the next starts), the first listed (a baseline before an
    # end rating) is kept, since `build` refuses two different totals of one day.
    keep = np.r_[True, (who[order][1:] != who[order][:-1]) | (day[order][1:] != day[order][:-1])]
    order = order[keep]
    return pa.table(
        {
            "subject_id": pa.array(who[order], pa.string()),
            "date": _date(day[order]),
            "instrument": pa.array(np.full(len(order), "HAMD17"), pa.string()),
            "total": pa.array(total[order].astype(np.int64)),
        }
    )
