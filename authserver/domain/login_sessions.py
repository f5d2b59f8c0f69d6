"""Browser sign-ins: the cookie carries only a random id; the row says who and when."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import LoginSession, User
from . import audit
from . import credentials as creds
from .clock import utcnow
from .sessions import browser_session_public_id


def start(session: Session, user: User, *, user_agent: str | None, ip: str | None,
          now: dt.datetime | None = None) -> LoginSession:
    """Record a successful sign-in (the caller commits)."""
    now = now or utcnow()
    row = LoginSession(id=creds.new_family_id(), user_id=user.id, auth_time=now,
                       created_at=now, user_agent=(user_agent or "")[:512] or None, ip=ip)
    session.add(row)
    audit.record(session, audit.SIGN_IN_SUCCEEDED, user_id=user.id, now=now,
                 login_session=browser_session_public_id(row.id), ip=ip,
                 user_agent=row.user_agent)
    return row


def current(session: Session, login_session_id: str | None) -> tuple[LoginSession, User] | None:
    """The live sign-in and its active user, or None."""
    if not login_session_id or len(login_session_id) > 43:
        return None
    found = session.execute(
        select(LoginSession, User)
        .join(User, User.id == LoginSession.user_id)
        .where(LoginSession.id == login_session_id, LoginSession.ended_at.is_(None),
               User.active.is_(True))
    ).one_or_none()
    return (found[0], found[1]) if found else None

