"""The one composition root: the service's parts built from settings, for `cistern run`, `cistern replay` and the
demo. Nothing else wires sources, sinks, detectors and dispatch together."""

from __future__ import annotations

import datetime as dt
import gc
import logging
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from devices.batch import Batch
from devices.registry import Registry
from devices.time import zoned_text
from devices.topics import TopicLayout
from ingest.config import ConfigError, Settings
from ingest.dispatch import Dispatcher
from ingest.pipeline import Pipeline
from ingest.pipeline.ahead import DecodeAhead, workers_for
from ingest.pipeline.checkpoint import StateLock
from ingest.pipeline.reload import RegistryWatch
from ingest.sinks.influx import open_writer
from ingest.sources import Source
from ingest.sources.capture import CaptureSource
from ingest.sources.mqtt import MqttSource, open_mqtt_source

log = logging.getLogger("cistern")


class ZonedFormatter(logging.Formatter):
    """Log lines stamped on the utility's clock with the offset shown ('2026-09-05 12:00:03.125 +08:00'), the same
    clock the alert summaries read in: a person never has to guess which zone a line is in."""

    def __init__(self, timezone: str):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.zone = ZoneInfo(timezone)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return zoned_text(dt.datetime.fromtimestamp(record.created, self.zone), "milliseconds")


def setup_logging(level: str, timezone: str = "Asia/Shanghai") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(ZonedFormatter(timezone))
    logging.basicConfig(level=getattr(logging, level), handlers=[handler])
    # influxdb-client and urllib3 are chatty at INFO and may echo request details.
    for noisy in ("influxdb_client", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections once the service is built. Every message brings a few short-lived dicts
    and lists (its JSON), and CPython's default young-generation collection, every 700 of them, then re-scanned
    the registry, detector state and modules over and over (a third of the decode time). Freezing moves what
    exists now out of all later collections; the larger first threshold makes them rare. The readings' own
    objects are freed by reference counting as before, so memory does not grow."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def load_registry(settings: Settings) -> Registry:
    registry = Registry.load(settings.registry)
    log.info("registry: %s", registry.summary())
    return registry


def make_detectors(registry: Registry, settings: Settings):
    if not settings.detect:
        return None
    from detectors import DetectorSet

    return DetectorSet(registry, params=settings.detectors, timezone=settings.timezone)


def make_writer(settings: Settings):
    return open_writer(settings.influx_url, api=settings.influx_api, bucket=settings.influx_bucket,
                       org=settings.influx_org, token=settings.influx_token.get_secret_value(),
                       username=settings.influx_username, password=settings.influx_password.get_secret_value(),
                       timeout_s=settings.influx_timeout_s)


def make_dispatcher(registry: Registry, settings: Settings, state_dir: Path, *, resume: bool = True,
                    mqtt_publish: Callable[[str, bytes], None] | None = None,
                    alerts_file: Path | None = None) -> Dispatcher:
    return Dispatcher(registry, state_dir, settings.dispatch, alerts_file=alerts_file or settings.alerts_file,
                      webhook_url=settings.alert_webhook_url,
                      webhook_secret=settings.alert_webhook_secret.get_secret_value(),
                      mqtt_publish=mqtt_publish, topic_prefix=settings.mqtt_topic_prefix,
                      timezone=settings.timezone, resume=resume)


def mqtt_source(settings: Settings, layout: TopicLayout, *, client_id: str | None = None, url: str | None = None,
                max_buffered: int | None = None) -> MqttSource:
    from ingest.sources.mqtt import MqttEndpoint

    endpoint = MqttEndpoint.parse(url) if url else settings.mqtt
    return open_mqtt_source(settings.mqtt_receiver, endpoint, client_id or settings.mqtt_client_id,
                            layout.subscriptions(), shared_group=settings.mqtt_shared_group,
                            ca_file=settings.mqtt_ca_file, keepalive_s=settings.mqtt_keepalive_s,
                            protocol=settings.mqtt_protocol,
                            max_buffered=max_buffered or max(4 * settings.batch_max_messages, 20_000))


def make_pipeline(registry: Registry, settings: Settings, source: Source, *, writer: Any, dispatcher: Any,
                  live: bool, **overrides: Any) -> Pipeline:
    """The pipeline with the settings' batching, health and spool; `overrides` for replay and the demo."""
    kw: dict[str, Any] = dict(batch_max_messages=settings.batch_max_messages,
                              batch_max_wait_s=settings.batch_max_wait_s,
                              health_interval_s=settings.health_interval_s, tick_interval_s=settings.tick_interval_s,
                              spool_max_bytes=settings.spool_max_bytes,
                              flood_max_per_device=settings.flood_max_per_device,
                              write_lanes=settings.write_lanes, batch_max_bytes=settings.batch_max_bytes)
    kw.update(overrides)
    return Pipeline(registry, TopicLayout(settings.mqtt_topic_prefix), source, state_dir=settings.state_dir,
                    writer=writer, detectors=make_detectors(registry, settings), dispatcher=dispatcher, live=live,
                    **kw)


def api_tokens_of(s: Settings) -> dict[str, str]:
    """The dispatch API's tokens (token → name); none needed when the API is off."""
    from ingest.dispatch.settings import api_tokens

    tokens = api_tokens(s.alert_api_tokens)
    if s.alert_api_listen and not tokens:
        raise ConfigError("CISTERN_ALERT_API_TOKENS (--alert-api-tokens): required when CISTERN_ALERT_API_LISTEN is "
                          "set (name:token, each token at least 16 characters)")
    return tokens


def make_api(s: Settings, dispatcher: Dispatcher, tokens: dict[str, str]) -> Any:
    """The dispatch API when CISTERN_ALERT_API_LISTEN is set (FastAPI is imported only then)."""
    if not s.alert_api_listen:
        return None
    from ingest.dispatch.api import ApiServer, create_app
    from ingest.dispatch.store import Store

    try:
        return ApiServer(create_app(dispatcher, tokens, Store.reader(s.state_dir)), s.alert_api_listen)
    except OSError as e:
        raise ConfigError(f"CISTERN_ALERT_API_LISTEN (--alert-api-listen): cannot listen on {s.alert_api_listen}: "
                          f"{e.strerror or e}") from None


@dataclass
class Service:
    """`cistern run`: MQTT in, InfluxDB out, detectors and dispatch, until SIGTERM/SIGINT."""

    settings: Settings
    registry: Registry
    source: MqttSource
    writer: Any
    dispatcher: Dispatcher
    pipeline: Pipeline
    alerts_mqtt: Any = None
    closers: list[Callable[[], Any]] = field(default_factory=list)
    api: Any = None
    lock: StateLock | None = None

    @classmethod
    def build(cls, s: Settings) -> Service:
        tokens = api_tokens_of(s)
        registry = load_registry(s)
        lock = StateLock(s.state_dir).acquire()
        layout = TopicLayout(s.mqtt_topic_prefix)
        writer = make_writer(s)
        source = mqtt_source(s, layout)
        alerts_mqtt = None
        if s.alert_mqtt_publish:
            from ingest.dispatch.outputs.mqtt import DispatchMqtt

            alerts_mqtt = DispatchMqtt(s.mqtt, s.mqtt_client_id, s.mqtt_topic_prefix, ca_file=s.mqtt_ca_file,
                                       keepalive_s=s.mqtt_keepalive_s, protocol=s.mqtt_protocol)
        dispatcher = make_dispatcher(registry, s, s.state_dir,
                                     mqtt_publish=alerts_mqtt.publish if alerts_mqtt is not None else None)
        if alerts_mqtt is not None:
            alerts_mqtt.on_ack = dispatcher.handle_ack_message
        watch = RegistryWatch(s.registry, s.registry_check_interval_s, s.registry_reload_max_removed_share)
        pipeline = make_pipeline(registry, s, source, writer=writer, dispatcher=dispatcher, live=True,
                                 registry_watch=watch)
        try:
            api = make_api(s, dispatcher, tokens)
        except BaseException:
            dispatcher.close()
            raise
        return cls(s, registry, source, writer, dispatcher, pipeline, alerts_mqtt, api=api, lock=lock)

    def run(self) -> None:
        def _stop(signum: int, frame: Any) -> None:
            log.info("received %s: finishing the current batch, then exiting", signal.Signals(signum).name)
            self.pipeline.stop()

        def _reload(signum: int, frame: Any) -> None:
            log.info("received SIGHUP: reloading the registry after the current batch")
            if self.pipeline.registry_watch is not None:
                self.pipeline.registry_watch.request()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        signal.signal(signal.SIGHUP, _reload)
        tune_gc()
        self.source.start()
        if self.alerts_mqtt is not None:
            self.alerts_mqtt.start(wait_s=5)
        if self.api is not None:
            self.api.start()
            log.info("dispatch API listening on %s (port %d)", self.settings.alert_api_listen, self.api.port)
        s = self.settings
        log.info("cistern run: %s → %s (%s)", s.redacted()["mqtt_url"], s.influx_url,
                 getattr(self.writer, "api", s.influx_api))
        try:
            self.pipeline.run()
        finally:
            if self.api is not None:
                self.api.stop()
            self.source.close()
            # Alerts not delivered in a short while stay in the outbox and go out on the next start.
            self.dispatcher.drain(timeout_s=min(5.0, s.dispatch.drain_timeout_s))
            self.dispatcher.close()
            if self.alerts_mqtt is not None:
                self.alerts_mqtt.close()
            self.writer.close()
            if self.lock is not None:
                self.lock.release()
        log.info("stopped cleanly")


@dataclass
class ReplayResult:
    stats: Any
    undelivered: int


def replay(s: Settings, capture: Path, *, until_ns: int | None = None,
           on_batch: Callable[[Batch], None] | None = None, resume: bool = False) -> ReplayResult:
    """`cistern replay`: the same pipeline fed from a capture file, as fast as it can, on the capture's clock.

    A replay is a fresh pass over history: its incidents live apart from the service's, under STATE_DIR/replay/.
    With `resume` it is a continuation of the service instead: it starts from STATE_DIR's detector checkpoint and
    dispatch cases, and leaves them saved for the service (or the next resumed replay) to carry on."""
    registry = load_registry(s)
    lock = StateLock(s.state_dir if resume else s.state_dir / "replay").acquire()
    # Replay writes to the database only when one is named explicitly: a replay must not surprise production.
    writer = make_writer(s) if "influx_url" in s.model_fields_set else None
    source = CaptureSource(capture)
    ahead = None
    workers = workers_for(capture.stat().st_size, s.replay_workers)
    if workers:  # started before any thread of ours: the workers are forked
        ahead = DecodeAhead(source, registry, TopicLayout(s.mqtt_topic_prefix), workers=workers,
                            chunk_lines=s.batch_max_messages, flood_max_per_device=s.flood_max_per_device,
                            batch_max_bytes=s.batch_max_bytes)
    if resume:
        dispatcher = make_dispatcher(registry, s, s.state_dir, resume=True)
        pipeline = make_pipeline(registry, s, source, writer=writer, dispatcher=dispatcher, live=False,
                                 until_ns=until_ns, on_batch=on_batch)
    else:
        dispatcher = make_dispatcher(registry, s, s.state_dir / "replay", resume=False)
        pipeline = make_pipeline(registry, s, source, writer=writer, dispatcher=dispatcher, live=False,
                                 until_ns=until_ns, checkpoint_interval_s=float("inf"), restore=False,
                                 on_batch=on_batch)
    left = 0
    tune_gc()
    try:
        if ahead is not None:
            log.info("replay: decoding in %d worker process%s", workers, "es" if workers > 1 else "")
            pipeline.run_decoded(ahead)
        else:
            pipeline.run()
        left = dispatcher.drain()
    finally:
        if ahead is not None:
            ahead.close()
        source.close()
        dispatcher.close()
        if writer is not None:
            writer.close()
        lock.release()
    return ReplayResult(pipeline.stats, left)
