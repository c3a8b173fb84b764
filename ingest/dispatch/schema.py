"""The dispatch database's schema and its versions: a new dispatch.sqlite is created at the current version, an older
one is migrated in one transaction (after a backup copy beside it), a newer one is refused with a clear message."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

log = logging.getLogger("cistern.dispatch")

# 1: Cistern 0.1 (no version written: PRAGMA user_version 0 with an `incidents` table)
# 2: the case clock (deadlines, three levels, history), closure results, every action, each case's events
SCHEMA_VERSION = 2

INCIDENTS = """
CREATE TABLE IF NOT EXISTS incidents (
    alert_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    subject_type TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    district TEXT NOT NULL,
    open INTEGER NOT NULL,
    seq INTEGER NOT NULL,           -- events sent so far, the next one gets seq + 1
    severity TEXT NOT NULL,         -- as last sent
    start_ns INTEGER NOT NULL,
    raised_ns INTEGER NOT NULL,     -- event time of the raise
    sent_ns INTEGER NOT NULL,       -- event time of the last event sent
    closed_ns INTEGER,
    due_ns INTEGER,                 -- disinfection due date (local midnight), when known
    leads_done TEXT NOT NULL DEFAULT '[]',
    reminders INTEGER NOT NULL DEFAULT 0,       -- reminders sent in all
    next_ns INTEGER,                -- event time of the next reminder or escalation (NULL: none scheduled)
    grow_ns INTEGER,                -- event time of the next 'evidence has grown' update (NULL: none)
    level INTEGER NOT NULL DEFAULT 1,           -- 1 responsible unit, 2 supervising unit, 3 accountability
    level_reminders INTEGER NOT NULL DEFAULT 0, -- reminders sent at the current level
    ack_due_ns INTEGER,             -- deadline to acknowledge
    resolve_due_ns INTEGER,         -- deadline to resolve
    reopened_ns INTEGER,            -- event time of the last reopening (the clock restarts from it)
    ack_by TEXT,
    ack_ns INTEGER,
    ack_note TEXT,
    result TEXT,                    -- closure result code given by dispatch (NULL when the condition ended)
    closed_by TEXT,
    summary TEXT NOT NULL,          -- the detector's latest summary
    evidence TEXT NOT NULL,         -- the detector's latest evidence (JSON), re-enriched for every event
    route TEXT NOT NULL DEFAULT '{}',
    history TEXT NOT NULL DEFAULT '[]',         -- the clock's steps: raised, reminders, escalations, actions
    cap_ref TEXT                    -- "sender,identifier,sent" of the first CAP message, for <references>
);
"""

# No semicolon inside a comment: the statements are split on them to run inside one transaction.
SCHEMA = INCIDENTS + """
CREATE INDEX IF NOT EXISTS incidents_subject ON incidents(kind, subject_type, subject_id, open);
CREATE INDEX IF NOT EXISTS incidents_next ON incidents(open, next_ns);
CREATE INDEX IF NOT EXISTS incidents_grow ON incidents(open, grow_ns);
CREATE TABLE IF NOT EXISTS aliases (alias TEXT PRIMARY KEY, alert_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    action TEXT NOT NULL,           -- ack | close | reopen
    by TEXT NOT NULL,
    note TEXT NOT NULL,
    result TEXT,                    -- a closure's result code
    at_ns INTEGER NOT NULL,         -- on the case clock (event time)
    via TEXT NOT NULL,              -- api:<token name> | mqtt | cli
    recorded REAL NOT NULL,         -- wall clock (epoch seconds)
    known INTEGER NOT NULL          -- 1 when the alert was an incident this state folder knows
);
CREATE INDEX IF NOT EXISTS actions_alert ON actions(alert_id, id);
CREATE TABLE IF NOT EXISTS case_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    body BLOB NOT NULL              -- the event as every output got it (JSON)
);
CREATE INDEX IF NOT EXISTS case_events_alert ON case_events(alert_id, seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,             -- file | webhook | mqtt
    alert_id TEXT NOT NULL,
    idem TEXT NOT NULL,             -- <alert_id>:<event>:<sequence>
    topic TEXT NOT NULL,            -- MQTT topic, empty for the webhook
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


class SchemaError(RuntimeError):
    """The dispatch database cannot be used by this Cistern (written by a newer one, or damaged)."""


def _tables(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def version_of(db: sqlite3.Connection) -> int:
    """The file's schema version; 0 for an empty file."""
    v = int(db.execute("PRAGMA user_version").fetchone()[0])
    if v == 0 and "incidents" in _tables(db):
        return 1
    return v


def prepare(db: sqlite3.Connection, path: Path) -> int:
    """Create, migrate or refuse; returns the version the file had (0: new)."""
    found = version_of(db)
    if found > SCHEMA_VERSION:
        raise SchemaError(f"{path} was written by a newer Cistern (dispatch schema version {found}; this one knows "
                          f"up to {SCHEMA_VERSION}): run that version, or the one it was upgraded to, on this state "
                          "folder (CISTERN_STATE_DIR)")
    if found == SCHEMA_VERSION:
        db.executescript(SCHEMA)  # IF NOT EXISTS: nothing changes
        return found
    if found:
        backup = path.with_name(f"{path.name}.v{found}.bak")
        dst = sqlite3.connect(backup)
        try:
            db.backup(dst)
        finally:
            dst.close()
        log.warning("dispatch state %s: migrating schema version %d to %d (a copy of the old file is kept in %s)",
                    path, found, SCHEMA_VERSION, backup)
    db.execute("BEGIN IMMEDIATE")
    try:
        if found == 1:
            _from_1(db)
        for stmt in SCHEMA.split(";"):
            if stmt.strip():
                db.execute(stmt)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return found


def _from_1(db: sqlite3.Connection) -> None:
    """Version 1 → 2: incidents gain the case clock's columns (an escalated case is at level 2); acknowledgements
    move into the actions table. Deadlines of open cases are filled in by the dispatcher from its settings."""
    db.execute("ALTER TABLE incidents RENAME TO incidents_v1")
    db.execute("DROP INDEX IF EXISTS incidents_subject")
    db.execute("DROP INDEX IF EXISTS incidents_next")
    db.execute("DROP INDEX IF EXISTS incidents_grow")
    db.execute(INCIDENTS)
    kept = ("alert_id, kind, subject_type, subject_id, district, open, seq, severity, start_ns, raised_ns, sent_ns, "
            "closed_ns, due_ns, leads_done, reminders, next_ns, grow_ns, ack_by, ack_ns, ack_note, summary, evidence, "
            "route, cap_ref")
    db.execute(f"INSERT INTO incidents ({kept}, level, level_reminders) SELECT {kept}, "
               "CASE WHEN escalated THEN 2 ELSE 1 END, CASE WHEN escalated THEN 0 ELSE reminders END "
               "FROM incidents_v1")
    db.execute("DROP TABLE incidents_v1")
    if "acks" in _tables(db):
        db.execute("CREATE TABLE IF NOT EXISTS actions (id INTEGER PRIMARY KEY AUTOINCREMENT, alert_id TEXT NOT NULL, "
                   "action TEXT NOT NULL, by TEXT NOT NULL, note TEXT NOT NULL, result TEXT, at_ns INTEGER NOT NULL, "
                   "via TEXT NOT NULL, recorded REAL NOT NULL, known INTEGER NOT NULL)")
        db.execute("INSERT INTO actions (alert_id, action, by, note, at_ns, via, recorded, known) "
                   "SELECT alert_id, 'ack', by, note, at_ns, via, recorded, known FROM acks ORDER BY id")
        db.execute("DROP TABLE acks")
