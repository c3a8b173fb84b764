"""A dispatch system's webhook endpoint on 127.0.0.1: checks X-Cistern-Signature, can refuse the first attempts."""

from __future__ import annotations

import hashlib
import hmac
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson

from ingest.tools.servers.common import free_port


class WebhookReceiver:
    """A dispatch system's webhook endpoint: verifies X-Cistern-Signature, can refuse the first attempts."""

    def __init__(self, secret: str, port: int | None = None, refuse_first: int = 0):
        self.secret = secret.encode()
        self.port = port or free_port()
        self.refuse = refuse_first
        self.attempts = 0
        self.bad_signatures = 0
        self.got: list[tuple[str, bytes, dict[str, str]]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook?token=do-not-log"

    def start(self) -> WebhookReceiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                want = "sha256=" + hmac.new(outer.secret, body, hashlib.sha256).hexdigest()
                with outer._lock:
                    outer.attempts += 1
                    if not hmac.compare_digest(self.headers.get("X-Cistern-Signature", ""), want):
                        outer.bad_signatures += 1
                        code = 401
                    elif outer.refuse > 0:
                        outer.refuse -= 1
                        code = 503
                    else:
                        outer.got.append((self.headers["Idempotency-Key"], body, dict(self.headers)))
                        code = 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keys(self) -> list[str]:
        with self._lock:
            return [k for k, _, _ in self.got]

    def events(self) -> list[dict]:
        with self._lock:
            return [orjson.loads(b) for _, b, _ in self.got]
