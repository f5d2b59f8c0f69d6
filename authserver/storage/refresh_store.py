"""The refresh grant's statements, built once at import (never per request).

A successful rotation costs two statements on PostgreSQL (the lookup, then one statement
that claims the presented token and inserts its child) and three on SQLite (the lookup,
the compare-and-set UPDATE and the INSERT, inside ``BEGIN IMMEDIATE``). The invariant
lives in SQL: a token is claimed only ``WHERE rotated_at IS NULL AND revoked_at IS NULL``,
so of two requests presenting one token exactly one claims it (docs/design.md,
"Rotation"). Everything here runs on a plain SQLAlchemy ``Connection``: no ORM session,
no statement construction, only the compiled-statement cache.
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError

from .base import UTCDateTime
from .models import RefreshToken, TokenFamily, User

_tokens = RefreshToken.__table__
_families = TokenFamily.__table__
_users = User.__table__

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
_claimed = (
    update(_tokens)
    .where(_tokens.c.id == bindparam("p_parent_id"),
           _tokens.c.rotated_at.is_(None),
           _tokens.c.revoked_at.is_(None))
    .values(rotated_at=bindparam("p_rotated_at"), retry_response=bindparam("sealed"),
            retry_until=bindparam("p_retry_until"))
    .returning(_tokens.c.id, _tokens.c.family_id)
    .cte("claimed")
)
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


_TIMESTAMPS = [TokenRow._fields.index(name) for name in (
    "expires_at", "rotated_at", "revoked_at", "created_at", "auth_time", "family_expires_at",
    "family_revoked_at")]
_ACTIVE = TokenRow._fields.index("active")


# -- the hot path: driver-level execution --------------------------------------------------
#
# The two statements of a rotation run on the DBAPI connection itself with SQL compiled
# once per dialect from the statements above. SQLAlchemy's execution layer (result
# metadata, type processing, events) cost more than the statements here, and psycopg builds
# a description object per column of every result it is asked to describe (0.3 ms for
# the lookup's 18 columns). Timestamps are converted as ``UTCDateTime`` does: naive UTC,
# and on SQLite the same text format SQLAlchemy writes, so comparisons in SQL agree.


@dataclass(frozen=True)
class _Sql:
    text: str
    order: tuple[str, ...] | None  # positional parameter names (SQLite), else named

    def params(self, values: dict[str, Any]) -> Any:
        return values if self.order is None else tuple(values[name] for name in self.order)


@functools.cache
def _sql(statement: Any, dialect: Dialect) -> _Sql:
    compiled = statement.compile(dialect=dialect)
    return _Sql(str(compiled), tuple(compiled.positiontup) if compiled.positional else None)


def _bind_time(value: dt.datetime | None, sqlite: bool) -> Any:
    if value is None:
        return None
    naive = value.astimezone(dt.UTC).replace(tzinfo=None)
    return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else naive


def _result_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC)  # type: ignore[no-any-return]


def _execute(connection: Connection, sql: _Sql, values: dict[str, Any]) -> Any:
    """Run ``sql`` on the driver; its errors surface as SQLAlchemy's (``OperationalError``
    and the rest, as the endpoints expect), and a dead connection is invalidated so the
    pool never hands it out again."""
    driver = connection.connection.driver_connection
    dbapi = connection.dialect.loaded_dbapi
    try:
        return driver.execute(sql.text, sql.params(values))
    except dbapi.Error as exc:
        disconnected = connection.dialect.is_disconnect(exc, driver, None)
        if disconnected:
            connection.invalidate(exc)
        raise DBAPIError.instance(sql.text, None, exc, dbapi.Error,
                                  connection_invalidated=disconnected,
                                  dialect=connection.dialect) from exc


def lookup(connection: Connection, digest: str) -> TokenRow | None:
    """The token with this digest, its family and user (one indexed query), or None."""
    row = _execute(connection, _sql(LOOKUP, connection.dialect), {"digest": digest}).fetchone()
    if row is None:
        return None
    values = list(row)
    for index in _TIMESTAMPS:
        values[index] = _result_time(values[index])
    values[_ACTIVE] = bool(values[_ACTIVE])
    return TokenRow(*values)


def claim_and_insert(connection: Connection, child: Child, *, rotated_at: dt.datetime,
                     sealed: bytes | None, retry_until: dt.datetime | None) -> bool:
    """Mark the parent rotated and insert ``child`` if nobody else claimed the parent
    first; True if this call did. On SQLite the caller holds the write transaction; on
    PostgreSQL this is one statement, atomic on its own (autocommit) or inside the
    caller's transaction."""
    sqlite = connection.dialect.name == "sqlite"
    values = {"p_parent_id": child.parent_id, "p_rotated_at": _bind_time(rotated_at, sqlite),
              "sealed": sealed, "p_retry_until": _bind_time(retry_until, sqlite),
              "p_family_id": child.family_id, "child_digest": child.digest, "p_ip": child.ip,
              "child_expires_at": _bind_time(child.expires_at, sqlite),
              "child_created_at": _bind_time(rotated_at, sqlite)}
    if not sqlite:
        return _execute(connection, _sql(_CLAIM_AND_INSERT, connection.dialect),
                        values).fetchone() is not None
    if _execute(connection, _sql(_CLAIM, connection.dialect), values).rowcount != 1:
        return False
    _execute(connection, _sql(_INSERT_CHILD, connection.dialect), values)
    return True


def sweep_batch(connection: Connection, now: dt.datetime, batch: int = 500) -> int:
    """Clear up to ``batch`` expired sealed responses; return how many."""
    return connection.execute(SWEEP, {"now": now, "batch": batch}).rowcount
