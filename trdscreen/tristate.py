"""Three-valued logic for checks: met, not met, unknown.

States are int8 codes ordered so that Kleene AND is `min` and OR is `max`:
NOT_MET (0) < UNKNOWN (1) < MET (2). Unknown is never silently read as met or
not met; a rule set may resolve it explicitly, and the resolution is recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress

import numpy as np
import pandas as pd

from trdscreen.coded import categorical

NOT_MET = np.int8(0)
UNKNOWN = np.int8(1)
MET = np.int8(2)

STATE_LABELS = ("not_met", "unknown", "met")
_STATE_DTYPE = pd.CategoricalDtype(list(STATE_LABELS))


def all_of(*states: np.ndarray) -> np.ndarray:
    """Kleene AND: not met if any is not met, else unknown if any is unknown."""
    return np.minimum.reduce([np.asarray(s, dtype=np.int8) for s in states])


def from_bool(condition: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """MET where condition holds, NOT_MET where not, UNKNOWN where not known."""
    out = np.where(condition, MET, NOT_MET).astype(np.int8)
    if known is not None:
        out[~known] = UNKNOWN
    return out


def negate(states: np.ndarray) -> np.ndarray:
    return (MET - states).astype(np.int8)


def resolve(states: np.ndarray, resolution: str) -> tuple[np.ndarray, np.ndarray]:
    """Apply a rule set's resolution of unknown; return states and a resolved mask."""
    unknown = states == UNKNOWN
    if resolution == "unknown" or not unknown.any():
        return states, np.zeros(states.shape, dtype=bool)
    out = states.copy()
    out[unknown] = MET if resolution == "assume_met" else NOT_MET
    return out, unknown


def labels(states: np.ndarray) -> pd.Categorical:
    return pd.Categorical.from_codes(np.asarray(states, dtype=np.int8), dtype=_STATE_DTYPE)


INFERRED = "inferred"
_FAILED_DTYPE = pd.CategoricalDtype([*STATE_LABELS, INFERRED])


def failed_labels(
    states: np.ndarray, inferred: np.ndarray, inference: str | None
) -> pd.Categorical:
    """The courses table's `failed` column: a failure inferred without ratings reads
    `inferred`, never `met`. A rule set that infers nothing keeps the three states (and
    the bytes it wrote before)."""
    if inference is None:
        return labels(states)
    codes = np.where(inferred & (states == MET), np.int8(3), np.asarray(states, np.int8))
    return pd.Categorical.from_codes(codes, dtype=_FAILED_DTYPE)


def join_flags(bits: np.ndarray, names: Sequence[str], sep: str = ";") -> pd.Categorical:
    """Turn per-row bit masks into ';'-joined names, in the order of `names`.

    Works on the distinct masks only (few), so it stays vectorized.
    """
    bits = np.asarray(bits, dtype=np.int64)
    inverse, uniques = pd.factorize(bits)  # hashing: O(n), where np.unique sorts
    shifts = np.arange(len(names), dtype=np.int64)
    held = ((np.asarray(uniques, dtype=np.int64)[:, None] >> shifts) & 1).astype(bool)
    texts = [sep.join(compress(names, row)) for row in held.tolist()]
    return categorical(texts, inverse)


def or_flag(
    shown: np.ndarray, possible: np.ndarray, flag: pd.Series | None
) -> pd.api.extensions.ExtensionArray:
    """A fact from evidence OR-ed with a subject flag column, in three-valued logic, as
    nullable booleans: true when the evidence shows it or the flag says true; false only
    when the flag says false and no evidence makes it possible; else unknown. An empty
    flag cell, or an absent flag column (None), is unknown."""
    n = len(shown)
    if flag is None:
        flag = pd.Series(pd.NA, index=range(n), dtype="boolean")
    flag = pd.Series(flag).astype("boolean")
    flag_true = flag.fillna(False).to_numpy(dtype=bool)
    flag_false = (~flag).fillna(False).to_numpy(dtype=bool)
    value = pd.array(shown | flag_true, dtype="boolean")
    value[~shown & ~flag_true & (possible | ~flag_false)] = pd.NA
    return value
