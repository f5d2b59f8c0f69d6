"""The test databases: a SQLite file, or a fresh PostgreSQL database per worker and purpose.

PostgreSQL is at ``AUTHSERVER_TEST_POSTGRES_URL`` (default: CI's
``postgresql://postgres@127.0.0.1:5432/test``); where it cannot be reached, its half of the
suite is skipped with that reason, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from authserver.app import create_app
from authserver.extensions import db

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


def drop_postgres_database(url: str) -> None:
    _admin_execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


def migrate(url: str, keys_dir: Path) -> None:
    import flask_migrate

    app = create_app(app_settings(url, keys_dir))
    with app.app_context():
        flask_migrate.upgrade(revision="heads")
        db.engine.dispose()


def app_settings(url: str, keys_dir: Path, **extra: object) -> dict[str, object]:
    """The settings of a test app on ``url``: a fixed secret and issuer, no client cache."""
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
