"""A client's live sessions (refresh families) as an admin sees them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from ..storage.models import RefreshToken, TokenFamily, User
from . import refresh_families, user_agents
from .clock import utcnow


@dataclass(frozen=True)
class ClientSession:
    id: str  # the family id (the ``sid`` of its tokens)
    username: str
    label: str  # "Firefox on macOS", "BankApp on iOS"
    grant_type: str
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime | None
    last_ip: str | None
    device_id: str | None
    dpop_bound: bool


def _live(now: dt.datetime) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (TokenFamily.revoked_at.is_(None),
            or_(TokenFamily.expires_at.is_(None), TokenFamily.expires_at > now))


def list_for_client(session: Session, client_id: str, now: dt.datetime | None = None,
                    limit: int = 200) -> list[ClientSession]:
    """The client's live (not revoked, not expired) families, most recently used first."""
    now = now or utcnow()
    last_used = (
        select(RefreshToken.family_id, func.max(RefreshToken.id).label("latest"))
        .group_by(RefreshToken.family_id).subquery()
    )
    rows = session.execute(
        select(TokenFamily, User.username, RefreshToken.created_at, RefreshToken.ip)
        .join(User, User.id == TokenFamily.user_id)
        .outerjoin(last_used, last_used.c.family_id == TokenFamily.id)
        .outerjoin(RefreshToken, RefreshToken.id == last_used.c.latest)
        .where(TokenFamily.client_id == client_id, *_live(now))
        .order_by(TokenFamily.created_at.desc())
        .limit(limit)
    ).all()
    result = [
        ClientSession(
            id=family.id, username=username,
            label=family.ua_family or user_agents.family(family.user_agent),
            grant_type=family.grant_type, created_at=family.created_at,
            last_used_at=last_at or family.created_at, expires_at=family.expires_at,
            last_ip=last_ip or family.ip, device_id=family.device_id,
            dpop_bound=family.dpop_jkt is not None,
        )
        for family, username, last_at, last_ip in rows
    ]
    result.sort(key=lambda s: s.last_used_at, reverse=True)
    return result


def count_live_by_client(session: Session, now: dt.datetime | None = None) -> dict[str, int]:
    """How many live families each client holds (clients with none are absent)."""
    now = now or utcnow()
    rows = session.execute(
        select(TokenFamily.client_id, func.count()).where(*_live(now))
        .group_by(TokenFamily.client_id)
    )
    return {client_id: count for client_id, count in rows}


def belongs_to(session: Session, family_id: str, client_id: str) -> bool:
    """Whether ``family_id`` is a family of ``client_id`` (revoked or not)."""
    if not family_id or len(family_id) > 43 or not family_id.isascii() or not (
            family_id.isprintable()):
        return False
    owner = session.scalar(select(TokenFamily.client_id).where(TokenFamily.id == family_id))
    return owner == client_id


def revoke(session: Session, family_id: str, *, reason: str,
           now: dt.datetime | None = None) -> bool:
    """An admin ends one of a client's sessions (``belongs_to`` says which are its): the
    family and every token in it. True if it was live. Commits."""
    revoked = refresh_families.revoke_family(session, family_id, reason=reason, now=now)
    session.commit()
    return revoked
