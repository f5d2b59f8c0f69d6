"""``authserver serve``: the production server (gunicorn) with start-up checks."""

from __future__ import annotations

import logging
import os
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext
from gunicorn.app.base import BaseApplication

from ..extensions import db
from ..services import services
from . import CliError, cli

# Several threads per worker: a browser opens speculative connections that may send nothing
# for seconds (preconnect). Each one holds a thread until gunicorn gives up waiting on it
# (5 s), so with one thread per worker two idle sockets would stall every request.
DEFAULT_THREADS = 4


def _default_workers() -> int:
    return max(2, min(8, 2 * (os.cpu_count() or 1)))


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    """Gunicorn with our options, building a fresh app in each worker (no shared engines)."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        from ..app import create_app
        from ..domain import passwords

        app = create_app()
        # Before the first request: an unknown user's first sign-in must cost what any
        # other does, or that worker's first answer would tell user names apart.
        passwords.warm_up()
        return app


def _preflight() -> None:
    """Refuse to start on an unmigrated database or without an active key."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    logging.getLogger("alembic").setLevel(logging.WARNING)
    svc = services()
    svc.keys.active()  # raises NoActiveKey / KeyStoreError with a readable message
    migrate_ext = current_app.extensions["migrate"]
    script = ScriptDirectory(migrate_ext.directory)
    with db.engine.connect() as connection:
        current_heads = set(MigrationContext.configure(connection).get_current_heads())
    if current_heads != set(script.get_heads()):
        raise CliError("the database is not migrated; run 'authserver db upgrade'")
    db.engine.dispose()


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=_default_workers, show_default="2 x cores, 2 to 8",
              type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--threads", default=DEFAULT_THREADS, show_default=True,
              type=click.IntRange(1, 64), help="Threads per worker.")
@with_appcontext
def serve(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the authorization server under gunicorn."""
    _preflight()
    click.echo(f"authserver: serving {services().settings.issuer} on http://{host}:{port} "
               f"({workers} workers x {threads} threads)", err=True)
    _Gunicorn(
        {
            "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            # gthread, never sync: a sync worker is pinned by an idle browser socket until
            # its 30 s timeout, and idle keep-alive connections wait in gthread's selector.
            "worker_class": "gthread",
            "proc_name": "authserver",
            "graceful_timeout": 10,
            "timeout": 30,
            "keepalive": 5,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
        }
    ).run()
