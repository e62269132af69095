"""The tables `trdscreen build` writes: treatments (one row per supply run, in the input
contract plus provenance), course_events (every input event and what became of it)
and event_attrition (how many events each step kept or set aside)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.buildcodes import Translated
from trdscreen.buildcourses import CHANGE_TYPES, ROLE_NAMES, Courses, Runs
from trdscreen.buildrules import BuildRules
from trdscreen.keys import lex_order
from trdscreen.segments import Segments, dates, day_key, days, rank_within, subject_day_keys

SET_ASIDE = {
    "invalid": "a required cell could not be read (see validation_issues)",
    "after_reference_date": "after the subject's reference date (outside the observation window)",
    "outside_observation_period": "dated outside every observation period of its subject "
    "(observation_periods: the records are not complete then)",
    "before_birth": "dated before the subject's birth",
    "end_before_start": "end_date is before event_date",
    "placeholder_date": "dated on a placeholder date (build.placeholder_dates)",
    "days_supply_implausible": "days' supply is zero, negative or above build.max_days_supply",
    "quantity_not_positive": "quantity is zero or negative",
    "duplicate": "the same generic, day and dose as another event: one event, the longest supply",
    "summed": "another strength of the generic on the same day: its dose added to that event",
}
"""Why an event is not a row of its own (course_events.status, event_attrition)."""
STATUS = ("used", *SET_ASIDE)
"""course_events.status: the build holds it per event as an int8 code into this."""
CODE = {name: np.int8(i) for i, name in enumerate(STATUS)}
DURATION_SOURCES = (
    "", "end_date", "days_supply", "quantity", "next_issue", "next_issue_capped", "unknown",
)  # fmt: skip
"""Where an event's days came from (int8 codes; "" for an event not used)."""
DOSE_SOURCES = (
    "", "daily_dose_mg", "strength_x_units_per_day", "strength_x_quantity_per_day",
    "name_strength_x_units_per_day", "name_strength_x_quantity_per_day", "summed_strengths",
    "unknown",
)  # fmt: skip
"""Where an event's daily dose came from (int8 codes; "" for an event not used)."""
SESSION_REASONS = (
    "invalid", "after_reference_date", "outside_observation_period", "before_birth",
    "placeholder_date", "duplicate",
)  # fmt: skip
"""The reasons a procedure session can be set aside for."""


def unobserved(subject: np.ndarray, day: np.ndarray, periods: Periods | None) -> np.ndarray:
    """Per row: is its day outside every observation period of its subject? A subject
    without periods is not restricted (nothing says when its records are complete).
    Binary search over the periods sorted by (subject, start), each carrying the latest
    end among its subject's periods so far (periods may overlap)."""
    out = np.zeros(len(day), dtype=bool)
    if periods is None or not len(periods.subject):
        return out
    order = np.lexsort((periods.start, periods.subject))
    who, first, last = periods.subject[order], periods.start[order], periods.end[order]
    reach = pd.Series(last).groupby(who).cummax().to_numpy()
    keys = subject_day_keys(who, first)
    has = np.zeros(int(max(who.max(), subject.max(initial=-1))) + 2, dtype=bool)
    has[who] = True
    asked = (subject >= 0) & ~np.isnan(day) & has[np.maximum(subject, 0)]
    at = np.searchsorted(keys, subject_day_keys(subject, np.nan_to_num(day)), "right") - 1
    found = (at >= 0) & (who[np.maximum(at, 0)] == subject)
    covered = found & (reach[np.maximum(at, 0)] >= day)
    out[asked] = ~covered[asked]
    return out


@dataclass(frozen=True)
class Periods:
    """Observation periods: subject codes, first and last day (an open end: +inf)."""

    subject: np.ndarray
    start: np.ndarray
    end: np.ndarray


def set_aside_dates(
    start: np.ndarray, end: np.ndarray, reference: np.ndarray, birth: np.ndarray,
    rules: BuildRules, unusable: np.ndarray, unobserved: np.ndarray | None = None,
) -> np.ndarray:  # fmt: skip
    """The STATUS code each row is set aside with for its dates (0 when it is not):
    after the reference date, outside the subject's observation periods, before birth,
    an end before the start, a placeholder date; rows validation could not read are
    `invalid`."""
    why = np.zeros(len(start), dtype=np.int8)
    placeholders = days(np.asarray(rules.placeholder_dates, dtype="datetime64[s]"))
    outside = unobserved if unobserved is not None else np.zeros(len(start), dtype=bool)
    checks = [
        ("outside_observation_period", outside),
        ("after_reference_date", start > reference),
        ("before_birth", start < birth),
        ("end_before_start", end < start),
        ("placeholder_date", np.isin(start, placeholders) | np.isin(end, placeholders)),
    ]
    for code, mask in checks:  # the last that applies wins: the most basic is listed last
        why[mask] = CODE[code]
    why[unusable] = CODE["invalid"]
    return why


def coded(codes: np.ndarray, names: tuple[str, ...]) -> pd.Categorical:
    """int8 codes into `names` as a text column; code 0 is empty when names[0] is ""."""
    if names[0] == "":
        return pd.Categorical.from_codes(codes.astype(np.int64) - 1, names[1:])
    return pd.Categorical.from_codes(codes, names)


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
    episode: pa.Array | None = None  # episode id per course (buildepisodes)
    run_rated: dict[str, np.ndarray] | None = None  # per run, its own (run_ratings)


def _uniform(codes: np.ndarray, seg: Segments, names: tuple[str, ...]) -> pd.Categorical:
    """Per group of `seg`: the name when all its rows agree, else "mixed"."""
    every = [*names[1:], "mixed"] if names[0] == "" else [*names, "mixed"]
    if seg.m == 0:
        return pd.Categorical.from_codes(np.zeros(0, dtype=np.int64), every)
    values = codes[seg.order].astype(np.int64)
    low = np.minimum.reduceat(values, seg.bounds[:-1])
    high = np.maximum.reduceat(values, seg.bounds[:-1])
    shift = 1 if names[0] == "" else 0
    return pd.Categorical.from_codes(np.where(low == high, low - shift, len(every) - 1), every)


NEXT_ISSUE = tuple(np.int8(DURATION_SOURCES.index(n)) for n in ("next_issue", "next_issue_capped"))
"""Duration source codes that assume the supply lasted until the next issue."""


def _any_of(codes: np.ndarray, seg: Segments, wanted: tuple) -> np.ndarray:
    """Per group of `seg`: whether any of its rows holds one of the `wanted` codes."""
    hit = np.isin(codes, wanted).astype(np.int8)
    return seg.reduce(np.maximum, hit) > 0 if seg.m else np.zeros(0, dtype=bool)


def ints(values: np.ndarray) -> pd.Series:
    """Day counts, lines, totals as nullable integers (NaN: empty)."""
    empty = np.isnan(values)
    if empty.all():
        return pd.Series(pd.arrays.IntegerArray(np.zeros(len(values), np.int64), empty))
    return pd.Series(pd.arrays.IntegerArray(np.where(empty, 0, values).astype(np.int64), empty))


def labels(values: np.ndarray) -> pd.Categorical:
    """A few-valued text column (None: empty), written dictionary-encoded. Factorized as
    Python objects: a Categorical built from them would first copy every cell to Arrow
    text."""
    codes, uniques = pd.factorize(values)
    return pd.Categorical.from_codes(codes, pd.Index(np.asarray(uniques, dtype=object)))


RATING_SCALES = ("hamd", "madrs")
RATING_WHEN = ("start", "end", "lowest")
RATING_COLUMNS = (
    *(f"hamd_{when}" for when in RATING_WHEN),
    "hamd_version",
    *(f"madrs_{when}" for when in RATING_WHEN),
    *(f"{scale}_{when}_{part}" for scale in RATING_SCALES for when in RATING_WHEN
      for part in ("date", "line")),
)  # fmt: skip
"""The rating columns of a built treatments row, in their order: each rating (baseline,
end rating, lowest between), the HAM-D version, then each rating's date and line."""


def rating_columns(
    rated: dict[str, np.ndarray], course_at: np.ndarray, first: np.ndarray, last: np.ndarray,
    own: dict[str, np.ndarray] | None = None, run_at: np.ndarray | None = None,
) -> dict[str, object]:  # fmt: skip
    """The RATING_COLUMNS of treatments rows (`rated`: per course; `course_at`: each
    row's course): baselines on a course's first row, end ratings on its last, each with
    its date and line, and the lowest rating between them (`_lowest`) on its last row;
    the HAM-D version on every row. With `own` (per run; `run_at`:
    each row's run), the other rows of a course carry their run's own baseline and end
    rating, so a rating between two runs (a remission before a gap, say) reaches the
    screen, which judges each row of a merged course (`segments_disagree`); a run's HAM-D
    rated on another version than its course's is left empty."""

    def at(name: str, mask: np.ndarray | None = None, runs: bool = True) -> np.ndarray:
        values = rated[name]
        out = np.full(len(course_at), np.nan)
        if runs and mask is not None and own is not None and run_at is not None:
            inner = ~mask
            mine = own[name][run_at[inner]]
            if name.startswith("hamd"):
                same = own["hamd_version"][run_at[inner]] == rated["hamd_version"][course_at[inner]]
                mine = np.where(same, mine, np.nan)
            out[inner] = mine
        if np.isnan(values).all():
            return out
        if mask is None:
            return values[course_at]
        out[mask] = values[course_at[mask]]
        return out

    # The lowest rating between a course's ends is the course's alone, on its last row.
    where = {"start": (first, True), "end": (last, True), "lowest": (last, False)}
    columns: dict[str, object] = {}
    for name in RATING_COLUMNS:
        if name == "hamd_version":
            columns[name] = ints(at(name))
            continue
        when = name.split("_")[1]
        if name.endswith("_date"):
            columns[name] = dates(at(name.removesuffix("_date") + "_day", *where[when]))
        else:
            columns[name] = ints(at(name, *where[when]))
    return columns


def _course_ids(parts: Parts) -> pa.Array:
    """`SUBJECT:k` per course, k counting a subject's courses from 1 by start date."""
    c = parts.courses
    rank = rank_within(lex_order(c.subject, day_key(c.start), c.generic), c.subject)
    subjects = pa.array(parts.subject_ids.to_numpy(dtype=object), pa.string())
    return pc.binary_join_element_wise(
        subjects.take(pa.array(c.subject)), pc.cast(pa.array(rank), pa.string()), ":"
    )


def text_column(array: pa.Array) -> pd.Series:
    return pd.Series(pd.arrays.ArrowStringArray(array))


def treatments(
    parts: Parts, lines: np.ndarray, source_file: str, duration_source: np.ndarray,
    dose_source: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray, pa.Array]:  # fmt: skip
    """(the treatments table; the table row of each run; the course id of each course).
    Per-event arrays (`lines`, the sources) cover every input event."""
    runs, c = parts.runs, parts.courses
    m = len(runs.start)
    course = c.of_run
    ids = _course_ids(parts)
    order = lex_order(
        c.subject[course],
        _rank(c.subject, c.start, c.generic)[course],
        day_key(runs.start),
    )
    assert len(runs.seg.first) == m
    row_of_run = np.empty(m, dtype=np.int64)
    row_of_run[order] = np.arange(m)
    kept_lines = lines[parts.kept]
    first_line = runs.seg.reduce(np.minimum, kept_lines)
    last_line = runs.seg.reduce(np.maximum, kept_lines)
    ongoing = c.ongoing[course] & (runs.end >= parts.reference[c.subject[course]])
    unknown = np.isnan(runs.end)
    stop = np.where(ongoing, 0, np.where(unknown, 1, -1))  # ongoing, other, none
    end = np.where(ongoing | unknown, np.nan, runs.end)
    first_run, last_run = c.seg.first, c.seg.last
    is_first = np.zeros(m, dtype=bool)
    is_first[first_run] = True
    is_last = np.zeros(m, dtype=bool)
    is_last[last_run] = True
    # Every column is taken in table order (subject, course, start) as it is made.
    run_at = order
    course_at = course[order]
    first_at, last_at = is_first[order], is_last[order]
    generics = parts.generics
    columns: dict[str, object] = {
        # Plain text: a dictionary of every subject would be sorted again per row group.
        "subject_id": text_column(
            pa.array(parts.subject_ids.to_numpy(dtype=object), pa.string()).take(
                pa.array(c.subject[course_at])
            )
        ),
        "drug": pd.Categorical.from_codes(c.generic[course_at], generics),
        "daily_dose_mg": runs.dose[run_at],
        "start_date": dates(runs.start[run_at]),
        "end_date": dates(end[run_at]),
        "stop_reason": pd.Categorical.from_codes(stop[run_at], ["ongoing", "other"]),
        "role": pd.Categorical.from_codes(c.role[course_at], ROLE_NAMES),
        "modality": pd.Categorical.from_codes(np.zeros(m, dtype=np.int8), ["pharmacotherapy"]),
        # A supply guessed from the next issue: the screen names it as an assumption.
        "duration_assumed": _any_of(duration_source[parts.kept], runs.seg, NEXT_ISSUE)[run_at],
        # Supply-based adherence: the course's proportion of days covered (each row of a
        # course the same), which the screen checks against adequacy.adherence.
        "adherence": c.pdc[course_at],
    }
    columns |= rating_columns(parts.rated, course_at, first_at, last_at, parts.run_rated, run_at)
    columns |= {
        "course_id": text_column(ids.take(pa.array(course_at))),
        "n_events": runs.seg.size[run_at],
        "source_file": pd.Categorical.from_codes(np.zeros(m, dtype=np.int8), [source_file]),
        "first_source_line": first_line[run_at],
        "last_source_line": last_line[run_at],
        "dose_source": _uniform(dose_source[parts.kept], runs.seg, DOSE_SOURCES)[run_at],
        "duration_source": _uniform(duration_source[parts.kept], runs.seg, DURATION_SOURCES)[
            run_at
        ],
        "episode_id": (
            text_column(parts.episode.take(pa.array(course_at)))
            if parts.episode is not None
            else None
        ),
        "change_type": pd.Categorical.from_codes(c.change_type[course_at], CHANGE_TYPES),
        "next_drug": pd.Categorical.from_codes(c.next_generic[course_at], generics),
        "days_to_next": ints(c.days_to_next[course_at]),
        "pdc": c.pdc[course_at],
    }
    # Every column is a new array: no copy into consolidated blocks (seconds at 10 M rows).
    return pd.DataFrame(columns, copy=False), row_of_run, ids


def _rank(subject: np.ndarray, start: np.ndarray, generic: np.ndarray) -> np.ndarray:
    """Each course's position in (subject, start, generic) order."""
    order = lex_order(subject, day_key(start), generic)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def course_events(
    frame: pd.DataFrame, lines: np.ndarray, why: np.ndarray, key: np.ndarray,
    start: np.ndarray, parts: Parts, row_of_run: np.ndarray, ids: pa.Array,
    generic_code: np.ndarray, length: np.ndarray, dose: np.ndarray,
    duration_source: np.ndarray, dose_source: np.ndarray,
) -> pd.DataFrame:  # fmt: skip
    """Every input event, in input order: what became of it, the course and treatments
    row it is in (a duplicate or summed event: those of the event it joined)."""
    n = len(frame)
    row = np.full(n, np.nan)
    course = np.full(n, -1, dtype=np.int64)
    kept = parts.kept
    run = parts.runs.of_event
    row[kept] = row_of_run[run] + 1
    course[kept] = parts.courses.of_run[run]
    joined = np.flatnonzero(np.isin(why, [CODE["duplicate"], CODE["summed"]]))
    if len(joined):
        # The kept event of each joined one's generic and day: only the few kept events
        # sharing such a pair are looked at.
        wanted = subject_day_keys(key[joined], start[joined])
        pair = subject_day_keys(key[kept], start[kept])
        near = np.isin(pair, wanted)
        heads = pd.DataFrame({"pair": pair[near], "at": kept[near]}).drop_duplicates("pair")
        found = pd.DataFrame({"pair": wanted}).merge(heads, on="pair", how="left")["at"]
        found = found.to_numpy()
        row[joined] = row[found]
        course[joined] = course[found]
    used = why == 0
    return pd.DataFrame(
        {
            "source_line": lines,
            "subject_id": frame["subject_id"].array,
            "drug": frame["drug"].array,
            "generic": pd.Categorical.from_codes(
                np.where(why == CODE["invalid"], -1, generic_code), parts.generics
            ),
            "event_date": frame["event_date"].array,
            "status": coded(why, STATUS),
            "course_id": text_column(ids.take(pa.array(course, mask=course < 0))),
            "treatments_row": ints(row),
            "days": ints(np.where(used, length, np.nan)),
            "duration_source": coded(np.where(used, duration_source, 0), DURATION_SOURCES),
            "daily_dose_mg": np.where(used, dose, np.nan),
            "dose_source": coded(np.where(used, dose_source, 0), DOSE_SOURCES),
        }
    )


def attrition(
    why: np.ndarray, runs: int, courses: int, codes: Translated | None = None
) -> pd.DataFrame:
    """How many events were read, (given as codes: named by the code list, or not), set
    aside for each reason, joined another, used; and the supply runs (treatments rows)
    and courses they made."""
    counts = np.bincount(why, minlength=len(STATUS))
    steps = [("read", len(why), "drug events read (rows of drug_events)")]
    if codes is not None:
        steps += [
            ("codes_listed", codes.listed, "events given as a code that drug_codes names"),
            ("codes_not_listed", codes.not_listed, "events given as a code drug_codes does "
             "not hold: kept under the code, the screen reports the drug unknown"),
        ]  # fmt: skip
    steps += [(code, int(counts[CODE[code]]), meaning) for code, meaning in SET_ASIDE.items()]
    steps += [
        ("used", int(counts[0]), "events that are part of a supply run"),
        ("supply_runs", runs, "rows of treatments: events of one drug at one dose, back to back"),
        ("courses", courses, "courses: supply runs of one drug with gaps of at most gap_days"),
    ]
    return pd.DataFrame(steps, columns=["step", "count", "meaning"])


def session_attrition(why: np.ndarray, courses: int) -> pd.DataFrame:
    """The procedures table's lines of event_attrition (steps prefixed `procedures_`)."""
    counts = np.bincount(why, minlength=len(STATUS))
    steps = [("procedures_read", len(why), "procedure sessions read (rows of procedures)")]
    steps += [
        (f"procedures_{code}", int(counts[CODE[code]]), meaning)
        for code, meaning in SET_ASIDE.items()
        if code in SESSION_REASONS
    ]
    steps += [
        ("procedures_used", int(counts[0]), "sessions that are part of a course"),
        ("session_courses", courses, "courses of sessions (rows of treatments)"),
    ]
    return pd.DataFrame(steps, columns=["step", "count", "meaning"])
