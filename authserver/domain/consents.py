"""Remembered consent: per user and client, the set of scopes granted so far."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..storage.models import Consent
from . import audit, scopes
from .clock import utcnow

CONSENT_GRANTED = "consent_granted"
CONSENT_DENIED = "consent_denied"


def covers(session: Session, user_id: int, client_id: str, requested: Sequence[str]) -> bool:
    """True when the user already granted every requested scope to this client."""
    granted = session.scalar(
        select(Consent.scope).where(Consent.user_id == user_id, Consent.client_id == client_id)
    )
    return granted is not None and set(requested) <= set(scopes.parse(granted))


def grant(session: Session, user_id: int, client_id: str, requested: Sequence[str]) -> None:
    """Remember the grant, adding to what was granted before. Joins the caller's
    transaction (``codes.issue``); only called from the domain."""
    now = utcnow()
    audit.record(session, CONSENT_GRANTED, user_id=user_id, client_id=client_id, now=now,
                 scope=scopes.render(list(requested)))
    query = select(Consent).where(Consent.user_id == user_id, Consent.client_id == client_id)
    row = session.scalar(query)
    if row is None:
        try:
            # A savepoint: a second tab granting at the same moment must not fail the request.
            with session.begin_nested():
                session.add(Consent(user_id=user_id, client_id=client_id,
                                    scope=scopes.render(list(requested)), created_at=now,
                                    updated_at=now))
            return
        except IntegrityError:
            row = session.scalars(query).one()
    merged = scopes.parse(row.scope)
    merged += [s for s in requested if s not in merged]
    row.scope = scopes.render(merged)
    row.updated_at = now


def record_denial(session: Session, user_id: int, client_id: str,
                  requested: Sequence[str]) -> None:
    """Audit a refusal; nothing granted earlier is taken back. Commits."""
    audit.record(session, CONSENT_DENIED, user_id=user_id, client_id=client_id,
                 scope=scopes.render(list(requested)))
    session.commit()
