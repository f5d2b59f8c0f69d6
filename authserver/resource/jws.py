"""Compact JWS (RFC 7515) verified against the issuer's JWKS: the one routine behind
access tokens, status list tokens and logout tokens.

The algorithm is pinned twice: to ``algorithms``, and to the key the ``kid`` names (an
RS256 header over an EC key is refused). Keys come only from the JWKS: ``jwk``, ``jku``
and ``x5u`` headers are ignored; ``crit`` and ``b64: false`` are refused.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Collection
from typing import Any

import jwt

from .errors import InvalidAlgorithm, InvalidSignature, MalformedToken, UnknownKey
from .jwks import KeySetCache

MAX_TOKEN_LENGTH = 16_384
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")


def segments(token: Any, what: str = "the access token",
             max_length: int = MAX_TOKEN_LENGTH) -> tuple[str, str, str]:
    """The three parts of a compact JWS (RFC 7515 §7.1), each strict base64url."""
    if not isinstance(token, str) or not token or len(token) > max_length:
        raise MalformedToken(_malformed(what))
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedToken(f"{what} is not a compact JWS (three parts)")
    # An empty signature is well-formed (an unsecured JWS): its "alg" is what gets it refused.
    if not (_SEGMENT.fullmatch(parts[0]) and _SEGMENT.fullmatch(parts[1])
            and (parts[2] == "" or _SEGMENT.fullmatch(parts[2]))):
        raise MalformedToken(_malformed(what))
    return parts[0], parts[1], parts[2]


def b64decode(segment: str, what: str = "the access token") -> bytes:
    """Strict base64url without padding: one canonical encoding per value."""
    if len(segment) % 4 == 1:
        raise MalformedToken(_malformed(what))
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode() != segment:
        raise MalformedToken(_malformed(what))
    return data


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 §6)")


def json_object(segment: str, part: str, what: str = "the access token") -> dict[str, Any]:
    try:
        value = json.loads(b64decode(segment, what), parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise MalformedToken(f"{_possessive(what)} {part} is not JSON") from None
    if not isinstance(value, dict):
        raise MalformedToken(f"{_possessive(what)} {part} is not a JSON object")
    return value


def verify(token: Any, keys: KeySetCache, *, algorithms: Collection[str],
           types: Collection[str], what: str, max_length: int = MAX_TOKEN_LENGTH
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check ``token``'s form, ``alg``, ``typ`` (lower-cased, one of ``types``) and
    signature; return its header and payload, or raise an ``InvalidToken`` subclass
    (``InvalidTokenType`` for a wrong ``typ``, raised by the caller's ``type_error``)."""
    header_segment, payload_segment, signature_segment = segments(token, what, max_length)
    header = json_object(header_segment, "header", what)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algorithms:
        # Covers "none", HS256 (with our public key as the "secret") and the rest.
        raise InvalidAlgorithm(f"{_possessive(what)} signing algorithm is not accepted")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in types:
        raise TypeMismatch(typ)
    if "crit" in header or header.get("b64", True) is not True:
        raise MalformedToken(f"{what} uses unsupported critical headers")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UnknownKey(f"{what} names no key (kid)")
    key = keys.get(kid).for_alg(alg)
    if key is None:
        raise InvalidAlgorithm(f"{_possessive(what)} algorithm does not fit its key")
    signature = b64decode(signature_segment, what)
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    try:
        valid = key.Algorithm.verify(signing_input, key.key, signature)
    except (ValueError, TypeError, jwt.PyJWTError):
        valid = False
    if not valid:
        raise InvalidSignature(f"{_possessive(what)} signature is invalid")
    return header, json_object(payload_segment, "payload", what)


class TypeMismatch(MalformedToken):
    """The ``typ`` header is not one the caller accepts; callers raise their own error."""

    def __init__(self, typ: Any) -> None:
        super().__init__("the token's typ header is not accepted")
        self.typ = typ


def _possessive(what: str) -> str:
    return what + "'s"


def _malformed(what: str) -> str:
    return f"{what} is not a well-formed signed JWT"
