"""The servers Cistern runs against, started one way for tests, the demo and the benchmarks: Mosquitto with the
project's mosquitto.conf and ACL, InfluxDB 1.x, VictoriaMetrics (InfluxDB's v2 write API) and a webhook receiver.

Each comes, in this order of preference, from environment variables naming a running server (tests only), a
container through testcontainers when a Docker engine answers, or the local Debian binaries started on free ports
with a temporary data folder. Stop what you start (`stop()`); leftovers are stopped at exit.
"""

from ingest.tools.servers.common import (
    ServerUnavailable,
    docker_available,
    free_port,
    remove_folder,
    shipped_file,
)
from ingest.tools.servers.influx import (
    INFLUXD_CONF,
    InfluxV1Server,
    InfluxV2Server,
    start_influx_v1,
    start_influx_v2,
    start_victoria,
)
from ingest.tools.servers.mosquitto import (
    DEVICE_USERS,
    DISPATCH_USER,
    INGEST_USER,
    MosquittoServer,
    render_mosquitto_conf,
    start_mosquitto,
)
from ingest.tools.servers.webhook import WebhookReceiver

__all__ = [
    "DEVICE_USERS", "DISPATCH_USER", "INFLUXD_CONF", "INGEST_USER", "InfluxV1Server", "InfluxV2Server",
    "MosquittoServer", "ServerUnavailable", "WebhookReceiver", "docker_available", "free_port", "remove_folder",
    "render_mosquitto_conf", "shipped_file", "start_influx_v1", "start_influx_v2", "start_mosquitto",
    "start_victoria",
]
