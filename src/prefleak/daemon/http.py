"""The service's one HTTP port: event intake, Prometheus metrics, health, the JSON API and the
read-only web view.

The stdlib server is enough: requests are few (scrapes, probes, batches of events, on-call
looking at a page), each one is handled on its own thread, and every write goes through the
store's lock anyway. :data:`ROUTES` is every method and path served; ``GET /openapi.json``
documents each of them (docs/api.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from prefleak import __version__
from prefleak.check import CheckRequestError
from prefleak.consumers.http import BodyResult
from prefleak.daemon.openapi import document as openapi_document
from prefleak.explain import SubjectError
from prefleak.store import StoreWriteError
from prefleak.web import pages
from prefleak.web.assets import ASSETS

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

    def report(self) -> dict[str, Any] | None: ...

    def leaderboard(self) -> dict[str, Any] | None: ...

    def biases(self) -> dict[str, Any] | None: ...

    def diversity(self) -> dict[str, Any] | None: ...

    def check(self, body: bytes) -> dict[str, Any]:
        """The ``prefleak.check/1`` answer; raises CheckRequestError for a bad body."""
        ...

    def explain(self, query: Mapping[str, Sequence[str]]) -> dict[str, Any] | None:
        """The ``prefleak.explain/1`` answer of the last recompute (None: none yet); raises
        SubjectError for a bad query."""
        ...


NOT_YET = "the first recompute is not done yet"
NO_DIVERSITY = (
    "no diversity report yet: it follows the first recompute every diversity.interval_s, "
    "and never with diversity.enabled off"
)
STORE_RETRY_AFTER_S = 30
"""Retry-After of a POST the store could not write: 507 for a full disk (someone must free space),
503 for another write fault such as an I/O error."""
ASSET_MAX_AGE_S = 86_400
"""Browsers reuse plotly.js and the page script this long (revalidating by ETag after)."""
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
"""Scripts only from this port (no inline script, no event handler attribute, no remote origin);
plotly.js sets inline styles, so those are allowed."""

AUTH_REALM = "prefleak"
REFUSED_BODY_DRAIN_BYTES = 1024 * 1024
"""A refused POST body up to this size is read and dropped, so its client sees the 401."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("latin-1", "replace")).digest()  # headers are latin-1


OPEN_PATHS = frozenset({"/metrics", "/healthz", "/readyz", "/openapi.json"})
"""Paths ``protect_reads`` leaves open: probes, scrapes and the API document (no events)."""


class BearerAuth:
    """``Authorization: Bearer <token>`` on every POST (and any other method but GET and HEAD),
    and with ``protect_reads`` on every GET
    but :data:`OPEN_PATHS` and the static files (the JSON API and the web pages).

    Only a digest of the token is kept, and a request's token is compared by its digest with
    :func:`hmac.compare_digest`: the time a refusal takes tells neither the token nor its length.
    :data:`OPEN_PATHS` and the static files stay open (docs/reliability.md).
    """

    __slots__ = ("_digest", "protect_reads")

    def __init__(self, token: str, *, protect_reads: bool = False) -> None:
        self._digest = _digest(token)
        self.protect_reads = protect_reads

    def guards(self, method: str, path: str) -> bool:
        """Whether a request needs the token."""
        if method not in ("GET", "HEAD"):
            return True  # a write, or a method nothing answers: nothing is learnt without it
        return self.protect_reads and path not in OPEN_PATHS and path not in ASSETS

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

    @property
    def _path(self) -> str:
        return self.path.split("?", 1)[0]

    def _dispatch(self) -> None:
        """Any method: its route, else 405 naming the method the path has, else 404."""
        method, path = self.command, self._path
        if not self._authorized(path):
            return
        route = ROUTES.get((method, path))
        if route is not None:
            route(self)
            return
        allowed = [other for other in ("GET", "POST") if (other, path) in ROUTES]
        if allowed:
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"use {allowed[0]}"},
                       allow=allowed[0])  # fmt: skip
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such path: {path}"})

    do_GET = do_POST = do_HEAD = _dispatch
    do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_CONNECT = do_QUERY = _dispatch
    """Methods no route has are answered 405 or 404 like any other miss, not with a 501 page."""

    def _query(self) -> dict[str, list[str]]:
        """The query parameters, every value of each in order, blank ones too (``judges`` may come
        twice; ``judges=`` is a value, and a wrong one)."""
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    # -- GET: probes, metrics, the JSON API ------------------------------------------------------

    def _metrics(self) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send(HTTPStatus.OK, encoder(self.api.registry), content_type)

    def _healthz(self) -> None:
        self._json(HTTPStatus.OK, {"alive": True})

    def _readyz(self) -> None:
        reasons = self.api.readiness()
        status = HTTPStatus.SERVICE_UNAVAILABLE if reasons else HTTPStatus.OK
        self._json(status, {"ready": not reasons, "reasons": reasons})

    def _status(self) -> None:
        self._json(HTTPStatus.OK, self.api.status())

    def _openapi(self) -> None:
        self._json(HTTPStatus.OK, openapi_document())

    def _snapshot_json(self, answer: dict[str, Any] | None, missing: str = NOT_YET) -> None:
        """A document of the last recompute, or 503 with why there is none."""
        if answer is None:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": missing})
        else:
            self._json(HTTPStatus.OK, answer)

    def _pls(self) -> None:
        self._snapshot_json(self.api.pls())

    def _report(self) -> None:
        self._snapshot_json(self.api.report())

    def _leaderboard(self) -> None:
        self._snapshot_json(self.api.leaderboard())

    def _biases(self) -> None:
        self._snapshot_json(self.api.biases())

    def _diversity(self) -> None:
        self._snapshot_json(self.api.diversity(), NO_DIVERSITY)

    def _explain(self) -> None:
        try:
            answer = self.api.explain(self._query())
        except SubjectError as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            return
        self._snapshot_json(answer)

    # -- POST ------------------------------------------------------------------------------------

    def _events(self) -> None:
        body = self._body()
        if body is None:
            return
        try:
            outcome = self.api.ingest(body, self.headers.get("Content-Type", ""))
        except StoreWriteError as exc:  # nothing of the body is stored: the client re-sends it
            log.warning("POST /v1/events refused: %s", exc)
            status = (
                HTTPStatus.INSUFFICIENT_STORAGE if exc.disk_full else HTTPStatus.SERVICE_UNAVAILABLE
            )
            self._json(status, {"error": str(exc), "stored": 0},
                       **{"Retry-After": str(STORE_RETRY_AFTER_S)})  # fmt: skip
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

    # -- the web view ----------------------------------------------------------------------------

    def _overview_page(self) -> None:
        analysis = self.api.pls()  # report, biases and leaderboard of one recompute
        if analysis is None:
            self._html(HTTPStatus.SERVICE_UNAVAILABLE, pages.error_page(NOT_YET))
        else:
            self._html(HTTPStatus.OK, pages.overview_page(analysis, self.api.diversity()))

    def _explain_page(self) -> None:
        try:
            answer = self.api.explain(self._query())
        except SubjectError as exc:
            self._html(HTTPStatus.BAD_REQUEST, pages.error_page(str(exc)))
            return
        if answer is None:
            self._html(HTTPStatus.SERVICE_UNAVAILABLE, pages.error_page(NOT_YET))
        else:
            self._html(HTTPStatus.OK, pages.explain_page(answer))

    def _asset(self) -> None:
        asset = ASSETS[self._path]
        cache = {"Cache-Control": f"public, max-age={ASSET_MAX_AGE_S}", "ETag": asset.etag}
        if asset.etag in self.headers.get("If-None-Match", ""):
            self._send(HTTPStatus.NOT_MODIFIED, b"", asset.content_type, **cache)
        else:
            self._send(HTTPStatus.OK, asset.body, asset.content_type, **cache)

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

    def _html(self, status: HTTPStatus, page: str) -> None:
        self._send(status, page.encode(), "text/html; charset=utf-8",
                   **{"Content-Security-Policy": CONTENT_SECURITY_POLICY,
                      "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"})  # fmt: skip

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name if name[:1].isupper() else name.capitalize(), value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


Route = Callable[[_Handler], None]

ROUTES: dict[tuple[str, str], Route] = {
    ("GET", "/metrics"): _Handler._metrics,
    ("GET", "/healthz"): _Handler._healthz,
    ("GET", "/readyz"): _Handler._readyz,
    ("GET", "/openapi.json"): _Handler._openapi,
    ("GET", "/v1/status"): _Handler._status,
    ("GET", "/v1/pls"): _Handler._pls,
    ("GET", "/v1/report"): _Handler._report,
    ("GET", "/v1/leaderboard"): _Handler._leaderboard,
    ("GET", "/v1/biases"): _Handler._biases,
    ("GET", "/v1/diversity"): _Handler._diversity,
    ("GET", "/v1/explain"): _Handler._explain,
    ("POST", "/v1/events"): _Handler._events,
    ("POST", "/v1/check"): _Handler._check,
    ("GET", "/"): _Handler._overview_page,
    ("GET", "/explain"): _Handler._explain_page,
    **{("GET", path): _Handler._asset for path in ASSETS},
}
"""Every method and path the port serves; the OpenAPI document has exactly these."""
