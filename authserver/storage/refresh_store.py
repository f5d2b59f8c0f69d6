"""The refresh grant's statements, built once at import (never per request).

A successful rotation costs two statements on PostgreSQL (the lookup, then one statement
that claims the presented token and inserts its child) and three on SQLite (the lookup,
the compare-and-set UPDATE and the INSERT, inside ``BEGIN IMMEDIATE``). The invariant
lives in SQL: a token is claimed only ``WHERE rotated_at IS NULL AND revoked_at IS NULL``,
so of two requests presenting one token exactly one claims it (docs/design.md,
"Rotation"). Everything here runs on a plain SQLAlchemy ``Connection``: no ORM session,
no statement construction: the two statements of a successful rotation run on the driver
connection (``storage.driver``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple, cast

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from . import driver
from .base import UTCDateTime
from .models import RefreshToken, TokenFamily, User

# Declarative models' tables (typed as the FromClause they are declared to be).
_tokens = cast(Table, RefreshToken.__table__)
_families = cast(Table, TokenFamily.__table__)
_users = cast(Table, User.__table__)

LOOKUP = (
    select(
        _tokens.c.id,
        _tokens.c.family_id,
        _tokens.c.expires_at,
        _tokens.c.rotated_at,
        _tokens.c.revoked_at,
        _tokens.c.ip,
        _tokens.c.created_at,
        _families.c.client_id,
        _families.c.user_id,
        _families.c.scope,
        _families.c.auth_time,
        _families.c.expires_at.label("family_expires_at"),
        _families.c.revoked_at.label("family_revoked_at"),
        _families.c.device_id,
        _families.c.ua_family,
        _families.c.dpop_jkt,
        _users.c.subject,
        _users.c.active,
        # The family's status-list entry, for the new access token's ``status`` claim: read
        # here, so the refresh gains no statement (docs/design.md, "Performance budget").
        _families.c.status_list,
        _families.c.status_idx,
    )
    .select_from(_tokens.join(_families, _families.c.id == _tokens.c.family_id)
                 .join(_users, _users.c.id == _families.c.user_id))
    .where(_tokens.c.token_digest == bindparam("digest"))
)

# The compare-and-set (docs/design.md, "Rotation" 1).
_CLAIM = (
    update(_tokens)
    .where(_tokens.c.id == bindparam("p_parent_id"),
           _tokens.c.rotated_at.is_(None),
           _tokens.c.revoked_at.is_(None))
    .values(rotated_at=bindparam("p_rotated_at"), retry_response=bindparam("sealed"),
            retry_until=bindparam("p_retry_until"))
)

_INSERT_CHILD = insert(_tokens).values(
    family_id=bindparam("p_family_id"),
    parent_id=bindparam("p_parent_id"),
    token_digest=bindparam("child_digest"),
    created_at=bindparam("p_rotated_at"),
    ip=bindparam("p_ip"),
    expires_at=bindparam("child_expires_at"),
)

# PostgreSQL: claim and insert in one statement, atomic on its own, so it runs in
# autocommit mode: no BEGIN and COMMIT round trips. When the claim matches no row the
# INSERT inserts none and the statement returns no row.
_claimed = _CLAIM.returning(_tokens.c.id, _tokens.c.family_id).cte("claimed")
_CLAIM_AND_INSERT = (
    insert(_tokens)
    .from_select(
        ["family_id", "parent_id", "token_digest", "created_at", "ip", "expires_at"],
        select(
            _claimed.c.family_id,
            _claimed.c.id,
            bindparam("child_digest", type_=_tokens.c.token_digest.type),
            bindparam("child_created_at", type_=UTCDateTime()),
            bindparam("p_ip", type_=_tokens.c.ip.type),
            bindparam("child_expires_at", type_=UTCDateTime()),
        ),
    )
    .returning(_tokens.c.id)
)

# Housekeeping: drop sealed retry responses whose window has passed, in small batches.
# SKIP LOCKED (PostgreSQL) lets sweepers of several processes and rotations in flight
# pass each other instead of waiting on, or deadlocking over, each other's rows.
_DUE = (
    select(_tokens.c.id)
    .where(_tokens.c.retry_until < bindparam("now", type_=UTCDateTime()))
    .limit(bindparam("batch"))
)
SWEEP = (
    update(_tokens)
    .where(_tokens.c.id.in_(_DUE.with_for_update(skip_locked=True).scalar_subquery()))
    .values(retry_response=None, retry_until=None)
)


@dataclass(frozen=True)
class Child:
    """The token that replaces the presented one."""

    family_id: str
    parent_id: int
    digest: str
    ip: str | None
    expires_at: dt.datetime | None


class TokenRow(NamedTuple):
    """A token, its family and user, as the rotation reads them (``LOOKUP``'s columns)."""

    id: int
    family_id: str
    expires_at: dt.datetime | None
    rotated_at: dt.datetime | None
    revoked_at: dt.datetime | None
    ip: str | None
    created_at: dt.datetime
    client_id: str
    user_id: int
    scope: str
    auth_time: dt.datetime
    family_expires_at: dt.datetime | None
    family_revoked_at: dt.datetime | None
    device_id: str | None
    ua_family: str | None
    dpop_jkt: str | None
    subject: str
    active: bool
    status_list: int | None
    status_idx: int | None



def lookup(connection: Connection, digest: str) -> TokenRow | None:
    """The token with this digest, its family and user (one indexed query), or None."""
    row = driver.fetchone(connection, LOOKUP, {"digest": digest})
    return TokenRow(*row) if row is not None else None


def claim_and_insert(connection: Connection, child: Child, *, rotated_at: dt.datetime,
                     sealed: bytes | None, retry_until: dt.datetime | None) -> bool:
    """Mark the parent rotated and insert ``child`` if nobody else claimed the parent
    first; True if this call did. On SQLite the caller holds the write transaction; on
    PostgreSQL this is one statement, atomic on its own (autocommit) or inside the
    caller's transaction."""
    stamp = driver.bind_time(connection, rotated_at)
    values = {"p_parent_id": child.parent_id, "p_rotated_at": stamp, "sealed": sealed,
              "p_retry_until": driver.bind_time(connection, retry_until),
              "p_family_id": child.family_id, "child_digest": child.digest, "p_ip": child.ip,
              "child_expires_at": driver.bind_time(connection, child.expires_at),
              "child_created_at": stamp}
    if connection.dialect.name != "sqlite":
        return driver.execute(connection, _CLAIM_AND_INSERT, values).fetchone() is not None
    if driver.execute(connection, _CLAIM, values).rowcount != 1:
        return False
    driver.execute(connection, _INSERT_CHILD, values)
    return True


def sweep_batch(connection: Connection, now: dt.datetime, batch: int = 500) -> int:
    """Clear up to ``batch`` expired sealed responses; return how many."""
    return connection.execute(SWEEP, {"now": now, "batch": batch}).rowcount
