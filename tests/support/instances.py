"""Several ``authserver serve`` instances of one deployment, as docs/operators.md "Several
instances" describes it: one PostgreSQL database, one Redis, one keys directory, one secret
key and one issuer (the load balancer's URL), each instance on its own port."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from authserver.app import create_app
from authserver.crypto.key_admin import KeyAdmin
from authserver.domain import client_admin
from authserver.domain import users as domain_users
from authserver.domain.client_metadata import ClientSpec
from authserver.extensions import db
from tests.support import live_server
from tests.support.databases import app_settings, migrate
from tests.support.oauth import PASSWORD

REDIS_HOST = "127.0.0.1:6379"
# Marks a Redis database index as taken by one test run; expires should the run be killed.
CLAIM = "authserver-tests:claimed"


@contextlib.contextmanager
def redis_database() -> Iterator[str]:
    """The URL of an empty Redis database index (1 to 15) of the Redis at ``REDIS_HOST``,
    claimed for this test run (index 0 is for tests that use key prefixes) and emptied at the
    end; skipped, with the reason, where Redis cannot be reached."""
    import redis

    mine = secrets.token_hex(8)
    for index in range(1, 16):
        url = f"redis://{REDIS_HOST}/{index}"
        connection = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            if not connection.set(CLAIM, mine, nx=True, ex=600):
                continue
        except redis.RedisError as exc:
            pytest.skip(f"Redis not reachable at {REDIS_HOST}: {type(exc).__name__}")
        if connection.dbsize() != 1:  # someone's data, unclaimed: leave it alone
            connection.delete(CLAIM)
            continue
        try:
            yield url
        finally:
            connection.flushdb()
            connection.close()
        return
    pytest.skip(f"no free database index in the Redis at {REDIS_HOST}")


def prepare(workdir: Path, database_url: str, *, users: tuple[str, ...] = (),
            clients: dict[str, ClientSpec] | None = None) -> dict[str, dict[str, str]]:
    """What an operator does once before the instances start (`db upgrade`, `keys ensure`),
    plus users (the tests' password) and clients, done in this process: a command costs a
    second or more of interpreter start each. Returns each client's id and secret by name."""
    migrate(database_url, workdir / "keys")
    KeyAdmin(workdir / "keys").ensure()
    app = create_app(app_settings(database_url, workdir / "keys"))
    created: dict[str, dict[str, str]] = {}
    with app.app_context():
        for username in users:
            domain_users.create_user(db.session, username, PASSWORD)
        db.session.commit()
        for name, spec in (clients or {}).items():
            record, secret = client_admin.create_client(db.session, spec)
            created[name] = {"client_id": record.client_id, "client_secret": secret or ""}
        db.engine.dispose()
    return created


def start(workdir: Path, database_url: str, count: int = 2, *, workers: int = 1,
          env: dict[str, str] | None = None) -> list[live_server.LiveServer]:
    """Start ``count`` instances at once on a prepared database and ``workdir / "keys"``,
    each with ``env`` (for serve and for its ``cli``) on its own port."""
    shared = dict(env or {})
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(live_server.start, workdir, database_url, workers,
                               extra_env=shared, prepare=False, log_name=f"instance-{n}.log")
                   for n in range(count)]
    failures = [future.exception() for future in futures if future.exception()]
    servers = [future.result() for future in futures if not future.exception()]
    if failures:
        stop(servers)
        raise failures[0]  # type: ignore[misc]
    for server in servers:
        server.env.update(shared)  # its CLI sees the deployment's settings too
    return servers


def stop(servers: list[live_server.LiveServer]) -> None:
    """Stop them all at once (each finishes its requests in flight)."""
    def one(server: live_server.LiveServer) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            server.stop()

    with ThreadPoolExecutor(max(1, len(servers))) as pool:
        list(pool.map(one, servers))
