"""Token introspection, ``POST /oauth/introspect`` (RFC 7662).

Only confidential clients registered with ``allow_introspection`` (resource servers) may
call. RFC 7662 §2.1 requires the caller to authenticate and §4 to be authorised; a client
that cannot authenticate (no or wrong credentials, or a public client, which has none) gets
``401 invalid_client``; an authenticated client without the permission gets ``403
unauthorized_client``, so that a misconfigured resource server sees an error instead of
mistaking every token for revoked. (node-oidc-provider answers ``active: false`` there
instead; ts-oauth2-server and Keycloak refuse public clients.)
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Blueprint, Response, request

from ..domain import refresh_lookup, sessions
from ..extensions import db
from ..http import OAUTH_NO_STORE, error_response, json_response, no_500
from ..services import services
from . import access_tokens
from .client_requests import REFRESH, authenticated_request, lookup_order
from .errors import ClientAuthenticationFailed, oauth_error

bp = Blueprint("introspection", __name__)
INACTIVE = {"active": False}


@bp.post("/oauth/introspect")
@no_500
def introspect() -> Response:
    """RFC 7662, for confidential clients allowed to introspect (resource servers).

    Revocation is immediate: an access token whose family was revoked, whose user was
    deactivated, or (without a family) whose client was disabled is inactive at once.
    Each answer costs one indexed lookup: the family joined to its user by primary keys,
    the refresh token by its unique digest, or the client by its unique id.
    """
    authenticated = authenticated_request()
    if isinstance(authenticated, Response):
        return authenticated
    client, token = authenticated
    if client.public:
        return error_response(oauth_error(
            ClientAuthenticationFailed, "introspection requires client authentication"))
    if not client.allow_introspection:
        return json_response({"error": "unauthorized_client",
                              "error_description": "this client may not introspect tokens"},
                             403, OAUTH_NO_STORE)
    now = services().clock()
    for kind in lookup_order(request.form.get("token_type_hint"), token):
        answer = (_introspect_refresh(token, now) if kind == REFRESH
                  else _introspect_access(token, now))
        if answer is not None:
            return json_response(answer, 200, OAUTH_NO_STORE)
    return json_response(INACTIVE, 200, OAUTH_NO_STORE)


def _introspect_refresh(token: str, now: dt.datetime) -> dict[str, Any] | None:
    """RFC 7662 §2.2 for a refresh token; None if it is not one of ours."""
    info = refresh_lookup.find_refresh_token(db.session(), token, now)
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
                                        audience=svc.settings.audience,
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
