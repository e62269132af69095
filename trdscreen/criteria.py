"""Protocol criteria: evaluation, decisions, ledger and attrition.

Each criterion is compiled by this module (never by `eval`/`query`) from its
operator and value into vectorized comparisons over one subject column.
Counts are intervals [met, met + unknown] so that a count criterion is met
only when it holds for every possible resolution of the unknown courses.

For an exclusion criterion the condition describes the excluding state
(e.g. bipolar eq true); the criterion is *met* when that state is absent.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from trdscreen.coded import categorical
from trdscreen.columns import hamd_versions
from trdscreen.reasons import ASSUMPTIONS, CRITERION_ASSUMED, SUBJECT_ASSUMPTIONS
from trdscreen.ruleset import Condition, Criterion, Op, RuleSet
from trdscreen.schemas import HAMD_COLUMNS
from trdscreen.staging import INTERVAL_COLUMNS as STAGING_INTERVALS
from trdscreen.subjects import ASSUMPTION_BITS
from trdscreen.tristate import MET, NOT_MET, UNKNOWN, from_bool, join_flags, labels, negate, resolve

INTERVAL_COLUMNS = {
    "n_failed_trials": "n_failed_trials_max",
    "n_adequate_trials": "n_adequate_trials_max",
    "n_partial_response_trials": "n_partial_response_trials_max",
    **STAGING_INTERVALS,
}
UNDETERMINED_TEXT = ("classification", "msm_band")
"""Derived text columns whose value `undetermined` means unknown."""
DECISIONS = ("eligible", "excluded", "needs_review")


class CriterionDataError(ValueError):
    """A criterion cannot be applied to the column's data type."""


@dataclass(frozen=True)
class CriterionResult:
    criterion: Criterion
    state: np.ndarray  # after the rule set's resolution of unknown
    resolved: np.ndarray  # bool: unknown resolved by `when_unknown`
    observed: np.ndarray  # float (numeric columns) or NaN
    observed_max: np.ndarray  # upper bound for interval columns, else = observed
    observed_text: np.ndarray | None  # text/boolean columns
    margin: np.ndarray  # signed distance to flipping, positive on the passing side


def threshold_text(criterion: Criterion) -> str:
    if criterion.group is not None:
        joined = "; ".join(f"{c.column} {_condition_text(c)}" for c in criterion.conditions)
        text = f"{'any' if criterion.group == 'any_of' else 'all'} of: {joined}"
        return f"exclude when {text}" if criterion.kind == "exclusion" else text
    condition = criterion.conditions[0]
    text = _condition_text(condition)
    if criterion.kind == "exclusion":
        return f"exclude when {text}"
    # An inclusion threshold must not start with "=": a spreadsheet would read a formula
    # (and the CSV would escape it).
    return f"equals {_fmt(condition.value)}" if condition.op is Op.eq else text


def _condition_text(condition: Condition) -> str:
    op, values = condition.op, condition.values
    symbols = {Op.lt: "<", Op.le: "<=", Op.gt: ">", Op.ge: ">=", Op.eq: "=", Op.ne: "!="}
    if op in symbols:
        text = f"{symbols[op]} {_fmt(values[0])}"
    elif op is Op.between:
        text = f"between {_fmt(values[0])} and {_fmt(values[1])}"
    elif op in (Op.in_, Op.not_in):
        text = f"{'in' if op is Op.in_ else 'not in'} [{', '.join(_fmt(v) for v in values)}]"
    else:
        text = "empty" if op is Op.is_null else "not empty"
    if condition.column in HAMD_COLUMNS:
        text += f" (HAM-D{'/'.join(str(v) for v in condition.hamd_versions)})"
    return text


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _numeric(
    condition: Condition, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Tri-state and margin of a numeric comparison over the interval [low, high]."""
    op, values = condition.op, condition.values
    known = ~np.isnan(low)
    if op is Op.between:
        a, b = float(values[0]), float(values[1])
        met = (low >= a) & (high <= b)
        not_met = (high < a) | (low > b)
        margin = np.minimum(low - a, b - high)
    else:
        v = float(values[0])
        if op is Op.ge:
            met, not_met, margin = low >= v, high < v, low - v
        elif op is Op.gt:
            met, not_met, margin = low > v, high <= v, low - v
        elif op is Op.le:
            met, not_met, margin = high <= v, low > v, v - high
        else:  # lt
            met, not_met, margin = high < v, low >= v, v - high
    state = np.select([~known, met, not_met], [UNKNOWN, MET, NOT_MET], default=UNKNOWN)
    return state.astype(np.int8), margin


def _equality(
    criterion: Criterion, condition: Condition, series: pd.Series, low: np.ndarray | None,
    high: np.ndarray | None,
) -> np.ndarray:  # fmt: skip
    op, wanted = condition.op, condition.values
    if low is not None and high is not None:  # numeric column (possibly an interval)
        numbers = [
            float(v) for v in wanted if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        if len(numbers) != len(wanted):
            raise CriterionDataError(
                f"criterion {criterion.id}: column `{condition.column}` holds numbers; "
                f"compare it with numbers, not {wanted!r}"
            )
        exact = low == high
        hit = np.isin(low, np.asarray(numbers, dtype=np.float64)) & exact
        inside = np.zeros(len(low), dtype=bool)
        for v in numbers:
            inside |= (low <= v) & (v <= high)
        miss = ~inside
        state = np.select([np.isnan(low), hit, miss], [UNKNOWN, MET, NOT_MET], default=UNKNOWN)
        state = state.astype(np.int8)
    else:
        known = series.notna().to_numpy()
        if series.dtype == "boolean":
            if not all(isinstance(v, bool) for v in wanted):
                raise CriterionDataError(
                    f"criterion {criterion.id}: column `{condition.column}` is true/false; "
                    f"compare it with true or false, not {wanted!r}"
                )
            values = series.to_numpy(dtype=bool, na_value=False)
            hit = np.isin(values, np.asarray(wanted, dtype=bool))
        else:  # text: trimmed when read; case is ignored, as a site's "m" is a rule's "M"
            values = series.astype("str").str.casefold().to_numpy(dtype=object)
            hit = np.isin(values, [str(v).casefold() for v in wanted])
        state = from_bool(hit & known, known=known)
    if op in (Op.ne, Op.not_in):
        state = negate(state)
    return state


@dataclass(frozen=True)
class _Compared:
    state: np.ndarray
    margin: np.ndarray
    low: np.ndarray | None  # numeric columns (possibly an interval)
    high: np.ndarray | None
    text: np.ndarray | None  # text and boolean columns, as shown


def _compare(criterion: Criterion, condition: Condition, subjects: pd.DataFrame) -> _Compared:
    """One comparison over one subject column, as an inclusion (met = the condition holds)."""
    column = condition.column
    n = len(subjects)
    series = (
        subjects[column] if column in subjects.columns else pd.Series([None] * n, dtype="object")
    )
    if column in UNDETERMINED_TEXT:
        series = series.astype("str").where(series.astype("str") != "undetermined")
    numeric = column in INTERVAL_COLUMNS or (
        series.dtype.kind in "fiu" and series.dtype != "boolean"
    )
    low = high = None
    if numeric:
        low = series.to_numpy(dtype=np.float64, na_value=np.nan)
        high = (
            subjects[INTERVAL_COLUMNS[column]].to_numpy(dtype=np.float64)
            if column in INTERVAL_COLUMNS
            else low
        )
        if column in HAMD_COLUMNS and "hamd_version" in subjects.columns:
            # A HAM-D total of a version the condition is not written for is never
            # compared with it: unknown (the value stays shown in the decisions).
            other = ~np.isin(hamd_versions(subjects), condition.hamd_versions)
            low = np.where(other, np.nan, low)
            high = np.where(other, np.nan, high)
    margin = np.full(n, np.nan)
    op = condition.op
    if op in (Op.is_null, Op.not_null):
        present = ~np.isnan(low) if low is not None else series.notna().to_numpy()
        state = from_bool(present if op is Op.not_null else ~present)
    elif op in (Op.lt, Op.le, Op.gt, Op.ge, Op.between):
        if low is None or high is None:
            raise CriterionDataError(
                f"criterion {criterion.id}: op {op.value} needs a numeric column; "
                f"`{column}` holds text or true/false values"
            )
        state, margin = _numeric(condition, low, high)
    else:
        state = _equality(criterion, condition, series, low, high)
    text = None
    if not numeric:
        shown = series.astype("str")
        if series.dtype == "boolean":
            shown = shown.str.lower()
        text = shown.to_numpy(dtype=object)
    return _Compared(state, margin, low, high, text)


def evaluate_criterion(criterion: Criterion, subjects: pd.DataFrame) -> CriterionResult:
    n = len(subjects)
    parts = [_compare(criterion, c, subjects) for c in criterion.conditions]
    if criterion.group is None:
        part = parts[0]
        state, margin = part.state, part.margin
    else:  # Kleene OR (any_of) or AND (all_of); the margin of the deciding side
        states = np.stack([p.state for p in parts])
        margins = np.stack([p.margin for p in parts])
        with warnings.catch_warnings():  # all-NaN margins (text columns) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            if criterion.group == "any_of":
                state = np.select(
                    [(states == MET).any(0), (states == NOT_MET).all(0)], [MET, NOT_MET], UNKNOWN
                ).astype(np.int8)
                margin = np.nanmax(margins, axis=0)
            else:
                state = np.select(
                    [(states == NOT_MET).any(0), (states == MET).all(0)], [NOT_MET, MET], UNKNOWN
                ).astype(np.int8)
                margin = np.nanmin(margins, axis=0)
        part = _Compared(state, margin, None, None, None)
    if criterion.kind == "exclusion":
        state = negate(state)
        margin = -margin
    state, resolved = resolve(state, criterion.when_unknown)
    return CriterionResult(
        criterion=criterion,
        state=state,
        resolved=resolved,
        observed=part.low if part.low is not None else np.full(n, np.nan),
        observed_max=part.high if part.high is not None else np.full(n, np.nan),
        observed_text=part.text,
        margin=margin,
    )


def evaluate_all(rules: RuleSet, subjects: pd.DataFrame) -> list[CriterionResult]:
    return [evaluate_criterion(c, subjects) for c in rules.criteria]


def decide(subjects: pd.DataFrame, results: list[CriterionResult]) -> pd.DataFrame:
    """Decision per subject: excluded if any criterion is not met, else needs_review
    if any is unknown, else eligible. The first not-met criterion in protocol
    order is the attrition reason."""
    n = len(subjects)
    ids = [r.criterion.id for r in results]
    failed_bits = np.zeros(n, dtype=np.int64)
    unknown_bits = np.zeros(n, dtype=np.int64)
    near_bits = np.zeros(n, dtype=np.int64)
    first_failed = np.full(n, -1, dtype=np.int64)
    first_unknown = np.full(n, -1, dtype=np.int64)
    first_margin = np.full(n, np.nan)
    for i, result in enumerate(results):
        not_met = result.state == NOT_MET
        unknown = result.state == UNKNOWN
        failed_bits |= np.where(not_met, np.int64(1) << i, 0)
        unknown_bits |= np.where(unknown, np.int64(1) << i, 0)
        within = result.criterion.near_miss_within
        if within is not None:
            near = not_met & (np.abs(result.margin) <= within)
            near_bits |= np.where(near, np.int64(1) << i, 0)
        take = not_met & (first_failed < 0)
        first_failed[take] = i
        first_margin[take] = result.margin[take]
        first_unknown[unknown & (first_unknown < 0)] = i
    excluded, review = DECISIONS.index("excluded"), DECISIONS.index("needs_review")
    decision = np.select(  # codes into DECISIONS
        [failed_bits != 0, unknown_bits != 0],
        [excluded, review],
        default=DECISIONS.index("eligible"),
    )
    # Texts per distinct case, picked per subject by code (no per-row string work).
    titles = [f"{r.criterion.id}: {r.criterion.title}" for r in results]
    k = len(results)
    reasons = ["all criteria met", *(f"not met: {t}" for t in titles)]
    reasons += [f"cannot decide: {t}" for t in titles]
    reason = np.select(
        [decision == excluded, decision == review],
        [1 + first_failed, 1 + k + first_unknown],
        default=0,
    )
    out = subjects.copy()
    out.insert(1, "decision", pd.Categorical.from_codes(decision, categories=list(DECISIONS)))
    # Empty text (not null) where nothing failed, as the CSV has always shown it.
    out["first_failed_criterion"] = categorical(
        [*ids, ""], np.where(first_failed < 0, k, first_failed)
    )
    out["first_failed_margin"] = first_margin
    out["failed_criteria"] = join_flags(failed_bits, ids)
    out["unknown_criteria"] = join_flags(unknown_bits, ids)
    out["near_miss_criteria"] = join_flags(near_bits, ids)
    out["reason"] = categorical(reasons, reason)
    out["assumptions"] = _assumptions(subjects, results)
    return out


def _assumptions(subjects: pd.DataFrame, results: list[CriterionResult]) -> pd.Categorical:
    """Per subject: the assumption codes its decision rests on (`reasons.ASSUMPTIONS` of
    the counted failed trials, and `criterion_assumed` for a criterion resolved from
    unknown by its `when_unknown`)."""
    n = len(subjects)
    bits = np.zeros(n, dtype=np.int64)
    if ASSUMPTION_BITS in subjects.columns:
        bits = subjects[ASSUMPTION_BITS].to_numpy(dtype=np.int64)
    resolved = np.zeros(n, dtype=bool)
    for result in results:
        resolved |= result.resolved
    bits = bits | np.where(resolved, np.int64(1) << len(ASSUMPTIONS), np.int64(0))
    names = [*ASSUMPTIONS, CRITERION_ASSUMED, *SUBJECT_ASSUMPTIONS]
    return join_flags(bits, names)


def ledger(subjects: pd.DataFrame, results: list[CriterionResult]) -> pd.DataFrame:
    """Subject x criterion: outcome, observed value, threshold and margin.

    Rows are subject-major in protocol order (`subjects` is sorted by id), laid
    out directly: row i*k + j is subject i, criterion j.
    """
    n, k = len(subjects), len(results)

    def interleave(per_criterion: list[np.ndarray]) -> np.ndarray:
        if not per_criterion:
            return np.zeros(0)
        return np.stack(per_criterion, axis=1).reshape(n * k)

    def text(values: pa.Array) -> pd.api.extensions.ExtensionArray:
        return pd.array(values, dtype="str")

    per_criterion = np.tile(np.arange(k), n)  # criterion of each row

    def of_criterion(values: list[str]) -> pd.Categorical:
        """One text per criterion, repeated on each of its rows."""
        return categorical(values, per_criterion)

    texts = [  # observed values as text (booleans too), the way a str column holds them
        pa.array(pd.array(r.observed_text, dtype="str")).cast(pa.string())
        if r.observed_text is not None
        else pa.nulls(n, pa.string())
        for r in results
    ]
    # Criterion-major concatenation, read back subject-major.
    subject_major = (np.arange(k)[None, :] * n + np.arange(n)[:, None]).reshape(n * k)
    ids = pa.array(subjects["subject_id"].array, pa.string())
    return pd.DataFrame(
        {
            "subject_id": text(ids.take(np.repeat(np.arange(n), k))),
            "order": (per_criterion + 1).astype(np.int64),
            "criterion_id": of_criterion([r.criterion.id for r in results]),
            "kind": of_criterion([r.criterion.kind for r in results]),
            "outcome": labels(interleave([r.state for r in results]).astype(np.int8)),
            "resolved_from_unknown": interleave([r.resolved for r in results]).astype(bool),
            "observed_value": interleave([r.observed for r in results]).astype(np.float64),
            "observed_max": interleave([r.observed_max for r in results]).astype(np.float64),
            "observed_text": text(
                pa.concat_arrays(texts).take(subject_major) if texts else pa.array([], pa.string())
            ),
            "threshold": of_criterion([threshold_text(r.criterion) for r in results]),
            "margin": interleave([r.margin for r in results]).astype(np.float64),
        }
    )


def attrition(decisions: pd.DataFrame, results: list[CriterionResult]) -> pd.DataFrame:
    """CONSORT-style counts in protocol order, plus what each criterion alone excludes; the
    needs_review and eligible rows also count the decisions resting on assumptions."""
    total = len(decisions)
    # One tally per column (categoricals: counted on their codes), not a text
    # comparison per subject and criterion.
    first = decisions["first_failed_criterion"].value_counts(sort=False)
    failed_count = np.zeros(total, dtype=np.int64)
    for result in results:
        failed_count += result.state == NOT_MET
    rows = [
        {
            "step": 0,
            "criterion_id": "",
            "title": "screened",
            "excluded_at_step": 0,
            "remaining": total,
            "not_met_total": 0,
            "unknown_total": 0,
            "excluded_only_by_this": 0,
            "with_assumptions": 0,
        }
    ]
    remaining = total
    for step, result in enumerate(results, start=1):
        criterion = result.criterion
        here = int(first.get(criterion.id, 0))
        remaining -= here
        not_met = result.state == NOT_MET
        rows.append(
            {
                "step": step,
                "criterion_id": criterion.id,
                "title": criterion.title,
                "excluded_at_step": here,
                "remaining": remaining,
                "not_met_total": int(not_met.sum()),
                "unknown_total": int((result.state == UNKNOWN).sum()),
                "excluded_only_by_this": int((not_met & (failed_count == 1)).sum()),
                "with_assumptions": 0,
            }
        )
    decision = decisions["decision"].value_counts(sort=False)
    assumed = decisions.loc[decisions["assumptions"] != "", "decision"].value_counts(sort=False)
    for label in ("needs_review", "eligible"):
        rows.append(
            {
                "step": len(results) + (1 if label == "needs_review" else 2),
                "criterion_id": "",
                "title": label,
                "excluded_at_step": 0,
                "remaining": int(decision.get(label, 0)),
                "not_met_total": 0,
                "unknown_total": 0,
                "excluded_only_by_this": 0,
                "with_assumptions": int(assumed.get(label, 0)),
            }
        )
    table = pd.DataFrame(rows)
    for name in ("criterion_id", "title"):
        table[name] = table[name].astype("str")
    return table


def assumption_counts(attrition: pd.DataFrame) -> dict[str, int]:
    """Decisions resting on assumptions, by decision (eligible, needs_review), read from the
    attrition table (so a run screened in parts counts them the same way)."""
    last = attrition[attrition["criterion_id"] == ""].set_index("title")["with_assumptions"]
    return {label: int(last.get(label, 0)) for label in ("eligible", "needs_review")}
