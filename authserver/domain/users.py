"""Users: creation, password sign-in and deactivation."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import User
from . import audit, login_sessions, passwords, refresh_families, sessions
from . import secrets as creds
from .clock import utcnow
from .errors import NotFound, ValidationError

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}$")


def create_user(
    session: Session,
    username: str,
    password: str,
    *,
    email: str | None = None,
    name: str | None = None,
) -> User:
    """Add a user with an argon2id password hash (the caller commits)."""
    if not _USERNAME.match(username):
        raise ValidationError(
            "username must be 1-150 characters: letters, digits and . _ @ + -", "username"
        )
    problem = passwords.password_problem(password)
    if problem:
        raise ValidationError(problem, "password")
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValidationError(f"user {username!r} already exists", "username")
    user = User(
        subject=creds.new_subject(),
        username=username,
        password_hash=passwords.hash_password(password),
        email=email,
        name=name,
        active=True,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    audit.record(session, audit.USER_CREATED, user_id=user.id)
    return user


def find_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this username and password, or None (constant work either way)."""
    user = session.scalar(select(User).where(User.username == username)) if username else None
    ok = passwords.verify_password(user.password_hash if user else None, password)
    if user is None or not ok or not user.active:
        return None
    return user


def deactivate_user(session: Session, username: str) -> int:
    """Deactivate a user and revoke every family; return how many were revoked."""
    user = find_user(session, username)
    now = utcnow()
    user.active = False
    user.deactivated_at = user.deactivated_at or now
    revoked = refresh_families.revoke_user_families(
        session, user.id, reason="user_deactivated", now=now
    )
    login_sessions.end_all(session, user.id, now=now)
    audit.record(session, audit.USER_DEACTIVATED, user_id=user.id, now=now,
                 families_revoked=revoked)
    return revoked


def _set_password(user: User, new_password: str) -> None:
    problem = passwords.password_problem(new_password)
    if problem:
        raise ValidationError(problem, "new_password")
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = utcnow()


def change_password(session: Session, user: User, current: str, new_password: str, *,
                    login_session_id: str | None) -> int:
    """The user changes their password: every other sign-in ends (the caller commits).

    Families issued through this browser sign-in, and the sign-in itself, stay; every
    other family and browser session is revoked. Returns the number of families revoked.
    """
    if not passwords.verify_password(user.password_hash, current):
        raise ValidationError("the current password is not correct", "current_password")
    if current == new_password:
        raise ValidationError("the new password must differ from the current one",
                              "new_password")
    _set_password(user, new_password)
    revoked = sessions.sign_out_all(session, user.id, reason="password_changed",
                                    keep_login_session=login_session_id)
    login_sessions.end_all(session, user.id, keep=login_session_id)
    audit.record(session, audit.PASSWORD_CHANGED, user_id=user.id, families_revoked=revoked)
    return revoked


def reset_password(session: Session, username: str, new_password: str) -> int:
    """An operator sets a new password: every family and browser session ends."""
    user = find_user(session, username)
    _set_password(user, new_password)
    revoked = refresh_families.revoke_user_families(session, user.id, reason="password_reset")
    login_sessions.end_all(session, user.id)
    audit.record(session, audit.PASSWORD_RESET, user_id=user.id, families_revoked=revoked)
    return revoked


def set_admin(session: Session, username: str, admin: bool) -> None:
    user = find_user(session, username)
    user.is_admin = admin
    audit.record(session, audit.ADMIN_GRANTED if admin else audit.ADMIN_REVOKED,
                 user_id=user.id)
