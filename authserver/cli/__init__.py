"""The ``authserver`` command: a Flask click group over the app factory.

Every failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import os
import sys
import traceback

import click
from flask import Flask
from flask.cli import ScriptInfo

from ..config import ConfigError
from ..crypto.keystore import KeyStoreError
from . import audit, clients, db, keys, serve, users, worker
from . import config as config_cli
from .base import CliError, Group

__all__ = ["CliError", "Group", "cli", "main"]


def _create_app() -> Flask:
    from ..app import create_app
    from ..ops import logs

    app = create_app()
    # A command says what it did itself (and the audit trail records it): only the
    # events a person should look at are log lines here. Serving processes log them all.
    logs.quiet_events()
    return app


@click.group(cls=Group)
@click.version_option(package_name="authserver", prog_name="authserver",
                      message="%(prog)s %(version)s")
def cli() -> None:
    """authserver: OAuth 2.0 authorization server with rotating refresh tokens."""


for command in (db.db_group, users.users_group, audit.audit_group, clients.clients_group,
                keys.keys_group, serve.serve, worker.worker, config_cli.config_group):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """Run the command; any failure is one line on stderr and a non-zero exit status."""
    try:
        result = cli.main(args=argv, prog_name="authserver",
                          obj=ScriptInfo(create_app=_create_app), standalone_mode=False)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"authserver: configuration error: {problem}", err=True)
        sys.exit(2)
    except KeyStoreError as exc:
        click.echo(f"authserver: error: {exc}", err=True)
        sys.exit(1)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        sys.exit(0)
    except click.ClickException as exc:
        # Usage errors too: one line naming the problem, not a usage screen.
        ctx: click.Context | None = getattr(exc, "ctx", None)  # UsageError's, if any
        where = f" ({ctx.command_path})" if ctx else ""
        click.echo(f"authserver: error{where}: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("authserver: aborted", err=True)
        sys.exit(1)
    except Exception as exc:  # a bug or an unreachable database: still one line
        if _unmigrated(exc):
            click.echo("authserver: error: the database is not migrated; run "
                       "'authserver db upgrade'", err=True)
            sys.exit(1)
        if os.environ.get("AUTHSERVER_LOG_LEVEL", "").upper() == "DEBUG":
            traceback.print_exc()
        first_line = (str(exc).splitlines() or [""])[0][:300]
        click.echo(f"authserver: error: {type(exc).__name__}: {first_line} "
                   "(AUTHSERVER_LOG_LEVEL=DEBUG shows the traceback)", err=True)
        sys.exit(1)
    sys.exit(result if isinstance(result, int) else 0)


def _unmigrated(exc: Exception) -> bool:
    """A missing table: SQLite's "no such table", PostgreSQL's undefined_table (42P01)."""
    from sqlalchemy.exc import DBAPIError

    if not isinstance(exc, DBAPIError):
        return False
    return "no such table" in str(exc.orig) or getattr(exc.orig, "sqlstate", None) == "42P01"

