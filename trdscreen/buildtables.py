"""The tables `trdscreen build` writes: treatments (one row per supply run, in the input
contract plus provenance), course_events (every input event and what became of it)
and event_attrition (how many events each step kept or set aside)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from trdscreen.buildcourses import Courses, Runs
from trdscreen.keys import lex_order
from trdscreen.segments import dates

SET_ASIDE = {
    "invalid": "a required cell could not be read (see validation_issues)",
    "after_reference_date": "after the subject's reference date (outside the observation window)",
    "before_birth": "dated before the subject's birth",
    "end_before_start": "end_date is before event_date",
    "placeholder_date": "dated on a placeholder date (build.placeholder_dates)",
    "days_supply_implausible": "days' supply is zero, negative or above build.max_days_supply",
    "quantity_not_positive": "quantity is zero or negative",
    "duplicate": "the same generic, day and dose as another event: one event, the longest supply",
    "summed": "another strength of the generic on the same day: its dose added to that event",
}
"""Why an event is not a row of its own (course_events.status, event_attrition)."""


@dataclass(frozen=True)
class Parts:
    """What the steps found, for the tables."""

    subject_ids: pd.Index  # subject code -> id
    generics: pd.Index  # generic code -> name
    kept: np.ndarray  # event rows that became part of a run
    runs: Runs
    courses: Courses
    rated: dict[str, np.ndarray]  # per course (buildratings.attach)
    reference: np.ndarray  # per subject code, day number


def _uniform(values: np.ndarray, group: np.ndarray, m: int) -> np.ndarray:
    """Per group 0..m-1: the value when all its rows agree, else "mixed"."""
    frame = pd.DataFrame({"g": group, "v": values})
    agg = frame.groupby("g", sort=True)["v"].agg(["first", "nunique"])
    out = np.where(agg["nunique"].to_numpy() > 1, "mixed", agg["first"].to_numpy())
    assert len(out) == m
    return out.astype(object)


def _where(mask: np.ndarray, values: np.ndarray | str) -> np.ndarray:
    """`values` where `mask` holds, else None (an empty cell)."""
    out = np.full(len(mask), None, dtype=object)
    out[mask] = values[mask] if isinstance(values, np.ndarray) else values
    return out


def _ints(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.array(_where(~np.isnan(values), values), dtype="Int64"))


def _course_ids(parts: Parts) -> np.ndarray:
    """`SUBJECT:k` per course, k counting a subject's courses from 1 by start date."""
    c = parts.courses
    day = np.where(np.isnan(c.start), 0, c.start)
    order = lex_order(c.subject, (day - (day.min() if len(day) else 0)).astype(np.int64), c.generic)
    first_of_subject = np.r_[True, c.subject[order][1:] != c.subject[order][:-1]]
    position = np.arange(len(order))
    rank = position - np.maximum.accumulate(np.where(first_of_subject, position, 0)) + 1
    ids = parts.subject_ids.to_numpy()[c.subject[order]].astype(str)
    out = np.empty(len(order), dtype=object)
    out[order] = np.char.add(np.char.add(ids, ":"), rank.astype(str))
    return out


def treatments(
    parts: Parts, lines: np.ndarray, source_file: str, duration_source: np.ndarray,
    dose_source: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:  # fmt: skip
    """(the treatments table; the table row of each run; the course id of each course).
    Per-event arrays (`lines`, the sources) cover every input event."""
    runs, c = parts.runs, parts.courses
    m = len(runs.start)
    course = c.of_run
    ids = _course_ids(parts)
    order = lex_order(
        c.subject[course],
        _rank(c.subject, c.start, c.generic)[course],
        _day(runs.start),
    )
    row_of_run = np.empty(m, dtype=np.int64)
    row_of_run[order] = np.arange(m)
    kept_lines = lines[parts.kept]
    first_line = runs.seg.reduce(np.minimum, kept_lines)
    last_line = runs.seg.reduce(np.maximum, kept_lines)
    ongoing = c.ongoing[course] & (runs.end >= parts.reference[c.subject[course]])
    unknown = np.isnan(runs.end)
    stop = _where(ongoing, "ongoing")
    stop[unknown & ~ongoing] = "other"
    end = np.where(ongoing | unknown, np.nan, runs.end)
    first_run, last_run = c.seg.first, c.seg.last
    is_first = np.zeros(m, dtype=bool)
    is_first[first_run] = True
    is_last = np.zeros(m, dtype=bool)
    is_last[last_run] = True
    rated = {name: values[course] for name, values in parts.rated.items()}
    columns: dict[str, object] = {
        "subject_id": parts.subject_ids.to_numpy()[c.subject[course]],
        "drug": parts.generics.to_numpy()[c.generic[course]],
        "daily_dose_mg": runs.dose,
        "start_date": dates(runs.start),
        "end_date": dates(end),
        "stop_reason": stop,
        "role": c.role[course],
        "modality": np.full(m, "pharmacotherapy", dtype=object),
    }
    for scale in ("hamd", "madrs"):
        columns[f"{scale}_start"] = _ints(np.where(is_first, rated[f"{scale}_start"], np.nan))
        columns[f"{scale}_end"] = _ints(np.where(is_last, rated[f"{scale}_end"], np.nan))
        if scale == "hamd":
            columns["hamd_version"] = _ints(rated["hamd_version"])
    next_drug = _where(
        c.next_generic >= 0, parts.generics.to_numpy()[np.maximum(c.next_generic, 0)]
    )
    columns |= {
        "course_id": ids[course],
        "n_events": runs.seg.size,
        "source_file": np.full(m, source_file, dtype=object),
        "first_source_line": first_line,
        "last_source_line": last_line,
        "dose_source": _uniform(dose_source[parts.kept], runs.of_event, m),
        "duration_source": _uniform(duration_source[parts.kept], runs.of_event, m),
        "change_type": c.change_type[course],
        "next_drug": next_drug[course],
        "days_to_next": _ints(c.days_to_next[course]),
        "pdc": c.pdc[course],
    }
    for scale in ("hamd", "madrs"):
        for when, mask in (("start", is_first), ("end", is_last)):
            day = np.where(mask, rated[f"{scale}_{when}_day"], np.nan)
            columns[f"{scale}_{when}_date"] = dates(day)
            columns[f"{scale}_{when}_line"] = _ints(
                np.where(mask, rated[f"{scale}_{when}_line"], np.nan)
            )
    frame = pd.DataFrame(columns)
    return frame.iloc[order].reset_index(drop=True), row_of_run, ids


def _day(values: np.ndarray) -> np.ndarray:
    day = np.where(np.isnan(values), 0, values)
    return (day - (day.min() if len(day) else 0)).astype(np.int64)


def _rank(subject: np.ndarray, start: np.ndarray, generic: np.ndarray) -> np.ndarray:
    """Each course's position in (subject, start, generic) order."""
    order = lex_order(subject, _day(start), generic)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def course_events(
    frame: pd.DataFrame, lines: np.ndarray, why: np.ndarray, key: np.ndarray,
    start: np.ndarray, parts: Parts, row_of_run: np.ndarray, ids: np.ndarray,
    generic: np.ndarray, length: np.ndarray, dose: np.ndarray,
    duration_source: np.ndarray, dose_source: np.ndarray,
) -> pd.DataFrame:  # fmt: skip
    """Every input event, in input order: what became of it, the course and treatments
    row it is in (a duplicate or summed event: those of the event it joined)."""
    n = len(frame)
    row = np.full(n, np.nan)
    course = np.full(n, None, dtype=object)
    kept = parts.kept
    run = parts.runs.of_event
    row[kept] = row_of_run[run] + 1
    course[kept] = ids[parts.courses.of_run[run]]
    joined = np.flatnonzero(np.isin(why, ["duplicate", "summed"]))
    if len(joined):
        heads = pd.DataFrame({"key": key[kept], "day": start[kept], "at": kept})
        heads = heads.drop_duplicates(["key", "day"])
        found = (
            pd.DataFrame({"key": key[joined], "day": start[joined]})
            .merge(heads, on=["key", "day"], how="left")["at"]
            .to_numpy()
        )
        row[joined] = row[found]
        course[joined] = course[found]
    status = np.where(why == "", "used", why)
    used = why == ""
    return pd.DataFrame(
        {
            "source_line": lines,
            "subject_id": frame["subject_id"].to_numpy(),
            "drug": frame["drug"].to_numpy(),
            "generic": _where(status != "invalid", generic),
            "event_date": frame["event_date"].to_numpy(),
            "status": status,
            "course_id": course,
            "treatments_row": _ints(row),
            "days": _ints(np.where(used, length, np.nan)),
            "duration_source": _where(used, duration_source),
            "daily_dose_mg": np.where(used, dose, np.nan),
            "dose_source": _where(used, dose_source),
        }
    )


def attrition(why: np.ndarray, runs: int, courses: int) -> pd.DataFrame:
    """How many events were read, set aside for each reason, joined another, used; and
    the supply runs (treatments rows) and courses they made."""
    counts = pd.Series(why).value_counts()
    steps = [("read", len(why), "drug events read (rows of drug_events)")]
    steps += [(code, int(counts.get(code, 0)), meaning) for code, meaning in SET_ASIDE.items()]
    steps += [
        ("used", int(counts.get("", 0)), "events that are part of a supply run"),
        ("supply_runs", runs, "rows of treatments: events of one drug at one dose, back to back"),
        ("courses", courses, "courses: supply runs of one drug with gaps of at most gap_days"),
    ]
    return pd.DataFrame(steps, columns=["step", "count", "meaning"])
