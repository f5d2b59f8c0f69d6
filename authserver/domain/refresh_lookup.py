"""Read-only lookups of refresh tokens: which client a token belongs to, and what
introspection and revocation need to know about it. Nothing here changes a family (that
is :mod:`.refresh_families`); every lookup is one indexed query by digest
(docs/design.md, "Performance budget").

Also the autocommit connection the hot path reads on, and the expiry test both share.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import cast

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session

from ..storage import engine as storage_engine
from ..storage import refresh_store
from . import credentials as creds


def autocommit_connection(session: Session) -> Connection:
    """A pooled connection in autocommit mode, apart from ``session``'s transaction: the
    hot path reads without taking SQLite's write lock or opening a PostgreSQL
    transaction (no BEGIN or COMMIT round trips)."""
    return storage_engine.autocommit(cast(Engine, session.get_bind()).connect())


def expired(expires_at: dt.datetime | None, now: dt.datetime) -> bool:
    """Whether an expiry (None: none) has passed at ``now``."""
    return expires_at is not None and expires_at <= now


def client_of(session: Session, presented: str | None) -> str | None:
    """The client a refresh token was issued to, or None (unknown or not a token)."""
    if not presented or not presented.startswith(creds.REFRESH_TOKEN_PREFIX) \
            or len(presented) > 256:
        return None
    with autocommit_connection(session) as connection:
        row = refresh_store.lookup(connection, creds.digest(presented))
    return row.client_id if row is not None else None


@dataclass(frozen=True)
class RefreshTokenInfo:
    """What introspection and revocation need to know about a presented refresh token."""

    family_id: str
    client_id: str
    subject: str
    scope: str
    created_at: dt.datetime
    expires_at: dt.datetime | None
    dpop_jkt: str | None
    active: bool


def find_refresh_token(session: Session, presented: str, now: dt.datetime
                       ) -> RefreshTokenInfo | None:
    """Look a refresh token up by digest (one indexed query); None if unknown."""
    row = session.execute(refresh_store.LOOKUP,
                          {"digest": creds.digest(presented)}).one_or_none()
    if row is None:
        return None
    expires = row.expires_at
    if row.family_expires_at is not None and (expires is None or row.family_expires_at < expires):
        expires = row.family_expires_at
    active = (row.rotated_at is None and row.revoked_at is None
              and row.family_revoked_at is None and row.active
              and not expired(expires, now))
    return RefreshTokenInfo(
        family_id=row.family_id, client_id=row.client_id, subject=row.subject,
        scope=row.scope, created_at=row.created_at, expires_at=expires,
        dpop_jkt=row.dpop_jkt, active=active,
    )
