"""Framework-neutral request authentication: the token from ``Authorization``, DPoP when
bound, the scope check, and the challenge for ``WWW-Authenticate`` (RFC 6750 §3,
RFC 9449 §7.1). The Flask decorator is a thin adapter over these.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from .claims import AccessTokenClaims
from .dpop import DPoPVerifier
from .errors import (
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
)

BEARER, DPOP = "Bearer", "DPoP"
# RFC 6750 §2.1 b64token / RFC 7235 token68
_TOKEN68 = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
# RFC 6750 §3: error_description and scope use %x20-21 / %x23-5B / %x5D-7E
_UNSAFE = re.compile(r'[^\x20\x21\x23-\x5b\x5d-\x7e]')


class Verifier(Protocol):
    def verify(self, token: str) -> AccessTokenClaims: ...


@dataclass(frozen=True)
class Credentials:
    token: str
    scheme: str  # Bearer or DPoP


def parse_authorization(values: Sequence[str]) -> Credentials:
    """The access token from the Authorization header(s); RFC 6750 §2.1, RFC 9449 §7.1."""
    if not values:
        raise MissingToken()
    if len(values) > 1:
        raise InvalidRequest("send one Authorization header")
    scheme, _, token = values[0].strip().partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "dpop"):
        raise MissingToken()  # another scheme: no credentials for us (RFC 6750 §3.1)
    if not token or not _TOKEN68.match(token):
        raise InvalidRequest("the Authorization header is malformed")
    return Credentials(token, DPOP if scheme.lower() == "dpop" else BEARER)


def required_scope(scope: str | Iterable[str]) -> tuple[str, ...]:
    return tuple(scope.split()) if isinstance(scope, str) else tuple(scope)


def authenticate(verifier: Verifier, *, authorization: Sequence[str], dpop_proofs: list[str],
                 method: str, url: str, scope: Sequence[str] = (),
                 dpop: DPoPVerifier | None = None) -> tuple[AccessTokenClaims, str]:
    """Authenticate one request; return the claims and the scheme, or raise InvalidToken.

    The raised exception gets a ``scheme`` attribute: the challenge to answer with.
    """
    scheme = BEARER
    try:
        credentials = parse_authorization(authorization)
        scheme = credentials.scheme
        claims = verifier.verify(credentials.token)
        if claims.cnf_jkt is not None:
            scheme = DPOP
            # RFC 9449 §7.1: a DPoP-bound token is only accepted with the DPoP scheme and
            # a proof by its key; as a bearer token it is refused.
            if credentials.scheme != DPOP:
                raise InvalidToken("the access token is DPoP-bound: use the DPoP scheme "
                                   "with a DPoP proof")
            if dpop is None:
                raise InvalidToken("DPoP-bound access tokens are not accepted here")
            dpop.verify(dpop_proofs, method=method, url=url, access_token=credentials.token,
                        jkt=claims.cnf_jkt)
        elif credentials.scheme == DPOP:
            raise InvalidToken("the access token is not DPoP-bound: use the Bearer scheme")
        missing = [s for s in scope if s not in claims.scope]
        if missing:
            raise InsufficientScope(f"the request needs scope {' '.join(scope)}", tuple(scope))
    except InvalidToken as exc:
        exc.scheme = scheme
        raise
    return claims, scheme


def _quoted(value: str) -> str:
    return '"' + _UNSAFE.sub("?", value)[:300] + '"'


def challenges(error: InvalidToken | None, *, realm: str,
               dpop_algs: Sequence[str] | None) -> list[str]:
    """``WWW-Authenticate`` values for a refusal (RFC 6750 §3, RFC 9449 §7.1).

    Without credentials: a bare challenge per scheme accepted (no error code). Otherwise one
    challenge in the scheme the token needs, with ``error`` and ``error_description``
    (and ``scope`` for insufficient_scope, ``algs`` for DPoP).
    """
    if error is None or isinstance(error, MissingToken):
        values = [f"Bearer realm={_quoted(realm)}"]
        if dpop_algs:
            values.append(f"DPoP realm={_quoted(realm)}, algs={_quoted(' '.join(dpop_algs))}")
        return values
    scheme = error.scheme
    params = [f"realm={_quoted(realm)}"]
    if error.error:
        params.append(f"error={_quoted(error.error)}")
        params.append(f"error_description={_quoted(error.description)}")
    if isinstance(error, InsufficientScope) and error.scope:
        params.append(f"scope={_quoted(' '.join(error.scope))}")
    if scheme == DPOP and dpop_algs:
        params.append(f"algs={_quoted(' '.join(dpop_algs))}")
    return [f"{scheme} " + ", ".join(params)]
