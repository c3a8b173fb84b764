"""The afternoon script Cistern has to beat: paho on a persistent QoS 1 session acking on receipt, orjson, an
f-string line per reading, 5,000-line posts to InfluxDB 1.x from a writer thread. No validation, registry, dead
letters or detectors: a message that is not what it expects is lost, and so is whatever sits in its queue when it
dies.

    python bench/naive_consumer.py HOST PORT USER PASSWORD CLIENT_ID INFLUX_URL DB
"""

from __future__ import annotations

import datetime
import queue
import signal
import sys
import threading

import orjson
import paho.mqtt.client as mqtt
import urllib3

POST_LINES = 5000


def epoch_s(ts: str | float) -> int:
    return int(datetime.datetime.fromisoformat(ts).timestamp()) if isinstance(ts, str) else int(ts)


def lines_of(topic: str, payload: bytes) -> list[str]:
    """The same points Cistern stores, with the tags the topic carries (there is no registry here)."""
    p = orjson.loads(payload)
    _, district, _, meter_id, _ = topic.split("/")
    series = f"meter_reading,district={district},meter_id={meter_id}"
    sig = p.get("signal") or {}
    if "readings" in p:
        rows = p["readings"]
        out = [f"{series} total_m3={r['total_m3']},reverse_m3={r['reverse_m3']} {epoch_s(r['ts'])}" for r in rows[:-1]]
        r = rows[-1]
        out.append(f"{series} total_m3={r['total_m3']},reverse_m3={r['reverse_m3']},rsrp_dbm={sig['rsrp_dbm']},"
                   f"snr_db={sig['snr_db']},ecl={sig['ecl']}i,battery_v={p['battery_v']} {epoch_s(r['ts'])}")
        return out
    return [f"{series} total_m3={p['total_m3']},reverse_m3={p['reverse_m3']},flow_m3h={p['flow_m3h']},"
            f"rsrp_dbm={sig['rsrp_dbm']},snr_db={sig['snr_db']},ecl={sig['ecl']}i,battery_v={p['battery_v']},"
            f"balance_cny={p['balance_cny']},valve=\"{p['valve']}\" {epoch_s(p['ts'])}"]


def main(host: str, port: str, user: str, password: str, client_id: str, influx_url: str, db: str) -> int:
    http = urllib3.PoolManager()
    url = f"{influx_url}/write?db={db}&precision=s"
    lines: queue.Queue[list[str]] = queue.Queue()
    stop = threading.Event()

    def writer() -> None:
        pending: list[str] = []
        while not (stop.is_set() and lines.empty()):
            try:
                pending += lines.get(timeout=0.2)
                if len(pending) < POST_LINES:
                    continue
            except queue.Empty:
                pass
            if pending:
                http.request("POST", url, body="\n".join(pending).encode())
                pending = []

    def on_message(client, userdata, msg) -> None:
        lines.put(lines_of(msg.topic, msg.payload))

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        client.subscribe("water/+/meter/+/reading", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties) -> None:
        print("subscribed", flush=True)

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    c.username_pw_set(user, password)
    c.on_message, c.on_connect, c.on_subscribe = on_message, on_connect, on_subscribe
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    w = threading.Thread(target=writer)
    w.start()
    c.connect(host, int(port))
    c.loop_start()
    stop.wait()
    c.disconnect()
    c.loop_stop()
    w.join()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
