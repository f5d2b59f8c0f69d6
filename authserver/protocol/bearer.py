"""The access-token check of this server's own protected endpoints (UserInfo, the account
API, the registration API's admin tokens): the ``Authorization`` header (RFC 6750 §2.1,
RFC 9449 §7.1), our JWT access token (``access_tokens.verify``), and for a DPoP-bound token
(``cnf.jkt``) a proof by its key over this request and this token (RFC 9449 §7).

Each endpoint words and renders its RFC 6750 §3 error (realm, challenge) itself: this module
raises :class:`BearerError` with what the challenge needs.
"""

from __future__ import annotations

from flask import request

from ..extensions import db
from ..services import services
from . import access_tokens, dpop
from .access_tokens import VerifiedAccessToken

NOT_BOUND = "the token is not DPoP-bound: use the Bearer scheme"
BOUND = "the token is DPoP-bound: use DPoP"


class BearerError(Exception):
    """A refused token: the RFC 6750 §3 (or RFC 9449 §7.1) error, the scheme of its
    challenge, and the server nonce a refused DPoP proof should be retried with."""

    def __init__(self, status: int, error: str, description: str, scheme: str = "Bearer",
                 nonce: str | None = None) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description
        self.scheme, self.nonce = scheme, nonce


def authorization(header: str) -> tuple[str | None, str]:
    """The scheme of an ``Authorization`` header, ``"Bearer"`` or ``"DPoP"`` (either
    case-insensitively; None for any other), and the credential after it, stripped."""
    scheme, _, value = header.partition(" ")
    return {"bearer": "Bearer", "dpop": "DPoP"}.get(scheme.lower()), value.strip()


def verify(token: str, scheme: str) -> VerifiedAccessToken:
    """Our access token: signature, ``typ``, issuer, expiry, a live session and user."""
    svc = services()
    try:
        return access_tokens.verify(token, keys=svc.keys, issuer=svc.settings.issuer,
                                    audience=svc.settings.audience,
                                    session=db.session(), now=svc.clock())
    except access_tokens.InvalidAccessToken as exc:
        raise BearerError(401, "invalid_token", str(exc), scheme) from None


def check_binding(token: str, scheme: str, verified: VerifiedAccessToken, *,
                  not_bound: str = NOT_BOUND, bound: str = BOUND) -> None:
    """RFC 9449 §7: a DPoP-bound token needs the DPoP scheme and a proof by its key (with
    ``ath``); an unbound one, the Bearer scheme. ``not_bound`` and ``bound`` word the
    errors of the wrong scheme."""
    bound_to = (verified.claims.get("cnf") or {}).get("jkt")
    if bound_to is None and scheme == "Bearer":
        return
    if bound_to is None:
        raise BearerError(401, "invalid_token", not_bound)
    if scheme != "DPoP":
        raise BearerError(401, "invalid_token", bound, "DPoP")
    svc = services()
    # End the read transaction first: the replay cache writes on its own connection, and
    # on SQLite this request's open transaction would hold the write lock it needs.
    db.session.rollback()
    try:
        proof = dpop.validate(request.headers.getlist("DPoP"), method=request.method,
                              urls=dpop.expected_urls(svc.settings.issuer, request.path),
                              now=svc.clock(), replay=svc.replay, nonces=svc.nonces,
                              access_token=token)
    except dpop.DPoPError as exc:
        nonce = svc.nonces.current(svc.clock()) if svc.nonces is not None else None
        raise BearerError(401, exc.error, exc.description, "DPoP", nonce) from None
    if proof.jkt != bound_to:
        raise BearerError(401, "invalid_dpop_proof", "the proof key is not the token's key",
                          "DPoP")


def authenticate(token: str, scheme: str, *, not_bound: str = NOT_BOUND,
                 bound: str = BOUND) -> VerifiedAccessToken:
    """:func:`verify`, then :func:`check_binding`: the token, or BearerError."""
    verified = verify(token, scheme)
    check_binding(token, scheme, verified, not_bound=not_bound, bound=bound)
    return verified
