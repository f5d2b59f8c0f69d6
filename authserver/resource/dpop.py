"""DPoP proofs at a resource server (RFC 9449 §4.3 and §7.1), with PyJWT.

A DPoP-bound access token (``cnf.jkt``) is only good together with a fresh proof signed
by the key it is bound to, over this very request (``htm``, ``htu``) and this very token
(``ath``). Proof ``jti`` values are remembered until the proof is too old to be accepted,
so a captured proof cannot be replayed; the default memory is per process, pass a shared
``replay`` store when several processes serve the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import jwt

from .errors import InvalidDPoPProof
from .jwks import ALGORITHM_KEY_TYPES, PRIVATE_MEMBERS

DEFAULT_ALGORITHMS = ("ES256", "RS256", "PS256", "EdDSA")
MAX_PROOF_LENGTH = 8192
# RFC 7638 §3.2: the required members of each key type, in the thumbprint's input.
THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"),
                      "OKP": ("crv", "kty", "x")}


class ReplayStore(Protocol):
    def add(self, key: str, expires_at: float) -> bool:
        """Remember ``key`` until ``expires_at``; False if it was already there."""
        ...


class MemoryReplayStore:
    """Seen proof ids for one process, forgotten once they expire (bounded)."""

    def __init__(self, max_entries: int = 100_000,
                 clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._max = max_entries
        self._clock = clock

    def add(self, key: str, expires_at: float) -> bool:
        """Remember ``key`` until ``expires_at``; False if it is already there."""
        with self._lock:
            now = self._clock()
            if self._seen.get(key, 0) > now:
                return False
            if len(self._seen) >= self._max:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
                if len(self._seen) >= self._max:
                    return self._full()
            self._seen[key] = expires_at
            return True

    def _full(self) -> bool:
        """Full of live ids: refuse (False) rather than forget one that is still live."""
        return False


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a public JWK."""
    members = THUMBPRINT_MEMBERS.get(jwk.get("kty", ""))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise InvalidDPoPProof("the DPoP proof key is not a usable public JWK")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"),
                           sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url SHA-256 of the access token's ASCII bytes."""
    return b64url(hashlib.sha256(token.encode("ascii", "replace")).digest())


def normalise_htu(uri: str) -> str:
    """RFC 9449 §4.3 (9): without query and fragment, scheme and host in lower case,
    default ports dropped (RFC 3986 §6.2.2-§6.2.3)."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return ""
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


class DPoPVerifier:
    """Checks the DPoP proof accompanying a DPoP-bound access token."""

    def __init__(self, algorithms: Iterable[str] = DEFAULT_ALGORITHMS, *,
                 max_age: int = 300, max_skew: int = 60, replay: ReplayStore | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.algorithms = tuple(algorithms)
        unknown = [a for a in self.algorithms if a not in ALGORITHM_KEY_TYPES]
        if unknown or not self.algorithms:
            raise ValueError(f"DPoP algorithms must be asymmetric JWS algorithms: {unknown}")
        self.max_age = max_age
        self.max_skew = max_skew
        self.replay = replay or MemoryReplayStore(clock=clock)
        self._clock = clock

    def verify(self, proofs: list[str], *, method: str, url: str, access_token: str,
               jkt: str) -> dict[str, Any]:
        """Check RFC 9449 §4.3 steps 1-12 for this request; return the proof's claims."""
        if len(proofs) != 1:
            raise InvalidDPoPProof("exactly one DPoP header is required")
        proof = proofs[0].strip()
        if not proof or len(proof) > MAX_PROOF_LENGTH or proof.count(".") != 2:
            raise InvalidDPoPProof("the DPoP proof is not a compact JWS")
        try:
            header = jwt.get_unverified_header(proof)
        except jwt.PyJWTError:
            raise InvalidDPoPProof("the DPoP proof is not a compact JWS") from None
        if header.get("typ") != "dpop+jwt":
            raise InvalidDPoPProof("the DPoP proof must have typ dpop+jwt")
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise InvalidDPoPProof("the DPoP proof's algorithm is not accepted")
        jwk = header.get("jwk")
        if not isinstance(jwk, dict) or PRIVATE_MEMBERS & set(jwk):
            raise InvalidDPoPProof("the DPoP proof must carry a public key in jwk")
        kty, crv = ALGORITHM_KEY_TYPES[alg]
        if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
            raise InvalidDPoPProof("the DPoP proof key does not fit its algorithm")
        try:
            key = jwt.PyJWK(jwk, algorithm=alg)
            claims = jwt.PyJWT().decode(proof, key, algorithms=[alg],
                                        options={"verify_exp": False, "verify_iat": False,
                                                 "verify_nbf": False, "verify_aud": False,
                                                 "verify_iss": False})
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise InvalidDPoPProof("the DPoP proof's signature is invalid") from None
        # §4.3 (12) and §7.1: the proof key is the key the token is bound to.
        if not hmac.compare_digest(jwk_thumbprint(jwk), jkt):
            raise InvalidDPoPProof("the DPoP proof key is not the key the token is bound to")
        jti = claims.get("jti")
        if not isinstance(jti, str) or not 1 <= len(jti) <= 256:
            raise InvalidDPoPProof("the DPoP proof needs a jti")
        if claims.get("htm") != method:
            raise InvalidDPoPProof("htm does not match the request method")
        htu = claims.get("htu")
        if not isinstance(htu, str) or normalise_htu(htu) != normalise_htu(url):
            raise InvalidDPoPProof("htu does not match the request URL")
        iat = claims.get("iat")
        now = self._clock()
        if isinstance(iat, bool) or not isinstance(iat, int | float) or not math.isfinite(iat):
            raise InvalidDPoPProof("the DPoP proof needs iat")
        if iat < now - self.max_age or iat > now + self.max_skew:
            raise InvalidDPoPProof("the DPoP proof is too old or from the future")
        if not hmac.compare_digest(str(claims.get("ath", "")), access_token_hash(access_token)):
            raise InvalidDPoPProof("ath does not match the access token")
        replay_key = hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
        if not self.replay.add(replay_key, iat + self.max_age + self.max_skew):
            raise InvalidDPoPProof("the DPoP proof was already used")
        return claims
