"""Token revocation (RFC 7009) and introspection (RFC 7662)."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError, OAuth2Error
from flask import Response, request

from ..crypto import jose
from ..domain import refresh_families
from ..domain.clients import ClientRecord
from ..extensions import db
from ..services import services
from . import access_tokens
from .client_auth import authenticate_client
from .errors import oauth_error
from .routes import bp, check_token_request, error_response, json_response

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
INACTIVE = {"active": False}


def _authenticated_request() -> tuple[ClientRecord, str] | Response:
    problem = check_token_request()
    if problem is not None:
        return error_response(problem)
    try:
        client, _ = authenticate_client(request.headers, request.form, services().clients.get)
        token = request.form.get("token")
        if not token:
            raise oauth_error(InvalidRequestError, "missing 'token' parameter")
    except OAuth2Error as error:
        return error_response(error)
    return client, token


def _order(hint: str | None) -> tuple[str, str]:
    """RFC 7009 §2.1 / RFC 7662 §2.1: the hint says where to look first, not where only."""
    return ("access_token", "refresh_token") if hint == "access_token" else (
        "refresh_token", "access_token")


def _access_claims(token: str) -> dict[str, Any] | None:
    """Claims of a JWT signed by one of our published keys (expired or not), else None."""
    try:
        header = jose.unverified_header(token)
    except jose.InvalidJWT:
        return None
    key = next((k for k in services().keys.published() if k.kid == header.get("kid")), None)
    if key is None or header.get("alg") != key.alg:
        return None
    try:
        return jose.verify_jwt(token, key.private, key.alg)
    except jose.InvalidJWT:
        return None


@bp.post("/oauth/revoke")
def revoke() -> Response:
    """RFC 7009: revoking a refresh token, or an access token, ends its whole family.

    Unknown, already revoked or another client's tokens still answer 200 (§2.2) and
    change nothing (§2.1: the token must have been issued to the requesting client).
    """
    authenticated = _authenticated_request()
    if isinstance(authenticated, Response):
        return authenticated
    client, token = authenticated
    now = services().clock()
    for kind in _order(request.form.get("token_type_hint")):
        family_id = None
        if kind == "refresh_token":
            info = refresh_families.find_refresh_token(db.session, token, now)
            if info is not None and info.client_id == client.client_id:
                family_id = info.family_id
            elif info is not None:
                break
        else:
            claims = _access_claims(token)
            if claims is not None:
                if claims.get("client_id") != client.client_id:
                    break
                family_id = claims.get("sid") if isinstance(claims.get("sid"), str) else None
        if family_id is not None:
            refresh_families.revoke_family(db.session, family_id, reason="revoked_by_client",
                                           now=now)
            db.session.commit()
            break
    return Response("", 200, headers=NO_STORE)


@bp.post("/oauth/introspect")
def introspect() -> Response:
    """RFC 7662, for confidential clients allowed to introspect (resource servers).

    Revocation is immediate: an access token whose family was revoked, or whose user was
    deactivated, is inactive at once, with one indexed lookup.
    """
    authenticated = _authenticated_request()
    if isinstance(authenticated, Response):
        return authenticated
    client, token = authenticated
    if client.public:
        return error_response(oauth_error(
            InvalidClientError, "introspection requires client authentication", status_code=401))
    if not client.allow_introspection:
        return json_response({"error": "unauthorized_client",
                              "error_description": "this client may not introspect tokens"},
                             403, NO_STORE)
    svc = services()
    now = svc.clock()
    for kind in _order(request.form.get("token_type_hint")):
        answer = (_introspect_refresh(token, now) if kind == "refresh_token"
                  else _introspect_access(token, now))
        if answer is not None:
            return json_response(answer, 200, NO_STORE)
    return json_response(INACTIVE, 200, NO_STORE)


def _introspect_refresh(token: str, now: Any) -> dict[str, Any] | None:
    info = refresh_families.find_refresh_token(db.session, token, now)
    if info is None:
        return None
    if not info.active:
        return INACTIVE
    answer: dict[str, Any] = {
        "active": True, "token_type": "refresh_token", "scope": info.scope,
        "client_id": info.client_id, "sub": info.subject, "iat": int(info.created_at.timestamp()),
        "iss": services().settings.issuer, "aud": info.client_id, "sid": info.family_id,
    }
    if info.expires_at is not None:
        answer["exp"] = int(info.expires_at.timestamp())
    if info.dpop_jkt:
        answer["cnf"] = {"jkt": info.dpop_jkt}
    return answer


def _introspect_access(token: str, now: Any) -> dict[str, Any] | None:
    svc = services()
    try:
        verified = access_tokens.verify(token, keys=svc.keys, issuer=svc.settings.issuer,
                                        session=db.session, now=now, leeway=0)
    except access_tokens.InvalidAccessToken:
        return INACTIVE if _access_claims(token) is not None else None
    claims = verified.claims
    owner = svc.clients.get(str(claims.get("client_id", "")))
    if owner is None or not owner.active:
        return INACTIVE
    answer = {k: claims[k] for k in ("scope", "client_id", "sub", "exp", "iat", "aud", "iss",
                                     "sid", "cnf", "jti", "auth_time") if k in claims}
    answer["active"] = True
    answer["token_type"] = "DPoP" if "cnf" in claims else "Bearer"
    return answer
