"""The dispatch API (FastAPI, served by `cistern run` on its own thread): dispatch systems list cases, read one with
its full history, acknowledge, close with a result and reopen. Every call needs a bearer token from
CISTERN_ALERT_API_TOKENS; reads use their own database connection, so a long listing never holds up the pipeline."""

from __future__ import annotations

import hmac
import logging
import socket
import threading
from typing import Annotated, Any, Literal

import orjson
import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from devices.time import iso_utc
from ingest.dispatch.cases import select, view
from ingest.dispatch.lifecycle import InvalidTransition, UnknownCase
from ingest.dispatch.store import Store

log = logging.getLogger("cistern.dispatch.api")

Result = Literal["confirmed", "no_fault_found", "repaired", "duplicate"]


class Ack(BaseModel):
    by: str = Field("", max_length=200, description="the person or desk acting (the token's name when empty)")
    note: str = Field("", max_length=2000, description="free text kept with the action, e.g. the dispatch case number")


class Close(Ack):
    result: Result = Field(description="confirmed, no_fault_found, repaired or duplicate")


class Reopen(Ack):
    pass


_bearer = HTTPBearer(auto_error=False)


def _caller(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The name of the dispatch system whose token came with the call; 401 otherwise."""
    given = cred.credentials.encode() if cred is not None else b""
    name = None
    for token, who in request.app.state.tokens.items():
        if hmac.compare_digest(given, token.encode()):  # every token compared: the time says nothing
            name = who
    if name is None:
        raise HTTPException(401, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
    return name


Caller = Annotated[str, Depends(_caller)]


def create_app(dispatcher: Any, tokens: dict[str, str], reader: Store) -> FastAPI:
    """`tokens`: token → the name of the dispatch system holding it. `reader`: a second connection to the dispatch
    database for reads."""
    app = FastAPI(title="Cistern dispatch API", version="1", openapi_url=None, docs_url=None, redoc_url=None,
                  description="Cases raised by Cistern: list, read with history, acknowledge, close, reopen. "
                              "Every call needs `Authorization: Bearer <token>`.")
    app.state.tokens = tokens
    s = dispatcher.settings

    def act(alert_id: str, action: str, who: str, body: Ack, result: str = "") -> dict[str, Any]:
        by = body.by.strip() or who
        try:
            inc, events = dispatcher.act(alert_id, action, by=by, note=body.note, result=result, via=f"api:{who}",
                                         hand_over=True)
        except UnknownCase as e:
            raise HTTPException(404, str(e)) from None
        except InvalidTransition as e:
            raise HTTPException(409, str(e)) from None
        return {"case": view(s, inc, dispatcher.now_ns()), "events": [e.to_dict() for e in events]}

    @app.get("/v1/cases", summary="List cases (open by default), oldest raise first")
    def list_cases(who: Caller, kind: str | None = None, district: str | None = None, unit: str | None = None,
                   light: Annotated[Literal["green", "yellow", "red"] | None, Query()] = None,
                   state: Literal["open", "closed", "all"] = "open",
                   limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
                   offset: Annotated[int, Query(ge=0)] = 0) -> Response:
        """`count` is how many match; `cases` at most `limit` of them from `offset`."""
        now = dispatcher.now_ns()
        cases = select(reader, s, now, kind=kind, district=district, unit=unit, light=light, state=state)
        # orjson straight to bytes: a long listing costs the process (and the pipeline sharing it) little
        return Response(orjson.dumps({"as_of": iso_utc(now), "count": len(cases),
                                      "cases": cases[offset:offset + limit]}), media_type="application/json")

    @app.post("/v1/cases/{alert_id:path}/ack", summary="Acknowledge: the case runs on to its deadline to resolve")
    def acknowledge(alert_id: str, body: Ack, who: Caller) -> dict[str, Any]:
        return act(alert_id, "ack", who, body)

    @app.post("/v1/cases/{alert_id:path}/close", summary="Close with a result: the incident is cleared")
    def close(alert_id: str, body: Close, who: Caller) -> dict[str, Any]:
        return act(alert_id, "close", who, body, body.result)

    @app.post("/v1/cases/{alert_id:path}/reopen", summary="Reopen a closed case: its clock starts again")
    def reopen(alert_id: str, body: Reopen, who: Caller) -> dict[str, Any]:
        return act(alert_id, "reopen", who, body)

    @app.get("/v1/cases/{alert_id:path}", summary="One case with its full event history and every action on it")
    def get_case(alert_id: str, who: Caller) -> dict[str, Any]:
        inc = reader.incident(alert_id)
        if inc is None:
            raise HTTPException(404, f"no case {alert_id!r}")
        return {"case": view(s, inc, dispatcher.now_ns()),
                "events": [orjson.loads(b) for b in reader.events(inc.alert_id)],
                "actions": [{"action": a["action"], "by": a["by"], "note": a["note"], "result": a["result"],
                             "at": iso_utc(a["at_ns"]), "via": a["via"]} for a in reader.actions(inc.alert_id)]}

    @app.get("/v1/openapi.json", include_in_schema=False)
    def openapi(who: Caller) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.exception_handler(HTTPException)
    def _error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    return app


class ApiServer:
    """uvicorn on its own thread, on a socket bound before start-up (an address in use fails at once, clearly)."""

    def __init__(self, app: FastAPI, listen: str):
        host, _, port = listen.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, int(port)))
        except OSError:
            self.sock.close()
            raise
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        # proxy_headers: behind the TLS proxy the log shows the client's address, not the proxy's
        config = uvicorn.Config(app, log_level="warning", access_log=False, proxy_headers=True, lifespan="off")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                        name="cistern-dispatch-api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)
        self.sock.close()
