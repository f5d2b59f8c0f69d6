"""``/healthz`` and ``/readyz`` (docs/design.md, "Health and metrics"): liveness checks
nothing; readiness checks the database, its migrations, the signing keys and Redis, and
answers 503 when one fails, naming it, with no host or password in the answer."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from authserver.app import create_app
from authserver.extensions import db
from tests.support.databases import app_settings, migrate
from tests.support.live_server import free_port


def _ready(app):
    response = app.test_client().get("/readyz")
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"
    return response.status_code, response.get_json()


def _dispose(app):
    with app.app_context():
        db.engine.dispose()


def test_healthz_answers_without_checking_anything(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"
    assert client.head("/healthz").status_code == 200


def test_readyz_reports_every_check_with_its_latency(app):
    status, body = _ready(app)
    assert status == 200, body
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "migrations", "keys"}  # no Redis configured
    for check in body["checks"].values():
        assert check["ok"] is True
        assert isinstance(check["latency_ms"], int | float) and check["latency_ms"] >= 0
        assert isinstance(check["detail"], str)
    assert body["checks"]["keys"]["detail"].startswith("active key ")
    assert body["checks"]["migrations"]["detail"].startswith("at ")
    with app.app_context():  # no ORM transaction left open by the probe
        assert not db.session().in_transaction()


def test_readyz_fails_when_the_database_cannot_be_reached(keys_dir, tmp_path, caplog):
    port = free_port()  # nothing listens there
    url = f"postgresql+psycopg://authserver:s3cr3t-pw@127.0.0.1:{port}/authserver"
    app = create_app(app_settings(url, keys_dir))
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger="authserver.ops.health"):
        first = client.get("/readyz")
        second = client.get("/readyz")
    assert first.status_code == second.status_code == 503
    body = first.get_json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["ok"] is False
    assert body["checks"]["migrations"]["ok"] is False
    assert body["checks"]["keys"]["ok"] is True
    text = first.get_data(as_text=True)
    assert "s3cr3t" not in text and str(port) not in text and "127.0.0.1" not in text
    # The log says why, once (not on every poll).
    failing = [r for r in caplog.records if "database check failing" in r.getMessage()]
    assert len(failing) == 1 and "s3cr3t" not in failing[0].getMessage()
    assert client.get("/healthz").status_code == 200  # liveness does not care

    missing = create_app(app_settings(f"sqlite:///{tmp_path / 'none.sqlite3'}", keys_dir))
    status, body = _ready(missing)  # an empty (or no) database file: not migrated
    assert status == 503 and body["checks"]["migrations"]["ok"] is False


def test_readyz_fails_on_a_database_not_migrated_to_head(keys_dir, tmp_path):
    path = tmp_path / "throwaway.sqlite3"
    url = f"sqlite:///{path}"
    migrate(url, keys_dir)
    app = create_app(app_settings(url, keys_dir))
    with sqlite3.connect(path) as connection:
        (head,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        connection.execute("UPDATE alembic_version SET version_num = '0001'")
    status, body = _ready(app)
    assert status == 503
    assert body["checks"]["database"]["ok"] is True
    migrations = body["checks"]["migrations"]
    assert migrations["ok"] is False
    assert "0001" in migrations["detail"] and head in migrations["detail"]
    assert "authserver db upgrade" in migrations["detail"]

    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE alembic_version")
    status, body = _ready(app)
    assert status == 503 and body["checks"]["database"]["ok"] is True
    assert body["checks"]["migrations"]["ok"] is False
    _dispose(app)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readyz_fails_without_an_active_signing_key(database_url, tmp_path):
    empty = tmp_path / "keys"
    empty.mkdir(mode=0o700)
    app = create_app(app_settings(database_url, Path(empty)))
    status, body = _ready(app)
    assert status == 503
    assert body["checks"]["keys"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    _dispose(app)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_readyz_pings_redis_when_configured(database_url, keys_dir):
    app = create_app(app_settings(database_url, keys_dir,
                                  redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    status, body = _ready(app)
    assert status == 503
    assert body["checks"]["redis"]["ok"] is False
    assert body["checks"]["database"]["ok"] is True
    _dispose(app)
