"""Seen DPoP proof ``jti`` values: in the database, or in Redis when configured.

``add`` returns False when the key was already there (a replay). Keys are digests; the
entry lives until the proof could no longer be accepted anyway, then it is pruned.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from .models import DPoPProofJti


class ReplayCache(Protocol):
    def add(self, key: str, expires_at: dt.datetime) -> bool: ...


class DatabaseReplayCache:
    """A row per seen proof, inserted in its own short transaction (``ON CONFLICT DO NOTHING``).

    Called before the request's own transaction begins, so on SQLite it never waits on a
    write lock this request holds; expired rows are pruned now and then.
    """

    PRUNE_EVERY = 500

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._inserts = 0
        dialect = engine.dialect.name
        self._insert = pg_insert if dialect == "postgresql" else sqlite_insert

    def add(self, key: str, expires_at: dt.datetime) -> bool:
        statement = self._insert(DPoPProofJti).values(jti_digest=key, expires_at=expires_at)
        statement = statement.on_conflict_do_nothing(index_elements=["jti_digest"]).returning(
            DPoPProofJti.jti_digest)
        with self.engine.begin() as connection:
            inserted = connection.execute(statement).first() is not None
            self._inserts += 1
            if self._inserts % self.PRUNE_EVERY == 0:
                connection.execute(delete(DPoPProofJti).where(
                    DPoPProofJti.expires_at < dt.datetime.now(dt.UTC)))
        return inserted


class RedisReplayCache:
    """``SET key NX EXAT`` in Redis: shared by every server process, expiring by itself."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def add(self, key: str, expires_at: dt.datetime) -> bool:
        return bool(self.client.set(f"authserver:dpop:{key}", b"1", nx=True,
                                    exat=int(expires_at.timestamp()) + 1))
