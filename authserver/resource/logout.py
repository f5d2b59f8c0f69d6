"""The receiving side of OpenID Connect Back-Channel Logout 1.0: verify a logout token.

The authorization server POSTs ``logout_token=<JWT>`` (form-encoded) to a client's
``backchannel_logout_uri`` when a sign-in ends. :class:`LogoutTokenVerifier` checks it as
§2.6 says: the signature against the issuer's JWKS (the same cache as a
:class:`~authserver.resource.TokenVerifier` when given its ``keys``), ``typ`` ``logout+jwt``
(§2.4), ``iss``, ``aud`` containing the client id, ``iat`` (not in the future, not older
than ``max_age``), ``exp`` when present, the back-channel-logout member of ``events`` (an
object), ``sid`` and/or ``sub``, no ``nonce``; and that its ``jti`` was not seen before.
The receiver answers 200 when the logout is done, 400 for :class:`InvalidLogoutToken`
(§2.8), and 503 for :class:`VerifierUnavailable` so that the server tries again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from . import jws
from .claims import audiences
from .discovery import Metadata, check_endpoint
from .dpop import MemoryReplayStore, ReplayStore
from .errors import InvalidLogoutToken, InvalidToken, ReplayedLogoutToken, VerifierUnavailable
from .http import HttpClient, UrllibClient
from .jwks import ALGORITHM_KEY_TYPES, KeySetCache

BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
LOGOUT_TOKEN_TYPES = ("logout+jwt", "application/logout+jwt")
DEFAULT_ALGORITHMS = ("RS256", "ES256", "EdDSA")


class MemoryJtiStore(MemoryReplayStore):
    """The logout tokens' ``jti`` values seen by this process, each kept until its token
    could no longer be accepted. Bounded: when full of live values it refuses to decide
    (VerifierUnavailable, a 503 the server retries) rather than forget one or drop a
    logout as a replay."""

    def _full(self) -> bool:
        raise VerifierUnavailable("too many logout tokens at once")

    def seen(self, key: str) -> bool:
        """Whether ``key`` is stored (and not expired), without storing it."""
        with self._lock:
            return self._seen.get(key, 0) > self._clock()


@dataclass(frozen=True)
class LogoutClaims:
    """A verified logout token: end the sessions of sign-in ``sid``, or of user ``sub``
    when there is no ``sid``."""

    iss: str
    aud: tuple[str, ...]
    iat: int
    jti: str
    sid: str | None
    sub: str | None
    exp: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)


class LogoutTokenVerifier:
    """Verifies back-channel logout tokens sent to the client ``client_id``. Thread-safe.

    - ``keys``: a :class:`KeySetCache` to share (``verifier.keys`` of the API's
      :class:`TokenVerifier`); otherwise the JWKS is found and cached as TokenVerifier does.
    - ``max_age``: refuse a token whose ``iat`` is older than this (seconds, plus leeway).
    - ``replay``: where seen ``jti`` values are kept until the token could no longer be
      accepted; the default (:class:`MemoryJtiStore`) remembers them in this process;
      pass a shared store (anything with ``add(key, expires_at) -> bool``, False for a
      key already there, e.g. Redis ``SET key 1 NX EXAT expires_at``) when several
      processes receive.
    - ``require_sid``: refuse tokens without ``sid`` (for a client registered with
      ``backchannel_logout_session_required``).
    """

    def __init__(self, issuer: str, client_id: str, jwks_uri: str | None = None, *,
                 keys: KeySetCache | None = None,
                 algorithms: Iterable[str] = DEFAULT_ALGORITHMS, leeway: int = 30,
                 max_age: int = 300, replay: ReplayStore | None = None,
                 require_sid: bool = False, min_refetch_interval: float = 10.0,
                 default_cache_seconds: float = 300.0, timeout: float = 5.0,
                 http: HttpClient | None = None, clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.monotonic) -> None:
        if not isinstance(client_id, str) or not client_id:
            raise ValueError("client_id must be a non-empty string")
        self.algorithms = tuple(algorithms)
        refused = [a for a in self.algorithms if a not in ALGORITHM_KEY_TYPES]
        if refused or not self.algorithms:
            raise ValueError(f"only asymmetric JWS algorithms may be accepted, not {refused}")
        if not 0 <= leeway <= 300 or max_age <= 0:
            raise ValueError("leeway must be 0-300 s and max_age positive")
        self.issuer = issuer
        self.client_id = client_id
        self.leeway = leeway
        self.max_age = max_age
        self.require_sid = require_sid
        self._clock = clock
        self.replay: ReplayStore = replay or MemoryJtiStore(clock=clock)
        if keys is None:
            http = http or UrllibClient()
            metadata = Metadata(issuer, http, timeout=timeout, retry=min_refetch_interval,
                                timer=timer)
            if jwks_uri is not None:
                check_endpoint(issuer, jwks_uri, "jwks_uri")

            def find_jwks_uri() -> str:
                return jwks_uri or metadata.endpoint("jwks_uri")

            keys = KeySetCache(find_jwks_uri, http, algorithms=self.algorithms,
                               min_refetch_interval=min_refetch_interval,
                               default_max_age=default_cache_seconds, timeout=timeout,
                               timer=timer)
        self.keys = keys

    def verify(self, token: str, *, remember: bool = True) -> LogoutClaims:
        """The claims of a valid, first-seen logout token; else raise
        :class:`InvalidLogoutToken` (:class:`ReplayedLogoutToken` for a seen ``jti``) or
        :class:`VerifierUnavailable` (the keys cannot be fetched: answer 503).

        With ``remember=False`` the ``jti`` is only checked, not stored: call
        :meth:`remember` once the sessions are ended, so that a delivery whose processing
        failed is not taken for a replay when the server sends it again."""
        try:
            _, payload = jws.verify(token, self.keys, algorithms=self.algorithms,
                                    types=LOGOUT_TOKEN_TYPES, what="the logout token")
        except jws.TypeMismatch:
            raise InvalidLogoutToken("the token is not a logout token (typ must be "
                                     "logout+jwt)") from None
        except VerifierUnavailable:
            raise
        except InvalidToken as exc:
            description = exc.description.replace("the access token", "the logout token")
            raise InvalidLogoutToken(description) from None
        claims = self.check_claims(payload)
        # Last, so that a token refused for another reason does not use up its jti.
        if remember:
            if not self.remember(claims):
                raise ReplayedLogoutToken()
        elif self._seen(claims):
            raise ReplayedLogoutToken()
        return claims

    def remember(self, claims: LogoutClaims) -> bool:
        """Store the token's ``jti`` until the token could no longer be accepted; False if
        it was stored before."""
        expires_at = max(claims.exp or 0, claims.iat + self.max_age) + self.leeway
        return self.replay.add(self._key(claims), expires_at)

    def _key(self, claims: LogoutClaims) -> str:
        return f"logout-token:{claims.iss}:{claims.jti}"

    def _seen(self, claims: LogoutClaims) -> bool:
        seen = getattr(self.replay, "seen", None)
        return bool(seen(self._key(claims))) if callable(seen) else False

    def check_claims(self, payload: dict[str, Any]) -> LogoutClaims:
        """OpenID Connect Back-Channel Logout 1.0 §2.4 and §2.6, after the signature."""
        if payload.get("iss") != self.issuer:
            raise InvalidLogoutToken("the logout token was issued by another server")
        try:
            aud = audiences(payload.get("aud"))
        except InvalidToken:
            raise InvalidLogoutToken("the logout token's aud is missing or malformed") from None
        if self.client_id not in aud:
            raise InvalidLogoutToken("the logout token is not meant for this client")
        now = self._clock()
        iat = _time(payload, "iat")
        if iat is None:
            raise InvalidLogoutToken("the logout token has no iat")
        if iat > now + self.leeway:
            raise InvalidLogoutToken("the logout token was issued in the future")
        if iat < now - self.max_age - self.leeway:
            raise InvalidLogoutToken("the logout token is too old (iat)")
        exp = _time(payload, "exp")
        if exp is not None and now >= exp + self.leeway:
            raise InvalidLogoutToken("the logout token has expired")
        events = payload.get("events")
        if not isinstance(events, dict) or not isinstance(
                events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
            raise InvalidLogoutToken("the logout token's events has no back-channel logout "
                                     "member (an object)")
        if "nonce" in payload:  # §2.4: forbidden, so that an ID token cannot pass for one
            raise InvalidLogoutToken("a logout token must not contain a nonce")
        sid, sub = payload.get("sid"), payload.get("sub")
        for name, value in (("sid", sid), ("sub", sub)):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidLogoutToken(f"the logout token's {name} is not a string")
        if sid is None and sub is None:
            raise InvalidLogoutToken("the logout token names neither a sid nor a sub")
        if self.require_sid and sid is None:
            raise InvalidLogoutToken("the logout token has no sid (this client requires one)")
        jti = payload.get("jti")
        if not isinstance(jti, str) or not jti:
            raise InvalidLogoutToken("the logout token has no jti")
        return LogoutClaims(iss=payload["iss"], aud=aud, iat=int(iat), jti=jti, sid=sid,
                            sub=sub, exp=int(exp) if exp is not None else None,
                            raw=MappingProxyType(dict(payload)))


def _time(payload: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate (RFC 7519 §2), never a boolean; None when absent."""
    value = payload.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidLogoutToken(f"the logout token's {name} is not a number")
    return float(value)


__all__ = ["BACKCHANNEL_LOGOUT_EVENT", "LogoutClaims", "LogoutTokenVerifier",
           "MemoryJtiStore"]
