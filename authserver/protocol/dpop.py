"""DPoP proof validation (RFC 9449 §4.3) and server nonces (§8).

Written here because Authlib has none. Every check of §4.3 in order: one proof, a JWS
with ``typ: dpop+jwt``, an asymmetric ``alg`` from a pinned list, a public ``jwk`` that
verifies the signature, ``htm`` and ``htu`` matching this request, ``iat`` inside the
window, a ``jti`` never seen before, the server nonce when required, and ``ath`` when an
access token accompanies the proof.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import math
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..crypto import jose
from ..domain import events
from ..storage.replay_cache import ReplayCache

ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")
MAX_PROOF_LENGTH = 8192
MAX_AGE = 300  # seconds a proof's iat may lie in the past
MAX_SKEW = 60  # ... and in the future
NONCE_WINDOW = 300


class DPoPError(Exception):
    """``invalid_dpop_proof`` or ``use_dpop_nonce``; the message is safe to show."""

    def __init__(self, description: str, error: str = "invalid_dpop_proof") -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Proof:
    jkt: str  # RFC 7638 thumbprint of the proof key
    jti: str
    claims: dict[str, Any]


def normalise_htu(uri: str) -> str:
    """RFC 9449 §4.3 (9): compare without query and fragment, normalised per RFC 3986 §6.2.2
    and §6.2.3: scheme and host lowercased, default port dropped, percent-encodings
    uppercased (unreserved characters decoded), dot segments removed, empty path "/"."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return ""
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    path = _remove_dot_segments(_PERCENT.sub(_normalise_escape, parts.path)) or "/"
    return urlunsplit((scheme, host, path, "", ""))


_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normalise_escape(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4."""
    output: list[str] = []
    for segment in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        if segment == "..":
            if output:
                output.pop()
        elif segment != ".":
            output.append(segment)
    trailing = path.endswith(("/.", "/.."))
    return "/" + "/".join(output) + ("/" if trailing and output else "")


def expected_urls(issuer: str, path: str) -> tuple[str]:
    """The URI a proof's ``htu`` must name: the endpoint under the configured issuer, as
    the metadata advertises it. Not the request's Host header, which the client (or a
    proxy passing it on) controls: a proof made for another server must not pass here."""
    return (issuer + path,)


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url (no padding) of the access token's SHA-256."""
    digest = hashlib.sha256(access_token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class NonceSource:
    """Stateless server nonces: an HMAC of the current time window (valid for two windows)."""

    def __init__(self, secret: str, window: int = NONCE_WINDOW) -> None:
        self._key = hashlib.sha256(b"authserver dpop-nonce\x00" + secret.encode()).digest()
        self.window = window

    def _for(self, index: int) -> str:
        mac = hmac.new(self._key, str(index).encode(), hashlib.sha256).digest()[:18]
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()

    def current(self, now: dt.datetime | None = None) -> str:
        return self._for(self._index(now))

    def valid(self, nonce: object, now: dt.datetime | None = None) -> bool:
        # compare_digest raises on non-ASCII str: such a nonce is simply not ours.
        if not isinstance(nonce, str) or len(nonce) > 64 or not nonce.isascii():
            return False
        index = self._index(now)
        return any(hmac.compare_digest(nonce, self._for(i)) for i in (index, index - 1))

    def _index(self, now: dt.datetime | None) -> int:
        timestamp = now.timestamp() if now is not None else time.time()
        return int(timestamp) // self.window


def validate(
    headers: Iterable[str],
    *,
    method: str,
    urls: Iterable[str],
    now: dt.datetime,
    replay: ReplayCache,
    nonces: NonceSource | None = None,
    access_token: str | None = None,
    client_id: str | None = None,
) -> Proof:
    """Validate the request's DPoP header values; return the proof or raise DPoPError
    (published as ``events.DPOP_FAILED`` with ``client_id``, the client the request names)."""
    try:
        return _validate(headers, method=method, urls=urls, now=now, replay=replay,
                         nonces=nonces, access_token=access_token)
    except DPoPError as exc:
        events.emit(events.DPOP_FAILED, client_id=client_id, error=exc.error,
                    description=exc.description)
        raise


def _validate(headers: Iterable[str], *, method: str, urls: Iterable[str], now: dt.datetime,
              replay: ReplayCache, nonces: NonceSource | None, access_token: str | None
              ) -> Proof:
    # WSGI joins repeated header fields with ", "; a compact JWS never holds a comma.
    values = [part for value in headers for part in value.split(",")]
    if len(values) != 1:
        raise DPoPError("exactly one DPoP header is required")
    proof = values[0].strip()
    if not proof or len(proof) > MAX_PROOF_LENGTH:
        raise DPoPError("the DPoP proof is empty or too long")
    try:
        header = jose.proof_header(proof)
    except jose.InvalidJWT:
        raise DPoPError("the DPoP proof is not a JWS") from None
    if header.get("typ") != "dpop+jwt":
        raise DPoPError("the DPoP proof must have typ dpop+jwt")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise DPoPError("the DPoP proof algorithm is not allowed")
    jwk = header.get("jwk")
    if not isinstance(jwk, dict):
        raise DPoPError("the DPoP proof must carry its public key in jwk")
    try:
        claims, jkt = jose.verify_embedded_jwk_jws(proof, jwk, alg)
    except jose.InvalidJWT as exc:
        raise DPoPError(f"the DPoP proof is invalid: {exc}") from None

    jti = claims.get("jti")
    if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
        raise DPoPError("the DPoP proof needs a jti")
    if claims.get("htm") != method:
        raise DPoPError("htm does not match the request method")
    htu = claims.get("htu")
    if not isinstance(htu, str) or normalise_htu(htu) not in {normalise_htu(u) for u in urls}:
        raise DPoPError("htu does not match the request URI")
    iat = claims.get("iat")
    timestamp = now.timestamp()
    # JSON allows NaN and Infinity: NaN compares False both ways and would pass the window.
    if isinstance(iat, bool) or not isinstance(iat, int | float) or (
            isinstance(iat, float) and not math.isfinite(iat)):
        raise DPoPError("the DPoP proof needs iat")
    if iat < timestamp - MAX_AGE or iat > timestamp + MAX_SKEW:
        raise DPoPError("the DPoP proof is too old or from the future")
    if nonces is not None and not nonces.valid(claims.get("nonce"), now):
        raise DPoPError("a fresh DPoP-Nonce is required", "use_dpop_nonce")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not ath.isascii() or not hmac.compare_digest(
                ath, access_token_hash(access_token)):
            raise DPoPError("ath does not match the access token")
    expires = dt.datetime.fromtimestamp(iat + MAX_AGE + MAX_SKEW, dt.UTC)
    key = hashlib.sha256(f"{jkt}\x00{jti}".encode("utf-8", "surrogatepass")).hexdigest()
    if not replay.add(key, expires):
        raise DPoPError("the DPoP proof was already used")
    return Proof(jkt=jkt, jti=jti, claims=claims)
