"""The dispatcher's durable state under CISTERN_STATE_DIR: incidents, acknowledgements and the delivery outbox.

One SQLite file (standard library, WAL mode) shared by the service and `cistern ack`; every change is a transaction,
so a crash or a restart loses neither an incident's lifecycle nor an undelivered alert.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

DB_NAME = "dispatch.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    alert_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    district TEXT NOT NULL,
    open INTEGER NOT NULL,
    seq INTEGER NOT NULL,           -- events sent so far; the next one gets seq + 1
    severity TEXT NOT NULL,         -- as last sent
    start_ns INTEGER NOT NULL,
    raised_ns INTEGER NOT NULL,     -- event time of the raise
    sent_ns INTEGER NOT NULL,       -- event time of the last event sent
    closed_ns INTEGER,
    due_ns INTEGER,                 -- disinfection due date (local midnight), when known
    leads_done TEXT NOT NULL DEFAULT '[]',
    reminders INTEGER NOT NULL DEFAULT 0,
    next_ns INTEGER,                -- event time of the next reminder or escalation; NULL: none scheduled
    grow_ns INTEGER,                -- event time of the next 'evidence has grown' update; NULL: none
    escalated INTEGER NOT NULL DEFAULT 0,
    ack_by TEXT,
    ack_ns INTEGER,
    ack_note TEXT,
    summary TEXT NOT NULL,          -- the detector's latest summary
    evidence TEXT NOT NULL,         -- the detector's latest evidence (JSON), re-enriched for every event
    route TEXT NOT NULL DEFAULT '{}',
    cap_ref TEXT                    -- "sender,identifier,sent" of the first CAP message, for <references>
);
CREATE INDEX IF NOT EXISTS incidents_subject ON incidents(kind, subject_type, subject_id, open);
CREATE INDEX IF NOT EXISTS incidents_next ON incidents(open, next_ns);
CREATE INDEX IF NOT EXISTS incidents_grow ON incidents(open, grow_ns);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, alert_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS acks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    by TEXT NOT NULL,
    note TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    via TEXT NOT NULL,
    recorded REAL NOT NULL,
    known INTEGER NOT NULL          -- 1 when the alert was an incident this state folder knows
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,             -- file | webhook | mqtt
    alert_id TEXT NOT NULL,
    idem TEXT NOT NULL,             -- <alert_id>:<event>:<sequence>
    topic TEXT NOT NULL,            -- MQTT topic; empty for the webhook
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,             -- exact bytes: a retry sends (and signs) the same body
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,         -- wall clock (epoch seconds)
    created REAL NOT NULL,
    delivered REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(sink, delivered, alert_id, id);
"""


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
    escalated: bool
    ack_by: str | None
    ack_ns: int | None
    ack_note: str | None
    summary: str
    evidence: dict[str, Any]
    route: dict[str, Any]
    cap_ref: str | None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Incident:
        d = dict(row)
        d["open"] = bool(d["open"])
        d["escalated"] = bool(d["escalated"])
        d["leads_done"] = orjson.loads(d["leads_done"])
        d["evidence"] = orjson.loads(d["evidence"])
        d["route"] = orjson.loads(d["route"])
        return cls(**d)

    def row(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["open"] = int(self.open)
        d["escalated"] = int(self.escalated)
        d["leads_done"] = orjson.dumps(self.leads_done).decode()
        d["evidence"] = orjson.dumps(self.evidence, option=orjson.OPT_SERIALIZE_NUMPY).decode()
        d["route"] = orjson.dumps(self.route).decode()
        return d

    @property
    def acknowledged(self) -> bool:
        return self.ack_ns is not None


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
        self._db.executescript(SCHEMA)

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

    def due(self, db: sqlite3.Connection, now_ns: int) -> list[Incident]:
        rows = db.execute("SELECT * FROM incidents WHERE open = 1 AND (next_ns <= ? OR grow_ns <= ?) "
                          "ORDER BY raised_ns", (now_ns, now_ns)).fetchall()
        return [Incident.from_row(r) for r in rows]

    def forget_incidents(self) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM incidents")
            db.execute("DELETE FROM aliases")

    # ---- acknowledgements --------------------------------------------------------------------------------------
    def record_ack(self, alert_id: str, by: str, note: str, at_ns: int, via: str) -> tuple[bool, Incident | None]:
        """Record an acknowledgement; returns (known incident, the incident after the ack)."""
        with self.tx() as db:
            aid = self.resolve(db, alert_id)
            inc = self.get(db, aid)
            db.execute("INSERT INTO acks (alert_id, by, note, at_ns, via, recorded, known) VALUES (?,?,?,?,?,?,?)",
                       (aid, by, note, at_ns, via, time.time(), int(inc is not None)))
            if inc is None:
                return False, None
            if inc.ack_ns is None:  # the first acknowledgement stands; later ones are kept in the acks table
                inc.ack_by, inc.ack_ns, inc.ack_note = by, at_ns, note
                inc.next_ns = None  # no more reminders or escalation for an acknowledged incident
                self.save(db, inc)
            return True, inc

    def acks(self, alert_id: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            if alert_id is None:
                rows = self._db.execute("SELECT * FROM acks ORDER BY id").fetchall()
            else:
                rows = self._db.execute("SELECT * FROM acks WHERE alert_id = ? ORDER BY id", (alert_id,)).fetchall()
            return [dict(r) for r in rows]

    def incident(self, alert_id: str) -> Incident | None:
        with self._lock:
            return self.get(self._db, self.resolve(self._db, alert_id))

    def incidents(self, open_only: bool = False) -> list[Incident]:
        with self._lock:
            q = "SELECT * FROM incidents" + (" WHERE open = 1" if open_only else "") + " ORDER BY raised_ns"
            return [Incident.from_row(r) for r in self._db.execute(q).fetchall()]

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
