"""Synthetic cohorts for demos and load tests: `trdscreen synth`.

Every column is drawn with numpy in one vectorized pass per column (no
per-subject Python), so a million subjects take seconds. The same seed gives
the same files (for the same trdscreen and numpy versions).

What makes the cohort realistic enough to exercise the screen:

- 3 to 6 courses per subject (mean about 4.2), one after another, with gaps;
- drug names as exports spell them: generic, brand, upper case, with a dose
  ("sertraline 100 mg") or a release marker ("Effexor XR"), and a small share
  of misspellings the formulary does not know (warnings, not errors);
- doses drawn around each drug's minimum adequate dose in the bundled
  formulary (half, three quarters, exactly, above) and durations around the
  4-, 6- and 8-week cut-offs, so every rule set's thresholds are exercised;
- HAM-D scores whose improvement sits around the 25 % and 50 % boundaries;
- missing values at rates typical of registry exports (dose 4 %, end date
  3 %, adherence 70 %, HAM-D 35 %, stop reason 15 %).

The subjects table carries every column the shipped rule sets ask about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from trdscreen.errors import UsageError
from trdscreen.formulary import load_formulary
from trdscreen.outdir import atomic_folder
from trdscreen.vocabulary import TABLE_FORMATS

SYNTH_FORMATS = TABLE_FORMATS

# Generic, prescribing weight, spellings as exports carry them (the generic itself is
# always one of them), and whether the drug is an add-on (role augmentation).
_DRUGS: tuple[tuple[str, float, tuple[str, ...], bool], ...] = (
    ("sertraline", 16, ("Zoloft", "SERTRALINE", "sertraline 100 mg", "Lustral"), False),
    ("escitalopram", 14, ("Lexapro", "Cipralex", "escitalopram oxalate"), False),
    ("citalopram", 9, ("Celexa", "Cipramil", "CITALOPRAM"), False),
    ("fluoxetine", 10, ("Prozac", "fluoxetine hydrochloride", "Fluoxetine 20mg"), False),
    ("venlafaxine", 9, ("Effexor XR", "venlafaxine ER", "Efexor XL"), False),
    ("duloxetine", 7, ("Cymbalta", "DULOXETINE"), False),
    ("bupropion", 7, ("Wellbutrin XL", "bupropion SR", "Wellbutrin"), False),
    ("mirtazapine", 6, ("Remeron", "Zispin"), False),
    ("paroxetine", 4, ("Paxil", "Seroxat", "paroxetine CR"), False),
    ("trazodone", 3, ("Desyrel",), False),
    ("vortioxetine", 3, ("Trintellix", "Brintellix"), False),
    ("desvenlafaxine", 2, ("Pristiq",), False),
    ("amitriptyline", 2, ("Elavil",), False),
    ("nortriptyline", 2, ("Pamelor",), False),
    ("aripiprazole", 3, ("Abilify",), True),
    ("quetiapine", 3, ("Seroquel XR", "Seroquel"), True),
    ("lithium", 2, ("lithium carbonate", "Priadel"), True),
)
# Typical daily doses (mg) of the add-ons that have no minimum in the formulary.
_ADD_ON_DOSE = {"aripiprazole": 5.0, "lithium": 600.0}
_MISSPELT = 0.004  # share of names with a letter dropped: unknown to the formulary

_DOSE_MULTIPLES = np.array([0.5, 0.75, 1.0, 1.0, 1.5, 2.0, 3.0])
_DOSE_WEIGHTS = np.array([0.08, 0.12, 0.30, 0.0, 0.25, 0.20, 0.05])
# Course lengths in days, clustered on the 4-, 6- and 8-week cut-offs (one day either side).
_DAYS = np.array([14, 21, 27, 28, 29, 35, 41, 42, 43, 55, 56, 57, 70, 84, 120, 180])
_DAY_WEIGHTS = np.array([4, 5, 4, 6, 4, 6, 4, 8, 6, 4, 10, 6, 10, 9, 8, 6], float)
# Improvement on HAM-D, clustered on the 25 % and 50 % response boundaries.
_IMPROVEMENT = np.array([-0.1, 0.0, 0.1, 0.2, 0.24, 0.25, 0.26, 0.35, 0.45, 0.5, 0.55, 0.7, 0.9])
_IMPROVEMENT_WEIGHTS = np.array([3, 6, 10, 10, 6, 6, 6, 10, 8, 6, 8, 12, 9], float)
_STOP_WEIGHTS = {
    "nonresponse": 40,
    "partial_response": 12,
    "intolerance": 14,
    "remission": 12,
    "relapse": 3,
    "patient_choice": 8,
    "ongoing": 3,
    "other": 8,
}
_DAY0 = np.datetime64("2012-01-01", "D")


@dataclass(frozen=True)
class SynthCohort:
    treatments: pa.Table
    subjects: pa.Table


def _weights(values) -> np.ndarray:
    w = np.asarray(values, float)
    return w / w.sum()


def _vocabulary(formulary) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every spelling, its prescribing weight, its drug's base dose, add-on flag and
    drug number (spellings of one drug share its weight)."""
    names, weights, doses, add_on, drug_of = [], [], [], [], []
    for number, (generic, weight, spellings, is_add_on) in enumerate(_DRUGS):
        drug = formulary.drugs[generic]
        base = drug.min_mg_per_day or drug.alt_min_mg_per_day or _ADD_ON_DOSE[generic]
        every = (generic, *spellings)
        # The generic carries half the drug's weight; brands and variants share the rest.
        shares = [0.5] + [0.5 / len(spellings)] * len(spellings)
        for name, share in zip(every, shares, strict=True):
            names.append(name)
            weights.append(weight * share)
            doses.append(base)
            add_on.append(is_add_on)
            drug_of.append(number)
    return names, _weights(weights), np.array(doses), np.array(add_on), np.array(drug_of)


def _ids(prefix: str, n: int) -> pa.Array:
    width = max(7, len(str(n - 1)))
    digits = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), width, "0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _masked(values: np.ndarray, missing: np.ndarray) -> pa.Array:
    return pa.array(values, mask=missing)


def _dates(days: np.ndarray, missing: np.ndarray | None = None) -> pa.Array:
    stamps = pa.array(_DAY0 + days.astype("timedelta64[D]"), pa.date32())
    if missing is None:
        return stamps
    return pc.if_else(pa.array(missing), pa.scalar(None, pa.date32()), stamps)


def _choice(rng: np.random.Generator, labels, weights, n: int, missing: float) -> pa.Array:
    labels = list(labels)
    codes = rng.choice(len(labels), size=n, p=_weights(weights)).astype(np.int32)
    gone = rng.random(n) < missing
    return pa.DictionaryArray.from_arrays(
        pa.array(codes, mask=gone), pa.array(labels, pa.string())
    ).cast(pa.string())


def _misspell(name: str) -> str:
    """Drop the third letter: 'sertraline' -> 'setraline'."""
    return name[:2] + name[3:] if len(name) > 4 else name + "x"


def synthesize(n_subjects: int, seed: int = 0) -> SynthCohort:
    """Draw a cohort of `n_subjects` subjects and their courses (about 4.2 each)."""
    if n_subjects < 1:
        raise UsageError(f"--n-subjects {n_subjects}: expected at least 1")
    rng = np.random.default_rng(seed)
    n = n_subjects
    per_subject = rng.choice([3, 4, 5, 6], size=n, p=[0.3, 0.3, 0.25, 0.15])
    m = int(per_subject.sum())
    owner = np.repeat(np.arange(n), per_subject)
    first = np.zeros(n, np.int64)
    np.cumsum(per_subject[:-1], out=first[1:])

    # Drugs: a spelling per course; a few misspelt.
    names, name_p, base_dose, add_on, _drug_of = _vocabulary(load_formulary())
    spelling = rng.choice(len(names), size=m, p=name_p)
    misspelt = rng.random(m) < _MISSPELT
    vocabulary = names + [_misspell(name) for name in names]
    drug_code = np.where(misspelt, spelling + len(names), spelling).astype(np.int32)
    drug = pa.DictionaryArray.from_arrays(pa.array(drug_code), pa.array(vocabulary)).cast(
        pa.string()
    )

    multiple = rng.choice(_DOSE_MULTIPLES, size=m, p=_weights(_DOSE_WEIGHTS))
    raw = base_dose[spelling] * multiple
    step = np.where(raw >= 20, 5.0, 2.5)  # doses come in tablet strengths
    dose = np.maximum(np.round(raw / step) * step, step)
    dose_missing = rng.random(m) < 0.04

    # Dates: each subject's courses follow one another with 0-90 day gaps.
    length = rng.choice(_DAYS, size=m, p=_weights(_DAY_WEIGHTS))
    gap = rng.integers(0, 91, size=m)
    span = length + gap
    elapsed = np.cumsum(span) - span  # days since the cohort's first course
    history_start = rng.integers(0, 365 * 9, size=n)  # 2012 .. 2020
    start = history_start[owner] + elapsed - elapsed[first][owner]
    end = start + length
    last = np.zeros(m, bool)
    last[first + per_subject - 1] = True
    end_missing = (rng.random(m) < 0.03) | (last & (rng.random(m) < 0.05))

    # HAM-D: start score, improvement around the boundaries, end score from both.
    hamd_start = rng.integers(14, 33, size=m)
    improvement = rng.choice(_IMPROVEMENT, size=m, p=_weights(_IMPROVEMENT_WEIGHTS))
    hamd_end = np.clip(np.round(hamd_start * (1 - improvement)), 0, 52).astype(np.int64)
    hamd_missing = rng.random(m) < 0.35
    end_score_missing = hamd_missing | (rng.random(m) < 0.05)
    # Where HAM-D is missing, a tenth of exports record the improvement itself.
    improvement_missing = ~hamd_missing | (rng.random(m) >= 0.10)

    adherence_levels = np.array([0.5, 0.7, 0.8, 0.9, 1.0])
    adherence = rng.choice(adherence_levels, size=m, p=[0.05, 0.1, 0.25, 0.3, 0.3])
    adherence_missing = rng.random(m) < 0.70
    stop = _choice(rng, _STOP_WEIGHTS, list(_STOP_WEIGHTS.values()), m, missing=0.15)
    # A last course without an end date is mostly still running.
    stop = pc.if_else(pa.array(last & end_missing & (rng.random(m) < 0.8)), "ongoing", stop)
    role_code = np.where(add_on[spelling], 1, 0).astype(np.int32)
    role = pa.DictionaryArray.from_arrays(
        pa.array(role_code, mask=(role_code == 0) & (rng.random(m) < 0.6)),
        pa.array(["monotherapy", "augmentation"]),
    ).cast(pa.string())
    modality = pa.array(np.full(m, None, object), pa.string())

    subject_ids = _ids("SYN", n)
    treatments = pa.table(
        {
            "subject_id": subject_ids.take(pa.array(owner)),
            "drug": drug,
            "daily_dose_mg": _masked(dose, dose_missing),
            "start_date": _dates(start),
            "end_date": _dates(end, end_missing),
            "adherence": _masked(adherence, adherence_missing),
            "hamd_start": _masked(hamd_start, hamd_missing),
            "hamd_end": _masked(hamd_end, end_score_missing),
            "improvement": _masked(improvement, improvement_missing),
            "stop_reason": stop,
            "role": role,
            "modality": modality,
        }
    )
    return SynthCohort(treatments, _subjects(rng, subject_ids, history_start, start, end, last))


def _subjects(rng, ids: pa.Array, history_start, start, end, last) -> pa.Table:
    n = len(ids)
    last_end = end[last]
    # Screening 1-120 days after the last course ended; age 18-80 at the first course.
    screening = last_end + rng.integers(1, 121, size=n)
    birth = history_start - rng.integers(18 * 365, 80 * 365, size=n)
    # The current episode starts before the first course for most subjects, and
    # between courses for some (earlier courses then belong to a past episode).
    back = rng.integers(0, 181, size=n)
    later = start[last] - rng.integers(0, 60, size=n)
    episode = np.where(rng.random(n) < 0.85, history_start - back, later)

    def flag(p: float, missing: float = 0.02) -> pa.Array:
        return _masked(rng.random(n) < p, rng.random(n) < missing)

    return pa.table(
        {
            "subject_id": ids,
            "birth_date": _dates(birth),
            "sex": _choice(rng, ["F", "M"], [0.64, 0.36], n, missing=0.01),
            "diagnosis": _choice(
                rng,
                ["MDD, recurrent", "MDD, single episode", "persistent depressive disorder"],
                [0.7, 0.25, 0.05],
                n,
                missing=0.02,
            ),
            "episode_start": _dates(episode, rng.random(n) < 0.03),
            "screening_date": _dates(screening),
            "hamd_screening": _masked(rng.integers(12, 36, size=n), rng.random(n) < 0.05),
            "bipolar": flag(0.03),
            "psychotic_features": flag(0.05),
            "madrs_screening": _masked(rng.integers(15, 50, size=n), rng.random(n) < 0.20),
            "substance_use_disorder": flag(0.08),
            "ocd": flag(0.03),
            "intellectual_disability": flag(0.01),
            "cluster_b_pd": flag(0.04),
            "prior_ketamine_nonresponse": flag(0.02),
            "current_vns_or_dbs": flag(0.005),
            "ect_current_episode": flag(0.01),
        }
    )


def write_synthetic(
    cohort: SynthCohort, out: Path, fmt: str, force: bool = False, records: bool = False
) -> list[Path]:
    """Write treatments and subjects into the folder `out`, atomically (like a run folder:
    a non-empty folder is replaced only with `force`); with `records`, a records folder
    for `trdscreen build` instead (synthrecords)."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from trdscreen.synthrecords import records as as_records

    if fmt not in SYNTH_FORMATS:
        raise UsageError(f"format {fmt!r}: expected one of {', '.join(SYNTH_FORMATS)}")
    names = []
    tables = (
        as_records(cohort.treatments, cohort.subjects)
        if records
        else {"treatments": cohort.treatments, "subjects": cohort.subjects}
    )
    with atomic_folder(out, force) as folder:
        for stem, table in tables.items():
            name = f"{stem}.{fmt}"
            if fmt == "parquet":
                pq.write_table(table, folder / name, row_group_size=1 << 20)
            else:
                pacsv.write_csv(table, folder / name, pacsv.WriteOptions(quoting_style="needed"))
            names.append(name)
        _write_marker(folder, names)
    return [Path(out) / name for name in names]


def _write_marker(folder: Path, names: list[str]) -> None:
    """A manifest listing the files: it marks the folder as trdscreen's, which `--force`
    may replace (`trdscreen.outdir.foreign_entry`)."""
    import json

    from trdscreen import __version__
    from trdscreen.io import sha256_file
    from trdscreen.outdir import MANIFEST_FILE

    manifest = {
        "tool": "trdscreen",
        "kind": "synthetic_cohort",
        "version": __version__,
        "outputs": [{"path": name, "sha256": sha256_file(folder / name)} for name in names],
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (folder / MANIFEST_FILE).write_text(text, "utf-8")
