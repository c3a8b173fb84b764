"""The dispatch API against a real `cistern run` (real broker and database) over HTTP: a dispatch desk lists the open
cases, reads one with its history, acknowledges, closes and reopens; bad tokens, unknown cases and invalid transitions
are refused and change nothing; the MQTT acknowledgement topic keeps working beside it."""

from __future__ import annotations

import datetime as dt
import secrets
import subprocess

import httpx
import orjson
import pytest

from ingest.tools.servers import DISPATCH_USER, free_port
from tests.helpers import write_registry
from tests.integration.harness import Service, v1_env, wait_until

pytestmark = pytest.mark.integration
TOKEN = "desk-" + secrets.token_hex(12)


def overdue_tanks() -> str:
    """Two tanks last disinfected eight and nine months ago: overdue on the service's first clock tick."""
    today = dt.date.today()
    return (f"tank_id,room_id,capacity_m3,last_disinfected\nP0001-T1,P0001,50,{today - dt.timedelta(days=245)}\n"
            f"P0001-T2,P0001,50,{today - dt.timedelta(days=275)}\n")


def test_a_dispatch_desk_closes_cases_end_to_end_over_http(mosquitto_server, influx_v1, influx_v1_db, tmp_path):
    port = free_port()
    env = v1_env(mosquitto_server, influx_v1, influx_v1_db, tmp_path, f"cistern-api-{secrets.token_hex(3)}")
    env.update(CISTERN_REGISTRY=str(write_registry(tmp_path / "registry", tanks=overdue_tanks())),
               CISTERN_ALERT_API_LISTEN=f"127.0.0.1:{port}", CISTERN_ALERT_API_TOKENS=f"city-platform:{TOKEN}",
               CISTERN_TICK_INTERVAL_S="0.5")
    svc = Service(env)
    base = f"http://127.0.0.1:{port}/v1"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        svc.wait_for("dispatch API listening", 10)
        with httpx.Client(base_url=base, headers=auth, timeout=10) as api:
            # every call needs the token
            assert httpx.get(f"{base}/cases").status_code == 401
            bad = httpx.get(f"{base}/cases", headers={"Authorization": "Bearer wrong-token-wrong-token"})
            assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
            assert api.get("/openapi.json").json()["paths"].keys() >= {"/v1/cases", "/v1/cases/{alert_id}/close"}

            listed = wait_until(lambda: api.get("/cases").json()["count"], 2, 60)
            assert listed == 2, "".join(svc.log[-20:])
            cases = api.get("/cases", params={"kind": "disinfection_overdue", "light": "red"}).json()["cases"]
            assert [c["subject"]["id"] for c in cases] == ["P0001-T2", "P0001-T1"] or \
                   [c["subject"]["id"] for c in cases] == ["P0001-T1", "P0001-T2"]
            assert all(c["unit"] == "Unit 3" and c["level"] == 1 and c["deadline"] for c in cases)
            assert api.get("/cases", params={"district": "d09"}).json()["count"] == 0
            assert api.get("/cases", params={"light": "purple"}).status_code == 422
            one, other = (c["alert_id"] for c in cases)

            got = api.get(f"/cases/{one}").json()
            assert [e["event"] for e in got["events"]] == ["raised"] and got["actions"] == []
            assert got["events"][0]["light"] == "red"

            r = api.post(f"/cases/{one}/ack", json={"by": "Li Wei", "note": "crew booked"})
            assert r.status_code == 200 and r.json()["case"]["acknowledged"]["by"] == "Li Wei"
            # refused, and nothing changes: again, an unknown case, a bad result, reopening an open case
            again = api.post(f"/cases/{one}/ack", json={"by": "someone"})
            assert again.status_code == 409 and "already acknowledged by Li Wei" in again.json()["detail"]
            assert api.post("/cases/disinfection_overdue/NOPE/1/ack", json={}).status_code == 404
            assert api.post(f"/cases/{one}/close", json={"result": "fixed"}).status_code == 422
            assert api.post(f"/cases/{one}/reopen", json={}).status_code == 409
            assert httpx.post(f"{base}/cases/{one}/close", json={"result": "repaired"}).status_code == 401
            assert len(api.get(f"/cases/{one}").json()["actions"]) == 1

            closed = api.post(f"/cases/{one}/close", json={"result": "no_fault_found", "note": "done on the 3rd"})
            assert closed.status_code == 200
            cleared = closed.json()["events"]
            assert [e["event"] for e in cleared] == ["cleared"]
            assert cleared[0]["evidence"]["result"] == "no_fault_found"
            assert cleared[0]["evidence"]["closed_by"] == "city-platform"
            assert [c["alert_id"] for c in api.get("/cases").json()["cases"]] == [other]
            done = api.get(f"/cases/{one}").json()
            assert done["case"]["state"] == "closed" and done["case"]["result"] == "no_fault_found"
            assert [(a["action"], a["by"], a["via"]) for a in done["actions"]] == [
                ("ack", "Li Wei", "api:city-platform"), ("close", "city-platform", "api:city-platform")]
            assert [e["event"] for e in done["events"]] == ["raised", "cleared"]

            reopened = api.post(f"/cases/{one}/reopen", json={"by": "supervisor Zhao", "note": "not done"})
            assert reopened.status_code == 200 and reopened.json()["case"]["state"] == "open"
            assert reopened.json()["events"][0]["reopened"]["by"] == "supervisor Zhao"
            assert api.post(f"/cases/{one}/close", json={"result": "repaired"}).status_code == 200

            # the MQTT acknowledgement topic still works beside the API
            ack = orjson.dumps({"alert_id": other, "by": "12345 hotline", "note": "ticket 88"})
            r = subprocess.run(["mosquitto_pub", "-h", mosquitto_server.host, "-p", str(mosquitto_server.port),
                                "-u", DISPATCH_USER, "-P", mosquitto_server.passwords[DISPATCH_USER], "-q", "1",
                                "-t", "water/alerts/ack", "-m", ack.decode()], capture_output=True, timeout=30)
            assert r.returncode == 0, r.stderr

            def acked_by():
                a = api.get(f"/cases/{other}").json()["case"]["acknowledged"]
                return a and a["by"]
            assert wait_until(acked_by, "12345 hotline", 60) == "12345 hotline", "".join(svc.log[-20:])
            assert api.get(f"/cases/{other}").json()["actions"][0]["via"] == "mqtt"

            # the database's alert record gets the closures at the pipeline's next clock tick
            def recorded() -> int:
                rows = influx_v1.query("SELECT alert_id FROM alert WHERE event = 'cleared'", db=influx_v1_db)
                return sum(1 for row in rows if row["alert_id"] == one)
            assert wait_until(recorded, 2, 60) == 2, "".join(svc.log[-20:])
    finally:
        assert svc.stop() == 0, "".join(svc.log[-20:])

    # what the outputs got: the alerts file has the closures with their results
    lines = [orjson.loads(x) for x in (tmp_path / "alerts.jsonl").read_bytes().splitlines()]
    mine = [(e["event"], e["evidence"].get("result")) for e in lines if e["alert_id"] == one]
    assert mine == [("raised", None), ("cleared", "no_fault_found"), ("updated", None), ("cleared", "repaired")]
