"""The verified claims of an access token, typed (RFC 9068 §2.2)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import InvalidClaims


@dataclass(frozen=True)
class AccessTokenClaims:
    """What a verified access token says; ``raw`` holds every claim as received."""

    sub: str
    client_id: str
    scope: frozenset[str]
    iss: str
    aud: tuple[str, ...]
    exp: int
    iat: int
    jti: str | None
    sid: str | None = None
    auth_time: int | None = None
    cnf_jkt: str | None = None  # RFC 9449 §6.1: the DPoP key the token is bound to
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def has_scope(self, *needed: str) -> bool:
        """True when the token carries every scope in ``needed``."""
        return set(needed) <= self.scope

    @property
    def dpop_bound(self) -> bool:
        return self.cnf_jkt is not None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], *, require_jti: bool = True
                    ) -> AccessTokenClaims:
        """Build from a JWT payload (or an introspection response); check every type."""
        for name in ("iss", "sub", "client_id"):
            if not isinstance(claims.get(name), str) or not claims[name]:
                raise InvalidClaims(f"the {name} claim is missing or not a string")
        exp, iat = _required_int(claims, "exp"), _required_int(claims, "iat")
        jti = claims.get("jti")
        if (jti is not None or require_jti) and (not isinstance(jti, str) or not jti):
            raise InvalidClaims("the jti claim is missing or not a string")
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidClaims("the scope claim must be a space-separated string")
        sid = claims.get("sid")
        if sid is not None and not isinstance(sid, str):
            raise InvalidClaims("the sid claim must be a string")
        cnf = claims.get("cnf")
        jkt = None
        if cnf is not None:
            jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
            if not isinstance(jkt, str) or not jkt:
                raise InvalidClaims("the cnf claim is not a DPoP key binding (cnf.jkt)")
        return cls(sub=claims["sub"], client_id=claims["client_id"],
                   scope=frozenset(scope.split()), iss=claims["iss"],
                   aud=audiences(claims.get("aud")), exp=exp, iat=iat, jti=jti, sid=sid,
                   auth_time=_int(claims, "auth_time", False), cnf_jkt=jkt,
                   raw=MappingProxyType(dict(claims)))


def audiences(value: Any) -> tuple[str, ...]:
    """RFC 7519 §4.1.3: ``aud`` is a string or an array of strings."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidClaims("the aud claim is missing or not a string or array of strings")


def _int(claims: Mapping[str, Any], name: str, required: bool) -> int | None:
    """A NumericDate (RFC 7519 §2): a number of seconds, never a boolean."""
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise InvalidClaims(f"the {name} claim is missing or not a number")
    return int(value)


def _required_int(claims: Mapping[str, Any], name: str) -> int:
    value = _int(claims, name, True)
    if value is None:  # unreachable: required values are checked above
        raise InvalidClaims(f"the {name} claim is missing")
    return value
