"""The token endpoint, ``POST /oauth/token`` (RFC 6749 §3.2, with RFC 9449 DPoP proofs).

Its ordinary requests are answered before Flask by ``token_fast_path``, with this module's
functions (docs/design.md, "The token endpoint").
"""

from __future__ import annotations

import logging

from authlib.oauth2.rfc6749.errors import (
    InsecureTransportError,
    InvalidRequestError,
    OAuth2Error,
)
from flask import Blueprint, Response, g, request

from .. import http
from ..domain import events
from ..domain.client_metadata import SUPPORTED_GRANT_TYPES
from ..extensions import db
from ..http import OAUTH_NO_STORE, error_response, json_response
from ..services import services
from ..storage.replay_cache import ReplayCacheUnavailable
from . import dpop, grants, refresh_cookie
from .client_requests import check_token_request, named_client_id
from .errors import oauth_error, safe_description

log = logging.getLogger(__name__)
bp = Blueprint("token", __name__)

TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret


def check_grant_type() -> OAuth2Error | None:
    """RFC 6749 §5.2: a missing ``grant_type`` is ``invalid_request``; an unknown one is
    ``unsupported_grant_type``. Checked here, because Authlib reports both as unsupported
    and would echo the raw value, which §5.2 does not allow in ``error_description``."""
    grant_type = request.form.get("grant_type")
    if not grant_type:  # §3.2: a parameter without a value is treated as omitted
        return oauth_error(InvalidRequestError, "missing 'grant_type' parameter")
    if grant_type not in SUPPORTED_GRANT_TYPES:
        return oauth_error(OAuth2Error, "this grant_type is not supported",
                           error="unsupported_grant_type")
    return None


def dpop_error_response(error: dpop.DPoPError) -> Response:
    """RFC 9449 §5 and §8: 400, and a fresh nonce when that is what is missing."""
    headers = dict(http.NO_STORE)
    nonces = services().nonces
    if nonces is not None:
        headers["DPoP-Nonce"] = nonces.current(services().clock())
    body = {"error": error.error, "error_description": safe_description(error.description)}
    return json_response(body, 400, headers)


def _validate_dpop() -> Response | None:
    """Check a DPoP header if there is one; the proof (or None) goes to ``g.dpop``."""
    g.dpop = None
    values = request.headers.getlist("DPoP")
    if not values:
        return None
    svc = services()
    try:
        g.dpop = dpop.validate(
            values, method=request.method,
            urls=dpop.expected_urls(svc.settings.issuer, request.path),
            now=svc.clock(), replay=svc.replay, nonces=svc.nonces,
            client_id=named_client_id(),
        )
    except dpop.DPoPError as exc:
        return dpop_error_response(exc)
    except ReplayCacheUnavailable as exc:
        # Fail closed: without the cache a replayed proof cannot be told from a fresh one.
        log.error("token endpoint: DPoP replay cache unavailable (%s)", exc)
        return http.unavailable()
    return None


@bp.post(TOKEN_PATH)
def token() -> Response:
    """RFC 6749 §3.2 token endpoint (with RFC 9449 DPoP proofs).

    Every answer, success or error, carries ``Cache-Control: no-store`` (§5.1, §5.2).
    """
    response = _token_response()
    response.headers.update(OAUTH_NO_STORE)
    _published(response)
    return response


def _published(response: Response) -> None:
    """Publish the request's outcome (``events.TOKEN_REQUEST``): ``ok`` or the error code."""
    outcome = "ok"
    if response.status_code != 200:
        body = response.get_json(silent=True)
        error = body.get("error") if isinstance(body, dict) else None
        outcome = error if isinstance(error, str) else "server_error"
    try:
        grant_type = request.form.get("grant_type")
    except Exception:  # a body too large to read: no grant named
        grant_type = None
    events.emit(events.TOKEN_REQUEST, outcome=outcome, client_id=named_client_id(),
                grant_type=grant_type if grant_type in SUPPORTED_GRANT_TYPES else "other")


def _token_response() -> Response:
    problem = check_token_request() or check_grant_type()
    if problem is not None:
        return error_response(problem)
    try:
        if not http.request_is_secure():
            # Before Authlib, whose own check believes a loopback Host header.
            raise InsecureTransportError()
        browser_app = refresh_cookie.cookie_client()
        if browser_app is not None:
            problem = refresh_cookie.check_csrf(browser_app)
            if problem is not None:
                return error_response(problem)
        rejected = _validate_dpop()
        if rejected is not None:
            return rejected
        if request.form["grant_type"] == "refresh_token":
            response = _refresh_response()
        else:
            response = services().oauth.create_token_response()
        if browser_app is not None:
            refresh_cookie.deliver(response, browser_app, services().clock())
        if services().nonces is not None:
            response.headers["DPoP-Nonce"] = services().nonces.current(  # type: ignore[union-attr]
                services().clock())
        return response
    except InsecureTransportError:
        # Authlib checks the scheme (RFC 6749 §3.2: TLS) before its own error handling.
        # In production that means plain http reached us: behind a TLS proxy, set
        # trusted_proxies so that X-Forwarded-Proto is believed.
        log.warning("token endpoint: request over plain http refused")
        return error_response(oauth_error(InvalidRequestError,
                                          "the token endpoint must be called over https"))
    except Exception as exc:
        return failed(exc)


def failed(exc: Exception) -> Response:
    """503 with ``Retry-After`` when the database or the signing keys failed (one line in
    the log; nothing was half-done); otherwise 500 ``server_error``, never a stack trace to
    the client (the detail goes to the log)."""
    if http.outage("token endpoint", exc):
        return http.unavailable()
    log.exception("token endpoint failed")
    db.session.rollback()
    return http.server_error()


def _refresh_response() -> Response:
    """The refresh grant without Authlib's dispatch (``grants.refresh_token_grant``)."""
    if not http.request_is_secure():
        raise InsecureTransportError()
    try:
        client = services().oauth.authenticate_refresh_client(request.headers, request.form)
        in_cookie = refresh_cookie.presented(client) if client.cookie_delivery else None
        status, body, headers = grants.refresh_token_grant(client, in_cookie)
    except OAuth2Error as error:
        return error_response(error)
    return json_response(body, status, dict(headers))
