"""The service's one HTTP port: event intake, Prometheus metrics, health and the JSON API.

The stdlib server is enough: requests are few (scrapes, probes, batches of events), each one is
handled on its own thread, and every write goes through the store's lock anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from prefleak import __version__
from prefleak.check import CheckRequestError
from prefleak.consumers.http import BodyResult
from prefleak.explain import SubjectError
from prefleak.store import StoreWriteError

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S = 5.0
"""A client silent this long is dropped, so shutdown never waits on an idle connection."""


class Api(Protocol):
    """What the handler needs from the service."""

    registry: CollectorRegistry
    max_body_bytes: int

    def ingest(self, body: bytes, content_type: str) -> BodyResult: ...

    def readiness(self) -> list[str]: ...

    def status(self) -> dict[str, Any]: ...

    def pls(self) -> dict[str, Any] | None: ...

    def check(self, body: bytes) -> dict[str, Any]:
        """The ``prefleak.check/1`` answer; raises CheckRequestError for a bad body."""
        ...

    def explain(self, query: dict[str, str]) -> dict[str, Any] | None:
        """The ``prefleak.explain/1`` answer of the last recompute (None: none yet); raises
        SubjectError for a bad query."""
        ...


AUTH_REALM = "prefleak"
REFUSED_BODY_DRAIN_BYTES = 1024 * 1024
"""A refused POST body up to this size is read and dropped, so its client sees the 401."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("latin-1", "replace")).digest()  # headers are latin-1


class BearerAuth:
    """``Authorization: Bearer <token>`` on every POST, and on GET /v1/* with ``protect_reads``.

    Only a digest of the token is kept, and a request's token is compared by its digest with
    :func:`hmac.compare_digest`: the time a refusal takes tells neither the token nor its length.
    /metrics, /healthz and /readyz stay open (docs/reliability.md).
    """

    __slots__ = ("_digest", "protect_reads")

    def __init__(self, token: str, *, protect_reads: bool = False) -> None:
        self._digest = _digest(token)
        self.protect_reads = protect_reads

    def guards(self, method: str, path: str) -> bool:
        """Whether a request needs the token."""
        return method == "POST" or (self.protect_reads and path.startswith("/v1/"))

    def allows(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header value carries the token."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        matches = hmac.compare_digest(_digest(token.strip()), self._digest)
        return matches and scheme.lower() == "bearer"


class Server(ThreadingHTTPServer):
    """Joins request threads on close, so a POST in flight commits before the process exits."""

    daemon_threads = False
    block_on_close = True

    def __init__(self, address: tuple[str, int], api: Api, auth: BearerAuth | None = None) -> None:
        super().__init__(address, _Handler)
        self.api = api
        self.auth = auth

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _Handler(BaseHTTPRequestHandler):
    timeout = REQUEST_TIMEOUT_S
    server_version = f"prefleak/{__version__}"

    @property
    def api(self) -> Api:
        return cast(Server, self.server).api

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized(path):
            return
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(HTTPStatus.OK, encoder(self.api.registry), content_type)
        elif path == "/healthz":
            self._json(HTTPStatus.OK, {"alive": True})
        elif path == "/readyz":
            reasons = self.api.readiness()
            status = HTTPStatus.SERVICE_UNAVAILABLE if reasons else HTTPStatus.OK
            self._json(status, {"ready": not reasons, "reasons": reasons})
        elif path == "/v1/status":
            self._json(HTTPStatus.OK, self.api.status())
        elif path == "/v1/pls":
            table = self.api.pls()
            if table is None:
                self._json(
                    HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the first recompute is not done yet"}
                )
            else:
                self._json(HTTPStatus.OK, table)
        elif path == "/v1/explain":
            self._explain()
        elif path in ("/v1/events", "/v1/check"):
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use POST"}, allow="POST")
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if not self._authorized(path):
            return
        if path == "/v1/check":
            self._check()
            return
        if path != "/v1/events":
            if path in ("/metrics", "/healthz", "/readyz", "/v1/status", "/v1/pls", "/v1/explain"):
                self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use GET"}, allow="GET")
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})
            return
        body = self._body()
        if body is None:
            return
        try:
            outcome = self.api.ingest(body, self.headers.get("Content-Type", ""))
        except StoreWriteError as exc:  # the events are fine; the client re-sends them later
            log.warning("POST /v1/events refused: %s", exc)
            status = (
                HTTPStatus.INSUFFICIENT_STORAGE if exc.disk_full else HTTPStatus.SERVICE_UNAVAILABLE
            )
            self._json(status, {"error": str(exc), "stored": 0}, **{"Retry-After": "30"})
            return
        status = HTTPStatus.BAD_REQUEST if outcome.not_json else HTTPStatus.OK
        self._json(status, outcome.to_json())

    def _check(self) -> None:
        body = self._body()
        if body is None:
            return
        try:
            answer = self.api.check(body)
        except CheckRequestError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._json(HTTPStatus.OK, answer)

    def _explain(self) -> None:
        query = {key: values[-1] for key, values in parse_qs(urlsplit(self.path).query).items()}
        try:
            answer = self.api.explain(query)
        except SubjectError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        if answer is None:
            self._json(
                HTTPStatus.SERVICE_UNAVAILABLE, {"error": "the first recompute is not done yet"}
            )
        else:
            self._json(HTTPStatus.OK, answer)

    def _authorized(self, path: str) -> bool:
        """Whether the request may go on; when not, it has been answered 401."""
        auth = cast(Server, self.server).auth
        if auth is None or not auth.guards(self.command, path):
            return True
        given = self.headers.get("Authorization")
        if auth.allows(given):
            return True
        log.warning(
            "refused %s %s from %s: %s bearer token",
            self.command, path, self.client_address[0], "no" if given is None else "wrong",
        )  # fmt: skip
        if self.command == "POST":
            length = self.headers.get("Content-Length", "")
            if length.isdigit() and int(length) <= REFUSED_BODY_DRAIN_BYTES:
                self._discard(int(length))
            self.close_connection = True
        challenge = f'Bearer realm="{AUTH_REALM}"'
        if given is not None:
            challenge += ', error="invalid_token"'
        self._json(
            HTTPStatus.UNAUTHORIZED,
            {"error": "send Authorization: Bearer <token>" if given is None else "wrong token"},
            **{"WWW-Authenticate": challenge},
        )
        return False

    def _body(self) -> bytes | None:
        """The request body, or None after answering why it is not taken."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "send a Content-Length"})
            return None
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "send a Content-Length"})
            return None
        limit = self.api.max_body_bytes
        if length > limit:
            if length <= 2 * limit:  # read it, so the client sees the answer and not a reset
                self._discard(length)
            self.close_connection = True
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                {"error": f"body of {length} bytes exceeds the limit of {limit} bytes"},
            )
            return None
        body = self.rfile.read(length) if length > 0 else b""
        if not body.strip():
            self._json(HTTPStatus.BAD_REQUEST, {"error": "empty body"})
            return None
        return body

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)

    def _json(self, status: HTTPStatus, payload: dict[str, Any], **headers: str) -> None:
        body = json.dumps(payload, indent=None, separators=(",", ":")).encode()
        self._send(status, body, "application/json", **headers)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name if "-" in name else name.capitalize(), value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)
