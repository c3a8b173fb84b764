"""Alerts into dispatch systems: incident lifecycle, routing, reminders and escalation, evidence, and delivery through
a durable outbox (alerts file, signed webhook as JSON or CAP 1.2, MQTT) that survives receivers going away and
restarts.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import math
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from devices.alerts import AlertEvent, iso_utc
from devices.registry import Registry
from devices.schemas import parse_timestamp
from ingest import cap
from ingest.dispatch_evidence import DAY_NS, NS, Enricher
from ingest.dispatch_store import Incident, OutboxRow, Store

log = logging.getLogger("cistern.dispatch")

SEVERITIES = ("info", "warning", "critical")
SIGNATURE_HEADER = "X-Cistern-Signature"


class DispatchSettings(BaseModel):
    """Dispatch settings with their defaults (the lead maps each to a flag and a CISTERN_* variable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    district_unit_template: str = Field("{district} district water service unit",
                                        description="unit that acts on meter and cell alerts ({district} is replaced)")
    district_supervisor_template: str = Field("{district} district water supply authority",
                                              description="escalation unit for meters and cells, and for pump rooms "
                                                          "with no supervisor_unit ({district} is replaced)")
    due_soon_lead_days: list[int] = Field([14, 3], description="days before a tank's due date to remind (comma list)")
    reminder_interval_days: float = Field(7.0, gt=0, description="days between reminders while an incident stays open")
    escalate_after_reminders: int = Field(2, ge=0, description="reminders without result before escalating "
                                                               "to the supervising unit")
    remind_kinds: list[str] = Field(["disinfection_overdue"], description="kinds that get reminders and escalation "
                                                                         "(comma list)")
    supervisor_kinds: list[str] = Field(["disinfection_unverified"],
                                        description="kinds sent to the supervising unit from the start (comma list)")
    growth_kinds: list[str] = Field(["signal_blocking", "bypass"],
                                    description="kinds whose open incidents get an update as time grows their loss "
                                                "estimate (comma list)")
    update_min_change: float = Field(0.5, ge=0, description="relative change of a number in the evidence that makes "
                                                            "an update worth sending")
    update_min_interval_h: float = Field(6.0, ge=0, description="least hours between two updates of one incident "
                                                                "(a severity change always goes out)")
    flow_velocity_m_s: float = Field(1.0, gt=0, description="Art. 43 flow velocity for a pipe's average flow")
    residential_hours_per_day: float = Field(3.0, gt=0, le=24, description="Art. 43 hours/day, residential")
    default_business_hours_per_day: float = Field(8.0, gt=0, le=24,
                                                  description="Art. 43 hours/day for non-residential meters with no "
                                                              "business_hours_per_day in the registry")
    unknown_days_min: int = Field(180, gt=0, description="Art. 43 days when the start is unknown (low)")
    unknown_days_max: int = Field(360, gt=0, description="Art. 43 days when the start is unknown (high)")
    disinfection_interval_months: int = Field(6, ge=1, le=24,
                                              description="due date fallback for due-soon events with no due_date "
                                                          "(follows CISTERN_DISINFECTION_INTERVAL_MONTHS when unset)")
    webhook_format: Literal["json", "cap"] = Field("json", description="webhook body: json (CONTRACT §8) or cap "
                                                                       "(OASIS CAP 1.2 XML)")
    webhook_timeout_s: float = Field(10.0, gt=0, le=300, description="one webhook request's timeout")
    retry_first_s: float = Field(1.0, gt=0, description="first retry delay of a refused delivery")
    retry_max_s: float = Field(300.0, gt=0, description="longest retry delay (exponential back-off with jitter)")
    drain_timeout_s: float = Field(30.0, ge=0, description="how long replay and shutdown wait for undelivered "
                                                           "alerts")
    cap_sender: str = Field("cistern", min_length=1, description="CAP sender element")
    cap_language: str = Field("en-US", description="CAP language element")
    cap_scope: Literal["Public", "Restricted", "Private"] = Field("Restricted", description="CAP scope element")
    evidence_max_items: int = Field(48, ge=1, description="longest list kept in an alert's evidence (newest kept)")
    outbox_keep_days: float = Field(30.0, ge=0, description="days a delivered outbox row is kept")

    @field_validator("due_soon_lead_days", "remind_kinds", "supervisor_kinds", "growth_kinds", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("due_soon_lead_days")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(x <= 0 for x in v):
            raise ValueError("lead days must be positive")
        return sorted(set(v), reverse=True)


def sign(secret: str, body: bytes) -> str:
    """Value of the X-Cistern-Signature header: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def safe_url(url: str) -> str:
    """The URL as it may appear in a log: no credentials, no query string (tokens often live there)."""
    u = urlsplit(url)
    host = u.hostname or ""
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}{u.path}"


def _raise_severity(s: str) -> str:
    i = SEVERITIES.index(s) if s in SEVERITIES else 1
    return SEVERITIES[min(i + 1, len(SEVERITIES) - 1)]


def _numbers(evidence: dict[str, Any]) -> dict[str, float]:
    """Numbers of the evidence (one level into dicts; lists are readings, not measures of size)."""
    out: dict[str, float] = {}
    for k, v in evidence.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            out[k] = float(v)
        elif isinstance(v, dict):
            for k2, v2 in v.items():
                if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                    out[f"{k}.{k2}"] = float(v2)
    return out


def _add_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    for day in (d.day, 30, 29, 28):
        try:
            return dt.date(year, month, day)
        except ValueError:
            continue
    raise AssertionError("unreachable")


class Dispatcher:
    """Turns detector incidents into dispatch events and delivers them; `emit` and `tick` never block on a receiver.

    Lifecycle rules: one alert_id per incident; a raise for a subject that already has an open incident of the same
    kind becomes an update of that incident (its alert_id is kept, the new id becomes an alias); updates go out only
    when the evidence grows materially; reminders and escalation run on event time in `tick`; an acknowledgement
    stops them. Incident state and the outbox live in CISTERN_STATE_DIR/dispatch.sqlite.
    """

    def __init__(self, registry: Registry, state_dir: Path, settings: DispatchSettings, *,
                 alerts_file: Path | None, webhook_url: str, webhook_secret: str,
                 mqtt_publish: Callable[[str, bytes], None] | None, topic_prefix: str = "water",
                 timezone: str = "Asia/Shanghai", resume: bool = True, start_delivery: bool = True):
        self.settings = settings
        self.registry = registry
        self.store = Store(Path(state_dir))
        if not resume:
            # A fresh replay: forget incidents (so they are raised again) but never an undelivered alert.
            self.store.forget_incidents()
        self.enricher = Enricher(registry, settings, timezone)
        self.zone = ZoneInfo(timezone)
        self.webhook_url = webhook_url
        self._secret = webhook_secret
        self._mqtt_publish = mqtt_publish
        self.topic_prefix = topic_prefix.strip("/")
        self.sinks: tuple[str, ...] = tuple(s for s, on in (("webhook", bool(webhook_url)),
                                                            ("mqtt", mqtt_publish is not None)) if on)
        if webhook_url and not webhook_secret:
            log.warning("alert webhook %s has no secret (CISTERN_ALERT_WEBHOOK_SECRET): bodies go out unsigned",
                        safe_url(webhook_url))
        self.alerts_file = alerts_file
        self._fh = None
        if alerts_file is not None:
            alerts_file.parent.mkdir(parents=True, exist_ok=True)
            self._fh = alerts_file.open("ab")
        self.delivered = 0
        self.failed_attempts = 0
        self.events_out = 0
        self._draining = False
        self._pending_at_close: int | None = None
        self._pause_until: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        if settings.outbox_keep_days > 0:
            self.store.prune(settings.outbox_keep_days * 86400)
        left = self.store.pending()
        if left:
            stale = {k: v for k, v in left.items() if k not in self.sinks}
            log.info("dispatch outbox: %s undelivered from before; delivering", left)
            if stale:
                log.warning("dispatch outbox holds %s for outputs not configured now; they wait until configured",
                            stale)
        self._thread: threading.Thread | None = None
        if start_delivery and self.sinks:
            self._thread = threading.Thread(target=self._deliver_loop, name="cistern-dispatch", daemon=True)
            self._thread.start()

    # ---- public interface --------------------------------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        pending = self._pending_at_close if self._pending_at_close is not None else self._left()
        return {"delivered": self.delivered, "pending": pending, "failed_attempts": self.failed_attempts}

    def emit(self, events: list[AlertEvent]) -> list[dict[str, Any]]:
        """Detector events in; returns the dispatch events that went out (enriched; possibly fewer or more)."""
        if not events:
            return []
        out: list[dict[str, Any]] = []
        with self.store.tx() as db:
            for ev in events:
                self._lifecycle(db, ev, out)
        self._after(out)
        return out

    def tick(self, now_ns: int) -> list[dict[str, Any]]:
        """Reminders and escalations due by event time `now_ns`; also nudges deliveries that are due."""
        out: list[dict[str, Any]] = []
        with self.store.tx() as db:
            for inc in self.store.due(db, now_ns):
                self._scheduled(db, inc, now_ns, out)
        self._after(out)
        if not out:
            self._wake.set()
        return out

    def ack(self, alert_id: str, by: str, note: str = "", at_ns: int | None = None, *, via: str = "api") -> bool:
        """Record dispatch's acknowledgement; stops reminders and escalation. False when the alert is unknown."""
        at_ns = time.time_ns() if at_ns is None else at_ns
        known, inc = self.store.record_ack(alert_id, by or "dispatch", note, at_ns, via)
        if known and inc is not None:
            log.info("alert %s acknowledged by %s via %s", inc.alert_id, by or "dispatch", via)
        else:
            log.warning("acknowledgement via %s for unknown alert %r recorded but matches no incident", via, alert_id)
        return known

    def handle_ack_message(self, payload: bytes) -> bool:
        """An MQTT message on {prefix}/alerts/ack: {"alert_id": …, "by": …, "note": …, "ts": RFC 3339 or epoch s}."""
        try:
            msg = orjson.loads(payload)
            alert_id = msg["alert_id"]
            if not isinstance(alert_id, str) or not alert_id:
                raise ValueError("alert_id must be a non-empty string")
            at_ns = _parse_ts(msg.get("ts"))
            by, note = str(msg.get("by") or "dispatch"), str(msg.get("note") or "")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            log.warning("ignored malformed alert acknowledgement (%s): %.200r", e, payload)
            return False
        return self.ack(alert_id, by, note, at_ns, via="mqtt")

    def drain(self, timeout_s: float | None = None) -> int:
        """Deliver what is pending, waiting at most timeout_s; returns how many deliveries are left."""
        timeout_s = self.settings.drain_timeout_s if timeout_s is None else timeout_s
        if not self.sinks:
            return 0
        deadline = time.monotonic() + timeout_s
        self._draining = True
        try:
            for s in self.sinks:
                self.store.retry_now(s)
            self._pause_until.clear()
            if self._thread is None:  # delivery not started (tests, or a one-shot command): deliver inline
                while time.monotonic() < deadline and self._deliver_round() is not None and self._left():
                    time.sleep(0.05)
            while True:
                left = self._left()
                if left == 0 or time.monotonic() >= deadline:
                    break
                self._wake.set()
                time.sleep(0.05)
        finally:
            self._draining = False
        if left:
            log.warning("dispatch: %d alert deliveries still undelivered after %.0f s (kept in %s, sent on the next "
                        "start): %s", left, timeout_s, self.store.path,
                        "; ".join(f"{r['sink']} {r['idem']} ({r['attempts']} attempts: {r['last_error']})"
                                  for r in self.store.undelivered(5)))
        return left

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.settings.webhook_timeout_s + 5)
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._pending_at_close is None:
            self._pending_at_close = self._left()
            self.store.close()

    # ---- lifecycle ---------------------------------------------------------------------------------------------
    def _lifecycle(self, db, ev: AlertEvent, out: list[dict[str, Any]]) -> None:
        aid = self.store.resolve(db, ev.alert_id)
        inc = self.store.get(db, aid)
        if inc is None or not inc.open:
            same = self.store.open_for(db, ev.kind, ev.subject_type, ev.subject_id)
            if same is not None:
                # The same condition under another id (a detector restarted from an older checkpoint, or it moved
                # the start): one incident, one alert_id.
                self.store.alias(db, ev.alert_id, same.alert_id)
                inc = same
        if ev.event == "cleared":
            if inc is not None and inc.open:
                self._close(db, inc, ev, out)
            return
        if inc is not None and inc.open:
            if ev.event == "escalated":
                if not inc.escalated:
                    self._absorb(inc, ev)
                    self._escalate(db, inc, ev.detected_at_ns, out)
            else:
                self._maybe_update(db, inc, ev, out)
            return
        if inc is not None and ev.detected_at_ns <= (inc.closed_ns or 0):
            return  # history replayed after a restart: this incident was raised and cleared already
        new_id = ev.alert_id
        if inc is not None or self.store.get(db, new_id) is not None:
            n = 2
            while self.store.get(db, f"{ev.alert_id}~{n}") is not None:
                n += 1
            new_id = f"{ev.alert_id}~{n}"  # the same id after a clear: a new incident needs a new id
            self.store.alias(db, ev.alert_id, new_id)
        self._raise(db, new_id, ev, out)

    def _raise(self, db, alert_id: str, ev: AlertEvent, out: list[dict[str, Any]]) -> None:
        s = self.settings
        inc = Incident(alert_id=alert_id, kind=ev.kind, subject_type=ev.subject_type, subject_id=ev.subject_id,
                       district=ev.district, open=True, seq=0, severity=ev.severity, start_ns=ev.start_ns,
                       raised_ns=ev.detected_at_ns, sent_ns=ev.detected_at_ns, closed_ns=None, due_ns=None,
                       leads_done=[], reminders=0, next_ns=None, grow_ns=None, escalated=False, ack_by=None, ack_ns=None,
                       ack_note=None, summary=ev.summary, evidence=dict(ev.evidence), route=dict(ev.route),
                       cap_ref=None)
        t = ev.detected_at_ns
        if ev.kind == "disinfection_overdue":
            inc.due_ns = ev.start_ns
            soon = self.store.open_for(db, "disinfection_due_soon", ev.subject_type, ev.subject_id)
            if soon is not None:
                soon.summary = f"Superseded: the disinfection of {ev.subject_id} is now overdue (see {alert_id})"
                soon.evidence = {**soon.evidence, "resolution": "overdue", "superseded_by": alert_id}
                self._finish(db, soon, t, soon.severity, out)
        elif ev.kind == "disinfection_due_soon":
            inc.due_ns = self._due_of(ev)
            if inc.due_ns is not None:
                inc.leads_done = [d for d in s.due_soon_lead_days if t >= inc.due_ns - d * DAY_NS]
                inc.next_ns = self._next_lead(inc)
        if ev.kind in s.remind_kinds and ev.kind != "disinfection_due_soon":
            inc.next_ns = t + int(s.reminder_interval_days * DAY_NS)
        self._schedule_growth(inc, t)
        self._publish(db, inc, "raised", t, out)

    def _absorb(self, inc: Incident, ev: AlertEvent) -> None:
        inc.evidence = {**inc.evidence, **ev.evidence}
        inc.summary = ev.summary or inc.summary
        if 0 < ev.start_ns < inc.start_ns:
            inc.start_ns = ev.start_ns  # more evidence can move the start earlier, never later

    def _maybe_update(self, db, inc: Incident, ev: AlertEvent, out: list[dict[str, Any]]) -> None:
        s = self.settings
        before = _numbers(inc.evidence)
        severity_changed = ev.severity != inc.severity
        self._absorb(inc, ev)
        inc.severity = ev.severity
        after = _numbers(inc.evidence)
        grew = any(k not in before or abs(v - before[k]) >= s.update_min_change * max(abs(before[k]), 1e-9)
                   for k, v in after.items())
        spaced = ev.detected_at_ns - inc.sent_ns >= s.update_min_interval_h * 3600 * NS
        if severity_changed or (grew and spaced):
            self._schedule_growth(inc, ev.detected_at_ns)
            self._publish(db, inc, "updated", ev.detected_at_ns, out)
        else:
            self.store.save(db, inc)  # keep the newest evidence for the next event that goes out

    def _close(self, db, inc: Incident, ev: AlertEvent, out: list[dict[str, Any]]) -> None:
        self._absorb(inc, ev)
        self._finish(db, inc, ev.detected_at_ns, ev.severity or inc.severity, out)

    def _finish(self, db, inc: Incident, t: int, severity: str, out: list[dict[str, Any]]) -> None:
        inc.open = False
        inc.closed_ns = t
        inc.next_ns = inc.grow_ns = None
        inc.severity = severity
        self._publish(db, inc, "cleared", t, out)

    def _escalate(self, db, inc: Incident, t: int, out: list[dict[str, Any]]) -> None:
        inc.escalated = True
        inc.next_ns = None
        inc.severity = _raise_severity(inc.severity)
        self._publish(db, inc, "escalated", t, out, extra={"reminders": inc.reminders})

    def _scheduled(self, db, inc: Incident, now_ns: int, out: list[dict[str, Any]]) -> None:
        """Reminders and escalation due by now; each goes out stamped with the time it was due (event time)."""
        s = self.settings
        step = int(s.reminder_interval_days * DAY_NS)
        if inc.grow_ns is not None and inc.grow_ns <= now_ns:
            self._publish(db, inc, "updated", now_ns, out, extra={"update_reason": "the loss grows with time"})
            self._schedule_growth(inc, now_ns)
        while inc.open and not inc.acknowledged and inc.next_ns is not None and inc.next_ns <= now_ns:
            t = inc.next_ns
            if inc.kind == "disinfection_due_soon":
                passed = [d for d in s.due_soon_lead_days if d not in inc.leads_done and now_ns >= inc.due_ns - d * DAY_NS]  # type: ignore[operator]
                inc.leads_done += passed
                inc.next_ns = self._next_lead(inc)
                if inc.next_ns is None or inc.next_ns > now_ns:
                    # Only the nearest lead time is worth telling when a clock jump passed several.
                    t = inc.due_ns - min(passed) * DAY_NS  # type: ignore[operator]
                    inc.reminders += 1
                    self._publish(db, inc, "updated", t, out, extra={"reminder": inc.reminders,
                                                                     "days_to_due": min(passed)})
            elif inc.reminders < s.escalate_after_reminders:
                inc.reminders += 1
                inc.next_ns = t + step
                self._publish(db, inc, "updated", t, out, extra={"reminder": inc.reminders})
            elif not inc.escalated:
                self._escalate(db, inc, t, out)
            else:
                inc.next_ns = None
        self.store.save(db, inc)

    def _schedule_growth(self, inc: Incident, t: int) -> None:
        """Next time an open incident's evidence (days, loss estimate) will have grown materially."""
        if inc.kind not in self.settings.growth_kinds or inc.start_ns <= 0:
            inc.grow_ns = None
            return
        age = max(t - inc.start_ns, 0)
        step = max(int(age * self.settings.update_min_change), int(self.settings.update_min_interval_h * 3600 * NS),
                   3600 * NS)
        inc.grow_ns = t + step

    def _next_lead(self, inc: Incident) -> int | None:
        left = [d for d in self.settings.due_soon_lead_days if d not in inc.leads_done]
        if inc.due_ns is None or not left:
            return None
        return inc.due_ns - max(left) * DAY_NS

    def _due_of(self, ev: AlertEvent) -> int | None:
        """Due date of a due-soon event: its evidence (due_date / due), else the registry's last disinfection plus
        the interval."""
        for k in ("due_date", "due"):
            v = ev.evidence.get(k)
            if isinstance(v, str) and v:
                try:
                    return self.enricher.local_midnight_ns(dt.date.fromisoformat(v[:10]))
                except ValueError:
                    pass
        i = self.registry.tanks.index.get(ev.subject_id, -1) if ev.subject_type == "tank" else -1
        if i < 0:
            return None
        last = self.registry.tanks.last_disinfected[i].astype(dt.date)
        return self.enricher.local_midnight_ns(_add_months(last, self.settings.disinfection_interval_months))

    # ---- building and queueing one event -----------------------------------------------------------------------
    def _compact(self, evidence: dict[str, Any]) -> dict[str, Any]:
        n = self.settings.evidence_max_items
        out: dict[str, Any] = {}
        for k, v in evidence.items():
            if isinstance(v, list) and len(v) > n:
                out[k] = v[-n:]
                out[f"{k}_total"] = len(v)
            elif isinstance(v, float) and not math.isfinite(v):
                out[k] = None  # strict JSON for every receiver
            else:
                out[k] = v
        return out

    def event_dict(self, inc: Incident, event: str, t: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        en = self.enricher
        route = en.route(inc.kind, inc.subject_type, inc.subject_id, inc.district, str(inc.route.get("unit", "")))
        detector_route = {k: v for k, v in inc.route.items() if k not in ("unit",)}
        route = {**detector_route, **route}
        if inc.escalated:
            route = {**route, "unit": route["escalation_unit"], "escalated_from": route["unit"]}
        evidence = self._compact(inc.evidence)
        where = en.where(inc.subject_type, inc.subject_id, inc.district)
        evidence["where"] = where
        evidence["began_local"] = en.local(inc.start_ns)
        if inc.due_ns is not None:
            evidence["due_date"] = en.local_date(inc.due_ns)
            days = (t - inc.due_ns) / DAY_NS
            if inc.kind == "disinfection_overdue":
                evidence["days_overdue"] = max(0, math.floor(days))
            else:
                evidence["days_to_due"] = max(0, math.ceil(-days))
        loss = en.loss_estimate(inc.kind, inc.subject_type, inc.subject_id, inc.start_ns, t, inc.evidence)
        if loss is not None:
            evidence["loss_estimate"] = loss
        summary = inc.summary
        extra = extra or {}
        if event == "escalated":
            summary = (f"ESCALATED to {route['unit']} after {inc.reminders} reminder(s) to {route['escalated_from']} "
                       f"without result: {summary}")
        elif "reminder" in extra:
            summary = f"Reminder {extra['reminder']}: {summary}"
        d: dict[str, Any] = {
            "alert_id": inc.alert_id, "event": event, "kind": inc.kind, "severity": inc.severity,
            "subject": {"type": inc.subject_type, "id": inc.subject_id},
            "district": where.get("district") or inc.district,
            "start": iso_utc(inc.start_ns), "detected_at": iso_utc(t), "summary": summary,
            "route": route, "evidence": evidence, "sequence": inc.seq,
        }
        d.update(extra)
        if inc.ack_ns is not None:
            d["acknowledged"] = {"by": inc.ack_by, "at": iso_utc(inc.ack_ns), "note": inc.ack_note or ""}
        return d

    def _publish(self, db, inc: Incident, event: str, t: int, out: list[dict[str, Any]],
                 extra: dict[str, Any] | None = None) -> None:
        inc.seq += 1
        inc.sent_ns = max(inc.sent_ns, t) if event != "raised" else t
        d = self.event_dict(inc, event, t, extra)
        idem = f"{inc.alert_id}:{event}:{inc.seq}"
        body = orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY)
        if "webhook" in self.sinks:
            if self.settings.webhook_format == "cap":
                sent = dt.datetime.now(dt.UTC)
                s = self.settings
                xml, ident = cap.render(d, sequence=inc.seq, sender=s.cap_sender, sent=sent,
                                        references=inc.cap_ref, language=s.cap_language, scope=s.cap_scope,
                                        zone=self.zone)
                if inc.cap_ref is None:
                    inc.cap_ref = f"{s.cap_sender},{ident},{cap.cap_time(sent.astimezone(self.zone))}"
                self.store.enqueue(db, "webhook", inc.alert_id, idem, "", cap.CONTENT_TYPE, xml)
            else:
                self.store.enqueue(db, "webhook", inc.alert_id, idem, "", "application/json", body)
        if "mqtt" in self.sinks:
            self.store.enqueue(db, "mqtt", inc.alert_id, idem, f"{self.topic_prefix}/alerts/{inc.kind}",
                               "application/json", body)
        self.store.save(db, inc)
        out.append(d)

    def _after(self, out: list[dict[str, Any]]) -> None:
        if not out:
            return
        self.events_out += len(out)
        if self._fh is not None:
            self._fh.write(b"".join(orjson.dumps(d, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n" for d in out))
            self._fh.flush()
            os.fsync(self._fh.fileno())
        self._wake.set()

    # ---- delivery (background thread) ---------------------------------------------------------------------------
    def _left(self) -> int:
        return sum(self.store.pending(self.sinks).values())

    def _backoff(self, attempts: int) -> float:
        s = self.settings
        d = min(s.retry_max_s, s.retry_first_s * 2 ** max(0, attempts - 1))
        if self._draining:
            d = min(d, 0.5)  # the receiver may be back: a bounded drain should not sit out a long back-off
        return random.uniform(d / 2, d)

    def _deliver_loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self._deliver_round()
            except Exception:  # a bug here must not silently end delivery: log and keep going
                log.exception("dispatch delivery round failed")
                wait = 1.0
            self._wake.wait(1.0 if wait is None else min(max(wait, 0.01), 1.0))
            self._wake.clear()

    def _deliver_round(self) -> float | None:
        """Try every due row once; returns seconds until the next row is due (None: nothing pending)."""
        nxt: float | None = None
        for sink in self.sinks:
            now = time.time()
            if now < self._pause_until.get(sink, 0.0):
                nxt = min(nxt or 1e18, self._pause_until[sink] - now)
                continue
            for row in self.store.ready(sink, now):
                if self._stop.is_set():
                    return None
                ok, err, down, retry_after = self._send(sink, row)
                if ok:
                    self.store.delivered(row.id)
                    self.delivered += 1
                    continue
                self.failed_attempts += 1
                delay = max(self._backoff(row.attempts + 1), retry_after)
                self.store.failed(row.id, err, time.time() + delay)
                log.warning("alert delivery %s %s failed (attempt %d): %s; retrying in %.1f s", sink, row.idem,
                            row.attempts + 1, err, delay)
                if down:  # the receiver is unreachable: pause the whole sink instead of trying every row
                    self._pause_until[sink] = time.time() + delay
                    break
            t = self.store.next_try(sink)
            if t is not None:
                nxt = min(nxt or 1e18, max(t, self._pause_until.get(sink, 0.0)) - time.time())
        return nxt

    def _send(self, sink: str, row: OutboxRow) -> tuple[bool, str, bool, float]:
        """(delivered, error, receiver unreachable, Retry-After seconds)."""
        if sink == "mqtt":
            try:
                assert self._mqtt_publish is not None
                self._mqtt_publish(row.topic, row.body)
                return True, "", False, 0.0
            except Exception as e:  # the publisher reports any failure by raising
                return False, f"MQTT publish failed: {type(e).__name__}: {e}", True, 0.0
        headers = {"Content-Type": row.content_type, "Idempotency-Key": row.idem,
                   "User-Agent": "cistern-dispatch"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, row.body)
        req = urllib.request.Request(self.webhook_url, data=row.body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.settings.webhook_timeout_s) as r:
                r.read()
                return 200 <= r.status < 300, f"HTTP {r.status}", False, 0.0
        except urllib.error.HTTPError as e:
            retry_after = 0.0
            ra = e.headers.get("Retry-After") if e.headers else None
            if ra and ra.strip().isdigit():
                retry_after = min(float(ra.strip()), self.settings.retry_max_s)
            e.close()
            return False, f"HTTP {e.code} from {safe_url(self.webhook_url)}", e.code in (502, 503, 504), retry_after
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            return False, f"{safe_url(self.webhook_url)} unreachable: {reason}", True, 0.0


def _parse_ts(v: Any) -> int | None:
    """An acknowledgement's optional time, by the same rules as a device's `ts` (RFC 3339 or epoch seconds)."""
    if v is None or v == "":
        return None
    t = parse_timestamp(v)
    return int(t.timestamp()) * NS + t.microsecond * 1000
