"""Alerts into dispatch systems. Detector incidents become cases (lifecycle.py) on a clock of deadlines, lights,
reminders and three levels of escalation (clock.py, schedule.py), enriched with routing, place and Art. 43 loss estimates (evidence.py), written as JSON or
CAP 1.2 (formats/), queued in one durable outbox (store.py) and delivered to every output — the alerts file, a signed
webhook, MQTT (outputs/) — by a background thread that retries and survives restarts (delivery.py).

`Dispatcher` wires these together; `emit` and `tick` never block on a receiver. Dispatch systems act on cases
(acknowledge, close with a result, reopen) through `act`, from the API's thread as well as the pipeline's.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from devices.alerts import AlertEvent
from devices.registry import Registry
from devices.schemas import parse_timestamp
from devices.time import NS
from ingest.dispatch import clock
from ingest.dispatch.delivery import Delivery
from ingest.dispatch.evidence import Enricher
from ingest.dispatch.formats import cap
from ingest.dispatch.formats import json as json_format
from ingest.dispatch.formats.event import build_event
from ingest.dispatch.lifecycle import CaseError, InvalidTransition, Lifecycle, UnknownCase
from ingest.dispatch.outputs import Output
from ingest.dispatch.outputs.file import FileOutput
from ingest.dispatch.outputs.mqtt import MqttOutput
from ingest.dispatch.outputs.webhook import WebhookOutput, safe_url, sign
from ingest.dispatch.schedule import Schedule
from ingest.dispatch.settings import DispatchSettings
from ingest.dispatch.store import Incident, Store

__all__ = ["CaseError", "DispatchSettings", "Dispatcher", "InvalidTransition", "UnknownCase", "sign"]

log = logging.getLogger("cistern.dispatch")
CLOCK_SAVE_NS = 6 * 3600 * NS


class Dispatcher:
    """Incident state and the outbox live in CISTERN_STATE_DIR/dispatch.sqlite."""

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
        self.topic_prefix = topic_prefix.strip("/")
        self.events_out = 0
        self._pending_at_close: int | None = None
        self.clock_ns = self._clock_saved_ns = self.store.clock() or 0
        self._handed: list[AlertEvent] = []  # events of actions taken off the pipeline's thread, for its record
        self._handed_lock = threading.Lock()
        outputs: list[Output] = []
        if alerts_file is not None:
            outputs.append(FileOutput(alerts_file))
        if webhook_url:
            if not webhook_secret:
                log.warning("alert webhook %s has no secret (CISTERN_ALERT_WEBHOOK_SECRET): bodies go out unsigned",
                            safe_url(webhook_url))
            outputs.append(WebhookOutput(webhook_url, webhook_secret, settings.webhook_timeout_s,
                                         settings.retry_max_s))
        if mqtt_publish is not None:
            outputs.append(MqttOutput(mqtt_publish))
        self.delivery = Delivery(self.store, outputs, settings)
        schedule = Schedule(settings, registry, self.enricher, self._publish)
        self.lifecycle = Lifecycle(settings, self.store, schedule, self._publish)
        self._start_clocks()
        self._housekeeping()
        if start_delivery:
            self.delivery.start()

    def _housekeeping(self) -> None:
        if self.settings.outbox_keep_days > 0:
            self.store.prune(self.settings.outbox_keep_days * 86400)
        left = self.store.pending()
        if left:
            stale = {k: v for k, v in left.items() if k not in self.delivery.sinks}
            log.info("dispatch outbox: %s undelivered from before; delivering", left)
            if stale:
                log.warning("dispatch outbox holds %s for outputs not configured now; they wait until configured",
                            stale)

    def _start_clocks(self) -> None:
        """Open cases from an older Cistern: with no deadlines yet (schema version 1), they get them from their raise;
        with no next reminder (an older release stopped the clock of acknowledged cases and of cases at the top
        level), or with neither, their next reminder or escalation is worked out from now on: no burst of reminders
        dated in the past."""
        s = self.settings
        with self.store.tx() as db:
            for inc in self.store.incidents_to_clock(db):
                if inc.ack_due_ns is None:
                    clock.set_deadlines(s, inc, clock.anchor_ns(inc))
                    if not inc.history:
                        inc.history.append({"step": "raised", "at_ns": inc.raised_ns, "level": 1})
                if inc.next_ns is None and inc.kind != "disinfection_due_soon" and s.reminds(inc.kind):
                    if inc.acknowledged:
                        inc.level_reminders = 0  # the reminders before the acknowledgement were answered
                    inc.next_ns = clock.next_point(s, inc, max(inc.sent_ns, self.clock_ns))
                self.store.save(db, inc)

    # ---- public interface --------------------------------------------------------------------------------------
    @property
    def sinks(self) -> tuple[str, ...]:
        return self.delivery.sinks

    @property
    def counts(self) -> dict[str, int]:
        pending = self._pending_at_close if self._pending_at_close is not None else self.delivery.left()
        return {"delivered": self.delivery.delivered, "pending": pending,
                "failed_attempts": self.delivery.failed_attempts}

    def emit(self, events: list[AlertEvent]) -> list[AlertEvent]:
        """Detector events in; returns the dispatch events that went out (enriched; possibly fewer or more)."""
        if not events:
            return []
        out: list[AlertEvent] = []
        with self.store.tx() as db:
            # The clock first: reminders and escalations due before these events go out before them (a replay ticks
            # only now and then, and a clear must not swallow the reminders that fell due while the case was open).
            self._due(db, min(ev.detected_at_ns for ev in events) - 1, out, growth=False)
            for ev in events:
                self.lifecycle.apply(db, ev, out)
            self._saw(db, max(ev.detected_at_ns for ev in events))
        self._after(out)
        return out

    def tick(self, now_ns: int) -> list[AlertEvent]:
        """Reminders and escalations due by event time `now_ns`; also nudges deliveries that are due."""
        out: list[AlertEvent] = []
        with self.store.tx() as db:
            self._due(db, now_ns, out)
            self._saw(db, now_ns)
        self._after(out)
        if not out:
            self.delivery.wake()
        if self._handed:
            with self._handed_lock:
                out, self._handed = self._handed + out, []
        return out

    def _due(self, db: Any, now_ns: int, out: list[AlertEvent], growth: bool = True) -> None:
        for inc in self.store.due(db, now_ns, growth):
            self.lifecycle.schedule.due(db, inc, now_ns, out, growth)
            self.store.save(db, inc)

    def _saw(self, db: Any, now_ns: int) -> None:
        if now_ns > self.clock_ns:
            self.clock_ns = now_ns
            # Kept for `cistern cases`; written at most every few hours of event time (each write is a sync to disk),
            # and on close.
            if now_ns - self._clock_saved_ns >= CLOCK_SAVE_NS:
                self.store.set_clock(db, now_ns)
                self._clock_saved_ns = now_ns

    def now_ns(self) -> int:
        """The case clock for an action taken now: the wall clock, never behind the event time seen."""
        return max(time.time_ns(), self.clock_ns)

    def act(self, alert_id: str, action: str, *, by: str, note: str = "", result: str = "", via: str = "api",
            at_ns: int | None = None, hand_over: bool = False) -> tuple[Any, list[AlertEvent]]:
        """Dispatch acts on a case: `ack`, `close` (with a result code) or `reopen`. Returns the case after the
        action and the events it sent; raises UnknownCase or InvalidTransition having changed nothing.
        `hand_over`: the events are also returned by the next tick (the pipeline records them in the database)."""
        at_ns = self.now_ns() if at_ns is None else at_ns
        out: list[AlertEvent] = []
        lc = self.lifecycle
        with self.store.tx() as db:
            if action == "ack":
                inc = lc.acknowledge(db, alert_id, by, note, at_ns, via)
            elif action == "close":
                inc = lc.close(db, alert_id, result, note, by, at_ns, via, out)
            elif action == "reopen":
                inc = lc.reopen(db, alert_id, note, by, at_ns, via, out)
            else:
                raise InvalidTransition(f"unknown action {action!r}")
        log.info("case %s: %s by %s via %s%s", inc.alert_id, action, by, via, f" ({result})" if result else "")
        self._after(out)
        if hand_over and out:
            with self._handed_lock:
                self._handed.extend(out)
        return inc, out

    def use_registry(self, registry: Registry, now_ns: int) -> list[AlertEvent]:
        """A reloaded registry: every open case whose subject it no longer holds is cleared at event time `now_ns`,
        its evidence saying why (no detector will clear it; the event still names where the device was); routing
        and evidence come from the new registry from then on."""
        known = {"meter": registry.meters.index, "building": registry.buildings.index, "tank": registry.tanks.index,
                 "pump_room": registry.rooms.index, "cell": set(registry.cell_ids.tolist())}
        gone = [inc for inc in self.store.incidents(open_only=True)
                if inc.subject_type in known and inc.subject_id not in known[inc.subject_type]]
        out: list[AlertEvent] = []
        if gone:
            with self.store.tx() as db:
                for inc in gone:
                    what = inc.subject_type.replace("_", " ")
                    inc.summary = (f"Cleared: {what} {inc.subject_id} is no longer in the registry (removed or "
                                   f"replaced). {inc.summary}")
                    inc.evidence = {**inc.evidence, "resolution": "removed_from_registry"}
                    self.lifecycle.finish(db, inc, max(now_ns, inc.sent_ns), inc.severity, out)
            log.info("registry: %d open case(s) of devices no longer registered cleared: %s", len(gone),
                     ", ".join(f"{i.kind} {i.subject_id}" for i in gone[:10]) + (" ..." if len(gone) > 10 else ""))
        self.registry = self.enricher.reg = self.lifecycle.schedule.registry = registry
        self._after(out)
        return out

    def ack(self, alert_id: str, by: str, note: str = "", at_ns: int | None = None, *, via: str = "api") -> bool:
        """Record dispatch's acknowledgement; the case runs on to its deadline to resolve. False when the alert is
        unknown."""
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
        d = self.delivery
        if not d.sinks:
            return 0
        deadline = time.monotonic() + timeout_s
        d.draining = True
        try:
            d.retry_now()
            if not d.running:  # delivery not started (tests, or a one-shot command): deliver inline
                while time.monotonic() < deadline and d.round() is not None and d.left():
                    time.sleep(0.05)
            while True:
                left = d.left()
                if left == 0 or time.monotonic() >= deadline:
                    break
                d.wake()
                time.sleep(0.05)
        finally:
            d.draining = False
        if left:
            log.warning("dispatch: %d alert deliveries still undelivered after %.0f s (kept in %s, sent on the next "
                        "start): %s", left, timeout_s, self.store.path,
                        "; ".join(f"{r['sink']} {r['idem']} ({r['attempts']} attempts: {r['last_error']})"
                                  for r in self.store.undelivered(5)))
        return left

    def close(self) -> None:
        self.delivery.stop()
        if self._pending_at_close is None:
            if self.clock_ns > self._clock_saved_ns:
                with self.store.tx() as db:
                    self.store.set_clock(db, self.clock_ns)
            self._pending_at_close = self.delivery.left()
            self.store.close()

    # ---- one event out -----------------------------------------------------------------------------------------
    def _publish(self, db: Any, inc: Incident, event: str, t: int, out: list[AlertEvent],
                 extra: dict[str, Any] | None = None) -> None:
        """Number the event, build it, queue it for every output in the same transaction as the case's state."""
        inc.seq += 1
        inc.sent_ns = max(inc.sent_ns, t) if event != "raised" else t
        ev = build_event(self.enricher, self.settings, inc, event, t, extra)
        idem = f"{inc.alert_id}:{event}:{inc.seq}"
        body = json_format.render(ev)
        self.store.record_event(db, inc.alert_id, inc.seq, event, t, body)
        sinks = self.delivery.sinks
        if "file" in sinks:
            self.store.enqueue(db, "file", inc.alert_id, idem, "", json_format.CONTENT_TYPE, body)
        if "webhook" in sinks:
            if self.settings.webhook_format == "cap":
                self._enqueue_cap(db, inc, ev, idem)
            else:
                self.store.enqueue(db, "webhook", inc.alert_id, idem, "", json_format.CONTENT_TYPE, body)
        if "mqtt" in sinks:
            self.store.enqueue(db, "mqtt", inc.alert_id, idem, f"{self.topic_prefix}/alerts/{inc.kind}",
                               json_format.CONTENT_TYPE, body)
        self.store.save(db, inc)
        out.append(ev)

    def _enqueue_cap(self, db: Any, inc: Incident, ev: AlertEvent, idem: str) -> None:
        s = self.settings
        sent = dt.datetime.now(dt.UTC)
        zone = self.enricher.zone
        xml, ident = cap.render(ev.to_dict(), sequence=inc.seq, sender=s.cap_sender, sent=sent,
                                references=inc.cap_ref, language=s.cap_language, scope=s.cap_scope, zone=zone)
        if inc.cap_ref is None:
            inc.cap_ref = f"{s.cap_sender},{ident},{cap.cap_time(sent.astimezone(zone))}"
        self.store.enqueue(db, "webhook", inc.alert_id, idem, "", cap.CONTENT_TYPE, xml)

    def _after(self, out: list[AlertEvent]) -> None:
        if out:
            self.events_out += len(out)
            self.delivery.wake()


def _parse_ts(v: Any) -> int | None:
    """An acknowledgement's optional time, by the same rules as a device's `ts` (RFC 3339 or epoch seconds)."""
    if v is None or v == "":
        return None
    t = parse_timestamp(v)
    return int(t.timestamp()) * NS + t.microsecond * 1000
