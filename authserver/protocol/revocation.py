"""Token revocation (RFC 7009) and introspection (RFC 7662).

Who may call:

- ``/oauth/revoke``: any client, with its usual authentication (``none`` for public
  clients, RFC 7009 §2.1 and RFC 9700 §4.14), for tokens issued to itself.
- ``/oauth/introspect``: only confidential clients registered with ``allow_introspection``
  (resource servers). RFC 7662 §2.1 requires the caller to authenticate and §4 to be
  authorised; a client that cannot authenticate (no or wrong credentials, or a public
  client, which has none) gets ``401 invalid_client``; an authenticated client without
  the permission gets ``403 unauthorized_client``, so that a misconfigured resource server
  sees an error instead of mistaking every token for revoked. (node-oidc-provider answers
  ``active: false`` there instead; ts-oauth2-server and Keycloak refuse public clients.)
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from authlib.common.security import is_secure_transport
from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from flask import Response, request
from sqlalchemy.exc import OperationalError

from ..crypto import jose
from ..domain import refresh_families, sessions, user_agents
from ..domain import secrets as creds
from ..domain.clients import ClientRecord
from ..extensions import db
from ..services import services
from . import access_tokens
from .client_auth import authenticate_client
from .errors import ClientAuthenticationFailed, oauth_error
from .routes import bp, check_token_request, error_response, json_response
from .tokens import ACCESS_TOKEN_TYP

log = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
INACTIVE = {"active": False}
REFRESH, ACCESS = "refresh_token", "access_token"  # RFC 7009 §2.1 hint values


def _no_500(view: Callable[[], Response]) -> Callable[[], Response]:
    """A database outage is 503 ``temporarily_unavailable``, anything else a generic
    ``server_error``: never a stack trace (the detail goes to the log)."""

    @wraps(view)
    def wrapper() -> Response:
        try:
            return view()
        except OperationalError:
            log.exception("%s: database unavailable", request.path)
            db.session.rollback()
            return json_response({"error": "temporarily_unavailable",
                                  "error_description": "try again later"},
                                 503, {**NO_STORE, "Retry-After": "1"})
        except Exception:
            log.exception("%s failed", request.path)
            db.session.rollback()
            return json_response({"error": "server_error", "error_description": "internal error"},
                                 500, NO_STORE)

    return wrapper


def _authenticated_request() -> tuple[ClientRecord, str] | Response:
    """RFC 6749 §2.3 client authentication, then the required ``token`` parameter."""
    if not is_secure_transport(request.url):
        # RFC 7009 §2 and RFC 7662 §4: TLS, as at the token endpoint (the same rule: in
        # development, and for loopback addresses, plain http is allowed).
        log.warning("%s: request over plain http refused", request.path)
        return error_response(oauth_error(InvalidRequestError,
                                          f"{request.path} must be called over https"))
    # RFC 7009 §2.2 / RFC 7662 §2.2: an invalid token, however long, is answered as one
    # (200, or active: false), not as a malformed request.
    problem = check_token_request(long_parameters=("token",))
    if problem is not None:
        return error_response(problem)
    try:
        # The stored record, never the cache: a secret withdrawn, a client disabled or its
        # permission to introspect taken away in another process counts at once.
        client, _ = authenticate_client(request.headers, request.form,
                                        services().clients.reload)
        token = request.form.get("token")
        if not token:
            raise oauth_error(InvalidRequestError, "missing 'token' parameter")
    except OAuth2Error as error:
        return error_response(error)
    return client, token


def _order(hint: str | None, token: str) -> list[str]:
    """RFC 7009 §2.1 / RFC 7662 §2.1: the hint says where to look first, not where only;
    an unknown hint is ignored. A kind the token cannot be by its shape is skipped, so no
    lookup is spent on it: our refresh tokens carry a prefix, access tokens are JWS."""
    kinds = [ACCESS, REFRESH] if hint == ACCESS else [REFRESH, ACCESS]
    shaped = {REFRESH: token.startswith(creds.REFRESH_TOKEN_PREFIX),
              ACCESS: token.count(".") == 2}
    return [kind for kind in kinds if shaped[kind]]


def _our_access_token(token: str) -> dict[str, Any] | None:
    """Claims of an access token this server issued (signed by one of its published keys
    with that key's algorithm, ``typ: at+jwt``, our ``iss``), expired or not; else None.
    ID tokens (``typ: JWT``) and anything forged or foreign are not access tokens."""
    svc = services()
    try:
        header = jose.unverified_header(token)
    except jose.InvalidJWT:
        return None
    if header.get("typ") != ACCESS_TOKEN_TYP:
        return None
    key = next((k for k in svc.keys.published() if k.kid == header.get("kid")), None)
    if key is None or header.get("alg") != key.alg:
        return None
    try:
        claims = jose.verify_jwt(token, key.private, key.alg)
    except jose.InvalidJWT:
        return None
    return claims if claims.get("iss") == svc.settings.issuer else None


def _requester() -> dict[str, Any]:
    """Where a revocation came from, for the audit trail (never a credential)."""
    return {"via": "revocation_endpoint", "ip": request.remote_addr,
            "user_agent_family": user_agents.family(request.user_agent.string)}


@bp.post("/oauth/revoke")
@_no_500
def revoke() -> Response:
    """RFC 7009: revoking a refresh token, or an access token, ends its whole family.

    §2.2: unknown, invalid, expired and already revoked tokens answer 200. §2.1: the
    token must have been issued to the requesting client; another client's token is
    answered 200 as well and changes nothing (a 4xx would confirm that it exists).
    An access token without ``sid`` (client credentials) is self-contained: nothing to
    revoke; it ends at its ``exp``.
    """
    authenticated = _authenticated_request()
    if isinstance(authenticated, Response):
        return authenticated
    client, token = authenticated
    now = services().clock()
    for kind in _order(request.form.get("token_type_hint"), token):
        family_id, owner = _family_of(kind, token, now)
        if owner is None:
            continue  # not a token of this kind: look at the other kind
        if owner == client.client_id and family_id is not None and sessions.revoke_for_client(
                db.session(), family_id, client.client_id, reason="revoked_by_client", now=now,
                by={**_requester(), "token_type": kind}):
            db.session.commit()
        break
    return Response("", 200, headers=NO_STORE)


def _family_of(kind: str, token: str, now: dt.datetime) -> tuple[str | None, str | None]:
    """(family id, owning client id) of a token of ``kind``; (None, None) if it is not one."""
    if kind == REFRESH:
        info = refresh_families.find_refresh_token(db.session(), token, now)
        return (info.family_id, info.client_id) if info is not None else (None, None)
    claims = _our_access_token(token)
    if claims is None:
        return None, None
    sid = claims.get("sid")
    return (sid[:43] if isinstance(sid, str) else None), str(claims.get("client_id", ""))


@bp.post("/oauth/introspect")
@_no_500
def introspect() -> Response:
    """RFC 7662, for confidential clients allowed to introspect (resource servers).

    Revocation is immediate: an access token whose family was revoked, whose user was
    deactivated, or (without a family) whose client was disabled is inactive at once.
    Each answer costs one indexed lookup: the family joined to its user by primary keys,
    the refresh token by its unique digest, or the client by its unique id.
    """
    authenticated = _authenticated_request()
    if isinstance(authenticated, Response):
        return authenticated
    client, token = authenticated
    if client.public:
        return error_response(oauth_error(
            ClientAuthenticationFailed, "introspection requires client authentication"))
    if not client.allow_introspection:
        return json_response({"error": "unauthorized_client",
                              "error_description": "this client may not introspect tokens"},
                             403, NO_STORE)
    now = services().clock()
    for kind in _order(request.form.get("token_type_hint"), token):
        answer = (_introspect_refresh(token, now) if kind == REFRESH
                  else _introspect_access(token, now))
        if answer is not None:
            return json_response(answer, 200, NO_STORE)
    return json_response(INACTIVE, 200, NO_STORE)


def _introspect_refresh(token: str, now: dt.datetime) -> dict[str, Any] | None:
    """RFC 7662 §2.2 for a refresh token; None if it is not one of ours."""
    info = refresh_families.find_refresh_token(db.session(), token, now)
    if info is None:
        return None
    if not info.active:  # rotated, revoked, expired, or the user was deactivated
        return INACTIVE
    answer: dict[str, Any] = {
        "active": True, "token_type": REFRESH, "scope": info.scope,
        "client_id": info.client_id, "sub": info.subject, "iat": int(info.created_at.timestamp()),
        "iss": services().settings.issuer, "aud": info.client_id, "sid": info.family_id,
    }
    if info.expires_at is not None:
        answer["exp"] = int(info.expires_at.timestamp())
    if info.dpop_jkt:
        answer["cnf"] = {"jkt": info.dpop_jkt}
    return answer


def _introspect_access(token: str, now: dt.datetime) -> dict[str, Any]:
    """RFC 7662 §2.2 for a JWT access token."""
    svc = services()
    try:
        verified = access_tokens.verify(token, keys=svc.keys, issuer=svc.settings.issuer,
                                        session=db.session(), now=now, leeway=0)
    except access_tokens.InvalidAccessToken:
        # Not ours, not an access token, expired, its session ended or its user was
        # deactivated: all the same to the caller (§2.2: no more than "active": false).
        return INACTIVE
    claims = verified.claims
    # A token with a family was checked against it (a disabled client's families are
    # revoked); one without (client credentials) is checked against its client.
    if "sid" not in claims and not sessions.client_active(db.session(),
                                                          str(claims.get("client_id", ""))):
        return INACTIVE
    answer: dict[str, Any] = {
        k: claims[k] for k in ("scope", "client_id", "sub", "exp", "iat", "aud", "iss", "sid",
                               "cnf", "jti", "auth_time") if k in claims}
    answer["active"] = True
    answer["token_type"] = "DPoP" if "cnf" in claims else "Bearer"
    return answer
