"""Checks of JSON values in bulk for the decoders' fast paths: a column of one field across many messages at a
time, as strict as the pydantic payload schemas and never stricter in a way that changes a value.

The fast paths never refuse anything: a value they cannot vouch for sends the whole message to the schemas."""

from __future__ import annotations

import re
from itertools import repeat
from typing import Any

import numpy as np
import orjson

# Strict pydantic: a float field takes JSON ints and floats (not bools, not strings); an int field only ints.
NUM = frozenset((int, float))
NUM_OR_NONE = frozenset((int, float, type(None)))
INT_OR_NONE = frozenset((int, type(None)))
STR_OR_NONE = frozenset((str, type(None)))
BOOL_OR_NONE = frozenset((bool, type(None)))
DICT_OR_NONE = frozenset((dict, type(None)))
LIST_OR_NONE = frozenset((list, type(None)))
# devices.schemas.Id: checked once per topic (or per distinct value), never per message.
ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def loads_or_none(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def get(dicts: list[dict], key: str) -> list:
    return list(map(dict.get, dicts, repeat(key)))


def bad_types(col: list, allowed: frozenset) -> np.ndarray | None:
    """Positions whose value has a type outside `allowed`, or None when all fit (the usual case)."""
    if set(map(type, col)) <= allowed:
        return None
    return np.fromiter((type(v) not in allowed for v in col), dtype=bool, count=len(col))


def floats(col: list, bad: np.ndarray | None) -> np.ndarray:
    """A column of ints, floats and None as float64 (None → NaN); `bad` positions (other types) become NaN."""
    if bad is not None:
        col = [None if b else v for v, b in zip(col, bad.tolist(), strict=True)]
    return np.array(col, dtype=np.float64)


def in_range(x: np.ndarray, lo: float | None, hi: float | None, optional: bool) -> np.ndarray:
    """True where x is a finite number within [lo, hi] (or NaN, i.e. absent, when optional)."""
    with np.errstate(invalid="ignore"):
        good = np.isfinite(x)
        if lo is not None:
            good &= x >= lo
        if hi is not None:
            good &= x <= hi
    return good | np.isnan(x) if optional else good
