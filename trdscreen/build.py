"""`trdscreen build`: drug events and ratings into treatment courses, every decision named.

From one row per prescription, dispensing or administration to the treatments
table the screen reads (one row per supply run: consecutive or overlapping
events of one generic at one daily dose), in these steps, each vectorized
(sorts, grouped running maxima, cumulative sums; no per-subject Python):

1. Set aside what cannot be used, with a reason: rows validation could not read,
   implausible events (quantity <= 0, days' supply <= 0 or above
   `build.max_days_supply`, a placeholder date, an end before the start, a date
   before birth), and events after the subject's reference date (outside the
   observation window).
2. The drug as a formulary generic (a name it does not know stays as written: the
   screen then reports it, and its courses are unknown, never adequate).
3. Each event's duration: end_date, else days_supply, else quantity ÷
   units_per_day, else the days to the next issue of the drug, capped at
   `build.next_issue_cap_days` [U], else unknown; and its daily dose:
   daily_dose_mg, else strength_mg × units_per_day, else strength_mg × quantity ÷
   its days, else unknown. Which one was used is kept (`duration_source`,
   `dose_source`).
4. Same-day events of one generic: an identical one is a duplicate; different
   doses are two strengths taken together: summed into one event, flagged.
5. Supply runs: events of one generic at one dose whose supply touches or
   overlaps are one row (no stockpiling: an early refill does not push the end).
   A dose change starts a new row, so the days at each dose are kept, which the
   adequacy rules read.
6. Courses: rows of one generic within `build.gap_days` of each other [S]; the
   screen merges them the same way (`adequacy.segments.merge_gap_days`). Per
   course: the proportion of days covered (`pdc`), what followed (`change_type`:
   switch, augment, combine, stop, ongoing; `next_drug`, `days_to_next`), and
   its role: a course that starts while another drug's course runs and
   overlaps it by at least `build.combination_window_days` [S] is an add-on
   (augmentation for an augmentation agent, else combination).
7. Ratings: a course's baseline is the rating nearest its start within
   `ratings.start_before_days` before to `ratings.start_after_days` after (the
   earlier wins a tie) [S]; its end rating the one nearest its last day (the
   reference date if it is ongoing) within `ratings.end_within_days`, at least
   `ratings.min_days_between` days after the baseline, on the same instrument
   [U]. HAM-D versions are never mixed. The builder never writes an outcome or
   a stop reason but `other` for a row whose duration is unknown (so the
   screen treats its duration as unknown, never as ongoing).
8. Screening scores: a subject whose subjects row gives a screening_date and no
   hamd_screening (madrs_screening) gets the latest HAM-D17 (MADRS) total rated
   from `ratings.screening_within_days` [U] before that date to it, never after
   the reference date (`buildratings.screening_scores`; buildrun writes where
   each came from).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.buildcodes import code_list, translate
from trdscreen.buildcourses import courses_of, supply_runs
from trdscreen.buildepisodes import (
    Diagnoses,
    Episodes,
    episodes,
    read_diagnoses,
    recorded_diagnoses,
)
from trdscreen.buildprocedures import SessionCourses, session_courses
from trdscreen.buildratings import (
    Supplied,
    attach,
    rating_scales,
    run_ratings,
    screening_scores,
)
from trdscreen.buildrules import BuildRules
from trdscreen.buildtables import (
    CODE,
    DOSE_SOURCES,
    DURATION_SOURCES,
    NEXT_ISSUE,
    Parts,
    Periods,
    attrition,
    course_events,
    ints,
    session_attrition,
    set_aside_dates,
    text_column,
    treatments,
    unobserved,
)
from trdscreen.columns import day_numbers, floats
from trdscreen.drugs import distinct_drugs
from trdscreen.formulary import Formulary
from trdscreen.keys import lex_order
from trdscreen.records import Table, subject_codes
from trdscreen.segments import dates, day_key, days, subject_day_keys


@dataclass(frozen=True)
class Built:
    treatments: pd.DataFrame
    course_events: pd.DataFrame
    attrition: pd.DataFrame
    procedure_sessions: pd.DataFrame | None = None
    subject_facts: pd.DataFrame | None = None  # derived episode and diagnoses per subject


def _generics(frame: pd.DataFrame, formulary: Formulary) -> tuple[np.ndarray, pd.Index, np.ndarray]:
    """(per row the code of its generic, or of its name as written when the formulary
    does not know it; the names, sorted; per name whether it is an add-on agent).
    Each distinct (name, ATC code) pair is resolved once."""
    codes, pairs = distinct_drugs(frame)
    names, addon = [], []
    for name, atc in pairs:
        match = formulary.resolve(name, atc)
        generic = match.generic
        names.append(generic if generic is not None else str(name or ""))
        drug = formulary.drugs.get(generic) if generic is not None else None
        addon.append(drug is not None and drug.counts_as == "augmentation")
    pair_code, generics = pd.factorize(np.asarray([*names, ""], dtype=object), sort=True)
    is_addon = np.zeros(len(generics), dtype=bool)
    is_addon[pair_code[:-1][np.asarray(addon, dtype=bool)]] = True
    return pair_code[codes], pd.Index(generics.astype(object)), is_addon


def _set_aside(
    events: Table, rules: BuildRules, start: np.ndarray, end: np.ndarray,
    reference: np.ndarray, birth: np.ndarray, outside: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """The STATUS code each event is set aside with (0 when it is used)."""
    frame = events.frame
    why = np.zeros(len(frame), dtype=np.int8)
    quantity, supply = floats(frame, "quantity"), floats(frame, "days_supply")
    why[quantity <= 0] = CODE["quantity_not_positive"]
    why[(supply <= 0) | (supply > rules.max_days_supply)] = CODE["days_supply_implausible"]
    by_date = set_aside_dates(start, end, reference, birth, rules, events.unusable, outside)
    return np.where(by_date != 0, by_date, why)


def _durations(
    frame: pd.DataFrame, rules: BuildRules, start: np.ndarray, end: np.ndarray,
    key: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(days each event lasts, NaN unknown; which input gave them), in step 3's order."""
    supply = np.ceil(floats(frame, "days_supply"))
    with np.errstate(divide="ignore", invalid="ignore"):
        per_day = floats(frame, "units_per_day")
        by_quantity = np.ceil(floats(frame, "quantity") / np.where(per_day > 0, per_day, np.nan))
    # The next issue of the same generic on a later day (rows sorted by subject and
    # generic, then day; events of one day share their next issue).
    day = np.where(np.isnan(start), 0, start)
    order = lex_order(key, day_key(start))
    k, d = key[order], day[order]
    new_pair = np.r_[True, (k[1:] != k[:-1]) | (d[1:] != d[:-1])] if len(k) else k.astype(bool)
    pair = np.cumsum(new_pair) - 1
    pair_key, pair_day = k[new_pair], d[new_pair]
    later = np.full(len(pair_key), np.nan)
    later[:-1] = np.where(pair_key[1:] == pair_key[:-1], pair_day[1:] - pair_day[:-1], np.nan)
    following = np.full(len(start), np.nan)
    following[order] = later[pair]
    options = [
        ("end_date", end - start + 1),
        ("days_supply", supply),
        ("quantity", by_quantity),
        ("next_issue", np.minimum(following, rules.next_issue_cap_days)),
    ]
    length = np.full(len(start), np.nan)
    source = np.full(len(start), DURATION_SOURCES.index("unknown"), dtype=np.int8)
    for name, value in reversed(options):  # the first known in the list wins
        known = ~np.isnan(value)
        length[known] = value[known]
        source[known] = DURATION_SOURCES.index(name)
    capped = (source == DURATION_SOURCES.index("next_issue")) & (
        following > rules.next_issue_cap_days
    )
    source[capped] = DURATION_SOURCES.index("next_issue_capped")
    return length, source


_STRENGTH = re.compile(
    r"(?<![\w.])(\d+(?:[.,]\d+)?)\s*mg(?:\s*(?:/|per|in)\s*(\d+(?:[.,]\d+)?)?\s*ml)?(?![a-z])",
    re.IGNORECASE,
)


def strength_in_name(name: object) -> float:
    """mg per unit written in a product name: "Sertraline 100mg tablets" 100; a liquid
    "Fluoxetine 20mg/5ml oral solution" 4 (per mL; quantities and units are then mL).
    NaN when the name holds no strength or more than one (a combination product)."""
    found = _STRENGTH.findall(str(name or ""))
    if len(found) != 1:
        return np.nan
    mg_text, ml_text = found[0]
    mg = float(mg_text.replace(",", "."))
    per_ml = re.search(r"mg\s*(?:/|per|in)\s*\d*[.,]?\d*\s*ml", str(name), re.IGNORECASE)
    ml = float(ml_text.replace(",", ".")) if ml_text else (1.0 if per_ml else None)
    if ml == 0:
        return np.nan
    return mg / ml if ml else mg


def _doses(frame: pd.DataFrame, length: np.ndarray, source: np.ndarray):
    """(daily dose in mg, NaN unknown; which input gave it). Without a strength_mg, the
    strength written in the drug's name is used, and the source says so."""
    given = floats(frame, "strength_mg")
    codes, names = pd.factorize(frame["drug"].astype(object))
    parsed = np.asarray([*(strength_in_name(n) for n in names), np.nan])[codes]
    from_name = np.isnan(given) & ~np.isnan(parsed)
    strength = np.where(from_name, parsed, given)
    with np.errstate(divide="ignore", invalid="ignore"):
        told = ~np.isin(source, NEXT_ISSUE)  # a guessed duration makes no dose
        per_quantity = np.where(told, strength * floats(frame, "quantity") / length, np.nan)
    options = [
        ("daily_dose_mg", floats(frame, "daily_dose_mg")),
        ("strength_x_units_per_day", strength * floats(frame, "units_per_day")),
        ("strength_x_quantity_per_day", np.round(per_quantity, 4)),
    ]
    dose = np.full(len(frame), np.nan)
    where = np.full(len(frame), DOSE_SOURCES.index("unknown"), dtype=np.int8)
    for name, value in reversed(options):
        known = ~np.isnan(value) & np.isfinite(value)
        dose[known] = value[known]
        where[known] = DOSE_SOURCES.index(name)
        if name.startswith("strength"):  # the strength written in the name, if it was
            where[known & from_name] = DOSE_SOURCES.index(f"name_{name}")
    return dose, where


def _same_day(
    used: np.ndarray, key: np.ndarray, start: np.ndarray, dose: np.ndarray, length: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 4 over the used events: (reason per event, "" or duplicate or summed; the dose
    and days of each kept event after summing; whether it holds a sum).

    Events of one generic on one day at the same dose are one event (the longest
    supply is kept; summing them could make an adequate dose from a duplicate).
    Different doses on one day are strengths taken together: summed into the first
    event (an unknown among them makes the sum unknown), lasting the longest."""
    why = np.zeros(len(used), dtype=np.int8)
    summed = np.zeros(len(used), dtype=bool)
    out_dose, out_length = dose.copy(), length.copy()
    rows = np.flatnonzero(used)
    # Only events that share their generic and day with another are grouped (few); one
    # int64 per event is hashed, not a frame of two columns.
    rows = rows[
        pd.Series(subject_day_keys(key[rows], start[rows])).duplicated(keep=False).to_numpy()
    ]
    if len(rows) == 0:
        return why, out_dose, out_length, summed
    frame = pd.DataFrame(
        {"key": key[rows], "day": start[rows], "dose": dose[rows], "days": length[rows]}
    )
    same = frame.groupby(["key", "day", "dose"], sort=False, dropna=False)["days"]
    out_length[rows] = same.transform("max").to_numpy()
    repeat = frame.duplicated(["key", "day", "dose"], keep="first").to_numpy()
    why[rows[repeat]] = CODE["duplicate"]
    rest, kept = rows[~repeat], frame[~repeat]
    group = kept.groupby(["key", "day"], sort=False)["dose"]
    size = group.transform("size").to_numpy()
    known = group.transform("count").to_numpy()
    sums = np.where(known == size, group.transform("sum").to_numpy(), np.nan)
    longest = (
        pd.Series(out_length[rest])
        .groupby([kept["key"].to_numpy(), kept["day"].to_numpy()])
        .transform("max")
        .to_numpy()
    )
    first = ~kept.duplicated(["key", "day"], keep="first").to_numpy()
    head = (size > 1) & first
    out_dose[rest[head]] = sums[head]
    out_length[rest[head]] = longest[head]
    summed[rest[head]] = True
    why[rest[(size > 1) & ~first]] = CODE["summed"]
    return why, out_dose, out_length, summed


def subject_context(
    ids: pd.Index, subjects: pd.DataFrame | None, as_of: date | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(reference day, birth day, screening day) per subject of `ids`: the reference date
    is --as-of, else the subject's screening_date, else unknown (no event is then after
    it and no course is ongoing: each ends with its last supply)."""
    reference = np.full(len(ids), np.nan)
    birth = np.full(len(ids), np.nan)
    if subjects is not None and len(subjects):
        where = pd.Index(subjects["subject_id"].astype(object)).get_indexer(ids)
        found = where >= 0
        at = np.maximum(where, 0)
        reference[found] = day_numbers(subjects, "screening_date")[at[found]]
        birth[found] = day_numbers(subjects, "birth_date")[at[found]]
    screening = reference.copy()
    if as_of is not None:
        reference[:] = days(np.asarray([as_of], dtype="datetime64[s]"))[0]
    return reference, birth, screening


def _has(frame: pd.DataFrame | None, column: str) -> bool:
    return frame is not None and column in frame.columns


def _subject_ids(*tables: Table | None) -> pd.Index:
    """Every subject key of the tables, sorted (an unreadable key as "")."""
    keys = [t.subject_keys[0] for t in tables if t is not None]
    return pd.Index(pd.unique(np.concatenate(keys)).astype(object)).sort_values()


@dataclass(frozen=True)
class Records:
    """What `build` reads (records.Records as tables; subjects as typed)."""

    events: Table
    ratings: Table | None = None
    subjects: pd.DataFrame | None = None
    procedures: Table | None = None
    diagnoses: Table | None = None
    observation_periods: Table | None = None
    drug_codes: Table | None = None


def build(
    records: Records, rules: BuildRules, formulary: Formulary, as_of: date | None = None
) -> Built:
    """Treatment courses from drug events, procedure sessions, diagnoses and ratings (the
    module doc's eight steps; sessions: buildprocedures; episodes: buildepisodes)."""
    events, ratings = records.events, records.ratings
    frame = events.frame
    codes = records.drug_codes
    named = translate(
        frame,
        code_list(codes.frame, codes.source.lines, codes.source.file) if codes else None,
    )
    written, frame = frame, named.frame  # the drug as exported; as the formulary reads it
    n = len(frame)
    ids = _subject_ids(events, records.procedures, records.diagnoses)
    subject = subject_codes(events, ids)
    reference, birth, screening = subject_context(ids, records.subjects, as_of)
    start, end = day_numbers(frame, "event_date"), day_numbers(frame, "end_date")
    periods = _periods(records.observation_periods, ids)
    why = _set_aside(
        events, rules, start, end, reference[subject], birth[subject],
        unobserved(subject, start, periods),
    )  # fmt: skip
    generic_code, generics, addon_of = _generics(frame, formulary)
    key = subject.astype(np.int64) * len(generics) + generic_code
    used = why == 0
    rows = np.flatnonzero(used)
    length, duration_source = np.full(n, np.nan), np.zeros(n, dtype=np.int8)
    dose, dose_source = np.full(n, np.nan), np.zeros(n, dtype=np.int8)
    sub = frame.iloc[rows]
    length[rows], duration_source[rows] = _durations(sub, rules, start[rows], end[rows], key[rows])
    dose[rows], dose_source[rows] = _doses(sub, length[rows], duration_source[rows])
    again, dose, length, summed = _same_day(used, key, start, dose, length)
    why = np.where(why == 0, again, why)
    dose_source[summed] = DOSE_SOURCES.index("summed_strengths")
    kept = np.flatnonzero(why == 0)
    runs = supply_runs(key[kept], start[kept], start[kept] + length[kept] - 1, dose[kept])
    courses = courses_of(runs, len(generics), addon_of, reference, rules)
    target = np.where(courses.ongoing, reference[courses.subject], courses.end)
    scales = rating_scales(ratings, ids)
    rated = attach(
        scales, courses.subject, courses.start, target, reference[courses.subject],
        rules.ratings, Supplied(courses.of_run, runs.start, runs.end),
    )  # fmt: skip
    sessions = (
        session_courses(records.procedures, ids, reference, birth, scales, rules, periods)
        if records.procedures is not None
        else None
    )
    dx = (
        read_diagnoses(records.diagnoses, ids, reference) if records.diagnoses is not None else None
    )
    found = _episodes(
        ids, courses.subject, courses.start, target, sessions, dx, reference,
        _observed_from(ids, subject[kept], start[kept], sessions, dx, records), rules,
    )  # fmt: skip
    episode = found.ids[: courses.seg.m]
    own = run_ratings(scales, runs, courses, reference, rules.ratings)
    parts = Parts(ids, generics, kept, runs, courses, rated, reference, episode, own)
    table, row_of_run, course_ids = treatments(
        parts, events.source.lines, events.source.file, duration_source, dose_source
    )
    trail = course_events(
        written, events.source.lines, why, key, start, parts, row_of_run, course_ids,
        generic_code, length, dose, duration_source, dose_source,
    )  # fmt: skip
    steps = attrition(why, len(table), courses.seg.m, named if "code_system" in written else None)
    facts = _subject_facts(ids, found.episodes, dx)
    if ratings is not None and _has(records.subjects, "screening_date"):
        window = rules.ratings.screening_within_days
        for column, (total, line) in screening_scores(
            scales, np.arange(len(ids)), screening, reference, window
        ).items():
            facts[column], facts[f"{column}_line"] = total, ints(line)
    if sessions is None:
        return Built(table, trail, steps, None, facts)
    sessions.frame["episode_id"] = text_column(found.ids[courses.seg.m :])
    # Each treatments row's subject and start, as codes and day numbers (no re-reading of
    # the table's text and dates to sort it with the session courses).
    row_subject = np.empty(len(table), dtype=np.int64)
    row_subject[row_of_run] = courses.subject[courses.of_run]
    row_start = np.empty(len(table))
    row_start[row_of_run] = runs.start
    return _with_sessions(table, row_subject, row_start, trail, steps, sessions, facts)


@dataclass(frozen=True)
class _Found:
    episodes: Episodes
    ids: pa.Array  # episode id per course: drug courses, then session courses


def _episodes(
    ids: pd.Index, subject: np.ndarray, start: np.ndarray, end: np.ndarray,
    sessions: SessionCourses | None, dx: Diagnoses | None, reference: np.ndarray,
    observed: np.ndarray, rules: BuildRules,
) -> _Found:  # fmt: skip
    if sessions is not None:
        subject = np.concatenate([subject, sessions.subject])
        start = np.concatenate([start, sessions.start])
        end = np.concatenate([end, sessions.end])
    depression = None
    if dx is not None:
        mdd = dx.usable & (dx.category == "mdd")
        depression = (dx.subject[mdd], dx.day[mdd])
    found = episodes(subject, start, end, len(ids), reference, depression, observed, rules)
    names = pa.array(ids.to_numpy(dtype=object), pa.string()).take(pa.array(subject))
    numbers = pc.cast(pa.array(found.course_episode), pa.string())
    return _Found(found, pc.binary_join_element_wise(names, numbers, ":e"))


def _periods(table: Table | None, ids: pd.Index) -> Periods | None:
    """The observation periods of the build's subjects (None: no such table)."""
    if table is None:
        return None
    who = subject_codes(table, ids)
    start, end = day_numbers(table.frame, "start_date"), day_numbers(table.frame, "end_date")
    ok = (who >= 0) & ~np.isnan(start)
    return Periods(who[ok], start[ok], np.where(np.isnan(end), np.inf, end)[ok])


def _observed_from(
    ids: pd.Index, event_subject: np.ndarray, event_day: np.ndarray,
    sessions: SessionCourses | None, dx: Diagnoses | None, records: Records,
) -> np.ndarray:  # fmt: skip
    """Per subject: the first day its records cover (the first observation period's
    start, else its first used event, session or diagnosis)."""
    first = np.full(len(ids), np.nan)
    np.fmin.at(first, event_subject, event_day)
    if sessions is not None:
        np.fmin.at(first, sessions.subject, sessions.start)
    if dx is not None:
        ok = dx.subject >= 0
        np.fmin.at(first, dx.subject[ok], dx.day[ok])
    periods = records.observation_periods
    if periods is not None:
        who = subject_codes(periods, ids)
        starts = day_numbers(periods.frame, "start_date")
        ok = who >= 0
        covered = np.full(len(ids), np.nan)
        np.fmin.at(covered, who[ok], starts[ok])
        first = np.where(np.isnan(covered), first, covered)
    return first


def _subject_facts(ids: pd.Index, found: Episodes, dx: Diagnoses | None) -> pd.DataFrame:
    """Per subject: the derived current episode and the diagnoses of the records."""
    facts = pd.DataFrame(
        {
            "subject_id": ids.to_numpy(dtype=object),
            "episode_start": dates(found.start),
            "episode_source": pd.Categorical(found.source),
            "left_censored": found.left_censored,
        }
    )
    if dx is not None:
        facts["diagnoses"] = recorded_diagnoses(dx, len(ids))
    return facts


def _with_sessions(
    table: pd.DataFrame, row_subject: np.ndarray, row_start: np.ndarray, trail: pd.DataFrame,
    steps: pd.DataFrame, sessions: SessionCourses, facts: pd.DataFrame,
) -> Built:  # fmt: skip
    """Drug and session courses as one table in (subject, start) order (the drug rows
    keep their order among themselves), every trail pointing at its new row."""
    subject_all = np.concatenate([row_subject, sessions.subject])
    start_all = np.concatenate([row_start, sessions.start])
    order = lex_order(subject_all, day_key(start_all))
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    combined = pd.concat([table, sessions.frame], ignore_index=True).iloc[order]
    trail["treatments_row"] = _moved(trail["treatments_row"], position)
    session_trail = sessions.trail.drop(columns="row")
    course_row = sessions.trail["row"].to_numpy()
    row = np.full(len(course_row), -1, dtype=np.int64)  # a set-aside session: in no row
    placed = course_row >= 0
    row[placed] = position[len(table) + course_row[placed]] + 1
    course_id = np.full(len(course_row), None, dtype=object)
    course_id[placed] = sessions.frame["course_id"].to_numpy()[course_row[placed]]
    session_trail["course_id"] = course_id
    session_trail["treatments_row"] = ints(np.where(row > 0, row, np.nan))
    steps = pd.concat([steps, session_attrition(sessions.why, len(sessions.frame))])
    return Built(
        combined.reset_index(drop=True), trail, steps.reset_index(drop=True), session_trail,
        facts,
    )  # fmt: skip


def _moved(rows: pd.Series, position: np.ndarray) -> pd.Series:
    """1-based treatments rows after the table was reordered (`position`: new of old)."""
    values = rows.to_numpy(dtype=np.float64, na_value=np.nan)
    known = ~np.isnan(values)
    out = np.full(len(values), np.nan)
    out[known] = position[values[known].astype(np.int64) - 1] + 1
    return ints(out)
