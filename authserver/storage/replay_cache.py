"""Seen DPoP proof ``jti`` values (RFC 9449 §11.1): in the database, or in Redis when configured.

``add`` returns False when the key was already there (a replay). Keys are digests; the
entry lives until the proof could no longer be accepted anyway, then it is pruned (the
database) or expires by itself (Redis). Several server processes must share one cache, or
a proof replayed to another process would pass: the database is shared by construction,
Redis (``AUTHSERVER_REDIS_URL``) when the database should not take one write per proof.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
from typing import Protocol

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from .models import DPoPProofJti


class ReplayCacheUnavailable(Exception):
    """The cache could not be asked: the proof can be neither accepted nor refused (503)."""


class ReplayCache(Protocol):
    def add(self, key: str, expires_at: dt.datetime) -> bool: ...


class DatabaseReplayCache:
    """A row per seen proof, inserted in its own short transaction (``ON CONFLICT DO NOTHING``).

    Called before the request's own transaction begins, so on SQLite it never waits on a
    write lock this request holds; every ``PRUNE_EVERY`` inserts (per process) the expired
    rows go, and ``authserver db purge`` removes any left behind.
    """

    PRUNE_EVERY = 500

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._inserts = 0
        self._lock = threading.Lock()
        dialect = engine.dialect.name
        self._insert = pg_insert if dialect == "postgresql" else sqlite_insert

    def add(self, key: str, expires_at: dt.datetime) -> bool:
        values = self._insert(DPoPProofJti).values(jti_digest=key, expires_at=expires_at)
        statement = values.on_conflict_do_nothing(index_elements=["jti_digest"]).returning(
            DPoPProofJti.jti_digest)
        with self._lock:
            self._inserts += 1
            prune = self._inserts % self.PRUNE_EVERY == 0
        with self.engine.begin() as connection:
            inserted = connection.execute(statement).first() is not None
            if prune:
                self.prune(connection)
        return inserted

    @staticmethod
    def prune(connection: Connection) -> None:
        connection.execute(delete(DPoPProofJti).where(
            DPoPProofJti.expires_at < dt.datetime.now(dt.UTC)))


class RedisReplayCache:
    """``SET key NX EX ttl`` in Redis: shared by every server process, expiring by itself.

    The lifetime is relative (``EX``), computed here: with an absolute ``EXAT`` a Redis
    clock running ahead of ours would drop entries early, and a time already past makes
    Redis answer OK and keep nothing, which would accept every replay.
    """

    def __init__(self, url: str, prefix: str = "authserver:dpop:") -> None:
        import redis

        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def add(self, key: str, expires_at: dt.datetime) -> bool:
        ttl = max(1, math.ceil(expires_at.timestamp() - time.time()))
        try:
            return bool(self.client.set(self.prefix + key, b"1", nx=True, ex=ttl))
        except self._errors as exc:
            raise ReplayCacheUnavailable(type(exc).__name__) from exc
