"""What the report draws from: the registry and the decoded readings of the meters it shows, read from the
capture in one filtered pass; and the choice of one example alert of each kind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from devices.time import DAY_NS, NS, parse_iso_ns


def _ns(text: Any) -> int | None:
    if not isinstance(text, str):
        return None
    try:
        return parse_iso_ns(text)
    except ValueError:
        return None


class Data:
    """Registry plus the decoded readings of the meters asked for and every device event, from one filtered pass
    over the capture (ids cut out of the topic, the rest of a line parsed only when kept); a pump room's telemetry
    is read on demand by a second pass, so memory stays small whatever the capture's size."""

    def __init__(self, registry_dir: Path, capture: Path, meters: set[str]):
        from devices.messages import RawMessage
        from devices.registry import Registry
        from devices.topics import TopicLayout
        from ingest.pipeline.decode import Decoder

        self.reg = Registry.load(registry_dir)
        self.capture = capture
        wanted = {m.encode() for m in meters}
        keep: list[RawMessage] = []
        prefix = b"water"
        for parts, line in _topics(capture):
            if parts[2] == b"pumproom" and parts[4].startswith(b"telemetry"):
                continue
            if parts[3] in wanted or parts[4].startswith(b"event"):
                prefix = parts[0]
                keep.append(_raw(line, RawMessage))
        self.decoder = Decoder(self.reg, TopicLayout(prefix.decode()))
        batch, _ = self.decoder.decode(keep)
        self.events = batch.events
        m = batch.meters
        self.m = m.take(np.lexsort((m.ts_ns, m.meter)))
        self._rooms = None

    def meter(self, idx: int):
        lo, hi = np.searchsorted(self.m.meter, [idx, idx + 1])
        return self.m.take(np.arange(lo, hi))

    def rooms(self):
        """Every pump room's telemetry (tanks, doors, pumps) as one batch, decoded on first use by a second pass
        over the capture."""
        if self._rooms is None:
            from devices.batch import Batch
            from devices.messages import RawMessage

            parts, lines = [], []
            for topic, line in _topics(self.capture):
                if topic[2] == b"pumproom" and topic[4].startswith(b"telemetry"):
                    lines.append(_raw(line, RawMessage))
                    if len(lines) == 20_000:
                        parts.append(self.decoder.decode(lines)[0])
                        lines = []
            parts.append(self.decoder.decode(lines)[0])
            self._rooms = Batch.concat(parts)
        return self._rooms

    def tank(self, idx: int):
        """Readings of one tank, in time order."""
        tanks = self.rooms().tanks
        t = tanks.take(tanks.tank == idx)
        return t.take(np.argsort(t.ts_ns, kind="stable"))


def _topics(capture: Path):
    """(topic levels, line) of each capture line; the topic is cut out of the line's head without parsing JSON."""
    import orjson

    with capture.open("rb") as fh:
        for line in fh:
            if line.startswith(b'{"topic":"'):  # the simulator's compact form: no JSON parsing needed
                parts = line[10:120].split(b"/", 5)
            else:  # any other spacing or key order (capture files allow it)
                try:
                    topic = orjson.loads(line).get("topic")
                except (orjson.JSONDecodeError, AttributeError):
                    continue
                if not isinstance(topic, str):
                    continue
                parts = topic.encode().split(b"/", 5)
            if len(parts) >= 5:
                yield parts, line


def _raw(line: bytes, raw_message: Any):
    import orjson

    rec = orjson.loads(line)
    p = rec["payload"]
    return raw_message(rec["topic"], p.encode() if isinstance(p, str) else orjson.dumps(p))


def _local_day(ts_ns: np.ndarray, zone: ZoneInfo, ref_ns: int) -> np.ndarray:
    """Local calendar day number (days since epoch) of each timestamp; one offset is enough for a report."""
    off = zone.utcoffset(dt.datetime.fromtimestamp(ref_ns / NS)) or dt.timedelta(0)
    return (np.asarray(ts_ns, dtype=np.int64) + int(off.total_seconds()) * NS) // DAY_NS


def _day_start_ns(day: int, zone: ZoneInfo, ref_ns: int) -> int:
    off = zone.utcoffset(dt.datetime.fromtimestamp(ref_ns / NS)) or dt.timedelta(0)
    return int(day) * DAY_NS - int(off.total_seconds()) * NS


def _daily_use(r, zone: ZoneInfo, ref_ns: int, days: np.ndarray) -> np.ndarray:
    """m³ used per local day: the register's last value of each day minus the day before's (NaN where unknown,
    and where the register went backwards or jumped as after a replacement or rollover)."""
    out = np.full(len(days), np.nan)
    if len(r.ts_ns) == 0:
        return out
    d = _local_day(r.ts_ns, zone, ref_ns)
    last = np.r_[d[1:] != d[:-1], True]
    day_v = dict(zip(d[last].tolist(), r.total_m3[last].tolist(), strict=True))
    end = np.array([day_v.get(int(x), np.nan) for x in days])
    prev = np.r_[np.nan, end[:-1]]
    use = end - prev
    use[(use < 0) | (use > 50)] = np.nan
    return use


# ---------------------------------------------------------------------------------------------------------
# the report


def _pick(alerts: list[dict], kind: str, labels: list[dict] | None, prefer=None) -> dict | None:
    """A raised alert of `kind` to draw: one that matches a label if labels are known, `prefer` breaking ties."""
    raised = [a for a in alerts if a.get("event") == "raised" and a.get("kind") == kind]
    if not raised:
        return None
    labelled = set()
    for lab in labels or []:
        if lab.get("kind") == kind:
            labelled.add((lab.get("subject") or {}).get("id"))

    def score(a: dict) -> tuple:
        return (((a.get("subject") or {}).get("id") in labelled), bool(prefer and prefer(a)))

    return max(raised, key=score)


def pick_examples(alerts: list[dict], labels: list[dict] | None) -> dict[str, dict | None]:
    """The alert drawn for each kind: a labelled one when labels are known, the most telling otherwise."""
    ev = lambda a: a.get("evidence") or {}  # noqa: E731
    return {
        "signal_blocking": _pick(alerts, "signal_blocking", labels, lambda a: ev(a).get("rsrp_sank")),
        "network_outage": _pick(alerts, "network_outage", labels),
        "reverse_flow": _pick(alerts, "reverse_flow", labels, lambda a: (ev(a).get("volume_reversed_m3") or 0) > 1),
        "bypass": _pick(alerts, "bypass", labels),
        "disinfection_overdue": _pick(alerts, "disinfection_overdue", labels),
        "water_quality": _pick(alerts, "water_quality", labels, lambda a: a.get("severity") == "critical"),
        "pump_room_intrusion": _pick(alerts, "pump_room_intrusion", labels, lambda a: ev(a).get("night")),
    }


def _peers(reg: Any, m: int, n: int = 24) -> list[int]:
    """Up to n other meters of meter m's cell, spread over the cell's list."""
    peers = [int(i) for i in np.flatnonzero((reg.meters.cell == reg.meters.cell[m]) & (np.arange(len(reg.meters)) != m))]
    return peers[:: max(1, len(peers) // n)][:n]


def _cell_rows(reg: Any, cell_id: str, n: int = 30) -> list[int]:
    cells = np.flatnonzero(np.asarray(reg.cell_ids) == cell_id)
    if not len(cells):
        return []
    members = [int(i) for i in np.flatnonzero(reg.meters.cell == cells[0])]
    # hourly meters show an outage best; daily uploads hide it inside their batch
    hourly = [i for i in members if reg.meters.report_interval_s[i] <= 3600]
    return (hourly or members)[:n]


def _meters_needed(picks: dict[str, dict | None], reg: Any) -> set[str]:
    ids: set[str] = set()
    for kind, a in picks.items():
        if a is None:
            continue
        sid = a["subject"]["id"]
        m = reg.meters.index.get(sid)
        if kind == "network_outage":
            ids.update(str(reg.meters.ids[i]) for i in _cell_rows(reg, sid))
        elif m is not None:
            ids.add(sid)
            if kind == "signal_blocking":
                ids.update(str(reg.meters.ids[i]) for i in _peers(reg, m))
            if kind == "bypass" and reg.meters.building[m] >= 0:
                ids.update(str(x) for x in reg.meters.ids[reg.meters.building == reg.meters.building[m]])
    return ids


