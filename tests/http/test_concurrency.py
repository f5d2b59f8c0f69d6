"""Real concurrency: many requests present the same refresh token at the same moment.

Threads each use their own test client, app context, session and database connection,
so on PostgreSQL the race is between separate connections and on SQLite between
separate connections to one file, exactly as under a multi-threaded server. That they
really are separate and really overlap is not assumed: every racer holds its connection
at a barrier until all of them hold one. A multi-process variant races separate apps
and engines against one database, as separate server processes do.

On PostgreSQL a lost race under REPEATABLE READ or SERIALIZABLE is a serialization
failure, which must become ``invalid_grant``, never a 500
(docs/design.md, "Where Authlib needed care").
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg.errors
import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError

from authserver.domain import refresh_families, retry_sweeper
from authserver.extensions import db
from authserver.storage.models import RefreshToken, TokenFamily
from tests.support.oauth import assert_oauth_error
from tests.support.token_race import refresh_in_own_process

THREADS = 20
PROCESSES = 4
BARRIER_TIMEOUT = 60  # a safety net for a broken test, not a timed assertion


@pytest.fixture
def settings_overrides():
    # Twenty racers queue on one row's lock (and, without grace, on the family's revocation):
    # on a loaded machine that can take longer than the suite's short lock-wait bound.
    return {"db_pool_size": THREADS + 2, "db_lock_timeout_ms": 10_000}


def _engine(app):
    with app.app_context():
        return db.engine


class StartLine:
    """Holds each racer at its first connection checkout until every racer holds one.

    Passing it proves the racers use ``parties`` distinct connections at the same time
    (a pool too small for them would break the barrier, and the test with it).
    """

    def __init__(self, parties: int) -> None:
        self.barrier = threading.Barrier(parties, timeout=BARRIER_TIMEOUT)
        self.connections: set[int] = set()
        self._local = threading.local()
        self._lock = threading.Lock()

    def enter(self) -> None:
        self._local.racing = True

    def on_checkout(self, dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if getattr(self._local, "racing", False) and not getattr(self._local, "held", False):
            self._local.held = True
            with self._lock:
                self.connections.add(id(dbapi_connection))
            self.barrier.wait()

    @contextmanager
    def installed(self, engine) -> Iterator[StartLine]:
        event.listen(engine, "checkout", self.on_checkout)
        try:
            yield self
        finally:
            event.remove(engine, "checkout", self.on_checkout)


def _race(oauth, app_client, token, threads: int = THREADS) -> list[tuple[int, dict]]:
    """``threads`` requests with one token, released together once each holds a connection."""
    start = StartLine(threads)

    def one(_):
        client = oauth.app.test_client()
        start.enter()
        response = oauth.refresh(app_client, token, client=client)
        return response.status_code, response.get_json()

    with start.installed(_engine(oauth.app)), ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(one, range(threads)))
    assert len(start.connections) == threads, "each racer must have its own connection"
    return results


def _children(app, family_id):
    with app.app_context():
        return db.session.scalars(
            select(RefreshToken).where(RefreshToken.family_id == family_id,
                                       RefreshToken.parent_id.is_not(None))
        ).all()


def _family(app, family_id) -> TokenFamily:
    with app.app_context():
        return db.session.get(TokenFamily, family_id)


def _assert_one_rotation_shared(oauth, app_client, sid, results) -> None:
    """Inside grace: every racer got the one rotation's response; its child is live."""
    assert all(status == 200 for status, _ in results), results
    bodies = {json.dumps(body, sort_keys=True) for _, body in results}
    assert len(bodies) == 1, "every racer must get the identical pair"
    children = _children(oauth.app, sid)
    assert len(children) == 1 and children[0].revoked_at is None
    assert _family(oauth.app, sid).revoked_at is None
    assert oauth.refresh(app_client, results[0][1]["refresh_token"]).status_code == 200


def _assert_one_winner_then_reuse(oauth, sid, results) -> None:
    """No grace: one 200; every other presentation is reuse, which revokes the family."""
    winners = [body for status, body in results if status == 200]
    assert len(winners) == 1, results
    assert all(status == 400 and body["error"] == "invalid_grant"
               for status, body in results if status != 200), results
    # Exactly one child was ever created. With no grace window the other presentations are
    # reuse (docs/design.md, "Rotation" 3), so the family, and with it that child, is revoked.
    assert len(_children(oauth.app, sid)) == 1
    assert _family(oauth.app, sid).revoke_reason == "reuse_detected"


def test_pool_is_big_enough_for_the_racers(app, backend):
    pool = _engine(app).pool
    assert pool.size() >= THREADS, (backend, pool.status())


def test_racing_retries_inside_grace_all_get_the_one_rotation(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=30)
    pair = oauth.login_pair(app_client)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]

    results = _race(oauth, app_client, pair["refresh_token"])

    _assert_one_rotation_shared(oauth, app_client, sid, results)


def test_racing_requests_without_grace_rotate_exactly_once(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=0)
    pair = oauth.login_pair(app_client)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]

    results = _race(oauth, app_client, pair["refresh_token"])

    _assert_one_winner_then_reuse(oauth, sid, results)


@contextmanager
def _all_read_before_any_claims(app, parties: int) -> Iterator[set[int]]:
    """Every rotation waits, after its SELECT and before its compare-and-set, until all
    ``parties`` have read the token: the losers then lose at the UPDATE itself.

    Yields the PostgreSQL backend pids seen there (one per connection).
    """
    barrier = threading.Barrier(parties, timeout=BARRIER_TIMEOUT)
    tokens = app.extensions["authserver"].tokens
    issue = tokens.for_grant
    pids: set[int] = set()

    def waiting_issue(grant):
        pids.add(db.session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar())
        barrier.wait()
        return issue(grant)

    tokens.for_grant = waiting_issue
    try:
        yield pids
    finally:
        tokens.for_grant = issue


@pytest.mark.parametrize("grace", [30, 0], ids=["grace", "no-grace"])
def test_every_racer_reads_the_token_live_and_the_compare_and_set_picks_one(
        oauth, backend, grace):
    """The hardest interleaving: all 20 have read the token as unused before any claims it.

    PostgreSQL only: on SQLite, BEGIN IMMEDIATE makes the transactions queue, so two
    can never be between the SELECT and the UPDATE at once (which is the point of it).
    """
    if backend != "postgresql":
        pytest.skip("SQLite serialises rotations at BEGIN IMMEDIATE: this cannot happen")
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=grace)
    pair = oauth.login_pair(app_client)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]

    with _all_read_before_any_claims(oauth.app, THREADS) as pids:
        results = _race(oauth, app_client, pair["refresh_token"])

    assert len(pids) == THREADS, "each racer on its own PostgreSQL connection"
    if grace:
        _assert_one_rotation_shared(oauth, app_client, sid, results)
    else:
        _assert_one_winner_then_reuse(oauth, sid, results)


@pytest.mark.slow
def test_separate_processes_rotate_exactly_once(oauth):
    """N server processes (own app, engine and pool each) against one database: one race
    with a grace window, then one without."""
    oauth.create_user()
    races = []
    for grace in (30, 0):
        app_client = oauth.first_party_app(name=f"grace {grace}", reuse_grace=grace)
        pair = oauth.login_pair(app_client)
        races.append((app_client, oauth.verify_access_token(pair["access_token"])["sid"],
                      {"grant_type": "refresh_token", "refresh_token": pair["refresh_token"],
                       "client_id": app_client.client_id}))
    settings = oauth.app.extensions["authserver"].settings

    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [ctx.Process(target=refresh_in_own_process,
                             args=(settings, [form for _, _, form in races], start, results))
                 for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=240) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()

    assert len({pid for pid, _ in reports}) == PROCESSES
    assert all(len(outcomes) == len(races) for _, outcomes in reports), reports
    (grace_client, grace_sid, _), (_, no_grace_sid, _) = races
    outcomes = [[(status, json.loads(body)) for status, body in per_process]
                for _, per_process in reports]
    _assert_one_rotation_shared(oauth, grace_client, grace_sid, [o[0] for o in outcomes])
    _assert_one_winner_then_reuse(oauth, no_grace_sid, [o[1] for o in outcomes])


# -- serialization failures (PostgreSQL REPEATABLE READ / SERIALIZABLE) ----------------------


@contextmanager
def _isolation(app, level: str) -> Iterator[None]:
    """Every transaction of the app's engine runs at ``level`` (PostgreSQL), the
    single-statement ones of the autocommit hot path included: as an operator gets it with
    ``default_transaction_isolation``."""
    engine = _engine(app)

    def on_checkout(dbapi_connection, _record, _proxy):
        with dbapi_connection.cursor() as cursor:
            cursor.execute(f"SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {level}")
        dbapi_connection.commit()

    def on_checkin(dbapi_connection, _record):
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL "
                           "READ COMMITTED")
        dbapi_connection.commit()

    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)
    try:
        yield
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)


@contextmanager
def _competitor(app, run: Callable[[], Any]) -> Iterator[list[Any]]:
    """While the next rotation is between its SELECT and its UPDATE, ``run`` a whole
    competing request to completion on another connection (another thread)."""
    tokens = app.extensions["authserver"].tokens
    issue = tokens.for_grant
    outcome: list[Any] = []

    def interleaved(grant):
        tokens.for_grant = issue  # only the first request waits; the competitor does not
        worker = threading.Thread(target=lambda: outcome.append(run()))
        worker.start()
        worker.join(timeout=BARRIER_TIMEOUT)
        return issue(grant)

    tokens.for_grant = interleaved
    try:
        yield outcome
    finally:
        tokens.for_grant = issue


@pytest.mark.parametrize("level", ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"])
@pytest.mark.parametrize("grace", [10, 0], ids=["grace", "no-grace"])
def test_a_rotation_that_loses_its_claim_is_never_a_500(oauth, backend, level, grace):
    """Deterministic lost race: another request rotates the token after this one read it.

    The lookup reads in autocommit mode and the claim is one statement with a snapshot of
    its own, so at every isolation level the compare-and-set matches no row: this request
    is a retry (the identical response inside grace) or reuse (no grace: the family is
    revoked). One child, never a 500. (A serialization failure, where one happens under
    true concurrency, is ``invalid_grant``: the tests below.)
    """
    if backend != "postgresql":
        pytest.skip("SQLite takes the write lock at BEGIN IMMEDIATE: no lost claims")
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=grace)
    pair = oauth.login_pair(app_client)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]

    def competitor():
        response = oauth.refresh(app_client, pair["refresh_token"],
                                 client=oauth.app.test_client())
        return response.status_code, response.get_data()

    with _isolation(oauth.app, level), _competitor(oauth.app, competitor) as competing:
        late = oauth.refresh(app_client, pair["refresh_token"])

    (status, winner), = competing
    assert status == 200, winner
    assert len(_children(oauth.app, sid)) == 1
    if grace:
        assert late.status_code == 200 and late.get_data() == winner
    else:
        assert_oauth_error(late, "invalid_grant")
        assert _family(oauth.app, sid).revoke_reason == "reuse_detected"


def test_racing_under_repeatable_read_is_one_rotation_and_no_500(oauth, backend):
    if backend != "postgresql":
        pytest.skip("isolation levels are PostgreSQL's")
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=30)
    pair = oauth.login_pair(app_client)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]

    with _isolation(oauth.app, "REPEATABLE READ"):
        results = _race(oauth, app_client, pair["refresh_token"])

    bodies = {json.dumps(body, sort_keys=True) for status, body in results if status == 200}
    assert len(bodies) == 1, results
    assert all(status == 200 or (status == 400 and body["error"] == "invalid_grant")
               for status, body in results), results
    assert len(_children(oauth.app, sid)) == 1


@pytest.mark.parametrize("failure", [psycopg.errors.SerializationFailure,
                                     psycopg.errors.DeadlockDetected])
def test_a_serialization_failure_anywhere_in_the_rotation_is_invalid_grant(
        oauth, monkeypatch, failure):
    """The mapping itself, on both backends: SQLSTATE 40001 / 40P01 -> invalid_grant."""
    oauth.create_user()
    app_client = oauth.first_party_app()
    pair = oauth.login_pair(app_client)

    def conflict(*_args, **_kwargs):
        raise OperationalError("UPDATE refresh_tokens ...", {}, failure("concurrent update"))

    with monkeypatch.context() as patch:
        patch.setattr(refresh_families, "rotate", conflict)
        body = assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]),
                                  "invalid_grant")
    assert body["error_description"] == "the refresh token was used concurrently"
    assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 200


def test_sweepers_of_several_processes_never_wait_on_each_other(oauth, app, clock):
    """Expired sealed responses are cleared in batches that skip rows another sweeper (or a
    rotation) holds: two sweepers at once clear everything, without a deadlock."""
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=5)
    for _ in range(6):
        pair = oauth.login_pair(app_client)
        oauth.refresh(app_client, pair["refresh_token"])
    clock.advance(30)
    engine = _engine(app)
    with ThreadPoolExecutor(2) as pool:
        cleared = list(pool.map(
            lambda _: retry_sweeper.sweep_retry_responses(engine, clock(), batch=1),
            range(2)))
    assert sum(cleared) == 6
    with app.app_context():
        assert db.session.scalar(select(RefreshToken.id).where(
            RefreshToken.retry_response.is_not(None))) is None


def test_a_failed_sweep_is_logged_and_retried_later(oauth, app, monkeypatch, caplog, clock):
    def deadlock(*_args, **_kwargs):
        raise OperationalError("UPDATE refresh_tokens ...", {},
                               psycopg.errors.DeadlockDetected("deadlock detected"))

    monkeypatch.setattr(retry_sweeper, "sweep_retry_responses", deadlock)
    sweeper = retry_sweeper.RetrySweeper()
    assert sweeper.sweep(_engine(app), clock()) == 0
    assert "sweeping expired retry responses failed" in caplog.text


def test_a_refresh_costs_at_most_three_statements(oauth, app, backend, tmp_path):
    """docs/design.md, "Performance budget", counted by the database driver itself.
    SQLite: the lookup, then the compare-and-set UPDATE and the INSERT inside
    BEGIN IMMEDIATE ... COMMIT.
    PostgreSQL: two round trips in all (libpq's protocol trace): the lookup and one
    statement that claims and inserts, both in autocommit mode (no BEGIN, no COMMIT)."""
    oauth.create_user()
    app_client = oauth.first_party_app()
    app.extensions["authserver"].clients.ttl = 60  # production path: the client is cached
    token = oauth.login_pair(app_client)["refresh_token"]
    engine = _engine(app)
    engine.dispose()  # every connection from here on is traced
    statements: list[str] = []
    trace_path = tmp_path / "libpq-trace.txt"
    with open(trace_path, "w") as trace:

        def traced(dbapi_connection, _record):
            if backend == "sqlite":
                dbapi_connection.set_trace_callback(statements.append)
            else:
                dbapi_connection.pgconn.trace(trace.fileno())

        event.listen(engine, "connect", traced)
        try:
            token = oauth.refresh(app_client, token).get_json()["refresh_token"]  # warm
            trace.flush()
            start, statements[:] = trace_path.stat().st_size, []
            assert oauth.refresh(app_client, token).status_code == 200
            trace.flush()
        finally:
            event.remove(engine, "connect", traced)
            engine.dispose()
    if backend == "sqlite":
        work = [s for s in statements if not s.upper().startswith(("PRAGMA", "BEGIN",
                                                                   "COMMIT", "ROLLBACK"))]
        assert len(work) == 3, statements
        assert [s.split()[0].upper() for s in statements] == [
            "SELECT", "BEGIN", "UPDATE", "INSERT", "COMMIT"], statements
    else:
        with open(trace_path) as lines:
            lines.seek(start)
            sent = [line for line in lines if "\tF\t" in line]
        round_trips = [line for line in sent if "\tSync" in line or "\tQuery\t" in line]
        assert len(round_trips) == 2, sent
        assert not any("BEGIN" in line or "COMMIT" in line for line in sent), sent
