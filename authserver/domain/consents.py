"""Remembered consent: per user and client, the set of scopes granted so far."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import Consent
from . import scopes
from .clock import utcnow


def covers(session: Session, user_id: int, client_id: str, requested: Sequence[str]) -> bool:
    """True when the user already granted every requested scope to this client."""
    granted = session.scalar(
        select(Consent.scope).where(Consent.user_id == user_id, Consent.client_id == client_id)
    )
    return granted is not None and set(requested) <= set(scopes.parse(granted))


def grant(session: Session, user_id: int, client_id: str, requested: Sequence[str]) -> None:
    """Remember the grant, adding to what was granted before (the caller commits)."""
    now = utcnow()
    row = session.scalar(
        select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
    )
    if row is None:
        session.add(Consent(user_id=user_id, client_id=client_id,
                            scope=scopes.render(list(requested)), created_at=now,
                            updated_at=now))
        return
    merged = scopes.parse(row.scope)
    merged += [s for s in requested if s not in merged]
    row.scope = scopes.render(merged)
    row.updated_at = now
