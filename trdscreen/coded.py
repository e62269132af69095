"""Low-cardinality text as integer codes into its few distinct values.

Role, modality, stop reason, drug names and reason lists take a handful of
values over millions of rows. Comparing and gathering them as Python strings
costs a Python object per row; here every comparison is made once per
distinct value and broadcast by code, and output text is a Categorical.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd


def sorted_categories(texts: Iterable[str]) -> pd.CategoricalDtype:
    """The canonical categories of a data-derived text column: its distinct texts, sorted.

    Canonical, so parts of a table screened apart (the Dask engine) or rows added later
    (held subjects) combine into the categories the whole table would have, and the
    Parquet writer gets the same dictionary.
    """
    return pd.CategoricalDtype(pd.Index(sorted(set(texts)), dtype="str"))


def categorical(values: Sequence[str | None], codes: np.ndarray) -> pd.Categorical:
    """`values[codes]` as a Categorical (a code below 0 or a None value gives null).

    Its categories are the texts the rows use (`sorted_categories`).
    """
    codes = np.asarray(codes, dtype=np.int64)
    used = np.bincount(codes + 1, minlength=len(values) + 1)[1:] > 0  # slot 0: the -1s
    dtype = sorted_categories(v for v, u in zip(values, used, strict=True) if u and v is not None)
    position = {text: i for i, text in enumerate(dtype.categories)}
    # The codes in the type pandas stores them in (it would convert them otherwise), and
    # in range by construction (no check).
    narrow = next(t for t in (np.int8, np.int16, np.int32, np.int64)
                  if len(dtype.categories) < np.iinfo(t).max)  # fmt: skip
    remap = np.array(
        [position.get(v, -1) if v is not None else -1 for v in values] + [-1], dtype=narrow
    )
    return pd.Categorical.from_codes(remap[codes], dtype=dtype, validate=False)


@dataclass(frozen=True)
class Coded:
    """A text column as codes into its distinct values (nulls replaced by a default)."""

    codes: np.ndarray  # int64 per row
    values: tuple[str, ...]  # distinct texts; a code indexes them

    def isin(self, wanted: Iterable[str]) -> np.ndarray:
        """Per row: is the text one of `wanted`?"""
        hits = np.isin(np.asarray(self.values, dtype=object), list(wanted))
        return hits[self.codes] if len(self.values) else np.zeros(len(self.codes), bool)

    def eq(self, value: str) -> np.ndarray:
        return self.isin((value,))

    def text(self) -> pd.Categorical:
        return categorical(self.values, self.codes)


def coded(frame: pd.DataFrame, name: str, default: str) -> Coded:
    """Column `name` of `frame` coded, with nulls (or a missing column) read as `default`."""
    if name not in frame.columns:
        return Coded(np.zeros(len(frame), dtype=np.int64), (default,))
    codes, uniques = pd.factorize(frame[name])  # Arrow hashing; nulls get -1
    values = [str(v) for v in uniques]
    if default not in values:
        values.append(default)
    codes = np.where(codes < 0, values.index(default), codes).astype(np.int64)
    return Coded(codes, tuple(values))
