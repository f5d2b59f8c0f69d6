"""``GET /healthz`` and ``GET /readyz``: liveness and readiness for load balancers and
Kubernetes probes (docs/design.md, "Health and metrics").

``/healthz`` says the process answers requests and checks nothing else: a liveness probe
that restarts a server whose database is down would only add restarts to an outage.
``/readyz`` says whether this process can serve a token request now: the database answers
(on a connection of its own, with short timeouts, never the request's ORM transaction), its
schema is at the code's migration head, the key store has an active signing key, and Redis
answers ``PING`` when one is configured. Each check reports ``ok`` and ``latency_ms`` (and a
one-line ``detail``); 200 when all pass, 503 otherwise; never cached. A failing check is
logged once when it starts failing and once when it recovers, not on every poll.

A probe costs two indexed one-row reads and, with Redis, one round trip: cheap enough to
poll every second. The details name no host, user or password: a database error is shown by
its class only (the log has the rest).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask, Response, current_app
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from ..extensions import db
from ..http import NO_STORE, json_response
from ..services import Services
from ..storage import engine as storage_engine

log = logging.getLogger(__name__)
bp = Blueprint("health", __name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# Seconds a readiness check may take to connect or to answer (PostgreSQL and Redis).
CHECK_TIMEOUT = 2
_EXTENSION = "authserver.ops"
_lock = threading.Lock()


@bp.get(HEALTH_PATH)
def healthz() -> Response:
    """The process is alive: no dependency is checked."""
    return json_response({"status": "ok"}, 200, NO_STORE)


@bp.get(READY_PATH)
def readyz() -> Response:
    """The process can serve: database, migrations, keys, Redis (when configured)."""
    checks = readiness(current_app._get_current_object())  # type: ignore[attr-defined]
    ready = all(check["ok"] for check in checks.values())
    return json_response({"status": "ok" if ready else "unavailable", "checks": checks},
                         200 if ready else 503, NO_STORE)


def readiness(app: Flask) -> dict[str, dict[str, Any]]:
    """Run every check of ``/readyz``: name -> ``{"ok", "latency_ms", "detail"}``."""
    svc: Services = app.extensions["authserver"]
    state = ops_state(app)
    checks: dict[str, dict[str, Any]] = {}
    database, migrations = _database_checks(app)
    checks["database"] = database
    checks["migrations"] = migrations
    checks["keys"] = _timed(svc.keys.health)
    if svc.settings.redis_url:
        checks["redis"] = _timed(lambda: _ping_redis(app))
    for name, check in checks.items():
        _note_transition(state, name, check)
    return checks


def ops_state(app: Flask) -> dict[str, Any]:
    """This app's objects for health checks and metrics, made on first use."""
    state = app.extensions.get(_EXTENSION)
    if state is None:
        with _lock:
            state = app.extensions.setdefault(_EXTENSION, {"failing": {}})
    return state


def probe_engine(app: Flask) -> Engine:
    """The engine the checks and the metrics' scrape-time reads use.

    SQLite: the app's engine (a local file: nothing to time out on; its connection hooks
    keep the file's mode). PostgreSQL: a small engine of its own with a connect timeout and
    a statement timeout, so that a database host gone silent answers the probe in seconds
    rather than after the operating system's TCP timeout, and a busy request pool never
    delays it.
    """
    state = ops_state(app)
    engine = state.get("engine")
    if engine is not None:
        return engine
    with _lock:
        engine = state.get("engine")
        if engine is None:
            with app.app_context():
                app_engine = db.engine
            if app_engine.dialect.name == "sqlite":
                engine = app_engine
            else:
                timeout_ms = CHECK_TIMEOUT * 1000
                engine = create_engine(
                    app_engine.url, pool_size=1, max_overflow=1, pool_timeout=CHECK_TIMEOUT,
                    pool_recycle=300, hide_parameters=True,
                    connect_args={"connect_timeout": CHECK_TIMEOUT,
                                  "options": f"-c statement_timeout={timeout_ms} "
                                             f"-c lock_timeout={timeout_ms}"})
            state["engine"] = engine
    return engine


@functools.cache
def code_heads(directory: str) -> frozenset[str]:
    """The migration heads the code expects, read once per process."""
    from alembic.script import ScriptDirectory

    return frozenset(ScriptDirectory(directory).get_heads())


@functools.cache
def code_revisions(directory: str) -> frozenset[str]:
    """Every migration revision this code knows, read once per process."""
    from alembic.script import ScriptDirectory

    return frozenset(rev.revision for rev in ScriptDirectory(directory).walk_revisions())


def schema_is_newer(found: set[str], directory: str) -> bool:
    """A revision this code does not know is a later release's: migrations only add
    (expand, then contract), so this code serves it during a rolling upgrade
    (docs/design.md, "Several instances"). Only a known revision short of the heads is
    "not migrated"."""
    return bool(found) and not found <= code_revisions(directory)


def _database_checks(app: Flask) -> tuple[dict[str, Any], dict[str, Any]]:
    """One connection: ``SELECT 1`` (reachable), then the schema's version (migrated)."""
    started = time.perf_counter()
    engine = probe_engine(app)
    missing = _missing_sqlite_file(engine)
    if missing:
        failed = _result(False, started, missing)
        return failed, _result(False, time.perf_counter(), "database unreachable")
    try:
        with storage_engine.autocommit(engine.connect()) as connection:
            connection.execute(text("SELECT 1")).scalar()
            database = _result(True, started, engine.dialect.name)
            started = time.perf_counter()
            try:
                found = {row[0] for row in connection.execute(
                    text("SELECT version_num FROM alembic_version"))}
            except Exception as exc:  # no alembic_version table: never migrated
                log.debug("readiness: alembic_version unreadable: %s", exc)
                return database, _result(False, started, "no migration recorded; run "
                                                         "'authserver db upgrade'")
    except Exception as exc:
        _remember_error(app, "database", exc)
        return (_result(False, started, _error_name(exc)),
                _result(False, time.perf_counter(), "database unreachable"))
    expected = code_heads(current_migrations_dir(app))
    if found == expected:
        return database, _result(True, started, "at " + ", ".join(sorted(found)))
    if schema_is_newer(found, current_migrations_dir(app)):
        return database, _result(True, started, f"at {', '.join(sorted(found))}, a later "
                                                "release's migration: serving")
    return database, _result(
        False, started, f"database at {', '.join(sorted(found)) or 'nothing'}, code expects "
                        f"{', '.join(sorted(expected))}; run 'authserver db upgrade'")


def current_migrations_dir(app: Flask) -> str:
    return str(app.extensions["migrate"].directory)


def _missing_sqlite_file(engine: Engine) -> str:
    """A SQLite file that does not exist is not created by a probe."""
    url = make_url(str(engine.url))
    if url.get_backend_name() != "sqlite" or not url.database \
            or url.database == ":memory:" or url.database.startswith("file:"):
        return ""
    return "" if os.path.exists(url.database) else "database file missing"


def _ping_redis(app: Flask) -> tuple[bool, str]:
    import redis

    state = ops_state(app)
    client = state.get("redis")
    if client is None:
        url = app.extensions["authserver"].settings.redis_url
        client = state["redis"] = redis.Redis.from_url(
            url, socket_timeout=CHECK_TIMEOUT, socket_connect_timeout=CHECK_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        _remember_error(app, "redis", exc)
        return False, type(exc).__name__
    return True, "PONG"


def _timed(check: Callable[[], tuple[bool, str]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        ok, detail = check()
    except Exception as exc:
        log.warning("readiness check failed: %s", exc)
        ok, detail = False, type(exc).__name__
    return _result(ok, started, detail)


def _result(ok: bool, started: float, detail: str) -> dict[str, Any]:
    return {"ok": ok, "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            "detail": detail}


def _error_name(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return type(orig if orig is not None else exc).__name__


def _remember_error(app: Flask, name: str, exc: BaseException) -> None:
    """Keep the full message for the log line that says the check started failing."""
    ops_state(app).setdefault("errors", {})[name] = str(exc).splitlines()[0][:300] \
        if str(exc) else type(exc).__name__


def _note_transition(state: dict[str, Any], name: str, check: dict[str, Any]) -> None:
    failing: dict[str, bool] = state["failing"]
    was_failing = failing.get(name, False)
    if not check["ok"] and not was_failing:
        reason = state.get("errors", {}).pop(name, None) or check["detail"]
        log.warning("readiness: %s check failing: %s", name, reason)
    elif check["ok"] and was_failing:
        log.warning("readiness: %s check passing again", name)
    failing[name] = not check["ok"]
