"""Local verification of RFC 9068 JWT access tokens against the issuer's JWKS."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from . import jws
from .claims import AccessTokenClaims, audiences
from .discovery import Metadata, check_endpoint
from .errors import (
    ExpiredToken,
    InvalidAudience,
    InvalidClaims,
    InvalidIssuer,
    InvalidToken,
    InvalidTokenType,
    NotYetValid,
)
from .http import HttpClient, UrllibClient
from .jwks import ALGORITHM_KEY_TYPES, KeySetCache
from .jws import MAX_TOKEN_LENGTH
from .status_list import StatusListCache

DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")
ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")  # RFC 9068 §4


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
    - ``status``: check a token's ``status.status_list`` entry (draft-ietf-oauth-status-list)
      when it has one (default on; see :mod:`authserver.resource.status_list`): lists only
      from URIs under ``status_list_uris`` (default: the issuer), kept for their ``ttl``,
      the last good copy used until ``ttl`` + ``status_grace`` seconds when a refetch
      fails, retried at most every ``status_retry_interval`` s, then
      ``status_failure`` decides: ``"closed"`` refuses (StatusUnavailable, a 503),
      ``"open"`` accepts unchecked.
    """

    def __init__(self, issuer: str, audience: str | Iterable[str], jwks_uri: str | None = None,
                 *, algorithms: Iterable[str] = DEFAULT_ALGORITHMS, leeway: int = 30,
                 min_refetch_interval: float = 10.0, default_cache_seconds: float = 300.0,
                 timeout: float = 5.0, http: HttpClient | None = None,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.monotonic, status: bool = True,
                 status_list_uris: Iterable[str] | None = None,
                 status_failure: str = "closed", status_grace: float = 60.0,
                 status_retry_interval: float = 2.0) -> None:
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
        self.status_lists = StatusListCache(
            issuer, self.keys, self._http, algorithms=self.algorithms,
            allowed_uris=status_list_uris, failure=status_failure, grace=status_grace,
            retry_interval=status_retry_interval, timeout=timeout, leeway=leeway,
            clock=clock, timer=timer) if status else None

    def jwks_uri(self) -> str:
        if self._jwks_uri is None:
            self._jwks_uri = self.metadata.endpoint("jwks_uri")
        return self._jwks_uri

    def verify(self, token: str) -> AccessTokenClaims:
        """Verify ``token``; return its claims or raise an :class:`InvalidToken` subclass."""
        try:
            _, payload = jws.verify(token, self.keys, algorithms=self.algorithms,
                                    types=ACCESS_TOKEN_TYPES, what="the access token")
        except jws.TypeMismatch:
            raise InvalidTokenType() from None
        claims = self.check_claims(payload)
        status = payload.get("status")
        if status is not None and self.status_lists is not None:
            self.status_lists.check(status)
        return claims

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


__all__ = ["DEFAULT_ALGORITHMS", "MAX_TOKEN_LENGTH", "InvalidToken", "TokenVerifier"]
