"""HTTP endpoints of the protocol: the token endpoint and the well-known documents."""

from __future__ import annotations

import json
import logging

from authlib.oauth2.rfc6749.errors import (
    InsecureTransportError,
    InvalidRequestError,
    OAuth2Error,
)
from flask import Blueprint, Response, g, request
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import RequestEntityTooLarge

from ..domain.clients import SUPPORTED_GRANT_TYPES
from ..extensions import db
from ..services import services
from ..storage.replay_cache import ReplayCacheUnavailable
from . import documents, dpop, grants, transport
from .errors import oauth_error, safe_description

log = logging.getLogger(__name__)
bp = Blueprint("oauth", __name__)

MAX_PARAMETER_LENGTH = 4096
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


def json_body(data: object) -> bytes:
    return json.dumps(data).encode()


def json_response(data: object, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(json_body(data), status=status, mimetype="application/json",
                    headers=headers)


def error_response(error: OAuth2Error) -> Response:
    status, body, headers = error()
    return Response(json.dumps(body), status=status, headers=headers)


def check_token_request(long_parameters: tuple[str, ...] = ()) -> OAuth2Error | None:
    """RFC 6749 §3.2 and §5.2: form-encoded body, each parameter at most once.

    A body over ``MAX_CONTENT_LENGTH`` (or with more fields than Werkzeug parses) is a
    413 with the same JSON error body, never an HTML page. ``long_parameters`` are exempt
    from the per-parameter length limit (the body limit still holds).
    """
    if request.mimetype != FORM_CONTENT_TYPE:
        return oauth_error(InvalidRequestError,
                           f"the request body must be {FORM_CONTENT_TYPE}")
    if request.args:
        return oauth_error(InvalidRequestError,
                           "parameters must be sent in the request body, not the URL")
    try:
        form = request.form
    except RequestEntityTooLarge:
        return oauth_error(InvalidRequestError, "the request body is too large",
                           status_code=413)
    for key in form:
        values = form.getlist(key)
        if len(values) > 1:
            return oauth_error(InvalidRequestError, f"parameter {key!r} is repeated")
        if len(key) > 128 or (len(values[0]) > MAX_PARAMETER_LENGTH
                              and key not in long_parameters):
            return oauth_error(InvalidRequestError, f"parameter {key[:32]!r} is too long")
    return None


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
    headers = {"Cache-Control": "no-store"}
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
        )
    except dpop.DPoPError as exc:
        return dpop_error_response(exc)
    except ReplayCacheUnavailable as exc:
        # Fail closed: without the cache a replayed proof cannot be told from a fresh one.
        log.error("token endpoint: DPoP replay cache unavailable (%s)", exc)
        return json_response(
            {"error": "temporarily_unavailable", "error_description": "try again later"},
            503, {"Cache-Control": "no-store", "Retry-After": "1"},
        )
    return None


NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path, not a secret


@bp.post(TOKEN_PATH)
def token() -> Response:
    """RFC 6749 §3.2 token endpoint (with RFC 9449 DPoP proofs).

    Every answer, success or error, carries ``Cache-Control: no-store`` (§5.1, §5.2).
    """
    response = _token_response()
    response.headers.update(NO_STORE)
    return response


def _token_response() -> Response:
    problem = check_token_request() or check_grant_type()
    if problem is not None:
        return error_response(problem)
    try:
        rejected = _validate_dpop()
        if rejected is not None:
            return rejected
        if request.form["grant_type"] == "refresh_token":
            response = _refresh_response()
        else:
            response = services().oauth.create_token_response()
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
    except OperationalError:
        return database_unavailable()
    except Exception:
        return internal_error()


def database_unavailable() -> Response:
    """503 with ``Retry-After``: the database failed; nothing was half-done."""
    log.exception("token endpoint: database unavailable")
    db.session.rollback()
    return json_response(
        {"error": "temporarily_unavailable", "error_description": "try again later"},
        503, {"Cache-Control": "no-store", "Retry-After": "1"},
    )


def internal_error() -> Response:
    """Never a stack trace to the client; the detail goes to the log."""
    log.exception("token endpoint failed")
    db.session.rollback()
    return json_response(
        {"error": "server_error", "error_description": "internal error"}, 500,
        {"Cache-Control": "no-store"},
    )


def _refresh_response() -> Response:
    """The refresh grant without Authlib's dispatch (``grants.refresh_token_grant``)."""
    if not transport.secure(request.scheme, request.host):
        raise InsecureTransportError()
    try:
        client = services().oauth.authenticate_refresh_client(request.headers, request.form)
        status, body, headers = grants.refresh_token_grant(client)
    except OAuth2Error as error:
        return error_response(error)
    return json_response(body, status, dict(headers))


def _document(path: str) -> Response:
    """What :class:`~.documents.DocumentMiddleware` answers before Flask is reached; these
    views exist for ``url_for`` and so that other methods get a 405."""
    document = services().documents.get(path)
    response = Response(document.body, mimetype="application/json",
                        headers={"Cache-Control": document.cache_control,
                                 "ETag": document.etag})
    return response


@bp.get(documents.JWKS_PATH)
def jwks() -> Response:
    """Public signing keys (next, active, retired) for local verification."""
    return _document(documents.JWKS_PATH)


@bp.get(documents.OAUTH_METADATA_PATH)
def oauth_metadata() -> Response:
    return _document(documents.OAUTH_METADATA_PATH)


@bp.get(documents.OPENID_CONFIGURATION_PATH)
def openid_metadata() -> Response:
    return _document(documents.OPENID_CONFIGURATION_PATH)


# The endpoints below register themselves on ``bp``.
from . import registration, revocation  # noqa: E402, F401
