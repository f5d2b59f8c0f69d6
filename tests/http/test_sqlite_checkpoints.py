"""SQLite's write-ahead log is copied back by the serving processes' checkpointer, not by
the request whose commit crosses a threshold (``storage.engine.WalCheckpointer``)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from authserver.extensions import db
from authserver.storage.engine import WAL_BACKSTOP_PAGES, WalCheckpointer


def _rotate(oauth, app_client, token: str, times: int) -> str:
    for _ in range(times):
        response = oauth.refresh(app_client, token)
        assert response.status_code == 200, response.get_data(True)
        token = response.get_json()["refresh_token"]
    return token


def _wal(app) -> Path:
    with app.app_context():
        return Path(f"{db.engine.url.database}-wal")


@pytest.fixture
def sqlite_only(backend):
    if backend != "sqlite":
        pytest.skip("the write-ahead log is SQLite's")


def test_no_request_checkpoints_and_the_checkpointer_copies_the_whole_log(
        oauth, app, sqlite_only):
    with app.app_context():
        automatic = db.session.connection().exec_driver_sql(
            "PRAGMA wal_autocheckpoint").scalar()
    assert automatic == WAL_BACKSTOP_PAGES  # only a backstop, far above a second's writes
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    token = _rotate(oauth, app_client, oauth.login_pair(app_client)["refresh_token"], 30)
    with app.app_context():
        busy, frames, copied = WalCheckpointer.checkpoint(db.engine)
    assert busy == 0 and frames > 0 and copied == frames
    # All of it copied: the next writer starts the log over instead of appending.
    _rotate(oauth, app_client, token, 1)
    with app.app_context():
        _, frames_after, _ = WalCheckpointer.checkpoint(db.engine)
    assert frames_after < frames


def test_the_background_checkpointer_keeps_the_log_from_growing(oauth, app, sqlite_only):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    token = oauth.login_pair(app_client)["refresh_token"]
    checkpointer = WalCheckpointer(interval=0.05)
    with app.app_context():
        checkpointer.start(db.engine)
        thread = checkpointer.thread
        checkpointer.start(db.engine)  # once per process
    assert thread is not None and thread.is_alive() and checkpointer.thread is thread
    try:
        token = _rotate(oauth, app_client, token, 40)
        time.sleep(0.3)
        with app.app_context():
            _, frames, copied = WalCheckpointer.checkpoint(db.engine)
        assert copied == frames
        assert _wal(app).exists()
    finally:
        checkpointer.stop()
    assert not thread.is_alive() and checkpointer.thread is None


def test_nothing_is_started_on_postgresql(app, backend):
    if backend != "postgresql":
        pytest.skip("the PostgreSQL case")
    before = threading.active_count()
    checkpointer = WalCheckpointer(interval=0.05)
    with app.app_context():
        checkpointer.start(db.engine)
    assert checkpointer.thread is None and threading.active_count() == before
