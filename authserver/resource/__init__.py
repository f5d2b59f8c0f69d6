"""Verify authserver access tokens in your API (resource server).

Needs only PyJWT, cryptography and the standard library: no Flask, no database, none
of the authorization server. Usage::

    from authserver.resource import TokenVerifier, require_token

    verifier = TokenVerifier(issuer="https://auth.example.com",
                             audience="https://auth.example.com")
    claims = verifier.verify(token)        # AccessTokenClaims, or raises InvalidToken

    @app.get("/orders")
    @require_token(verifier, scope="orders:read")   # Flask; 401/403 per RFC 6750 §3
    def orders(): ...

Access tokens carrying a Token Status List entry are checked against their list (fetched
and cached per its ``ttl``); :class:`LogoutTokenVerifier` checks back-channel logout tokens.
See docs/resource-servers.md.
"""

from __future__ import annotations

from .bearer import authenticate, challenges, parse_authorization
from .claims import AccessTokenClaims
from .decorators import current_token, require_token
from .dpop import DPoPVerifier, MemoryReplayStore
from .errors import (
    ExpiredToken,
    InsufficientScope,
    InvalidAlgorithm,
    InvalidAudience,
    InvalidClaims,
    InvalidDPoPProof,
    InvalidIssuer,
    InvalidLogoutToken,
    InvalidRequest,
    InvalidSignature,
    InvalidToken,
    InvalidTokenType,
    MalformedToken,
    MissingToken,
    NotYetValid,
    ReplayedLogoutToken,
    StatusUnavailable,
    TokenInactive,
    TokenRevoked,
    UnknownKey,
    VerifierUnavailable,
)
from .http import HttpClient, HttpResponse, UrllibClient
from .introspection import IntrospectionVerifier
from .logout import LogoutClaims, LogoutTokenVerifier, MemoryJtiStore
from .status_list import StatusList, StatusListCache, decode_status_list
from .verifier import TokenVerifier

__all__ = [
    "AccessTokenClaims", "DPoPVerifier", "ExpiredToken", "HttpClient", "HttpResponse",
    "InsufficientScope", "IntrospectionVerifier", "InvalidAlgorithm", "InvalidAudience",
    "InvalidClaims", "InvalidDPoPProof", "InvalidIssuer", "InvalidLogoutToken",
    "InvalidRequest", "InvalidSignature", "InvalidToken", "InvalidTokenType", "LogoutClaims",
    "LogoutTokenVerifier", "MalformedToken", "MemoryJtiStore", "MemoryReplayStore",
    "MissingToken", "NotYetValid", "ReplayedLogoutToken", "StatusList", "StatusListCache",
    "StatusUnavailable", "TokenInactive", "TokenRevoked", "TokenVerifier", "UnknownKey",
    "UrllibClient", "VerifierUnavailable", "authenticate", "challenges", "current_token",
    "decode_status_list", "parse_authorization", "require_token",
]
