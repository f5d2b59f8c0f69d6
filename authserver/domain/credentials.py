"""Random credentials and their digests.

Refresh tokens and client secrets are 256-bit random values, so a single fast SHA-256 is
a safe digest (a slow KDF would only cap the token endpoint's throughput: docs/design.md,
"Secrets"). Only digests are stored; lookups are by digest; checks are constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

REFRESH_TOKEN_PREFIX = "rt_"  # noqa: S105 - a prefix, not a secret
CLIENT_ID_PREFIX = "cl_"


def digest(value: str) -> str:
    """SHA-256 hex digest of a credential (what the database holds)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def matches(value: str, stored_digest: str | None) -> bool:
    """Constant-time comparison of a presented credential against a stored digest."""
    if not stored_digest:
        return False
    return hmac.compare_digest(digest(value), stored_digest)


def new_refresh_token() -> str:
    """An opaque refresh token: recognisable prefix + 256 random bits."""
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_client_secret() -> str:
    """A server-generated client secret with 256 random bits."""
    return secrets.token_urlsafe(32)


def new_client_id() -> str:
    return CLIENT_ID_PREFIX + secrets.token_urlsafe(12)


def new_family_id() -> str:
    """A family (session) id: 128 random bits; it appears in tokens as ``sid``."""
    return secrets.token_urlsafe(16)


def new_subject() -> str:
    """A user's ``sub``: stable, non-guessable, reveals nothing about the account."""
    return secrets.token_hex(16)


def new_jti() -> str:
    return secrets.token_urlsafe(16)
