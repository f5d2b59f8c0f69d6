"""Real concurrency: many requests present the same refresh token at the same moment.

Threads each use their own test client, app context, session and database connection,
so on PostgreSQL the race is between separate connections and on SQLite between
separate connections to one file, exactly as under a multi-threaded server.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, select

from authserver.extensions import db
from authserver.storage.models import RefreshToken, TokenFamily

THREADS = 20


@pytest.fixture
def settings_overrides():
    return {"db_pool_size": THREADS + 2}


def _race(oauth, app_client, token):
    barrier = threading.Barrier(THREADS)

    def one(_):
        client = oauth.app.test_client()
        barrier.wait()
        response = oauth.refresh(app_client, token, client=client)
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(THREADS) as pool:
        return list(pool.map(one, range(THREADS)))


def _children(app, parent_token_family):
    with app.app_context():
        return db.session.scalars(
            select(RefreshToken).where(RefreshToken.family_id == parent_token_family,
                                       RefreshToken.parent_id.is_not(None))
        ).all()


def test_racing_retries_inside_grace_all_get_the_one_rotation(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=30)
    pair = oauth.login_pair(app_client)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]

    results = _race(oauth, app_client, pair["refresh_token"])

    assert all(status == 200 for status, _ in results), results
    bodies = {tuple(sorted(body.items())) for _, body in results}
    assert len(bodies) == 1, "every racer must get the identical pair"
    children = _children(oauth.app, sid)
    assert len(children) == 1 and children[0].revoked_at is None
    with oauth.app.app_context():
        assert db.session.get(TokenFamily, sid).revoked_at is None
    # The single child is live and rotates.
    new_token = results[0][1]["refresh_token"]
    assert oauth.refresh(app_client, new_token).status_code == 200


def test_racing_requests_without_grace_rotate_exactly_once(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=0)
    pair = oauth.login_pair(app_client)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]

    results = _race(oauth, app_client, pair["refresh_token"])

    winners = [body for status, body in results if status == 200]
    losers = [body for status, body in results if status != 200]
    assert len(winners) == 1, results
    assert all(status == 400 and body["error"] == "invalid_grant" for status, body in results
               if status != 200)
    assert len(losers) == THREADS - 1
    # Exactly one child was ever created. With no grace window the other presentations are
    # reuse (DESIGN.md, Rotation 3), so the family, and with it that child, is revoked.
    children = _children(oauth.app, sid)
    assert len(children) == 1
    with oauth.app.app_context():
        assert db.session.get(TokenFamily, sid).revoke_reason == "reuse_detected"


def test_a_refresh_costs_at_most_three_statements(oauth, app):
    """DESIGN.md budget: one SELECT, the compare-and-set UPDATE, one INSERT."""
    oauth.create_user()
    app_client = oauth.first_party_app()
    app.extensions["authserver"].clients.ttl = 60  # production path: the client is cached
    token = oauth.login_pair(app_client)["refresh_token"]
    token = oauth.refresh(app_client, token).get_json()["refresh_token"]
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")):
            statements.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        assert oauth.refresh(app_client, token).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) <= 3, statements
