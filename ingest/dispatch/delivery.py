"""Delivery: a background thread that empties the outbox into the outputs, retrying refused rows with
exponential back-off and jitter, pausing an output whose receiver is unreachable. Rows survive restarts."""

from __future__ import annotations

import logging
import random
import threading
import time

from ingest.dispatch.outputs import Output
from ingest.dispatch.settings import DispatchSettings
from ingest.dispatch.store import Store

log = logging.getLogger("cistern.dispatch")


class Delivery:
    def __init__(self, store: Store, outputs: list[Output], settings: DispatchSettings):
        self.store = store
        self.outputs = {o.name: o for o in outputs}
        self.settings = settings
        self.delivered = 0
        self.failed_attempts = 0
        self.draining = False
        self._pause_until: dict[str, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress = False

    @property
    def sinks(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    def start(self) -> None:
        if self.outputs:
            self._thread = threading.Thread(target=self._loop, name="cistern-dispatch", daemon=True)
            self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def wake(self) -> None:
        self._wake.set()

    def left(self) -> int:
        return sum(self.store.pending(self.sinks).values())

    def retry_now(self) -> None:
        for s in self.sinks:
            self.store.retry_now(s)
        self._pause_until.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.settings.webhook_timeout_s + 5)
            self._thread = None
        # The file is local: whatever is still queued for it is written before closing.
        if "file" in self.outputs:
            self._stop.clear()
            while self.store.pending(("file",)) and self._round_of(self.outputs["file"]) and self._progress:
                pass
            self._stop.set()
        for o in self.outputs.values():
            o.close()

    def _backoff(self, attempts: int) -> float:
        s = self.settings
        d = min(s.retry_max_s, s.retry_first_s * 2 ** max(0, attempts - 1))
        if self.draining:
            d = min(d, 0.5)  # the receiver may be back: a bounded drain should not sit out a long back-off
        return random.uniform(d / 2, d)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.round()
            except Exception:  # a bug here must not silently end delivery: log and keep going
                log.exception("dispatch delivery round failed")
                wait = 1.0
            self._wake.wait(1.0 if wait is None else min(max(wait, 0.01), 1.0))
            self._wake.clear()

    def round(self) -> float | None:
        """Try every due row once; returns seconds until the next row is due (None: nothing pending)."""
        nxt: float | None = None
        for name, output in self.outputs.items():
            now = time.time()
            if now < self._pause_until.get(name, 0.0):
                nxt = min(nxt or 1e18, self._pause_until[name] - now)
                continue
            if self._round_of(output) is None:
                return None
            t = self.store.next_try(name)
            if t is not None:
                nxt = min(nxt or 1e18, max(t, self._pause_until.get(name, 0.0)) - time.time())
        return nxt

    def _round_of(self, output: Output) -> bool | None:
        """One pass over an output's due rows; None when asked to stop."""
        done: list[int] = []
        self._progress = False
        for row in self.store.ready(output.name, time.time(), limit=1000 if output.ordered else 100,
                                    ordered=output.ordered):
            if self._stop.is_set():
                return None
            sent = output.send(row)
            if sent.ok:
                if output.batched:
                    done.append(row.id)
                else:
                    self.store.delivered(row.id)
                    self.delivered += 1
                continue
            self.failed_attempts += 1
            delay = max(self._backoff(row.attempts + 1), sent.retry_after_s)
            self.store.failed(row.id, sent.error, time.time() + delay)
            log.warning("alert delivery %s %s failed (attempt %d): %s; retrying in %.1f s", output.name, row.idem,
                        row.attempts + 1, sent.error, delay)
            if sent.receiver_down or output.ordered:
                self._pause_until[output.name] = time.time() + delay
                break
        if done:
            output.flush()
            self.store.delivered_many(done)
            self.delivered += len(done)
            self._progress = True
        return True
