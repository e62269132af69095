"""Courses of sessions for `trdscreen build`: ECT, rTMS and esketamine from `procedures`.

One row per session day in, one treatments row per course out: sessions of one
subject and procedure at most `build.procedure_gap_days` apart [U] are one
course, from its first to its last session, with `sessions` the number of
session days (the adequacy rules' `min_sessions_for` reads it) and the modality
the screen expects (drug `ECT`, `rTMS` or `esketamine`). A second row for the
same subject, procedure and day is a duplicate; sessions after the reference
date, before birth or on a placeholder date are set aside, each with its
reason, in `procedure_sessions`. Ratings are attached as to drug courses
(buildratings). Vectorized like the drug steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.buildratings import Scales, attach
from trdscreen.buildrules import BuildRules
from trdscreen.buildtables import (
    CODE,
    STATUS,
    Periods,
    coded,
    ints,
    labels,
    rating_columns,
    set_aside_dates,
    unobserved,
)
from trdscreen.columns import day_numbers
from trdscreen.records import PROCEDURES, Table, subject_codes
from trdscreen.segments import Segments, dates, merge_segments, rank_within

DRUG_OF = {"ect": "ECT", "rtms": "rTMS", "esketamine": "esketamine"}


@dataclass(frozen=True)
class SessionCourses:
    """Treatments rows of session courses (unsorted) and the trail of every session row."""

    frame: pd.DataFrame
    subject: np.ndarray  # subject code per row
    start: np.ndarray  # first session day per row
    end: np.ndarray  # last session day per row
    trail: pd.DataFrame  # per input row: status, course_id, row (0-based into frame, -1)
    why: np.ndarray  # per input row: its buildtables.STATUS code (0: used)


def session_courses(
    table: Table, ids: pd.Index, reference: np.ndarray, birth: np.ndarray,
    scales: Scales, rules: BuildRules, periods: Periods | None = None,
) -> SessionCourses:  # fmt: skip
    """Courses from the procedures table (`ids`: subject codes; reference and birth per
    subject code, day numbers; `scales`: the ratings by the same codes)."""
    frame = table.frame
    n = len(frame)
    subject = subject_codes(table, ids)
    day = day_numbers(frame, "date")
    procedure = pd.Index(PROCEDURES).get_indexer(frame["procedure"].astype(object).to_numpy())
    known = subject >= 0
    at = np.maximum(subject, 0)
    why = set_aside_dates(
        day, day, np.where(known, reference[at], np.nan), np.where(known, birth[at], np.nan),
        rules, table.unusable, unobserved(subject, day, periods),
    )  # fmt: skip
    used = np.flatnonzero(why == 0)
    repeat = (
        pd.DataFrame({"s": subject[used], "p": procedure[used], "d": day[used]})
        .duplicated()
        .to_numpy()
    )
    why[used[repeat]] = CODE["duplicate"]
    kept = used[~repeat]
    s, p, d = subject[kept], procedure[kept], day[kept]
    course = merge_segments(
        (s, p.astype(np.int64)), np.ones(len(kept), dtype=bool), d, d, rules.procedure_gap_days
    )
    seg = Segments.of(course, d)
    m = seg.m
    first, last = seg.reduce(np.minimum, d), seg.reduce(np.maximum, d)
    c_subject, c_procedure = s[seg.first], p[seg.first]
    lines = table.source.lines[kept]
    rated = attach(scales, c_subject, first, last, reference[c_subject], rules.ratings)
    order = np.lexsort((first, c_procedure, c_subject))
    rank = rank_within(order, c_subject, c_procedure)
    names = np.asarray(PROCEDURES, dtype=object)[c_procedure]
    course_id = [
        f"{ids[c]}:{name}{k}" for c, name, k in zip(c_subject, names, rank, strict=True)
    ]  # one per course, not per patient row: fine in Python at any realistic size
    columns: dict[str, object] = {
        "subject_id": ids.to_numpy(dtype=object)[c_subject],
        "drug": np.asarray([DRUG_OF[x] for x in PROCEDURES], dtype=object)[c_procedure],
        "daily_dose_mg": np.full(m, np.nan),
        "start_date": dates(first),
        "end_date": dates(last),
        "stop_reason": np.full(m, None, dtype=object),
        "role": labels(np.full(m, "monotherapy", dtype=object)),
        "modality": labels(names),
        "adherence": np.full(m, np.nan),
        "duration_assumed": np.zeros(m, dtype=bool),
        "sessions": ints(seg.size.astype(np.float64)),
        **rating_columns(rated, np.arange(m), np.ones(m, dtype=bool), np.ones(m, dtype=bool)),
        "course_id": np.asarray(course_id, dtype=object),
        "n_events": seg.size,
        "source_file": np.full(m, table.source.file, dtype=object),
        "first_source_line": seg.reduce(np.minimum, lines),
        "last_source_line": seg.reduce(np.maximum, lines),
        "duration_source": labels(np.full(m, "sessions", dtype=object)),
    }
    frame_out = pd.DataFrame(columns)
    row = np.full(n, -1, dtype=np.int64)
    row[kept] = course
    trail = pd.DataFrame(
        {
            "source_line": table.source.lines,
            "subject_id": frame["subject_id"].array,
            "procedure": frame["procedure"].array,
            "date": frame["date"].array,
            "status": coded(why, STATUS),
        }
    )
    return SessionCourses(frame_out, c_subject, first, last, trail.assign(row=row), why)
