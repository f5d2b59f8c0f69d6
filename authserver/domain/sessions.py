"""A user's sessions as they see them: each live refresh family is a signed-in device."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from ..storage.models import Client, RefreshToken, TokenFamily
from . import refresh_families, user_agents
from .clock import utcnow


@dataclass(frozen=True)
class DeviceSession:
    id: str  # the family id (the ``sid`` of its tokens)
    client_id: str
    client_name: str
    label: str  # "Firefox on macOS", "BankApp on iOS"
    created_at: dt.datetime
    last_used_at: dt.datetime
    last_ip: str | None
    device_id: str | None
    login_session_id: str | None
    dpop_bound: bool

    def to_dict(self, current: bool = False) -> dict[str, object]:
        return {
            "id": self.id, "client_id": self.client_id, "client_name": self.client_name,
            "device": self.label, "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat(), "last_ip": self.last_ip,
            "dpop_bound": self.dpop_bound, "current": current,
        }


def _live(now: dt.datetime):  # type: ignore[no-untyped-def]
    return (TokenFamily.revoked_at.is_(None),
            or_(TokenFamily.expires_at.is_(None), TokenFamily.expires_at > now))


def list_for_user(session: Session, user_id: int, now: dt.datetime | None = None
                  ) -> list[DeviceSession]:
    """Every live family of the user, most recently used first."""
    now = now or utcnow()
    families = session.execute(
        select(TokenFamily, Client.name)
        .join(Client, Client.client_id == TokenFamily.client_id)
        .where(TokenFamily.user_id == user_id, *_live(now))
    ).all()
    if not families:
        return []
    latest_ids = (
        select(func.max(RefreshToken.id))
        .where(RefreshToken.family_id.in_([f.id for f, _ in families]))
        .group_by(RefreshToken.family_id)
    )
    latest = {
        row.family_id: row
        for row in session.execute(
            select(RefreshToken.family_id, RefreshToken.created_at, RefreshToken.ip)
            .where(RefreshToken.id.in_(latest_ids))
        )
    }
    result = []
    for family, client_name in families:
        last = latest.get(family.id)
        result.append(DeviceSession(
            id=family.id, client_id=family.client_id, client_name=client_name,
            label=family.ua_family or user_agents.family(family.user_agent),
            created_at=family.created_at,
            last_used_at=last.created_at if last else family.created_at,
            last_ip=(last.ip if last and last.ip else family.ip),
            device_id=family.device_id, login_session_id=family.login_session_id,
            dpop_bound=family.dpop_jkt is not None,
        ))
    result.sort(key=lambda s: s.last_used_at, reverse=True)
    return result


def sign_out(session: Session, user_id: int, family_id: str, *, reason: str) -> bool:
    """Revoke one of the user's own families (the caller commits); False if not theirs."""
    owner = session.scalar(select(TokenFamily.user_id).where(TokenFamily.id == family_id))
    if owner != user_id:
        return False
    return refresh_families.revoke_family(session, family_id, reason=reason)


def sign_out_all(session: Session, user_id: int, *, reason: str,
                 keep_family: str | None = None, keep_login_session: str | None = None) -> int:
    """Revoke every live family of the user but the one(s) kept; return how many."""
    query = select(TokenFamily.id).where(TokenFamily.user_id == user_id,
                                         TokenFamily.revoked_at.is_(None))
    if keep_family is not None:
        query = query.where(TokenFamily.id != keep_family)
    if keep_login_session is not None:
        query = query.where(or_(TokenFamily.login_session_id.is_(None),
                                TokenFamily.login_session_id != keep_login_session))
    count = 0
    for family_id in session.scalars(query).all():
        count += refresh_families.revoke_family(session, family_id, reason=reason)
    return count
