"""Shared fixtures: the same suite runs on SQLite and, where reachable, on PostgreSQL.

Each backend's database is migrated once per test session (per xdist worker); tests
then start from empty tables. The databases themselves (where PostgreSQL is, what happens
where it cannot be reached): tests/support/databases.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from authserver.app import create_app
from authserver.crypto.key_admin import KeyAdmin
from authserver.domain import passwords
from authserver.extensions import db
from authserver.storage.base import Base
from tests.support.databases import (
    app_settings,
    create_postgres_database,
    drop_postgres_database,
    migrate,
    require_postgres,
)
from tests.support.oauth import OAuthActions

# The real hasher (argon2id with RFC 9106's parameters), kept for the test that checks them.
PRODUCTION_PASSWORD_HASHER = passwords._hasher


@pytest.fixture(scope="session", autouse=True)
def cheap_argon2() -> Iterator[None]:
    """argon2id with minimal cost in this process: the real parameters spend ~0.3 s per
    sign-in here (hash + verify), which would double the suite's time. Server processes
    the tests start keep the real parameters; ``test_passwords`` checks them."""
    from argon2 import PasswordHasher

    cheap = PasswordHasher(time_cost=1, memory_cost=64, parallelism=1)
    passwords._hasher, passwords._dummy = cheap, None
    yield
    passwords._hasher, passwords._dummy = PRODUCTION_PASSWORD_HASHER, None


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    KeyAdmin(path).ensure()
    return path


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                 keys_dir: Path) -> str:
    """A migrated database of each backend (one per worker and session)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.sqlite3'}"
    else:
        require_postgres()
        url = create_postgres_database()
        request.addfinalizer(lambda: drop_postgres_database(url))
    migrate(url, keys_dir)
    return url


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


def _empty_tables(app: Flask) -> None:
    with app.app_context(), db.engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    """Tests override this fixture (or parametrize it) to change settings."""
    return {}


@pytest.fixture
def app(database_url: str, keys_dir: Path, settings_overrides: dict[str, object]
        ) -> Iterator[Flask]:
    app = create_app(app_settings(database_url, keys_dir, **settings_overrides))
    app.config["TESTING"] = True
    _empty_tables(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def oauth(app: Flask, client: FlaskClient) -> OAuthActions:
    return OAuthActions(app, client)


class FakeClock:
    """A settable clock, swapped into the app's services."""

    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock(app: Flask) -> FakeClock:
    fake = FakeClock()
    app.extensions["authserver"].clock = fake
    return fake
