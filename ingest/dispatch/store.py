"""The dispatcher's durable state under CISTERN_STATE_DIR: cases, their events, every action on them and the delivery
outbox.

One SQLite file (standard library, WAL mode, schema version in schema.py) shared by the service's threads and by
`cistern ack` / `cistern cases`; every change is a transaction, so a crash or a restart loses neither a case's
lifecycle nor an undelivered alert.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

from ingest.dispatch.schema import SCHEMA_VERSION, SchemaError, prepare

__all__ = ["DB_NAME", "Incident", "OutboxRow", "SchemaError", "Store"]
DB_NAME = "dispatch.sqlite"


@dataclass
class Incident:
    alert_id: str
    kind: str
    subject_type: str
    subject_id: str
    district: str
    open: bool
    seq: int
    severity: str
    start_ns: int
    raised_ns: int
    sent_ns: int
    closed_ns: int | None
    due_ns: int | None
    leads_done: list[int]
    reminders: int
    next_ns: int | None
    grow_ns: int | None
    ack_by: str | None
    ack_ns: int | None
    ack_note: str | None
    summary: str
    evidence: dict[str, Any]
    route: dict[str, Any]
    cap_ref: str | None
    level: int = 1
    level_reminders: int = 0
    ack_due_ns: int | None = None
    resolve_due_ns: int | None = None
    reopened_ns: int | None = None
    result: str | None = None
    closed_by: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_row(cls, row: sqlite3.Row | dict[str, Any]) -> Incident:
        d = dict(row)
        d["open"] = bool(d["open"])
        for k in JSON_COLUMNS:
            d[k] = orjson.loads(d[k])
        return cls(**d)

    def row(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["open"] = int(self.open)
        for k in JSON_COLUMNS:
            d[k] = orjson.dumps(d[k], option=orjson.OPT_SERIALIZE_NUMPY).decode()
        return d

    @property
    def acknowledged(self) -> bool:
        return self.ack_ns is not None

    @property
    def escalated(self) -> bool:
        return self.level > 1

    def take_ack(self, by: str, note: str, at_ns: int, via: str) -> None:
        """The first acknowledgement: from now on the case runs on its deadline to resolve. The reminders it had at
        its level were answered, and its next reminder is worked out on that clock by the dispatcher (a tank's
        due-soon reminders keep their dates)."""
        self.ack_by, self.ack_ns, self.ack_note = by, at_ns, note
        self.level_reminders = 0
        if self.kind != "disinfection_due_soon" and self.next_ns is not None:
            # looked at again from the acknowledgement, or just after the last event sent when the acknowledgement
            # carries an earlier time: schedule.due moves it on to the resolve clock's next point from there
            self.next_ns = max(at_ns, self.sent_ns + 1)
        self.history.append({"step": "acknowledged", "at_ns": at_ns, "by": by, "via": via, "level": self.level})

    @property
    def deadline_ns(self) -> int | None:
        """When the current step is due: acknowledging, or once acknowledged, resolving."""
        return self.resolve_due_ns if self.acknowledged else self.ack_due_ns


JSON_COLUMNS = ("leads_done", "evidence", "route", "history")


@dataclass
class OutboxRow:
    id: int
    sink: str
    alert_id: str
    idem: str
    topic: str
    content_type: str
    body: bytes
    attempts: int


class Store:
    """Thread-safe access to the dispatch database; one connection guarded by a lock (the volume is small)."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / DB_NAME
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed outbox row survives a power cut, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            self.found_version = prepare(self._db, self.path)
        except BaseException:
            self._db.close()
            raise

    @classmethod
    def reader(cls, state_dir: Path) -> Store:
        """A second, read-only connection to the same file (WAL: reads do not wait for the writer's transaction)."""
        self = cls.__new__(cls)
        self.path = state_dir / DB_NAME
        self._lock = threading.RLock()
        self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30.0, isolation_level=None,
                                   check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self.found_version = SCHEMA_VERSION
        return self

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; IMMEDIATE so that a concurrent `cistern ack` waits instead of failing mid-way."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ---- incidents ---------------------------------------------------------------------------------------------
    def resolve(self, db: sqlite3.Connection, alert_id: str) -> str:
        row = db.execute("SELECT alert_id FROM aliases WHERE alias = ?", (alert_id,)).fetchone()
        return row[0] if row else alert_id

    def get(self, db: sqlite3.Connection, alert_id: str) -> Incident | None:
        row = db.execute("SELECT * FROM incidents WHERE alert_id = ?", (alert_id,)).fetchone()
        return Incident.from_row(row) if row else None

    def open_for(self, db: sqlite3.Connection, kind: str, subject_type: str, subject_id: str) -> Incident | None:
        row = db.execute("SELECT * FROM incidents WHERE kind = ? AND subject_type = ? AND subject_id = ? AND open = 1",
                         (kind, subject_type, subject_id)).fetchone()
        return Incident.from_row(row) if row else None

    def save(self, db: sqlite3.Connection, inc: Incident) -> None:
        d = inc.row()
        cols = ", ".join(d)
        marks = ", ".join(f":{k}" for k in d)
        db.execute(f"INSERT OR REPLACE INTO incidents ({cols}) VALUES ({marks})", d)

    def alias(self, db: sqlite3.Connection, alias: str, alert_id: str) -> None:
        if alias != alert_id:
            db.execute("INSERT OR REPLACE INTO aliases (alias, alert_id) VALUES (?, ?)", (alias, alert_id))

    def due(self, db: sqlite3.Connection, now_ns: int, growth: bool = True) -> list[Incident]:
        rows = db.execute("SELECT * FROM incidents WHERE open = 1 AND (next_ns <= ? OR grow_ns <= ?) "
                          "ORDER BY raised_ns", (now_ns, now_ns if growth else -1)).fetchall()
        return [Incident.from_row(r) for r in rows]

    def incidents_to_clock(self, db: sqlite3.Connection) -> list[Incident]:
        """Open cases with no deadlines (from schema version 1) or no next reminder (acknowledged, or at the top
        level, under an older release; or of a kind that gets no reminders)."""
        rows = db.execute("SELECT * FROM incidents WHERE open = 1 AND (ack_due_ns IS NULL OR next_ns IS NULL)")
        return [Incident.from_row(r) for r in rows.fetchall()]

    def forget_incidents(self) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM incidents")
            db.execute("DELETE FROM aliases")
            db.execute("DELETE FROM case_events")

    def last_closed(self, db: sqlite3.Connection, kind: str, subject_type: str, subject_id: str) -> Incident | None:
        row = db.execute("SELECT * FROM incidents WHERE kind = ? AND subject_type = ? AND subject_id = ? AND open = 0 "
                         "ORDER BY closed_ns DESC LIMIT 1", (kind, subject_type, subject_id)).fetchone()
        return Incident.from_row(row) if row else None

    def record_event(self, db: sqlite3.Connection, alert_id: str, seq: int, event: str, at_ns: int,
                     body: bytes) -> None:
        db.execute("INSERT INTO case_events (alert_id, seq, event, at_ns, body) VALUES (?,?,?,?,?)",
                   (alert_id, seq, event, at_ns, body))

    def set_clock(self, db: sqlite3.Connection, now_ns: int) -> None:
        """The newest event time the dispatcher has seen (what `cistern cases` judges lights by, with the wall clock)."""
        db.execute("INSERT INTO meta (key, value) VALUES ('clock_ns', ?) ON CONFLICT(key) DO UPDATE SET "
                   "value = MAX(value, excluded.value)", (int(now_ns),))

    def clock(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'clock_ns'").fetchone()
            return int(row[0]) if row else None

    # ---- actions (who did what, when) --------------------------------------------------------------------------
    def record_action(self, db: sqlite3.Connection, alert_id: str, action: str, by: str, note: str, at_ns: int,
                      via: str, known: bool = True, result: str | None = None) -> None:
        db.execute("INSERT INTO actions (alert_id, action, by, note, result, at_ns, via, recorded, known) "
                   "VALUES (?,?,?,?,?,?,?,?,?)", (alert_id, action, by, note, result, at_ns, via, time.time(),
                                                  int(known)))

    def record_ack(self, alert_id: str, by: str, note: str, at_ns: int, via: str) -> tuple[bool, Incident | None]:
        """Record an acknowledgement; returns (known incident, the incident after the ack)."""
        with self.tx() as db:
            aid = self.resolve(db, alert_id)
            inc = self.get(db, aid)
            self.record_action(db, aid, "ack", by, note, at_ns, via, inc is not None)
            if inc is None:
                return False, None
            if inc.ack_ns is None:  # the first acknowledgement stands; later ones are kept in the actions table
                inc.take_ack(by, note, at_ns, via)
                self.save(db, inc)
            return True, inc

    def acks(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.actions(alert_id) if a["action"] == "ack"]

    def actions(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if alert_id is None:
                rows = self._db.execute("SELECT * FROM actions ORDER BY id").fetchall()
            else:
                rows = self._db.execute("SELECT * FROM actions WHERE alert_id = ? ORDER BY id", (alert_id,)).fetchall()
            return [dict(r) for r in rows]

    def events(self, alert_id: str) -> list[bytes]:
        """A case's events in order, as the outputs got them."""
        with self._lock:
            rows = self._db.execute("SELECT body FROM case_events WHERE alert_id = ? ORDER BY seq, id",
                                    (alert_id,)).fetchall()
            return [bytes(r[0]) for r in rows]

    def incident(self, alert_id: str) -> Incident | None:
        with self._lock:
            return self.get(self._db, self.resolve(self._db, alert_id))

    def incidents(self, open_only: bool = False, *, kind: str | None = None, district: str | None = None,
                  closed_only: bool = False, with_evidence: bool = True) -> list[Incident]:
        """Cases, oldest raise first; `with_evidence=False` leaves the detector's evidence out (a listing)."""
        where, args = [], []
        if open_only or closed_only:
            where.append("open = ?")
            args.append(int(open_only))
        for col, v in (("kind", kind), ("district", district)):
            if v:
                where.append(f"{col} = ?")
                args.append(v)
        cols = "*" if with_evidence else ", ".join(f.name for f in fields(Incident) if f.name != "evidence")
        q = f"SELECT {cols} FROM incidents" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY raised_ns"
        with self._lock:
            rows = self._db.execute(q, args).fetchall()
        if with_evidence:
            return [Incident.from_row(r) for r in rows]
        return [Incident.from_row({**dict(r), "evidence": "{}"}) for r in rows]

    # ---- outbox ------------------------------------------------------------------------------------------------
    def enqueue(self, db: sqlite3.Connection, sink: str, alert_id: str, idem: str, topic: str, content_type: str,
                body: bytes) -> None:
        now = time.time()
        db.execute("INSERT INTO outbox (sink, alert_id, idem, topic, content_type, body, next_try, created) "
                   "VALUES (?,?,?,?,?,?,?,?)", (sink, alert_id, idem, topic, content_type, body, now, now))

    def ready(self, sink: str, now: float, limit: int = 100, ordered: bool = False) -> list[OutboxRow]:
        """Due rows of a sink, only the oldest pending row of each alert: one incident's events arrive in order,
        and a receiver that keeps refusing one incident does not hold up the others. `ordered`: the pending rows
        in outbox order, whatever their incident (one stream, such as the alerts file)."""
        with self._lock:
            if ordered:
                rows = self._db.execute(
                    "SELECT id, sink, alert_id, idem, topic, content_type, body, attempts FROM outbox "
                    "WHERE sink = ? AND delivered IS NULL AND next_try <= ? ORDER BY id LIMIT ?",
                    (sink, now, limit)).fetchall()
                return [OutboxRow(**dict(r)) for r in rows]
            rows = self._db.execute(
                "SELECT id, sink, alert_id, idem, topic, content_type, body, attempts FROM outbox o "
                "WHERE o.sink = ? AND o.delivered IS NULL AND o.next_try <= ? AND o.id = "
                "(SELECT MIN(p.id) FROM outbox p WHERE p.sink = o.sink AND p.delivered IS NULL "
                "AND p.alert_id = o.alert_id) ORDER BY o.id LIMIT ?", (sink, now, limit)).fetchall()
            return [OutboxRow(**dict(r)) for r in rows]

    def next_try(self, sink: str) -> float | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(next_try) FROM outbox WHERE sink = ? AND delivered IS NULL",
                                   (sink,)).fetchone()
            return row[0]

    def delivered(self, row_id: int) -> None:
        with self.tx() as db:
            db.execute("UPDATE outbox SET delivered = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                       (time.time(), row_id))

    def delivered_many(self, row_ids: list[int]) -> None:
        if not row_ids:
            return
        with self.tx() as db:
            db.executemany("UPDATE outbox SET delivered = ?, attempts = attempts + 1, last_error = NULL WHERE id = ?",
                           [(time.time(), i) for i in row_ids])

    def failed(self, row_id: int, error: str, next_try: float) -> None:
        with self.tx() as db:
            db.execute("UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_try = ? WHERE id = ?",
                       (error[:500], next_try, row_id))

    def retry_now(self, sink: str) -> None:
        """Make every pending row of a sink due (a drain should not sit out a long back-off)."""
        with self.tx() as db:
            db.execute("UPDATE outbox SET next_try = 0 WHERE sink = ? AND delivered IS NULL", (sink,))

    def pending(self, sinks: tuple[str, ...] | None = None) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT sink, COUNT(*) FROM outbox WHERE delivered IS NULL GROUP BY sink").fetchall()
        out = {r[0]: r[1] for r in rows}
        return {k: v for k, v in out.items() if sinks is None or k in sinks}

    def undelivered(self, limit: int = 20) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, sink, idem, attempts, last_error FROM outbox WHERE delivered IS NULL "
                                    "ORDER BY id LIMIT ?", (limit,)).fetchall()
            return [dict(r) for r in rows]

    def prune(self, older_than_s: float) -> int:
        """Forget delivered rows older than the given age (the alerts file is the long-term record)."""
        with self.tx() as db:
            cur = db.execute("DELETE FROM outbox WHERE delivered IS NOT NULL AND delivered < ?",
                             (time.time() - older_than_s,))
            return cur.rowcount
