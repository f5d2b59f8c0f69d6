"""``authserver db``: schema migrations (Alembic through Flask-Migrate)."""

from __future__ import annotations

import click
import flask_migrate
from flask.cli import with_appcontext

from .base import Group


@click.group("db", cls=Group)
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.argument("revision", default="heads")
@with_appcontext
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: every head)."""
    flask_migrate.upgrade(revision=revision)
    click.echo(f"database upgraded to {revision}")


@db_group.command("current")
@with_appcontext
def current() -> None:
    """Show the database's migration revision."""
    flask_migrate.current()


@db_group.command("purge")
@click.option("--retention-days", type=click.IntRange(0, 3650), default=30, show_default=True,
              help="Keep revoked, expired or idle sessions and ended sign-ins this long.")
@click.option("--audit-retention-days", type=click.IntRange(0, 36500), default=0,
              show_default=True, help="Delete audit events older than this; 0 keeps them all.")
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Rows per transaction (smaller: shorter locks).")
@click.option("--dry-run", is_flag=True,
              help="Count what would be deleted, per kind; delete nothing.")
@with_appcontext
def purge(retention_days: int, audit_retention_days: int, batch_size: int,
          dry_run: bool) -> None:
    """Delete expired and long-revoked sessions and tokens, old codes, ended browser
    sign-ins (signed out, idle or past their lifetime), DPoP replay-cache rows and expired
    retry responses, in small batches.

    Safe to run while the server is serving; schedule it daily, e.g. from cron:
    ``17 3 * * * cd /srv/authserver && .venv/bin/authserver db purge``
    """
    from ..domain.housekeeping import count_purgeable
    from ..domain.housekeeping import purge as run_purge
    from ..domain.sessions import BrowserLifetime
    from ..extensions import db
    from ..services import services

    settings = services().settings
    lifetime = BrowserLifetime(settings.browser_session_idle_ttl,
                               settings.browser_session_max_ttl)
    if dry_run:
        counts = count_purgeable(db.session(), retention_days=retention_days,
                                 audit_retention_days=audit_retention_days,
                                 browser_lifetime=lifetime)
        click.echo("would purge " + " ".join(f"{kind}={count}"
                                             for kind, count in counts.items()))
        return
    counts = run_purge(db.session(), retention_days=retention_days, batch_size=batch_size,
                       audit_retention_days=audit_retention_days, browser_lifetime=lifetime)
    click.echo("purged " + " ".join(f"{kind}={count}" for kind, count in counts.items()))
