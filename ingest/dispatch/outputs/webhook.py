"""A signed POST of each alert event to the dispatch system (CISTERN_ALERT_WEBHOOK_URL): JSON or CAP 1.2 body,
`X-Cistern-Signature: sha256=<HMAC-SHA256 of the body>`, `Idempotency-Key: <alert_id>:<event>:<sequence>`."""

from __future__ import annotations

import hashlib
import hmac
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from ingest.dispatch.outputs import Sent
from ingest.dispatch.store import OutboxRow

SIGNATURE_HEADER = "X-Cistern-Signature"


def sign(secret: str, body: bytes) -> str:
    """Value of the X-Cistern-Signature header: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def safe_url(url: str) -> str:
    """The URL as it may appear in a log: no credentials, no query string (tokens often live there)."""
    u = urlsplit(url)
    host = u.hostname or ""
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{host}{port}{u.path}"


class WebhookOutput:
    name = "webhook"
    batched = False
    ordered = False

    def __init__(self, url: str, secret: str, timeout_s: float, retry_max_s: float):
        self.url = url
        self._secret = secret
        self.timeout_s = timeout_s
        self.retry_max_s = retry_max_s

    def send(self, row: OutboxRow) -> Sent:
        headers = {"Content-Type": row.content_type, "Idempotency-Key": row.idem, "User-Agent": "cistern-dispatch"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, row.body)
        req = urllib.request.Request(self.url, data=row.body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                r.read()
                return Sent(200 <= r.status < 300, f"HTTP {r.status}")
        except urllib.error.HTTPError as e:
            retry_after = 0.0
            ra = e.headers.get("Retry-After") if e.headers else None
            if ra and ra.strip().isdigit():
                retry_after = min(float(ra.strip()), self.retry_max_s)
            e.close()
            return Sent(False, f"HTTP {e.code} from {safe_url(self.url)}", e.code in (502, 503, 504), retry_after)
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            return Sent(False, f"{safe_url(self.url)} unreachable: {reason}", True)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass
