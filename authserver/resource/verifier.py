"""Local verification of RFC 9068 JWT access tokens against the issuer's JWKS."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import jwt

from .claims import AccessTokenClaims, audiences
from .discovery import Metadata, check_endpoint
from .errors import (
    ExpiredToken,
    InvalidAlgorithm,
    InvalidAudience,
    InvalidClaims,
    InvalidIssuer,
    InvalidSignature,
    InvalidToken,
    InvalidTokenType,
    MalformedToken,
    NotYetValid,
    UnknownKey,
)
from .http import HttpClient, UrllibClient
from .jwks import ALGORITHM_KEY_TYPES, KeySetCache

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 §4
MAX_TOKEN_LENGTH = 16_384
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


class TokenVerifier:
    """Verifies our access tokens locally: signature, algorithm, ``typ``, claims.

    ``verify`` returns :class:`AccessTokenClaims` or raises an :class:`InvalidToken`
    subclass. Thread-safe; build one per process and reuse it.

    - ``jwks_uri``: taken from the issuer's metadata (RFC 8414, then OIDC Discovery) when
      not given. Nothing is fetched until the first ``verify``.
    - ``algorithms``: the only algorithms accepted; ``none`` and HMAC are refused here.
    - ``leeway``: seconds of clock skew tolerated for ``exp``, ``nbf`` and ``iat``.
    - ``min_refetch_interval``: at most one JWKS fetch per this many seconds because of
      unknown ``kid`` values (and the floor of the cache lifetime).
    """

    def __init__(self, issuer: str, audience: str | Iterable[str], jwks_uri: str | None = None,
                 *, algorithms: Iterable[str] = DEFAULT_ALGORITHMS, leeway: int = 30,
                 min_refetch_interval: float = 10.0, default_cache_seconds: float = 300.0,
                 timeout: float = 5.0, http: HttpClient | None = None,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.monotonic) -> None:
        parts = urlsplit(issuer)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"issuer must be an absolute http(s) URL, got {issuer!r}")
        self.issuer = issuer
        self.audiences = frozenset([audience] if isinstance(audience, str) else audience)
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ValueError("audience must be a non-empty string or strings")
        self.algorithms = tuple(algorithms)
        refused = [a for a in self.algorithms if a not in ALGORITHM_KEY_TYPES]
        if refused or not self.algorithms:
            raise ValueError(f"only asymmetric JWS algorithms may be accepted, not {refused}"
                             f" (choose from {', '.join(ALGORITHM_KEY_TYPES)})")
        if leeway < 0 or leeway > 300:
            raise ValueError("leeway must be between 0 and 300 seconds")
        self.leeway = leeway
        self._clock = clock
        self._http = http or UrllibClient()
        self.metadata = Metadata(issuer, self._http, timeout=timeout,
                                 retry=min_refetch_interval, timer=timer)
        if jwks_uri is not None:
            check_endpoint(issuer, jwks_uri, "jwks_uri")
        self._jwks_uri = jwks_uri
        self.keys = KeySetCache(self.jwks_uri, self._http, algorithms=self.algorithms,
                                min_refetch_interval=min_refetch_interval,
                                default_max_age=default_cache_seconds, timeout=timeout,
                                timer=timer)

    def jwks_uri(self) -> str:
        if self._jwks_uri is None:
            self._jwks_uri = self.metadata.endpoint("jwks_uri")
        return self._jwks_uri

    def verify(self, token: str) -> AccessTokenClaims:
        """Verify ``token``; return its claims or raise an :class:`InvalidToken` subclass."""
        header_segment, payload_segment, signature_segment = _segments(token)
        header = _json_object(header_segment, "header")
        alg = header.get("alg")
        if alg not in self.algorithms:
            # Covers "none", HS256 (with our public key as the "secret") and the rest.
            raise InvalidAlgorithm()
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in ACCESS_TOKEN_TYPES:
            raise InvalidTokenType()
        if "crit" in header or header.get("b64", True) is not True:
            raise MalformedToken("the access token uses unsupported critical headers")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise UnknownKey("the access token names no key (kid)")
        # The key comes only from the issuer's JWKS, by kid; jwk/jku/x5u headers are ignored.
        key = self.keys.get(kid).for_alg(alg)
        if key is None:
            raise InvalidAlgorithm("the access token's algorithm does not fit its key")
        signature = _b64decode(signature_segment)
        signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
        try:
            valid = key.Algorithm.verify(signing_input, key.key, signature)
        except (ValueError, TypeError, jwt.PyJWTError):
            valid = False
        if not valid:
            raise InvalidSignature()
        return self.check_claims(_json_object(payload_segment, "payload"))

    def check_claims(self, payload: dict[str, Any]) -> AccessTokenClaims:
        """RFC 9068 §4: issuer, audience and times, after the signature is verified."""
        if payload.get("iss") != self.issuer:
            raise InvalidIssuer()
        if not self.audiences & set(audiences(payload.get("aud"))):
            raise InvalidAudience()
        claims = AccessTokenClaims.from_claims(payload)
        now = self._clock()
        if now >= claims.exp + self.leeway:
            raise ExpiredToken()
        nbf = payload.get("nbf")
        if nbf is not None:
            if isinstance(nbf, bool) or not isinstance(nbf, int | float):
                raise InvalidClaims("the nbf claim is not a number")
            if nbf > now + self.leeway:
                raise NotYetValid()
        if claims.iat > now + self.leeway:
            raise NotYetValid("the access token was issued in the future")
        return claims


def _segments(token: Any) -> tuple[str, str, str]:
    """The three parts of a compact JWS (RFC 7515 §7.1), each strict base64url."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise MalformedToken()
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken("the access token is not a compact JWS (three parts)")
    # An empty signature is well-formed (an unsecured JWS): its "alg" is what gets it refused.
    if not (_SEGMENT.fullmatch(parts[0]) and _SEGMENT.fullmatch(parts[1])
            and (parts[2] == "" or _SEGMENT.fullmatch(parts[2]))):
        raise MalformedToken()
    return parts[0], parts[1], parts[2]


def _b64decode(segment: str) -> bytes:
    """Strict base64url without padding: one canonical encoding per value."""
    if len(segment) % 4 == 1:
        raise MalformedToken()
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != segment:
        raise MalformedToken()
    return data


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_b64decode(segment), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedToken(f"the access token's {what} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"the access token's {what} is not a JSON object")
    return value


__all__ = ["DEFAULT_ALGORITHMS", "InvalidToken", "TokenVerifier"]
