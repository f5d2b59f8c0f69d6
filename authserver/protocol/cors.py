"""CORS for browser apps (docs/design.md, "Browser apps"; the Fetch Standard's CORS
protocol): which origins may read the answers of the token, revocation, UserInfo and
introspection endpoints, and the public documents that any origin may read.

- **Credentialed endpoints** (``/oauth/token``, ``/oauth/revoke``, ``/oauth/userinfo``, and
  ``/oauth/introspect`` for public clients): an actual response carries
  ``Access-Control-Allow-Origin: <origin>`` and ``Access-Control-Allow-Credentials: true``
  only when ``Origin`` is one of the ``web_origins`` of the client concerned (the one the
  request names); a preflight names no client, so it is answered for the web origins of any
  active client (:class:`WebOrigins`). The preflight only lets the browser send the request:
  whether the page may read the answer is decided again, per client, on the response. Every
  response of these endpoints to a request with ``Origin`` says ``Vary: Origin``. Never
  ``*``: these answers carry credentials (cookies, tokens).
- **Public documents** (the JWKS and both discovery documents): ``*``, without credentials
  (``discovery.PUBLIC_CORS``; :class:`~.discovery.DocumentMiddleware` answers their ``GET``
  before Flask, this module their preflights and other methods). The status lists
  (``/oauth/status`` and ``/oauth/status/<id>``, protocol/status_lists.py) are public too:
  this module gives every answer of theirs the same ``*``.

The hook never raises: a malformed ``Authorization`` header, a garbage token or a database
failure only means no CORS headers (the browser then refuses to let the page read).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable
from time import monotonic

from flask import Flask, Response, request
from sqlalchemy import select
from werkzeug.exceptions import RequestEntityTooLarge

from ..extensions import db
from ..services import Services, services
from ..storage import engine as storage_engine
from ..storage.models import Client
from . import bearer
from .client_requests import named_client_id
from .discovery import (
    JWKS_PATH,
    OAUTH_METADATA_PATH,
    OPENID_CONFIGURATION_PATH,
    PUBLIC_CORS,
    STATUS_LISTS_PATH,
)
from .token import TOKEN_PATH

log = logging.getLogger(__name__)

REVOCATION_PATH = "/oauth/revoke"
INTROSPECTION_PATH = "/oauth/introspect"
USERINFO_PATH = "/oauth/userinfo"
# The credentialed endpoints and the methods a preflight allows on each.
CREDENTIALED_PATHS = {
    TOKEN_PATH: "POST",
    REVOCATION_PATH: "POST",
    INTROSPECTION_PATH: "POST",
    USERINFO_PATH: "GET, POST",
}
PUBLIC_PATHS = frozenset((JWKS_PATH, OAUTH_METADATA_PATH, OPENID_CONFIGURATION_PATH,
                          STATUS_LISTS_PATH))
PUBLIC_PREFIXES = (f"{STATUS_LISTS_PATH}/",)  # each status list
ALLOW_HEADERS = "Content-Type, Authorization, DPoP, X-CSRF, X-Device-Id"
EXPOSE_HEADERS = "DPoP-Nonce, WWW-Authenticate"
MAX_AGE = 600  # seconds a browser may keep a preflight's answer
MAX_TOKEN_LENGTH = 8192  # longer than any access token we issue: not ours, not read
# An origin not in the set is looked up again at most this often (see WebOrigins).
MISS_RELOAD_SECONDS = 1.0
EXTENSION = "authserver.cors"  # the app's WebOrigins, in app.extensions


def load_web_origins() -> frozenset[str]:
    """The web origins of every active client, in one query on its own autocommit
    connection (no ORM transaction is opened for a preflight)."""
    query = select(Client.web_origins).where(Client.active.is_(True))
    with storage_engine.autocommit(db.engine.connect()) as connection:
        rows = connection.execute(query).scalars()
        return frozenset(origin for origins in rows for origin in (origins or ())
                         if isinstance(origin, str))


class WebOrigins:
    """Per-process, time-bounded set of the web origins of all active clients: what a
    preflight is answered for.

    Read again when older than ``ttl`` seconds (the client cache's
    ``client_cache_seconds``), and when an origin is not in it and the set is older than
    ``MISS_RELOAD_SECONDS``: an origin just registered (in this process or another) is
    allowed within a second, and an unknown origin costs at most one query a second. An origin just
    withdrawn may still be preflighted for up to ``ttl`` seconds; that lets the browser send,
    never read: the actual response is checked against the client's record.
    """

    def __init__(self, load: Callable[[], frozenset[str]], ttl: float) -> None:
        self._load = load
        self.ttl = ttl
        self._lock = threading.Lock()
        self._origins: frozenset[str] = frozenset()
        self._loaded_at = float("-inf")

    def __contains__(self, origin: object) -> bool:
        now = monotonic()
        if now - self._loaded_at >= self.ttl:
            self._reload(now)
        if origin in self._origins:
            return True
        if now - self._loaded_at >= MISS_RELOAD_SECONDS:
            self._reload(now)
            return origin in self._origins
        return False

    def _reload(self, now: float) -> None:
        with self._lock:
            if now - self._loaded_at < min(self.ttl, MISS_RELOAD_SECONDS):
                return  # another thread just read it
            self._origins = self._load()
            self._loaded_at = monotonic()


def install(app: Flask) -> None:
    """Add the CORS headers to every response of the app (called by ``create_app``)."""
    svc: Services = app.extensions["authserver"]
    origins = WebOrigins(load_web_origins, svc.settings.client_cache_seconds)
    app.extensions[EXTENSION] = origins

    def add_cors_headers(response: Response) -> Response:
        return with_cors(response, origins)

    app.after_request(add_cors_headers)


def with_cors(response: Response, origins: WebOrigins) -> Response:
    """``response`` with the CORS headers its request earns (none, most of the time)."""
    path = request.path
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        response.headers.update(PUBLIC_CORS)
        if _preflight():
            response.headers["Access-Control-Allow-Methods"] = "GET, HEAD"
            response.headers["Access-Control-Max-Age"] = str(MAX_AGE)
        return response
    methods = CREDENTIALED_PATHS.get(path)
    if methods is None:
        return response
    origin = request.headers.get("Origin")
    if not origin:
        # Without Origin the answer is the one the token endpoint's fast path gives, byte
        # for byte (no Vary): every answer of these endpoints is ``no-store`` anyway, so no
        # cache could hand it to a browser's request.
        return response
    response.vary.add("Origin")  # the answer differs by Origin: no cache may mix them up
    try:
        preflight = _preflight()
        allowed = origin in origins if preflight else _client_allows(path, origin)
    except Exception:
        log.exception("%s: CORS check failed; answered without CORS headers", path)
        return response
    if not allowed:
        return response
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Allow-Credentials"] = "true"
    if preflight:
        response.headers["Access-Control-Allow-Methods"] = methods
        response.headers["Access-Control-Allow-Headers"] = ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = str(MAX_AGE)
    else:
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
    return response


def _preflight() -> bool:
    """A CORS preflight: ``OPTIONS`` with ``Access-Control-Request-Method``."""
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _client_allows(path: str, origin: str) -> bool:
    """Whether ``origin`` is a web origin of the client this request names (for
    introspection: only a public client's)."""
    client_id = _userinfo_client_id() if path == USERINFO_PATH else named_client_id()
    if not client_id:
        return False
    client = services().clients.get(client_id)  # the cached record
    if client is None or not client.active or origin not in client.web_origins:
        return False
    return client.public or path != INTROSPECTION_PATH


def _userinfo_client_id() -> str | None:
    """The ``client_id`` claim of the access token sent to UserInfo (``Bearer`` or ``DPoP``
    scheme, or the RFC 6750 §2.2 form parameter), read WITHOUT verifying it. That is enough
    here: the claim decides only whether a registered origin may read the answer. A forged
    or altered token is refused by the view (401), and an answer with data is only ever
    given for a genuine token, whose claim is the real client's."""
    scheme, token = bearer.authorization(request.headers.get("Authorization", ""))
    if scheme is None or not token:
        token = ""
        if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
            try:
                token = request.form.get("access_token") or ""
            except RequestEntityTooLarge:
                return None
    return unverified_client_id(token)


def unverified_client_id(token: str) -> str | None:
    """The ``client_id`` claim of a JWS compact token's payload, unverified; None for
    anything that is not one."""
    parts = token.split(".")
    if len(token) > MAX_TOKEN_LENGTH or len(parts) != 3:
        return None
    payload = parts[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError):  # UnicodeDecodeError and JSONDecodeError included
        return None
    client_id = claims.get("client_id") if isinstance(claims, dict) else None
    return client_id if isinstance(client_id, str) else None
