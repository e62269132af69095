"""Optional input columns as NumPy arrays: an absent column, or an empty cell, reads as a
default, so every stage handles "not exported" and "not given" the same way."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from trdscreen.segments import days

DEFAULT_HAMD_VERSION = 17.0
"""The HAM-D version of a total whose row gives none (`hamd_version` empty or absent)."""


def floats(frame: pd.DataFrame, name: str, fill: float = np.nan) -> np.ndarray:
    """Column `name` as float64, empty cells (and an absent column) as `fill`."""
    if name not in frame.columns:
        return np.full(len(frame), fill)
    return np.asarray(frame[name].to_numpy(dtype=np.float64, na_value=fill))


def flags(frame: pd.DataFrame, name: str) -> np.ndarray:
    """A boolean marker column (e.g. from the --as-of view), all False when absent."""
    if name in frame.columns:
        return frame[name].to_numpy(dtype=bool)
    return np.zeros(len(frame), dtype=bool)


def hamd_versions(frame: pd.DataFrame) -> np.ndarray:
    """The HAM-D version of each row's totals (17 when not given)."""
    return floats(frame, "hamd_version", DEFAULT_HAMD_VERSION)


def day_numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Date column `name` as float day numbers (segments.days), NaN where empty or absent."""
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return days(frame[name].to_numpy(dtype="datetime64[s]"))


def repeated_text(value: str, n: int) -> pd.api.extensions.ExtensionArray:
    """`value` on each of `n` rows, as the str dtype, made in Arrow (a Python string per
    row, then converted, cost several milliseconds per chunk)."""
    return pd.Series(pa.nulls(n, pa.string()).fill_null(value), dtype="str").array
