"""The rotation while the database stalls: a row lock (PostgreSQL) or the write lock (SQLite)
held from another connection, as a long transaction, a failover or an operator's psql would.

Real time, real locks, real threads: the grace window must run from the commit, so a
client's retry sent while its first request was stuck is answered with the identical
response, never taken for reuse; and a request that cannot get its lock in time answers
503 with the token untouched, never 200 with a token that is already dead.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.exc import PendingRollbackError

from authserver.domain import credentials as creds
from authserver.extensions import db
from authserver.storage.models import RefreshToken, TokenFamily
from tests.support.oauth import assert_oauth_error


@pytest.fixture
def settings_overrides():
    return {"db_lock_timeout_ms": 3_000, "sqlite_busy_timeout_ms": 10_000}


@contextlib.contextmanager
def lock_held(app, backend: str, token: str) -> Iterator[None]:
    """Another connection holds the lock a rotation of ``token`` needs, until the block ends:
    on PostgreSQL the token's row (``SELECT ... FOR UPDATE``), on SQLite the database's
    write lock (``BEGIN IMMEDIATE``), each outside the server's own connection pool."""
    with app.app_context():
        url = db.engine.url
    digest = creds.digest(token)
    if backend == "postgresql":
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        with psycopg.connect(conninfo) as other:
            other.execute("SELECT id FROM refresh_tokens WHERE token_digest = %s FOR UPDATE",
                          (digest,))
            yield
            other.rollback()
    else:
        other = sqlite3.connect(url.database, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            yield
            other.execute("ROLLBACK")
        finally:
            other.close()


def _state(app, token: str) -> tuple[RefreshToken, TokenFamily]:
    with app.app_context():
        row = db.session.scalars(select(RefreshToken).where(
            RefreshToken.token_digest == creds.digest(token))).one()
        return row, db.session.get(TokenFamily, row.family_id)


def _refresh(oauth, app_client, token):
    response = oauth.refresh(app_client, token, client=oauth.app.test_client())
    return response.status_code, response.get_data()


def test_a_retry_sent_while_the_first_request_waits_gets_the_identical_response(
        oauth, app, backend):
    """The first request waits 1.5 s for the lock, longer than the 1 s grace window; its
    client gives up after 0.5 s and retries, then retries once more 0.8 s after the first
    answer. Both retries get the identical response and the session survives."""
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=1)
    token = oauth.login_pair(app_client)["refresh_token"]

    with ThreadPoolExecutor(2) as pool:
        with lock_held(app, backend, token):
            first = pool.submit(_refresh, oauth, app_client, token)
            time.sleep(0.5)
            retry = pool.submit(_refresh, oauth, app_client, token)
            time.sleep(1.0)
        status, body = first.result(timeout=30)
        answered = time.monotonic()
        assert status == 200, body
        assert retry.result(timeout=30) == (200, body)
        time.sleep(max(0.0, answered + 0.8 - time.monotonic()))
        assert _refresh(oauth, app_client, token) == (200, body)

    child = oauth.app.json.loads(body)["refresh_token"]
    assert _state(app, token)[1].revoked_at is None
    assert oauth.refresh(app_client, child).status_code == 200  # the 200 carried a live token


def test_a_request_that_cannot_get_its_lock_answers_503_and_changes_nothing(
        oauth, app, backend):
    """Held longer than the bound on a wait: 503 with Retry-After, the token unused; once
    the lock is gone the same token rotates normally."""
    if backend != "postgresql":
        pytest.skip("SQLite's writer waits up to its busy timeout (10 s here); the "
                    "PostgreSQL case covers the bounded wait")
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    token = oauth.login_pair(app_client)["refresh_token"]

    with ThreadPoolExecutor(1) as pool, lock_held(app, backend, token):
        stuck = pool.submit(lambda: oauth.refresh(app_client, token,
                                                  client=oauth.app.test_client()))
        response = stuck.result(timeout=30)  # lock_timeout is 3 s here
    body = assert_oauth_error(response, "temporarily_unavailable", status=503)
    assert response.headers["Retry-After"] == "1", body
    row, family = _state(app, token)
    assert row.rotated_at is None and family.revoked_at is None
    assert oauth.refresh(app_client, token).status_code == 200


def test_the_sweeper_never_clears_a_window_that_is_still_open(oauth, app, clock):
    """Expiry is exact where it matters: a box inside its window stays, and an expired one
    is never opened even before a sweep (the grace check comes first)."""
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    first = oauth.login_pair(app_client)
    oauth.refresh(app_client, first["refresh_token"])
    sweeper = app.extensions["authserver"].sweeper
    with app.app_context():
        assert sweeper.sweep(db.engine, clock()) == 0
    clock.advance(14)  # past grace (10 s) + the lock-wait bound (3 s here)
    assert_oauth_error(oauth.refresh(app_client, first["refresh_token"]), "invalid_grant")
    row, family = _state(app, first["refresh_token"])
    assert family.revoke_reason == "reuse_detected" and row.retry_response is None


@pytest.mark.parametrize("settings_overrides", [{"db_lock_timeout_ms": 500}])
def test_racing_sweepers_and_rotations_do_not_deadlock(oauth, app, clock, backend):
    """Sweeps of several processes while rotations run: none waits on another (SKIP LOCKED)."""
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=1)
    tokens = [oauth.login_pair(app_client)["refresh_token"] for _ in range(4)]
    with app.app_context():
        engine = db.engine
    stop = threading.Event()
    errors: list[BaseException] = []

    def sweep_loop():
        try:
            while not stop.is_set():
                app.extensions["authserver"].sweeper.sweep(engine, clock())
        except BaseException as exc:  # reported below
            errors.append(exc)

    sweepers = [threading.Thread(target=sweep_loop) for _ in range(2)]
    for thread in sweepers:
        thread.start()
    try:
        for _ in range(5):
            tokens = [oauth.refresh(app_client, t).get_json()["refresh_token"] for t in tokens]
            clock.advance(3)
    finally:
        stop.set()
        for thread in sweepers:
            thread.join(timeout=30)
    assert not errors


def test_killed_database_connections_give_503_json_and_lose_no_token(oauth, app, backend):
    """PostgreSQL terminates every connection of the server's pool (a failover, an operator's
    pg_terminate_backend) between refreshes: each answer is 200 or a clean 503 JSON, never a
    500; after a 503 the same token still works, so the chain never breaks."""
    if backend != "postgresql":
        pytest.skip("terminating server connections is PostgreSQL's")
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    token = oauth.login_pair(app_client)["refresh_token"]
    with app.app_context():
        url = db.engine.url
    conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
    statuses = []
    with psycopg.connect(conninfo, autocommit=True) as admin:
        for _ in range(6):
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            for _attempt in range(3):
                response = oauth.refresh(app_client, token)
                statuses.append(response.status_code)
                if response.status_code == 200:
                    token = response.get_json()["refresh_token"]
                    break
                body = assert_oauth_error(response, "temporarily_unavailable", status=503)
                assert response.headers["Retry-After"] == "1", body
            else:
                pytest.fail(f"the token never worked again: {statuses}")
    assert statuses.count(200) == 6, statuses
    assert 503 in statuses, "the kill must have reached the pool"


def test_a_serving_process_sweeps_expired_windows_in_the_background(oauth, app, clock):
    """``start_background_work`` (what ``authserver serve``'s workers call) clears expired
    sealed responses on its own, with no request arriving."""
    from authserver.app import start_background_work

    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=1)
    first = oauth.login_pair(app_client)
    oauth.refresh(app_client, first["refresh_token"])
    clock.advance(5)
    services = app.extensions["authserver"]
    services.sweeper.interval = 0.05
    start_background_work(app)
    try:
        deadline = time.monotonic() + 10
        while _state(app, first["refresh_token"])[0].retry_response is not None:
            assert time.monotonic() < deadline, "the background sweep never ran"
            time.sleep(0.05)
    finally:
        services.sweeper.stop()
        services.checkpointer.stop()


@pytest.mark.parametrize("end", ["invalidate", "close"])
def test_a_sqlite_write_transaction_never_leaks_the_writer_lock(app, backend, end):
    """A transaction whose connection is invalidated, or closed without commit or rollback
    (an error path), lets the next writer in at once."""
    if backend != "sqlite":
        pytest.skip("the writer lock is SQLite's")
    with app.app_context():
        engine = db.engine
    connection = engine.connect()
    transaction = connection.begin()
    connection.exec_driver_sql("SELECT 1")
    if end == "invalidate":
        connection.invalidate()
    with contextlib.suppress(PendingRollbackError):  # SQLAlchemy's bookkeeping only
        transaction.rollback()
        connection.close()
    started = time.monotonic()
    with engine.begin() as writer:
        writer.exec_driver_sql("SELECT 1")
    assert time.monotonic() - started < 1
