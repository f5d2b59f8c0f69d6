"""Users: creation, password sign-in and deactivation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import User
from . import audit, passwords, sessions
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


@dataclass(frozen=True)
class SignInAttempt:
    """The outcome of checking a username and password.

    ``user`` is set only on success. ``account_id`` names the existing account the attempt
    was for (also on failure, for the audit trail); a username that matches no account
    is never recorded, since people type passwords into the username field.
    """

    user: User | None
    account_id: int | None
    failure: str | None  # "unknown_user", "wrong_password", "deactivated"


def check_sign_in(session: Session, username: str, password: str) -> SignInAttempt:
    """Check a sign-in (constant work whether or not the user exists)."""
    # Only a well-formed name is looked up (PostgreSQL rejects NUL bytes in a query: a 500).
    well_formed = bool(username) and _USERNAME.fullmatch(username) is not None
    user = session.scalar(select(User).where(User.username == username)) if well_formed \
        else None
    ok = passwords.verify_password(user.password_hash if user else None, password)
    if user is None:
        return SignInAttempt(None, None, "unknown_user")
    if not ok:
        return SignInAttempt(None, user.id, "wrong_password")
    if not user.active:
        return SignInAttempt(None, user.id, "deactivated")
    return SignInAttempt(user, user.id, None)


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this username and password, or None (constant work either way)."""
    return check_sign_in(session, username, password).user


def deactivate_user(session: Session, username: str, *,
                    by: Mapping[str, Any] | None = None) -> int:
    """Deactivate a user: every device is signed out (every family revoked, every browser
    sign-in ended) and no new sign-in, refresh or active introspection is possible.
    Returns how many devices were signed out (the caller commits)."""
    user = find_user(session, username)
    now = utcnow()
    user.active = False
    user.deactivated_at = user.deactivated_at or now
    revoked = sessions.sign_out_all(session, user.id, reason="user_deactivated", now=now, by=by)
    audit.record(session, audit.USER_DEACTIVATED, user_id=user.id, now=now,
                 devices_signed_out=revoked, **({"by": dict(by)} if by else {}))
    return revoked


def _set_password(user: User, new_password: str) -> None:
    problem = passwords.password_problem(new_password)
    if problem:
        raise ValidationError(problem, "new_password")
    user.password_hash = passwords.hash_password(new_password)
    user.password_changed_at = utcnow()


def change_password(session: Session, user: User, current: str, new_password: str, *,
                    login_session_id: str | None,
                    by: Mapping[str, Any] | None = None) -> int:
    """The user changes their password: every other device is signed out.

    The browser sign-in the change was made from stays, with the apps signed in through
    it; every other family and browser sign-in ends (the caller commits). Returns the
    number of devices signed out.
    """
    if not passwords.verify_password(user.password_hash, current):
        raise ValidationError("the current password is not correct", "current_password")
    if current == new_password:
        raise ValidationError("the new password must differ from the current one",
                              "new_password")
    _set_password(user, new_password)
    revoked = sessions.sign_out_all(session, user.id, reason="password_changed",
                                    keep_login_session=login_session_id, by=by)
    audit.record(session, audit.PASSWORD_CHANGED, user_id=user.id, devices_signed_out=revoked,
                 **({"by": dict(by)} if by else {}))
    return revoked


def reset_password(session: Session, username: str, new_password: str, *,
                   by: Mapping[str, Any] | None = None) -> int:
    """An operator sets a new password: every device is signed out (the caller commits)."""
    user = find_user(session, username)
    _set_password(user, new_password)
    revoked = sessions.sign_out_all(session, user.id, reason="password_reset", by=by)
    audit.record(session, audit.PASSWORD_RESET, user_id=user.id, devices_signed_out=revoked,
                 **({"by": dict(by)} if by else {}))
    return revoked


def set_admin(session: Session, username: str, admin: bool) -> None:
    user = find_user(session, username)
    user.is_admin = admin
    audit.record(session, audit.ADMIN_GRANTED if admin else audit.ADMIN_REVOKED,
                 user_id=user.id)
