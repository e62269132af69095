"""Protocol criteria as a rule set declares them: one comparison over a subject column,
or a group of comparisons (`any_of`, `all_of`), with the operator vocabulary. The base
model of every rule-set section lives here too. Evaluation is `trdscreen.criteria`."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from trdscreen.vocabulary import Evidence, HamdVersion, Resolution, Scalar


class Op(StrEnum):
    """The closed vocabulary of criterion operators."""

    eq = "eq"
    ne = "ne"
    in_ = "in"
    not_in = "not_in"
    lt = "lt"
    le = "le"
    gt = "gt"
    ge = "ge"
    between = "between"
    is_null = "is_null"
    not_null = "not_null"


NUMERIC_OPS = {Op.lt, Op.le, Op.gt, Op.ge, Op.between}


class RuleModel(BaseModel):
    """A rule-set section: frozen, strict about unknown keys, no infinities or NaN."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False, allow_inf_nan=False)

    ADDED_LATER: ClassVar[dict[str, tuple[object, tuple[str, ...]]]] = {}
    """Keys a later version added to the section: key -> (the value that reads as before,
    keys left out with it). At that value they are left out of the normalized rule set,
    so a rule file written before them hashes as it did."""

    @model_serializer(mode="wrap")
    def _as_before(self, handler: SerializerFunctionWrapHandler) -> dict:
        data = handler(self)
        for key, (unset, dropped_with) in self.ADDED_LATER.items():
            if key in data and data[key] == unset:
                for name in (key, *dropped_with):
                    data.pop(name, None)
        return data


_ID = re.compile(r"^[A-Z][A-Z0-9]*(-[A-Z0-9]+)*$")


class Condition(RuleModel):
    """One comparison over one subject column (a criterion, or a member of its group)."""

    column: str = Field(min_length=1)
    op: Op
    value: Scalar | list[Scalar] | None = None
    hamd_versions: tuple[HamdVersion, ...] = Field(
        (17,),
        min_length=1,
        description=(
            "for a HAM-D column (hamd_screening): the versions the value is written for; a "
            "subject rated on another (subjects column hamd_version, 17 when empty) is unknown"
        ),
    )

    @property
    def values(self) -> list[Scalar]:
        """The value as a list: one value, or the values of in, not_in and between."""
        if self.value is None:
            return []
        return list(self.value) if isinstance(self.value, list) else [self.value]

    @model_validator(mode="after")
    def _value_fits_op(self) -> Condition:
        value, op = self.value, self.op
        if op in (Op.is_null, Op.not_null):
            if value is not None:
                raise ValueError(f"op {op.value} takes no value")
        elif op is Op.between:
            if not (
                isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)
            ):
                raise ValueError("op between takes value: [low, high] (two numbers)")
            if float(value[0]) > float(value[1]):
                raise ValueError("op between needs low <= high")
        elif op in (Op.in_, Op.not_in):
            if not (isinstance(value, list) and value):
                raise ValueError(f"op {op.value} takes a non-empty list of values")
        elif op in NUMERIC_OPS:
            if not _is_number(value):
                raise ValueError(f"op {op.value} takes a number")
        elif value is None or isinstance(value, list):
            raise ValueError(f"op {op.value} takes one value (number, text or true/false)")
        return self


class Criterion(RuleModel):
    id: str = Field(description="stable id, never reused (e.g. TRD-MIN, AGE, EX-BIPOLAR)")
    title: str = Field(min_length=1, max_length=120)
    source: str = Field(min_length=1)
    evidence: Evidence | None = None
    kind: Literal["inclusion", "exclusion"] = "inclusion"
    column: str | None = Field(None, min_length=1)
    op: Op | None = None
    value: Scalar | list[Scalar] | None = None
    hamd_versions: tuple[HamdVersion, ...] = Field((17,), min_length=1)
    any_of: tuple[Condition, ...] | None = Field(
        None, min_length=2, description="met when any condition is met (instead of column/op)"
    )
    all_of: tuple[Condition, ...] | None = Field(
        None, min_length=2, description="met when every condition is met (instead of column/op)"
    )
    when_unknown: Resolution = "unknown"
    near_miss_within: float | None = Field(None, gt=0)
    aliases: tuple[str, ...] = ()

    @field_validator("id")
    @classmethod
    def _id_shape(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("ids are upper-case words joined by '-', e.g. TRD-MIN or EX-BIPOLAR")
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Criterion:
        groups = [g for g in (self.any_of, self.all_of) if g is not None]
        single = self.column is not None or self.op is not None or self.value is not None
        if groups:
            if single or len(groups) > 1:
                raise ValueError(
                    "give either column/op/value or one group (any_of or all_of), not both"
                )
            if self.near_miss_within is not None:
                raise ValueError("near_miss_within applies to a single numeric comparison")
            return self
        if self.column is None or self.op is None:
            raise ValueError("give column and op (or a group: any_of or all_of)")
        Condition(column=self.column, op=self.op, value=self.value)  # the same checks
        if self.near_miss_within is not None and self.op not in NUMERIC_OPS:
            raise ValueError("near_miss_within applies to numeric operators only")
        return self

    @property
    def group(self) -> str | None:
        """ "any_of" or "all_of" for a group criterion, else None."""
        return "any_of" if self.any_of is not None else "all_of" if self.all_of else None

    @property
    def conditions(self) -> tuple[Condition, ...]:
        """The comparisons this criterion makes (one, or its group's)."""
        if self.any_of is not None:
            return self.any_of
        if self.all_of is not None:
            return self.all_of
        assert self.column is not None and self.op is not None
        return (
            Condition(
                column=self.column, op=self.op, value=self.value, hamd_versions=self.hamd_versions
            ),
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """The subject columns this criterion reads."""
        return tuple(dict.fromkeys(c.column for c in self.conditions))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
