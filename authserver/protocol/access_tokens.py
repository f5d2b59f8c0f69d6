"""Verifying our own access tokens where the server itself consumes them (userinfo).

Signature by a published key with that key's algorithm only, ``typ: at+jwt``, issuer,
audience, expiry, ``nbf`` and ``iat`` as the resource-server library's ``TokenVerifier``
checks them (RFC 9068 §4); then the session check that a JWT alone cannot give: the
family (``sid``) must not be revoked and the user must be active, so revocation is
immediate here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, TypeGuard

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..crypto import jose
from ..crypto.keystore import KeyStore
from ..storage.models import TokenFamily, User
from .tokens import ACCESS_TOKEN_TYP

LEEWAY = 30


class InvalidAccessToken(Exception):
    """RFC 6750 invalid_token; the message is safe to show."""


@dataclass(frozen=True)
class VerifiedAccessToken:
    claims: dict[str, Any]
    scope: tuple[str, ...]
    user: User | None


def verify(token: str, *, keys: KeyStore, issuer: str, audience: str, session: Session,
           now: dt.datetime, leeway: int = LEEWAY) -> VerifiedAccessToken:
    header = _header(token)
    key = keys.published_key(header.get("kid"))
    if key is None or header.get("alg") != key.alg:
        raise InvalidAccessToken("the token is not signed by this server")
    if header.get("typ") != ACCESS_TOKEN_TYP:
        raise InvalidAccessToken("not an access token")
    try:
        claims = jose.verify_jwt(token, key.private, key.alg)
    except jose.InvalidJWT:
        raise InvalidAccessToken("the token signature is invalid") from None
    timestamp = now.timestamp()
    if claims.get("iss") != issuer:
        raise InvalidAccessToken("the token was issued by another server")
    if audience not in _audiences(claims.get("aud")):
        raise InvalidAccessToken("the token is meant for another audience")
    exp = claims.get("exp")
    if not _numeric(exp) or exp + leeway <= timestamp:
        raise InvalidAccessToken("the token has expired")
    nbf = claims.get("nbf")
    if nbf is not None and (not _numeric(nbf) or nbf > timestamp + leeway):
        raise InvalidAccessToken("the token is not valid yet")
    iat = claims.get("iat")
    if not _numeric(iat) or iat > timestamp + leeway:
        raise InvalidAccessToken("the token was issued in the future")
    user = None
    sid = claims.get("sid")
    if sid is not None:
        row = session.execute(
            select(TokenFamily.revoked_at, TokenFamily.expires_at, User)
            .join(User, User.id == TokenFamily.user_id)
            .where(TokenFamily.id == str(sid))
        ).one_or_none()
        # Revoked, past its absolute lifetime, or the user deactivated: the session is over,
        # and so is every access token issued in it.
        if row is None or row.revoked_at is not None or not row.User.active \
                or (row.expires_at is not None and row.expires_at <= now):
            raise InvalidAccessToken("the session of this token has ended")
        user = row.User
    scope = tuple(str(claims.get("scope", "")).split())
    return VerifiedAccessToken(claims, scope, user)


def _numeric(value: Any) -> TypeGuard[int | float]:
    """A NumericDate (RFC 7519 §2): a number, never a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _audiences(value: Any) -> tuple[str, ...]:
    """RFC 7519 §4.1.3: ``aud`` is a string or an array of strings (else: none)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return ()


def _header(token: str) -> dict[str, Any]:
    try:
        return jose.unverified_header(token)
    except jose.InvalidJWT:
        raise InvalidAccessToken("malformed token") from None
