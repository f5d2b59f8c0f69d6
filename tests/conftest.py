"""Shared fixtures: the same suite runs on SQLite and, where reachable, on PostgreSQL.

Each backend's database is migrated once per test session (per xdist worker); tests
then start from empty tables. PostgreSQL is at ``AUTHSERVER_TEST_POSTGRES_URL`` (default:
CI's ``postgresql://postgres@127.0.0.1:5432/test``); where it cannot be reached, its
half of the suite is skipped with that reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from authserver.app import create_app
from authserver.crypto.key_admin import KeyAdmin
from authserver.domain import passwords
from authserver.extensions import db
from authserver.storage.base import Base
from tests.support.oauth import OAuthActions

POSTGRES_URL = os.environ.get(
    "AUTHSERVER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
SECRET_KEY = "test-secret-key-0123456789abcdef0123456789"


def _postgres_admin_url() -> str:
    return POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1)


def _postgres_reachable() -> str | None:
    """None when PostgreSQL answers, else the reason it does not."""
    try:
        engine = create_engine(_postgres_admin_url(), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as exc:  # any failure means: skip the PostgreSQL half
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(exc).__name__}"
    return None


def require_postgres() -> None:
    """Skip a PostgreSQL test, with the reason, where PostgreSQL cannot be reached; in CI
    (``CI=true``) fail it instead: CI's PostgreSQL half must run, not vanish into skips."""
    reason = _postgres_reachable()
    if reason is None:
        return
    if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
        pytest.fail(f"{reason} (CI=true: the PostgreSQL half of the suite must run)",
                    pytrace=False)
    pytest.skip(reason)


def _worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _admin_execute(*statements: str) -> None:
    admin = create_engine(_postgres_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for statement in statements:
            conn.execute(text(statement))
    admin.dispose()


def create_postgres_database(purpose: str = "test") -> str:
    """A fresh database for this process (unique, so parallel runs never collide)."""
    name = f"authserver_{purpose}_{_worker_id()}_{os.getpid()}"
    _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return _postgres_admin_url().rsplit("/", 1)[0] + "/" + name


def backend_database(request: pytest.FixtureRequest, workdir: Path, purpose: str) -> str:
    """The database of a fixture parametrised with ``"sqlite"`` / ``"postgresql"``: a SQLite
    file in ``workdir``, or a fresh PostgreSQL database dropped when the fixture ends
    (skipped, with the reason, where PostgreSQL cannot be reached)."""
    if request.param == "sqlite":
        return f"sqlite:///{workdir / 'authserver.sqlite3'}"
    require_postgres()
    url = create_postgres_database(purpose)
    request.addfinalizer(lambda: drop_postgres_database(url))
    return url


def live_server_with_alice(request: pytest.FixtureRequest,
                           tmp_path_factory: pytest.TempPathFactory, purpose: str
                           ) -> Iterator[object]:
    """A real ``authserver serve`` on the fixture's backend with the user ``alice``, for a
    module-scoped fixture parametrised with ``"sqlite"`` / ``"postgresql"``."""
    from tests.support import live_server
    from tests.support.oauth import PASSWORD

    workdir = tmp_path_factory.mktemp(purpose)
    srv = live_server.start(workdir, backend_database(request, workdir, purpose))
    try:
        srv.cli("users", "create", "alice", "--password-stdin", input=PASSWORD + "\n")
        yield srv
    finally:
        srv.stop()


def drop_postgres_database(url: str) -> None:
    _admin_execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def migrate(url: str, keys_dir: Path) -> None:
    import flask_migrate

    app = create_app(_overrides(url, keys_dir))
    with app.app_context():
        flask_migrate.upgrade(revision="heads")
        db.engine.dispose()


def _overrides(url: str, keys_dir: Path, **extra: object) -> dict[str, object]:
    return {
        "database_url": url,
        "keys_dir": str(keys_dir),
        "secret_key": SECRET_KEY,
        "issuer": "http://127.0.0.1:8000",
        "client_cache_seconds": 0,
        "log_level": "WARNING",
        # PostgreSQL lengthens each grace window by the lock-wait bound; tests that step
        # just past a window (grace + 1 s) hold for a bound under a second.
        "db_lock_timeout_ms": 500,
        **extra,
    }


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
    app = create_app(_overrides(database_url, keys_dir, **settings_overrides))
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


@pytest.fixture
def browser():
    """A real headless Chromium (tests/support/browser.py). Fails, never skips, where it is missing:
    CI must run the browser tests."""
    from tests.support import browser as chromium

    reason = chromium.missing()
    if reason:
        pytest.fail(reason)
    with chromium.chromium() as driver:
        yield driver
