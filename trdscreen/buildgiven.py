"""`trdscreen build --profile courses`: a courses export whose ratings are in a table of
their own.

The input contract lists an optional `assessments` table (subject_id, date,
instrument, total) "from which course start/end scores and screening severity can be
derived"; the screen reads scores from the treatments' own columns only. Many exports
are a treatments table beside a long table of ratings. This profile reads a folder
holding `treatments` (the input contract's table, every column kept), `assessments`
and, optionally, `subjects`, and writes a folder the screen reads as it is:

- `treatments.parquet`: every row of the export, in its order, every column typed as
  the screen types it. A row that gives no rating of its own (hamd_start, hamd_end,
  hamd_lowest, madrs_start, madrs_end and madrs_lowest all empty) gets the ratings the
  assessments hold for it, found as `trdscreen build` finds a built course's
  (`buildratings.attach`, the rule set's `build.ratings` windows): the baseline nearest
  its first day from `start_before_days` before to `start_after_days` after, the end
  rating nearest its last day within `end_within_days`, at least `min_days_between`
  after the baseline, on the same instrument, HAM-D versions never mixed, nothing rated
  after the reference date; the lowest rating between them. A row's last day is its end
  date; a row without one runs to the reference date unless its stop reason says it
  stopped (then its end, and so its end rating, is unknown). A row that gives any rating
  keeps its own and gets none: two sources are never mixed in one row. Each attached
  rating has its date and its assessments line (`hamd_start_date`,
  `hamd_start_line`, ...), `scores_source` says given, assessments or none, and
  `source_file`/`first_source_line`/`last_source_line` name the export's row.
- `subjects.parquet`: the subjects table typed; a subject with a screening_date and no
  hamd_screening (madrs_screening) gets the latest HAM-D17 (MADRS) total from
  `screening_within_days` before that date to it (`buildratings.screening_scores`),
  with `hamd_screening_source` and `hamd_screening_line`.

An improvement column is left as given: by the contract, scores win when both exist,
and the screen makes a course whose improvement says it went better than its ratings
unknown (`outcome_disagrees`), never a failure. Vectorized: one sorted key per rating
and binary searches (`buildratings`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from trdscreen.build import subject_context
from trdscreen.buildratings import attach, rating_scales, screening_scores
from trdscreen.buildrules import RatingWindows
from trdscreen.buildtables import RATING_COLUMNS, ints
from trdscreen.checks import STOPPED
from trdscreen.columns import day_numbers, floats
from trdscreen.drugs import distinct_drugs
from trdscreen.errors import InputError
from trdscreen.formulary import Formulary
from trdscreen.records import Table
from trdscreen.segments import dates

OWN_RATINGS = ("hamd_start", "hamd_end", "hamd_lowest", "madrs_start", "madrs_end", "madrs_lowest")
"""A treatments row giving any of these keeps its ratings; only a row giving none gets the
assessments'."""
SCORE_SOURCES = ("given", "assessments", "none")
"""`scores_source` of a row, and with `rows` the manifest's `scores` counts."""


WRITTEN = ("drug_as_given", "scores_source", "source_file", "first_source_line",
           "last_source_line")  # fmt: skip
"""Columns the profile writes beside the export's: an export that has one is refused (its
values would be replaced)."""


def refuse_written(treatments: Table) -> None:
    """InputError naming each column of the export that the profile writes itself."""
    taken = [name for name in WRITTEN if name in treatments.frame.columns]
    if taken:
        raise InputError(
            f"{treatments.source.file}: column(s) {', '.join(taken)} are written by --profile "
            "courses beside the export's own; rename them in the export, so nothing of it is "
            "replaced"
        )


@dataclass(frozen=True)
class GivenCourses:
    treatments: pd.DataFrame
    screening: dict[str, tuple[np.ndarray, np.ndarray]]  # per subjects row: (total, line)
    counts: dict[str, int]


def _merged(base: np.ndarray, found: np.ndarray, rows: np.ndarray) -> np.ndarray:
    out = base.copy()
    out[rows] = found
    return out


def rating_columns(
    frame: pd.DataFrame, rows: np.ndarray, found: dict[str, np.ndarray]
) -> dict[str, object]:
    """The RATING_COLUMNS of the treatments: the export's own values, and on `rows` the
    ratings found for them (`found`, per row of `rows`: buildratings.attach's arrays)."""
    out: dict[str, object] = {}
    for name in RATING_COLUMNS:
        if name.endswith("_date"):
            day = found[name.removesuffix("_date") + "_day"]
            out[name] = dates(_merged(day_numbers(frame, name), day, rows))
        else:
            out[name] = ints(_merged(floats(frame, name), found[name], rows)).array
    return out


def site_drugs(frame: pd.DataFrame, aliased: Formulary, plain: Formulary) -> pd.DataFrame:
    """The treatments with each drug the column map's `drug_aliases` name written as the
    generic it names (the screen of the built folder reads it without the map), the name
    as given kept in `drug_as_given`. Only what the aliases change is rewritten: a brand or
    product the formulary knows (Zyban, say, which is not an antidepressant) stays as
    given. Each distinct (name, ATC code) is resolved once."""
    codes, pairs = distinct_drugs(frame)
    names = []
    for name, atc in pairs:
        generic = aliased.resolve(name, atc).generic if name is not None else None
        mapped = generic is not None and generic != plain.resolve(name, atc).generic
        names.append(generic if mapped else name)
    drug = pd.Series(np.asarray([*names, None], dtype=object)[codes], index=frame.index)
    out = frame.copy(deep=False)  # new columns only: the export's arrays are shared
    out.insert(int(frame.columns.get_loc("drug")) + 1, "drug_as_given", frame["drug"])
    out["drug"] = drug.astype(frame["drug"].dtype)
    return out


def attach_given(
    treatments: Table, assessments: Table | None, subjects: pd.DataFrame | None,
    windows: RatingWindows, as_of: date | None,
) -> GivenCourses:  # fmt: skip
    """The treatments with the assessments' ratings on the rows that give none, and the
    screening scores of the subjects rows (module doc)."""
    frame = treatments.frame
    n = len(frame)
    keys, code = treatments.subject_keys  # every subject of the treatments, in code order
    ids = pd.Index(keys)
    people = None if subjects is None else pd.Index(subjects["subject_id"].astype(object))
    if people is not None:  # the subjects with no treatment row after them: screening scores
        ids = ids.append(people.difference(ids))
    reference, _, screening_day = subject_context(ids, subjects, as_of)
    scales = rating_scales(assessments, ids)
    first = day_numbers(frame, "start_date")
    end = day_numbers(frame, "end_date")
    stopped = (
        frame["stop_reason"].isin(STOPPED).to_numpy(dtype=bool)
        if "stop_reason" in frame.columns
        else np.zeros(n, dtype=bool)
    )
    last = np.where(np.isnan(end) & ~stopped, reference[code], end)
    own = np.zeros(n, dtype=bool)
    for name in OWN_RATINGS:
        own |= ~np.isnan(floats(frame, name))
    rows = np.flatnonzero(~own & (code >= 0) & ~np.isnan(first))
    found = attach(scales, code[rows], first[rows], last[rows], reference[code[rows]], windows)
    rated = np.zeros(n, dtype=bool)
    rated[rows] = ~np.isnan(found["hamd_start"]) | ~np.isnan(found["madrs_start"])
    ratings = rating_columns(frame, rows, found)
    # The export's columns in its order (its ratings merged), then the other ratings.
    columns = {name: ratings.pop(name, frame[name]) for name in frame.columns}
    columns |= ratings
    source = np.where(own, 0, np.where(rated, 1, 2))
    columns["scores_source"] = pd.Categorical.from_codes(source, SCORE_SOURCES)
    columns["source_file"] = pd.Categorical.from_codes(
        np.zeros(n, dtype=np.int8), [treatments.source.file]
    )
    line = ints(treatments.source.lines.astype(np.float64)).array
    columns["first_source_line"] = line
    columns["last_source_line"] = line
    screening: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if people is not None and subjects is not None and "screening_date" in subjects.columns:
        at = ids.get_indexer(people)
        screening = screening_scores(
            scales, at, screening_day[at], reference[at], windows.screening_within_days
        )
    counts = {
        "rows": n,
        "given": int(own.sum()),
        "assessments": int(rated.sum()),
        "none": int(n - own.sum() - rated.sum()),
    }
    return GivenCourses(pd.DataFrame(columns, copy=False), screening, counts)
