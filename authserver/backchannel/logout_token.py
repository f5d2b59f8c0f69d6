"""The logout token of OpenID Connect Back-Channel Logout 1.0 §2.4, signed by the active
key (the JWKS that verifies ID tokens verifies it too)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from typing import Any

from ..crypto.keystore import SigningKey
from ..domain.logout_outbox import Message

LOGOUT_TOKEN_TYP = "logout+jwt"  # noqa: S105 - §2.4 explicit typing, not a secret
EVENT = "http://schemas.openid.net/event/backchannel-logout"
LIFETIME = 120  # seconds: §2.4 recommends a short lifetime (the receiver checks exp)


def jti(issuer: str, message: Message) -> str:
    """The message's ``jti``: the same on every attempt, so a receiver that remembers the
    ones it has seen can drop a repeat (delivery is at least once). Derived from what
    identifies the message; 128 bits, base64url."""
    seed = "\x00".join((issuer, str(message.id), message.created_at.isoformat(),
                        message.client_id, message.sid or "", message.subject or ""))
    digest = hashlib.sha256(seed.encode("utf-8")).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def claims(issuer: str, message: Message, now: dt.datetime) -> dict[str, Any]:
    """§2.4: ``iss``, ``aud`` (the client), ``iat``, ``exp``, ``jti``, ``events``; ``sid``
    (the family: the ID tokens' ``sid``) and ``sub``. Never a ``nonce`` (§2.4)."""
    issued = int(now.timestamp())
    body: dict[str, Any] = {
        "iss": issuer,
        "aud": message.client_id,
        "iat": issued,
        "exp": issued + LIFETIME,
        "jti": jti(issuer, message),
        "events": {EVENT: {}},
    }
    if message.subject is not None:
        body["sub"] = message.subject
    if message.sid is not None:
        body["sid"] = message.sid
    return body


def sign(key: SigningKey, issuer: str, message: Message, now: dt.datetime) -> str:
    """The compact JWT, ``typ: logout+jwt`` (§2.4), by ``key``."""
    return key.sign(claims(issuer, message, now), LOGOUT_TOKEN_TYP)
