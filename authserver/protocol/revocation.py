"""Token revocation, ``POST /oauth/revoke`` (RFC 7009).

Any client may call, with its usual authentication (``none`` for public clients, RFC 7009
§2.1 and RFC 9700 §4.14), for tokens issued to itself.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from flask import Blueprint, Response, request

from ..crypto import jose
from ..domain import credentials as creds
from ..domain import refresh_lookup, sessions, user_agents
from ..domain.clients import ClientRecord
from ..extensions import db
from ..http import OAUTH_NO_STORE, error_response, no_500
from ..services import services
from . import refresh_cookie
from .client_requests import REFRESH, authenticated_request, lookup_order
from .errors import oauth_error
from .tokens import ACCESS_TOKEN_TYP

bp = Blueprint("revocation", __name__)


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
    key = svc.keys.published_key(header.get("kid"))
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
@no_500
def revoke() -> Response:
    """RFC 7009: revoking a refresh token, or an access token, ends its whole family.

    §2.2: unknown, invalid, expired and already revoked tokens answer 200. §2.1: the
    token must have been issued to the requesting client; another client's token is
    answered 200 as well and changes nothing (a 4xx would confirm that it exists).
    An access token without ``sid`` (client credentials) is self-contained: nothing to
    revoke; it ends at its ``exp``.
    """
    browser_app = refresh_cookie.cookie_client()
    if browser_app is not None:
        problem = _browser_app_problem(browser_app)
        if problem is not None:
            return error_response(problem)
    authenticated = authenticated_request(_cookie_token)
    if isinstance(authenticated, Response):
        return authenticated
    client, token = authenticated
    now = services().clock()
    for kind in lookup_order(request.form.get("token_type_hint"), token):
        family_id, owner = _family_of(kind, token, now)
        if owner is None:
            continue  # not a token of this kind: look at the other kind
        if owner == client.client_id and family_id is not None:
            sessions.revoke_for_client(  # commits
                db.session(), family_id, client.client_id, reason="revoked_by_client", now=now,
                by={**_requester(), "token_type": kind})
        break
    response = Response("", 200, headers=OAUTH_NO_STORE)
    if client.cookie_delivery:
        refresh_cookie.expire_dead(response, now)
    return response


def _browser_app_problem(client: ClientRecord) -> OAuth2Error | None:
    """A cookie-delivery client (docs/design.md, "Browser apps"): the CSRF rule, and no
    refresh token in the body (its tokens never pass through JavaScript). Without a
    ``token`` parameter the one in its cookie is revoked."""
    problem = refresh_cookie.check_csrf(client)
    if problem is None and request.form.get("token", "").startswith(
            creds.REFRESH_TOKEN_PREFIX):
        problem = oauth_error(InvalidRequestError, "this client's refresh token travels only "
                              "in its cookie: send no 'token' parameter to revoke it")
    return problem


def _cookie_token(client: ClientRecord) -> str | None:
    return refresh_cookie.presented(client) if client.cookie_delivery else None


def _family_of(kind: str, token: str, now: dt.datetime) -> tuple[str | None, str | None]:
    """(family id, owning client id) of a token of ``kind``; (None, None) if it is not one."""
    if kind == REFRESH:
        info = refresh_lookup.find_refresh_token(db.session(), token, now)
        return (info.family_id, info.client_id) if info is not None else (None, None)
    claims = _our_access_token(token)
    if claims is None:
        return None, None
    sid = claims.get("sid")
    return (sid[:43] if isinstance(sid, str) else None), str(claims.get("client_id", ""))
