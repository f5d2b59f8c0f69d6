"""DPoP proofs (RFC 9449 §4.2) made with jwcrypto, a library the server does not use.

A proof the server accepts was therefore built by someone else's reading of the RFC, and
the thumbprints the tests expect (RFC 7638) are computed independently of the server's.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

from jwcrypto import jwk, jwt

ISSUER = "http://127.0.0.1:8000"  # tests/conftest.py's issuer
TOKEN_URL = ISSUER + "/oauth/token"
USERINFO_URL = ISSUER + "/oauth/userinfo"

_GENERATE = {
    "ES256": {"kty": "EC", "crv": "P-256"},
    "RS256": {"kty": "RSA", "size": 2048},
    "PS256": {"kty": "RSA", "size": 2048},
    "EdDSA": {"kty": "OKP", "crv": "Ed25519"},
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ath(access_token: str) -> str:
    """RFC 9449 §4.2: base64url(SHA-256(access token))."""
    return b64url(hashlib.sha256(access_token.encode()).digest())


class ProofKey:
    """A client's DPoP key pair, making proofs like a client library would."""

    def __init__(self, alg: str = "ES256", **generate: Any) -> None:
        self.alg = alg
        self.key = jwk.JWK.generate(**(generate or _GENERATE[alg]))

    @property
    def jkt(self) -> str:
        """RFC 7638 SHA-256 thumbprint, computed by jwcrypto."""
        return self.key.thumbprint()

    @property
    def public_jwk(self) -> dict[str, Any]:
        return self.key.export_public(as_dict=True)

    def claims(self, *, htm: str = "POST", htu: str = TOKEN_URL, iat: Any = None,
               jti: str | None = None, drop: tuple[str, ...] = (), **extra: Any
               ) -> dict[str, Any]:
        """``jti``, ``htm``, ``htu``, ``iat`` (now by default), plus ``extra``; ``drop``
        leaves claims out."""
        claims: dict[str, Any] = {"jti": jti or secrets.token_urlsafe(16), "htm": htm,
                                  "htu": htu, "iat": int(time.time()) if iat is None else iat}
        claims.update(extra)
        return {k: v for k, v in claims.items() if k not in drop}

    def proof(self, *, header: dict[str, Any] | None = None, signer: jwk.JWK | None = None,
              alg: str | None = None, **claims: Any) -> str:
        """A signed proof; ``header`` overrides protected-header members (None drops one)."""
        protected: dict[str, Any] = {"typ": "dpop+jwt", "alg": alg or self.alg,
                                     "jwk": self.public_jwk}
        protected.update(header or {})
        protected = {k: v for k, v in protected.items() if v is not None}
        token = jwt.JWT(header=protected, claims=self.claims(**claims))
        token.make_signed_token(signer or self.key)
        return token.serialize()

    def unsigned(self, **claims: Any) -> str:
        """``alg: none``, which jwcrypto (rightly) will not make: assembled by hand."""
        header = {"typ": "dpop+jwt", "alg": "none", "jwk": self.public_jwk}
        return (b64url(json.dumps(header).encode()) + "."
                + b64url(json.dumps(self.claims(**claims)).encode()) + ".")


def hmac_key(secret: bytes) -> jwk.JWK:
    return jwk.JWK(kty="oct", k=b64url(secret))
