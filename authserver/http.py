"""What every endpoint and page answers with: ``no-store``, JSON bodies, the OAuth JSON
error, the guard that turns any failure into an error response (never a stack trace), and
the transport rule (a usable Host, TLS).
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from authlib.common.security import is_secure_transport
from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import Flask, Response, abort, request
from markupsafe import escape
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException, InternalServerError
from werkzeug.urls import uri_to_iri

from .config import Settings
from .crypto.keystore import KeyStoreError
from .domain import events
from .extensions import db
from .services import services

log = logging.getLogger(__name__)

# An answer about one request, or about one person: no cache may keep it (RFC 9111 §5.2.2.5).
NO_STORE = {"Cache-Control": "no-store"}
# The token, revocation, introspection and registration endpoints add the HTTP/1.0 form
# (RFC 6749 §5.1).
OAUTH_NO_STORE = {**NO_STORE, "Pragma": "no-cache"}


# -- JSON --------------------------------------------------------------------------------
def json_body(data: object) -> bytes:
    return json.dumps(data).encode()


def json_response(data: object, status: int = 200, headers: Mapping[str, str] | None = None
                  ) -> Response:
    return Response(json_body(data), status=status, mimetype="application/json",
                    headers=dict(headers) if headers is not None else None)


def error_response(error: OAuth2Error) -> Response:
    """An Authlib error as RFC 6749 §5.2 JSON, with the error's own status and headers."""
    status, body, headers = error()
    return Response(json.dumps(body), status=status, headers=headers)


def unavailable(no_store: Mapping[str, str] = NO_STORE) -> Response:
    """503 ``temporarily_unavailable`` with ``Retry-After``: a store failed, nothing was
    half-done, and the client may try again."""
    return json_response(
        {"error": "temporarily_unavailable", "error_description": "try again later"},
        503, {**no_store, "Retry-After": "1"},
    )


def server_error(no_store: Mapping[str, str] = NO_STORE) -> Response:
    """500 ``server_error``: never a stack trace to the client; the detail is in the log."""
    return json_response({"error": "server_error", "error_description": "internal error"},
                         500, no_store)


# -- A database outage ----------------------------------------------------------------------
# The database cannot answer now: unreachable, a connection terminated, a lock or statement
# timeout, no pooled connection free in time. 503 and one log line each.
DATABASE_ERRORS = (OperationalError, PoolTimeout)


def is_database_outage(exc: BaseException) -> bool:
    return isinstance(exc, DATABASE_ERRORS) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated)


def database_error(where: str, exc: BaseException | None = None) -> None:
    """Log a database outage as ONE line (docs/design.md, "Operations"): where, the error's
    class and the first line of its message; never its SQL, parameters or a traceback (the
    same outage fails every request, and its cause is in that first line). Publishes
    ``events.DATABASE_ERROR``."""
    exc = exc if exc is not None else sys.exc_info()[1]
    name = type(exc).__name__
    text = str(exc).strip()
    log.error("%s: database unavailable: %s: %s", where, name,
              text.splitlines()[0][:300] if text else "")
    events.emit(events.DATABASE_ERROR, error=name)


def outage(where: str, exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of what every request needs (the database, or the
    signing keys a process could never load): then it is logged as one line, the request's
    session is rolled back, and the caller answers 503 ``temporarily_unavailable``."""
    if is_database_outage(exc):
        database_error(where, exc)
    elif isinstance(exc, KeyStoreError):
        log.error("%s: no signing key: %s", where, exc)
    else:
        return False
    rollback()
    return True


def rollback() -> None:
    """Roll the request's session back after a failure; a connection already gone has
    nothing to roll back (and its error was logged once)."""
    with contextlib.suppress(SQLAlchemyError):
        db.session.rollback()


# -- No 500 page, ever -------------------------------------------------------------------
def no_500(view: Callable[[], Response]) -> Callable[[], Response]:
    """A view's database outage is 503 ``temporarily_unavailable``, anything else a generic
    ``server_error``, both ``no-store`` as the OAuth endpoints answer (the detail goes to
    the log)."""

    @functools.wraps(view)
    def wrapper() -> Response:
        try:
            return view()
        except Exception as exc:
            if outage(request.path, exc):
                return unavailable(OAUTH_NO_STORE)
            log.exception("%s failed", request.path)
            db.session.rollback()
            return server_error(OAUTH_NO_STORE)

    return wrapper


_CODES = {400: "invalid_request", 401: "invalid_token", 403: "access_denied",
          404: "not_found", 405: "invalid_request", 413: "invalid_request",
          503: "temporarily_unavailable"}


def _wants_json() -> bool:
    if request.path.startswith(("/oauth/", "/.well-known/")):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _render(status: int, title: str, description: str) -> Response:
    if _wants_json():
        code = _CODES.get(status, "server_error" if status >= 500 else "invalid_request")
        # An error is about this one request: no cache may keep it (RFC 6749 §5.2).
        return json_response({"error": code, "error_description": description}, status,
                             NO_STORE)
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        f"<title>{escape(title)}</title><main><h1>{escape(title)}</h1>"
        f"<p>{escape(description)}</p></main></html>"
    )
    return Response(page, status=status, mimetype="text/html")


def register_error_handlers(app: Flask) -> None:
    """One error handler for the app: RFC 6749-style JSON for API clients, a short page for
    people; and a Host header no URL can be built on is refused up front."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        response = _render(status, f"{status} {exc.name}", exc.description or exc.name)
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if outage(f"{request.method} {request.path}", exc):
            response = _render(503, "503 Service Unavailable",
                               "The service is briefly unavailable. Try again in a moment.")
            response.headers["Retry-After"] = "1"
            return response
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _render(500, "500 Internal Server Error", InternalServerError.description)

    app.before_request(reject_unusable_host)


def reject_unusable_host() -> None:
    """A Host header that is no valid IDNA name makes every ``request.url`` raise
    UnicodeError; Authlib reads it on each OAuth request. Refuse such a request up front
    with a 400 instead of failing deep inside with a 500."""
    if not usable_host(request.host):
        abort(400, "malformed Host header")


# -- Transport ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=256)
def usable_host(host: str) -> bool:
    """Whether Werkzeug can route and build URLs on ``host``. A name that is no valid IDNA
    (``xn--a``, ``a..b``) makes the URL map refuse it (400) and every ``request.url``
    raise UnicodeError; a bracketed one that is no IPv6 address (``[:1]``), ValueError.
    Decided once per host value (building a URL costs more than a refresh's client
    authentication)."""
    try:
        host.lower().partition(":")[0].encode("idna")  # as werkzeug's Map.bind does
        uri_to_iri(f"http://{host}/")
    except (UnicodeError, ValueError):  # ValueError: a bracketed non-address, "[:1]"
        return False
    return True


def secure(scheme: str, peer: str | None, settings: Settings, host: str = "") -> bool:
    """RFC 6749 §3.2 (TLS), decided by configuration (docs/design.md, "Operations"). In
    production ``https``, where ``scheme`` is the WSGI server's own unless
    ``trusted_proxies`` lets ProxyFix take it from ``X-Forwarded-Proto``; plain http only
    when the issuer itself is a loopback http URL and the connection comes from a loopback
    address (``peer``, settled the same way). Never the ``Host`` header there: any client
    can send ``Host: localhost``. In development as Authlib decides it (anything, with the
    ``AUTHLIB_INSECURE_TRANSPORT`` that development sets)."""
    if not settings.production:
        return bool(is_secure_transport(f"{scheme}://{host}/"))
    if scheme == "https":
        return True
    return scheme == "http" and _loopback_issuer(settings.issuer) and _loopback(peer)


def request_is_secure() -> bool:
    """:func:`secure` for the current Flask request."""
    return secure(request.scheme, request.remote_addr, services().settings, request.host)


@functools.lru_cache(maxsize=8)
def _loopback_issuer(issuer: str) -> bool:
    parts = urlsplit(issuer)
    return parts.scheme == "http" and _loopback(parts.hostname)


@functools.lru_cache(maxsize=256)
def _loopback(address: str | None) -> bool:
    if not address:
        return False
    if address == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# -- Security headers ----------------------------------------------------------------------
# Every page: no script but this server's files, no framing, no <base>, forms post here only
# (a page whose form ends at a client adds that client's address: web/security.py).
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
            "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'")
FORM_ACTION_SELF = "form-action 'self'"
PAGE_HEADERS = {
    "Content-Security-Policy": f"{PAGE_CSP}; {FORM_ACTION_SELF}",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_PAGE_HEADER_NAMES = tuple(name.lower() for name in PAGE_HEADERS)


class SecurityHeaders:
    """The outermost WSGI layer: whatever answered (a page, an API, the token fast path,
    the public documents, a 404 or an error page), ``nosniff`` on every response, the
    page headers on every HTML one that has not set its own, and in production
    ``Strict-Transport-Security`` (docs/design.md, "Operations")."""

    def __init__(self, app: Callable[..., Any], hsts_max_age: int) -> None:
        self.app = app
        self.hsts = [("Strict-Transport-Security",
                      f"max-age={hsts_max_age}; includeSubDomains")] if hsts_max_age else []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            names = {name.lower(): value for name, value in headers}
            extra = [header for header in self.hsts if "strict-transport-security" not in names]
            if "x-content-type-options" not in names:
                extra.append(("X-Content-Type-Options", "nosniff"))
            if names.get("content-type", "").startswith("text/html"):
                extra.extend((name, value) for (name, value), lower
                             in zip(PAGE_HEADERS.items(), _PAGE_HEADER_NAMES, strict=True)
                             if lower not in names and lower != "x-content-type-options")
            return start_response(status, [*headers, *extra], exc_info)

        return self.app(environ, start)
