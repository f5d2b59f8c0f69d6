"""``authserver audit``: the security audit trail."""

from __future__ import annotations

import datetime as dt
import json
import re

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from ..domain import audit
from ..domain.clock import utcnow
from ..extensions import db
from ..storage.models import AuditEvent, User
from .base import CliError, Group

_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str) -> dt.datetime:
    """An ISO 8601 time (UTC if no zone) or a span back from now: 30m, 12h, 7d, 2w."""
    match = _RELATIVE.match(value.strip())
    if match:
        try:
            return utcnow() - dt.timedelta(
                seconds=int(match.group(1)) * _UNITS[match.group(2)])
        except (OverflowError, ValueError):  # ValueError: more digits than int() takes
            raise CliError(f"--since: {value[:40]!r} reaches back before year 1") from None
    try:
        moment = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise CliError(f"--since: {value!r} is neither ISO 8601 nor like 30m, 12h, 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@click.group("audit", cls=Group)
def audit_group() -> None:
    """The audit trail of security events."""


@audit_group.command("list")
@click.option("--user", "username", default=None, help="Only this user's events.")
@click.option("--client", "client_id", default=None, help="Only this client's events.")
@click.option("--event", "event_type", default=None,
              help="Only this event type (e.g. family_revoked, sign_in_failed).")
@click.option("--since", default=None, help="ISO 8601 time or a span: 30m, 12h, 7d.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=200, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
@with_appcontext
def list_events(username: str | None, client_id: str | None, event_type: str | None,
                since: str | None, limit: int, as_json: bool) -> None:
    """List events, newest first."""
    query = (select(AuditEvent, User.username)
             .outerjoin(User, User.id == AuditEvent.user_id)
             .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(limit))
    if username is not None:
        user_id = db.session.scalar(select(User.id).where(User.username == username))
        if user_id is None:
            raise CliError(f"no user {username!r}")
        query = query.where(AuditEvent.user_id == user_id)
    if client_id is not None:
        query = query.where(AuditEvent.client_id == client_id)
    if event_type is not None:
        known = event_type in audit.EVENTS or db.session.scalar(
            select(AuditEvent.id).where(AuditEvent.event == event_type).limit(1)) is not None
        if not known:
            raise CliError(f"--event: unknown event type {event_type!r}; one of: "
                           + ", ".join(sorted(audit.EVENTS)))
        query = query.where(AuditEvent.event == event_type)
    if since is not None:
        query = query.where(AuditEvent.created_at >= parse_since(since))
    for event, user in db.session.execute(query):
        record = {"time": event.created_at.isoformat(), "event": event.event, "user": user,
                  "client_id": event.client_id, "session": event.family_id,
                  "detail": event.detail}
        if as_json:
            click.echo(json.dumps(record, sort_keys=True))
        else:
            click.echo(f"{record['time']}  {event.event:<22} user={user or '-'} "
                       f"client={event.client_id or '-'} session={event.family_id or '-'} "
                       f"{json.dumps(event.detail, sort_keys=True)}")
