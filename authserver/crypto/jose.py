"""Every JOSE operation the server performs goes through here (joserfc underneath)."""

from __future__ import annotations

import warnings
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import ECKey, OKPKey, RSAKey

PrivateJWK = RSAKey | ECKey | OKPKey

# RFC 9864 (2025) prefers the fully specified "Ed25519" to "EdDSA", but resource servers'
# libraries (PyJWT, jose, nimbus) verify "EdDSA" today; we publish and sign "EdDSA" on
# purpose, so joserfc's per-signature warning about it is noise.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)

SUPPORTED_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# Members of a JWK that hold secret material (RFC 7518 §6.2.2, §6.3.2, §6.4; RFC 8037 §2).
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class KeyFormatError(Exception):
    """A key file could not be read (corrupt, or the passphrase is wrong)."""


def generate_private_key(alg: str) -> PrivateJWK:
    """A fresh private key for ``alg`` (RSA 2048, P-256 or Ed25519)."""
    if alg == "RS256":
        return RSAKey.generate_key(2048, private=True)
    if alg == "ES256":
        return ECKey.generate_key("P-256", private=True)
    if alg == "EdDSA":
        return OKPKey.generate_key("Ed25519", private=True)
    raise ValueError(f"unsupported signing algorithm {alg!r}")


def private_pem(key: PrivateJWK, passphrase: str | None) -> bytes:
    return key.as_pem(private=True, password=passphrase or None)


_KEY_TYPES: dict[str, type[RSAKey] | type[ECKey] | type[OKPKey]] = {
    "RS256": RSAKey, "ES256": ECKey, "EdDSA": OKPKey}


def load_private_pem(alg: str, data: bytes, passphrase: str | None) -> PrivateJWK:
    """Parse a private PEM for ``alg``; raise KeyFormatError with a readable reason.

    An unencrypted file is read even when a passphrase is set, so a directory can move to
    encrypted keys one rotation at a time.
    """
    cls = _KEY_TYPES[alg]
    encrypted = b"ENCRYPTED" in data
    if encrypted and not passphrase:
        raise KeyFormatError("the key is encrypted and AUTHSERVER_KEY_PASSPHRASE is not set")
    try:
        key = cls.import_key(data, password=passphrase if encrypted else None)
    except (JoseError, ValueError, TypeError) as exc:
        if encrypted:
            raise KeyFormatError(
                "wrong passphrase (AUTHSERVER_KEY_PASSPHRASE) or corrupt file") from exc
        raise KeyFormatError(f"corrupt file (not a PEM private key for {alg})") from exc
    if not key.is_private:
        raise KeyFormatError("the file holds a public key, not a private key")
    return key


def is_encrypted_pem(data: bytes) -> bool:
    return data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")


def thumbprint(key: PrivateJWK) -> str:
    """RFC 7638 SHA-256 thumbprint: used as the ``kid``."""
    return key.thumbprint()


def public_jwk(key: PrivateJWK, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK (no private members, ever) for the JWKS document."""
    data = {name: value for name, value in key.as_dict(private=False).items()
            if name not in PRIVATE_JWK_MEMBERS}
    data.update({"kid": kid, "alg": alg, "use": "sig"})
    return data


def sign_jwt(claims: dict[str, Any], key: PrivateJWK, *, kid: str, alg: str, typ: str) -> str:
    """A compact JWS over ``claims`` with header ``alg``, ``typ`` and ``kid``."""
    return jwt.encode({"alg": alg, "typ": typ, "kid": kid}, claims, key, algorithms=[alg])


class InvalidJWT(Exception):
    """The token is malformed, signed by an unknown key or with the wrong algorithm."""


def unverified_header(token: str) -> dict[str, Any]:
    """The protected header of a compact JWS, before any verification."""
    from joserfc import jws

    try:
        return dict(jws.extract_compact(token.encode("ascii")).headers())
    except (JoseError, ValueError, UnicodeEncodeError) as exc:
        raise InvalidJWT("malformed token") from exc


def verify_jwt(token: str, key: PrivateJWK, alg: str) -> dict[str, Any]:
    """Verify the signature with ``key`` and exactly ``alg``; return the claims unchecked."""
    try:
        decoded = jwt.decode(token, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError) as exc:
        raise InvalidJWT("bad signature or malformed token") from exc
    return dict(decoded.claims)


def left_half_hash(value: str, alg: str) -> str:
    """OIDC ``at_hash``: base64url of the left half of the hash named by ``alg``."""
    import base64
    import hashlib

    digest = (hashlib.sha512 if alg == "EdDSA" else hashlib.sha256)(value.encode()).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode()


_KTY_FOR_ALG = {"ES256": ("EC", "P-256"), "RS256": ("RSA", None), "PS256": ("RSA", None),
                "EdDSA": ("OKP", "Ed25519")}


def _proof_registries() -> dict[str | None, Any]:
    """joserfc's default registry caps a header at 512 bytes: an RSA-2048 ``jwk`` in a DPoP
    header is ~560, RSA-4096 ~900. Allow 2 KiB (the whole proof is capped by the caller);
    unknown header members are ignored, as RFC 7515 §4 says, unless named in ``crit``.
    One registry per pinned algorithm (a registry given to joserfc is its allow-list); the
    ``None`` one only parses, it never verifies."""
    from joserfc.jws import JWSRegistry

    class ProofRegistry(JWSRegistry):
        max_header_length = 2048

    return {alg: ProofRegistry(algorithms=[alg] if alg else None, strict_check_header=False)
            for alg in (None, *_KTY_FOR_ALG)}


_PROOF_REGISTRIES = _proof_registries()


def proof_header(token: str) -> dict[str, Any]:
    """The protected header of a DPoP proof (a compact JWS), before any verification."""
    from joserfc import jws

    try:
        return dict(jws.extract_compact(token.encode("ascii"), registry=_PROOF_REGISTRIES[None])
                    .headers())
    except (JoseError, ValueError, UnicodeEncodeError, RecursionError) as exc:
        raise InvalidJWT("malformed token") from exc


def verify_embedded_jwk_jws(token: str, jwk: dict[str, Any], alg: str) -> tuple[dict, str]:
    """Verify a JWS signed by the public key in its own header (a DPoP proof, RFC 9449).

    Returns the claims and the key's RFC 7638 thumbprint. The key must be public, of the
    type ``alg`` needs, and ``alg`` must be one the caller pinned.
    """
    import json

    from joserfc import jws
    from joserfc.jwk import JWKRegistry

    if alg not in _KTY_FOR_ALG:
        raise InvalidJWT("unsupported algorithm")
    if PRIVATE_JWK_MEMBERS & set(jwk):
        raise InvalidJWT("the jwk header contains private key material")
    kty, crv = _KTY_FOR_ALG[alg]
    if jwk.get("kty") != kty or (crv is not None and jwk.get("crv") != crv):
        raise InvalidJWT("the jwk does not fit the algorithm")
    try:
        key = JWKRegistry.import_key(dict(jwk))
        if key.is_private:
            raise InvalidJWT("the jwk header contains private key material")
        if isinstance(key, RSAKey) and key.raw_value.key_size < 2048:  # kty "RSA"
            raise InvalidJWT("the RSA key is too small")
        signature = jws.deserialize_compact(token, key, registry=_PROOF_REGISTRIES[alg])
        claims = json.loads(signature.payload)
    except InvalidJWT:
        raise
    except (JoseError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise InvalidJWT("bad signature or malformed proof") from exc
    if not isinstance(claims, dict):
        raise InvalidJWT("the proof payload is not a JSON object")
    return claims, key.thumbprint()
