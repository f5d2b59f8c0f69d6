"""The issuer's JWK Set, cached as its ``Cache-Control`` says, refetched sparingly.

- A fresh copy is used until ``max-age`` (minus ``Age``) runs out, then revalidated with
  ``If-None-Match`` (a 304 just renews it). Honouring max-age is what makes key rotation
  invisible: the server publishes a new key for longer than that before signing with it.
- A ``kid`` not in a fresh copy triggers one refetch, at most once per
  ``min_refetch_interval`` seconds however many tokens name unknown keys: forged tokens
  cannot make us hammer the authorization server.
- One lock around fetching: of N threads that find the copy stale at once, one fetches
  and the others wait for its result (no thundering herd).
- If a refetch fails, the previous keys stay in use (stale-if-error), retried at the
  unknown-kid rate limit.

Only asymmetric keys meant for signatures are admitted, each tied to the algorithms that
fit its type (RFC 7518 §3.1); a JWK carrying private members is refused outright.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import UnknownKey, VerifierUnavailable
from .http import HttpClient, HttpError, freshness

log = logging.getLogger(__name__)

# alg -> (kty, crv); the asymmetric JWS algorithms PyJWT verifies (RFC 7518 §3.1, RFC 8037).
ALGORITHM_KEY_TYPES: dict[str, tuple[str, str | None]] = {
    "RS256": ("RSA", None), "RS384": ("RSA", None), "RS512": ("RSA", None),
    "PS256": ("RSA", None), "PS384": ("RSA", None), "PS512": ("RSA", None),
    "ES256": ("EC", "P-256"), "ES384": ("EC", "P-384"), "ES512": ("EC", "P-521"),
    "EdDSA": ("OKP", "Ed25519"),
}
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048
MAX_KEYS = 100
MIN_CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class PublicKey:
    """One published key, ready to verify with each algorithm it may be used with."""

    kid: str
    kty: str
    verifiers: dict[str, jwt.PyJWK] = field(repr=False)

    def for_alg(self, alg: str) -> jwt.PyJWK | None:
        return self.verifiers.get(alg)


def admit(jwk: Any, algorithms: Iterable[str]) -> PublicKey | None:
    """A JWK from the set as a :class:`PublicKey`, or None (with a log line) if unusable."""
    if not isinstance(jwk, dict):
        return None
    kid = jwk.get("kid")
    if not isinstance(kid, str) or not kid:
        return None
    if PRIVATE_MEMBERS & set(jwk):
        log.error("JWKS key %s carries private key material: refused", kid[:64])
        return None
    if jwk.get("use", "sig") != "sig":
        return None
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return None
    kty, crv = jwk.get("kty"), jwk.get("crv")
    if not isinstance(kty, str):  # no algorithm would fit it
        return None
    declared = jwk.get("alg")
    usable = [alg for alg in algorithms
              if ALGORITHM_KEY_TYPES[alg][0] == kty
              and ALGORITHM_KEY_TYPES[alg][1] in (None, crv)
              and (declared is None or declared == alg)]
    verifiers: dict[str, jwt.PyJWK] = {}
    for alg in usable:
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            log.warning("JWKS key %s is unusable: %s", kid[:64], exc)
            return None
        if isinstance(key.key, rsa.RSAPublicKey) and key.key.key_size < MIN_RSA_BITS:
            log.warning("JWKS key %s: RSA key shorter than %d bits refused", kid[:64],
                        MIN_RSA_BITS)
            return None
        if not _is_public(key.key):
            return None
        verifiers[alg] = key
    return PublicKey(kid, kty, verifiers) if verifiers else None


def _is_public(key: Any) -> bool:
    return not hasattr(key, "private_bytes")


class KeySetCache:
    """The JWK Set behind ``jwks_uri``; :meth:`get` returns the key for a ``kid``."""

    def __init__(self, jwks_uri: Callable[[], str], http: HttpClient, *,
                 algorithms: Iterable[str], min_refetch_interval: float,
                 default_max_age: float = 300.0, max_max_age: float = 86_400.0,
                 timeout: float = 5.0, timer: Callable[[], float] = time.monotonic) -> None:
        self._jwks_uri = jwks_uri
        self._http = http
        self._algorithms = tuple(algorithms)
        self.min_refetch_interval = min_refetch_interval
        self._default_max_age = default_max_age
        self._max_max_age = max_max_age
        self._timeout = timeout
        self._timer = timer
        self._lock = threading.Lock()
        self._keys: dict[str, PublicKey] | None = None
        self._etag: str | None = None
        self._fresh_until = 0.0
        self._attempted_at: float | None = None
        self._last_failed = False
        # Counters for operators and tests.
        self.fetches = 0
        self.unknown_kid_refetches = 0
        self.failures = 0

    def get(self, kid: str) -> PublicKey:
        now = self._timer()
        keys = self._keys
        if keys is not None and now < self._fresh_until:
            key = keys.get(kid)
            if key is not None:
                return key
            if not self._may_fetch(now):
                raise UnknownKey()
            self._refresh(now, unknown_kid=True)
        else:
            self._refresh(now, unknown_kid=False)
        keys = self._keys
        if keys is None:
            raise VerifierUnavailable("the authorization server's keys are unavailable")
        key = keys.get(kid)
        if key is None:
            raise UnknownKey()
        return key

    def _may_fetch(self, now: float) -> bool:
        return self._attempted_at is None or now - self._attempted_at >= self.min_refetch_interval

    def _refresh(self, decided_at: float, unknown_kid: bool) -> None:
        """Fetch once for everyone waiting. An expired copy is always refreshed (that is
        what max-age promises); an unknown kid, and a retry after a failure, wait for the
        rate limit."""
        with self._lock:
            # Another thread fetched while we waited for the lock: use its result.
            if self._attempted_at is not None and self._attempted_at >= decided_at:
                return
            now = self._timer()
            rate_limited = unknown_kid or self._last_failed
            if rate_limited and not self._may_fetch(now):
                if self._keys is None:
                    raise VerifierUnavailable("the authorization server's keys are unavailable")
                return  # unknown kid: refused by the caller; failure: keep the stale keys
            self._attempted_at = now
            if unknown_kid:
                self.unknown_kid_refetches += 1
            try:
                self._fetch(now)
                self._last_failed = False
            except VerifierUnavailable:
                self.failures += 1
                self._last_failed = True
                if self._keys is None:
                    raise
                log.warning("JWKS refetch failed; keeping the %d keys fetched before",
                            len(self._keys))

    def _fetch(self, now: float) -> None:
        uri = self._jwks_uri()
        headers = {"Accept": "application/json"}
        if self._etag and self._keys is not None:
            headers["If-None-Match"] = self._etag
        self.fetches += 1
        try:
            response = self._http.get(uri, headers, self._timeout)
        except HttpError as exc:
            log.warning("JWKS fetch from %s failed: %s", uri, exc)
            raise VerifierUnavailable("the authorization server's keys are unavailable") from exc
        if response.status == 304 and self._keys is not None:
            self._fresh_until = now + self._lifetime(response)
            return
        if response.status != 200:
            log.warning("JWKS fetch from %s answered %d", uri, response.status)
            raise VerifierUnavailable("the authorization server's keys are unavailable")
        try:
            document = response.json()
        except HttpError as exc:
            raise VerifierUnavailable("the JWKS is not JSON") from exc
        entries = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(entries, list):
            raise VerifierUnavailable("the JWKS has no keys array")
        keys: dict[str, PublicKey] = {}
        for jwk in entries[:MAX_KEYS]:
            key = admit(jwk, self._algorithms)
            if key is not None and key.kid not in keys:
                keys[key.kid] = key
        self._keys = keys
        self._etag = response.header("ETag")
        self._fresh_until = now + self._lifetime(response)

    def _lifetime(self, response: Any) -> float:
        """Honour max-age exactly (the authorization server pre-publishes keys for longer),
        but never refetch more than once a second (``no-store``, ``max-age=0``)."""
        seconds = freshness(response, self._default_max_age)
        return min(max(seconds, MIN_CACHE_SECONDS), self._max_max_age)
