"""Reading the audit trail: newest first, filtered by client, user and event."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import AuditEvent, User
from . import audit


@dataclass(frozen=True)
class Page:
    events: list[tuple[AuditEvent, str | None]]  # each event with its user's name
    older: int | None  # the ``before`` cursor of the next page, if there is one


def known_events() -> list[str]:
    """Every event name the audit module defines (for a filter's choices)."""
    names = {value for key, value in vars(audit).items()
             if key.isupper() and isinstance(value, str)}
    return sorted(names)


def search(session: Session, *, client_id: str | None = None, username: str | None = None,
           event: str | None = None, before: int | None = None, limit: int = 100) -> Page:
    """One page of events matching every filter given, newest first."""
    query = (select(AuditEvent, User.username).outerjoin(User, User.id == AuditEvent.user_id)
             .order_by(AuditEvent.id.desc()).limit(limit + 1))
    if client_id:
        query = query.where(AuditEvent.client_id == client_id)
    if username:
        query = query.where(User.username == username)
    if event:
        query = query.where(AuditEvent.event == event)
    if before is not None:
        query = query.where(AuditEvent.id < before)
    # The outer join: an event with no user has no username (None, whatever Mapped says).
    rows: list[tuple[AuditEvent, str | None]] = [
        (row[0], row[1]) for row in session.execute(query).all()]
    older = rows[limit - 1][0].id if len(rows) > limit else None
    return Page(rows[:limit], older)
