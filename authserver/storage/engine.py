"""Engine set-up per backend: SQLite pragmas and write transactions, PostgreSQL pooling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url


def resolve_database_url(url: str) -> str:
    """Make a relative SQLite path absolute (relative to the working directory).

    Flask-SQLAlchemy would otherwise resolve it against the app's instance folder,
    which for an installed package is somewhere under the virtualenv.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    if parsed.database == ":memory:":
        return url
    path = Path(parsed.database).expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return parsed.set(database=str(path)).render_as_string(hide_password=False)


# SQL parameters never reach a log line or an error message: with AUTHSERVER_LOG_LEVEL=DEBUG
# SQLAlchemy logs every statement, and a username lookup may carry a password typed into
# the username field (DESIGN.md: no secret in a log line).
HIDE_PARAMETERS = True


def engine_options(url: str, pool_size: int) -> dict[str, Any]:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        options: dict[str, Any] = {"connect_args": {"check_same_thread": False},
                                   "hide_parameters": HIDE_PARAMETERS}
        if parsed.database and parsed.database != ":memory:":
            # A file database gets a QueuePool (5 + 10 by default): size it like
            # PostgreSQL's, so more threads than that do not queue for a connection.
            options.update(pool_size=pool_size, max_overflow=pool_size)
        return options
    return {"pool_size": pool_size, "max_overflow": pool_size, "pool_pre_ping": True,
            "hide_parameters": HIDE_PARAMETERS}


def install_sqlite_hooks(engine: Engine, busy_timeout_ms: int) -> None:
    """WAL, foreign keys, a busy timeout, and ``BEGIN IMMEDIATE`` for every transaction.

    ``BEGIN IMMEDIATE`` takes SQLite's write lock when the transaction starts, so a
    read-then-write transaction (the refresh rotation) can never fail half-way with
    SQLITE_BUSY_SNAPSHOT; writers queue on the busy timeout instead (DESIGN.md, Rotation 1).
    """
    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
