"""Browser sign-ins: the cookie carries only a random id; the row says who and when."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ..storage.models import LoginSession, User
from . import attempt_limits, audit, users
from . import credentials as creds
from .clock import Clock, utcnow
from .sessions import BrowserLifetime, browser_session_public_id


def sign_in(session: Session, username: str, password: str, *, user_agent: str,
            ip: str | None, bind: Callable[[LoginSession], None],
            clock: Clock = utcnow,
            guard: attempt_limits.SignInGuard | None = None) -> users.SignInAttempt:
    """A person signs in at the sign-in page. One transaction; commits.

    The password is checked holding no transaction (``users.check_sign_in``; an empty
    username or password is refused without a look-up). A failure is audited. On success
    the browser sign-in is recorded and ``bind`` ties the browser to it: ``bind`` runs
    before the commit, so whatever it reads is read in this transaction (after the commit
    a read would begin another one; on SQLite: take the write lock again to the end of the
    request). Raises ``passwords.Busy`` having written nothing, ``attempt_limits.Limited``
    (recorded: ``users.record_refusal``) or ``LimitsUnavailable`` having checked nothing.
    """
    try:
        attempt = (users.check_sign_in(session, username, password, guard)
                   if username and password
                   else users.SignInAttempt(None, None, "missing_credentials"))
    except attempt_limits.Limited as limited:
        users.record_refusal(session, limited, username, endpoint="login_page", ip=ip)
        raise
    if attempt.user is None:
        audit.record(session, audit.SIGN_IN_FAILED, user_id=attempt.account_id,
                     cause=attempt.failure, ip=ip, user_agent=user_agent[:200],
                     via="login_page")
    else:
        bind(_start(session, attempt.user, user_agent=user_agent, ip=ip, now=clock()))
    session.commit()
    return attempt


def _start(session: Session, user: User, *, user_agent: str | None, ip: str | None,
           now: dt.datetime | None = None) -> LoginSession:
    """Record a successful sign-in."""
    now = now or utcnow()
    row = LoginSession(id=creds.new_family_id(), user_id=user.id, auth_time=now,
                       created_at=now, user_agent=(user_agent or "")[:512] or None, ip=ip)
    session.add(row)
    audit.record(session, audit.SIGN_IN_SUCCEEDED, user_id=user.id, now=now,
                 login_session=browser_session_public_id(row.id), ip=ip,
                 user_agent=row.user_agent)
    return row


def current(session: Session, login_session_id: str | None, *,
            lifetime: BrowserLifetime | None = None, now: dt.datetime | None = None
            ) -> tuple[LoginSession, User] | None:
    """The live sign-in and its active user, or None: ended, past its ``lifetime`` (idle
    or absolute, from the row's times), or its user deactivated."""
    if not login_session_id or len(login_session_id) > 43:
        return None
    found = session.execute(
        select(LoginSession, User)
        .join(User, User.id == LoginSession.user_id)
        .where(LoginSession.id == login_session_id, LoginSession.ended_at.is_(None),
               User.active.is_(True))
    ).one_or_none()
    if found is None:
        return None
    if lifetime is not None and not lifetime.live(found[0], now or utcnow()):
        return None
    return found[0], found[1]


def touch(session: Session, login_session_id: str, now: dt.datetime) -> None:
    """Record that a browser sign-in was used now: its idle lifetime counts from here.
    Callers do it only when ``BrowserLifetime.due_for_touch`` says so (about once a
    minute), not on every request. One short write. Commits."""
    session.execute(
        update(LoginSession)
        .where(LoginSession.id == login_session_id, LoginSession.ended_at.is_(None))
        .values(last_seen_at=now)
    )
    session.commit()

