"""Timestamps of meter readings read in bulk exactly as the payload schema reads them one at a time: RFC 3339
strings in the two common layouts parsed as a byte matrix, epoch seconds as integers, anything else through the
schema's own parser."""

from __future__ import annotations

import numpy as np

from devices.schemas import TS_MAX, TS_MIN, check_ts_range, parse_timestamp
from devices.time import NS

_TS_MIN_NS = int(TS_MIN.timestamp()) * NS
_TS_MAX_NS = int(TS_MAX.timestamp()) * NS
_FEW_TS = 16

# RFC 3339 layouts parsed in bulk: `YYYY-MM-DDTHH:MM:SSZ` and `YYYY-MM-DDTHH:MM:SS±hh:mm`. Anything else
# (fractions, other separators, lower-case z…) goes through the schema's own parser one value at a time.
_DIGITS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_PUNCT = {4: ord("-"), 7: ord("-"), 10: ord("T"), 13: ord(":"), 16: ord(":")}



def _ns(t) -> int:
    # datetime → int ns without float rounding: whole seconds plus microseconds.
    return int(t.timestamp()) * NS + t.microsecond * 1000 if t.microsecond else int(t.timestamp()) * NS



def _rfc3339_bulk(strs: list[str], width: int) -> tuple[np.ndarray, np.ndarray]:
    """(ns, ok) for strings all `width` (20 or 25) characters long; ok False where the layout does not hold."""
    n = len(strs)
    # One byte per character: anything not ASCII becomes "?", which fails the layout check below.
    raw = "".join(strs).encode("ascii", "replace")
    a = np.frombuffer(raw, np.uint8).reshape(n, width)
    d = a.astype(np.int64) - 48
    dig = d[:, _DIGITS]
    ok = ((dig >= 0) & (dig <= 9)).all(axis=1)
    for pos, ch in _PUNCT.items():
        ok &= a[:, pos] == ch
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 5] * 10 + d[:, 6]
    day = d[:, 8] * 10 + d[:, 9]
    hour = d[:, 11] * 10 + d[:, 12]
    minute = d[:, 14] * 10 + d[:, 15]
    second = d[:, 17] * 10 + d[:, 18]
    ok &= (month >= 1) & (month <= 12) & (day >= 1) & (hour <= 23) & (minute <= 59) & (second <= 59)
    ok &= (year >= 1) & (year <= 9999)
    months = np.where(ok, (year - 1970) * 12 + month - 1, 0)
    first = months.astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)
    days_in_month = (months + 1).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64) - first
    ok &= day <= days_in_month
    secs = (first + day - 1) * 86400 + hour * 3600 + minute * 60 + second
    if width == 20:
        ok &= a[:, 19] == ord("Z")
    else:
        sign = a[:, 19]
        ok &= ((sign == ord("+")) | (sign == ord("-"))) & (a[:, 22] == ord(":"))
        off = d[:, [20, 21, 23, 24]]
        ok &= ((off >= 0) & (off <= 9)).all(axis=1)
        off_h = off[:, 0] * 10 + off[:, 1]
        off_m = off[:, 2] * 10 + off[:, 3]
        ok &= (off_h <= 23) & (off_m <= 59)
        secs -= np.where(sign == ord("-"), -1, 1) * (off_h * 3600 + off_m * 60)
    ns = secs * NS
    ok &= (ns >= _TS_MIN_NS) & (ns < _TS_MAX_NS)
    return ns, ok


def _timestamps(col: list) -> tuple[np.ndarray, np.ndarray]:
    """(ns, ok) for a column of `ts` values exactly as devices.schemas.Timestamp reads them."""
    n = len(col)
    ns = np.zeros(n, np.int64)
    ok = np.zeros(n, bool)
    types = set(map(type, col))
    if types == {str}:
        # Readings of one hour share their timestamp across meters: parse each distinct string once.
        distinct = list(dict.fromkeys(col))
        if len(distinct) * 2 <= n:
            ns, ok = _timestamps(distinct)
            if len(distinct) == 1:
                return np.full(n, ns[0]), np.full(n, ok[0])
            where = dict(zip(distinct, range(len(distinct)), strict=True))
            at = np.fromiter(map(where.__getitem__, col), np.intp, n)
            return ns[at], ok[at]
        lengths = np.fromiter(map(len, col), np.int64, n)
        rest = np.ones(n, bool)
        # A handful of strings (the distinct hours of a group) costs less through the schema's own parser
        # than the fixed cost of the bulk one.
        for width in (20, 25) if n > _FEW_TS else ():
            at = np.flatnonzero(lengths == width)
            if len(at) == 0:
                continue
            part = col if len(at) == n else [col[i] for i in at.tolist()]
            got, good = _rfc3339_bulk(part, width)
            ns[at], ok[at] = got, good
            rest[at[good]] = False
        slow = np.flatnonzero(rest).tolist()
    elif types == {int}:
        v = np.array(col, dtype=object)  # ints beyond int64 must not overflow
        inside = (v >= _TS_MIN_NS // NS) & (v < _TS_MAX_NS // NS)
        ok = inside.astype(bool)
        ns[ok] = v[ok].astype(np.int64) * NS
        slow = []
    else:
        slow = range(n)
    for i in slow:
        # the schema's own parser: fractions, epoch floats, the many forms fromisoformat accepts
        try:
            ns[i] = _ns(check_ts_range(parse_timestamp(col[i])))
            ok[i] = True
        except (ValueError, TypeError, OverflowError):
            pass
    return ns, ok
