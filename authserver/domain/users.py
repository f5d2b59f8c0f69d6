"""Users: creation, password sign-in and deactivation."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from ..storage import engine as storage_engine
from ..storage.models import User
from . import attempt_limits, audit, passwords, refresh_families, sessions
from . import credentials as creds
from .binding import DeviceContext
from .clock import Clock, utcnow
from .errors import NotFound, ValidationError

if TYPE_CHECKING:
    from .clients import ClientRecord

_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,149}$")
# An address is only shown and put in the ``email`` claim, never sent to: one ``@`` between
# a local part and a domain, no spaces or control characters, the column's 320 characters.
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.][^@\s]{0,254}$")
MAX_NAME = 255


def clean_email(email: str | None) -> str | None:
    """The e-mail address to store (None when blank); ValidationError when malformed."""
    email = (email or "").strip()
    if not email:
        return None
    if len(email) > 320 or not email.isprintable() or not _EMAIL.match(email) \
            or email.endswith("."):
        raise ValidationError("email must be an address like name@example.com", "email")
    return email


def clean_name(name: str | None) -> str | None:
    """The display name to store (None when blank); ValidationError when unusable."""
    name = (name or "").strip()
    if not name:
        return None
    if len(name) > MAX_NAME or not name.isprintable():
        raise ValidationError(f"name must be at most {MAX_NAME} printable characters", "name")
    return name


def create_user(
    session: Session,
    username: str,
    password: str,
    *,
    email: str | None = None,
    name: str | None = None,
    admin: bool = False,
) -> User:
    """Add a user with an argon2id password hash (an admin when ``admin``, audited too).
    Commits."""
    if not _USERNAME.match(username):
        raise ValidationError(
            "username must be 1-150 characters: letters, digits and . _ @ + -", "username"
        )
    email, name = clean_email(email), clean_name(name)
    problem = passwords.password_problem(password)
    if problem:
        raise ValidationError(problem, "password")
    password_hash = passwords.hash_password(password)  # before the transaction begins
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise ValidationError(f"user {username!r} already exists", "username")
    user = User(
        subject=creds.new_subject(),
        username=username,
        password_hash=password_hash,
        email=email,
        name=name,
        active=True,
        created_at=utcnow(),
    )
    session.add(user)
    session.flush()
    audit.record(session, audit.USER_CREATED, user_id=user.id)
    if admin:
        _set_admin(session, user, True)
    session.commit()
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


@dataclass(frozen=True)
class _Account:
    """What checking a password needs of a user row."""

    id: int
    password_hash: str
    active: bool


def _find_account(session: Session, username: str) -> _Account | None:
    """The account, read on its own connection in autocommit mode: no transaction, so on
    SQLite no write lock (an ORM read through ``session`` would begin one)."""
    users = User.__table__
    engine = cast(Engine, session.get_bind())  # the app binds its sessions to an Engine
    with storage_engine.autocommit(engine.connect()) as connection:
        row = connection.execute(
            select(users.c.id, users.c.password_hash, users.c.active)
            .where(users.c.username == username)
        ).one_or_none()
    return _Account(row.id, row.password_hash, bool(row.active)) if row is not None else None


def locked_user(session: Session, user_id: int) -> User | None:
    """The user row, read afresh and locked for an update (PostgreSQL; on SQLite the
    transaction this begins is exclusive)."""
    return session.scalar(select(User).where(User.id == user_id)
                          .with_for_update(key_share=True)
                          .execution_options(populate_existing=True))


def check_sign_in(session: Session, username: str, password: str,
                  guard: attempt_limits.SignInGuard | None = None) -> SignInAttempt:
    """Check a sign-in (constant work whether or not the user exists), holding no
    transaction, and so no lock, while argon2 runs.

    1. The account is read in autocommit mode (:func:`_find_account`).
    2. Its password is verified with no transaction open (``passwords`` bounds how many
       run at once; this raises ``passwords.Busy`` when the process admits no more). A
       hash made with other parameters is rehashed then too.
    3. Only on success is ``session`` used: the user row is read again, locked on
       PostgreSQL, as the first statement of the transaction that the caller's writes
       (the audit event, the sign-in) go into, and must still be active with the hash
       that was verified: a deactivation or password change in between wins. A new hash
       is stored in that transaction.

    Joins the caller's transaction; only called from the domain (``password_grant``,
    ``login_sessions.sign_in``), which records the outcome and commits. On failure before
    step 3 the session has not been touched: the audit event is the whole transaction.

    ``guard`` (the brute-force limits, docs/design.md "Operations") is asked before
    anything is looked up or verified, and raises ``attempt_limits.Limited`` (or
    ``LimitsUnavailable``) having checked nothing; it is told the outcome afterwards.
    """
    if guard is None:
        return _check_password(session, username, password)
    guard.before(username)
    try:
        attempt = _check_password(session, username, password)
    except passwords.Busy:
        guard.after(username, None)  # not checked: not counted
        raise
    guard.after(username, attempt.user is not None)
    return attempt


def _check_password(session: Session, username: str, password: str) -> SignInAttempt:
    """``check_sign_in`` without the limits."""
    # Only a well-formed name is looked up (PostgreSQL rejects NUL bytes in a query: a 500).
    well_formed = bool(username) and _USERNAME.fullmatch(username) is not None
    account = _find_account(session, username) if well_formed else None
    ok = passwords.verify_password(account.password_hash if account else None, password)
    if account is None:
        return SignInAttempt(None, None, "unknown_user")
    if not ok:
        return SignInAttempt(None, account.id, "wrong_password")
    if not account.active:
        return SignInAttempt(None, account.id, "deactivated")
    new_hash = passwords.hash_password(password) \
        if passwords.needs_rehash(account.password_hash) else None

    # Locked (PostgreSQL): a password change or deactivation committing meanwhile waits
    # until this sign-in has committed, and then signs it out too. The lock is the one
    # refresh_families takes on a sign-in from a known device (FOR SHARE here would
    # deadlock two sign-ins of one user there).
    user = locked_user(session, account.id)
    if user is None:
        return SignInAttempt(None, None, "unknown_user")
    if user.password_hash != account.password_hash:
        return SignInAttempt(None, user.id, "wrong_password")
    if not user.active:
        return SignInAttempt(None, user.id, "deactivated")
    if new_hash is not None:
        user.password_hash = new_hash
    return SignInAttempt(user, user.id, None)


def record_refusal(session: Session, limited: attempt_limits.Limited, username: str,
                   **detail: Any) -> None:
    """A sign-in refused by a brute-force limit (``attempt_limits.record_refusal``): the
    audit row of an account's delay names the user when the name is an account's (and
    never the name typed). Commits (when it audits)."""
    account = None
    if limited.first and limited.scope == attempt_limits.ACCOUNT \
            and _USERNAME.fullmatch(username):
        account = _find_account(session, username)
    attempt_limits.record_refusal(session, limited, user_id=account.id if account else None,
                                  **detail)


def password_grant(
    session: Session,
    username: str,
    password: str,
    *,
    client: ClientRecord,
    scope: list[str],
    context: DeviceContext,
    issue: refresh_families.IssueAccessToken,
    with_refresh_token: bool,
    bind_dpop: bool,
    clock: Clock = utcnow,
    guard: attempt_limits.SignInGuard | None = None,
) -> dict[str, Any] | None:
    """An app signs its user in with a password (RFC 6749 §4.3): the token response body of
    a new family, or None when the sign-in failed (audited). One transaction; commits.
    Raises ``passwords.Busy`` having written nothing, ``attempt_limits.Limited`` (recorded:
    ``record_refusal``) or ``LimitsUnavailable`` having checked nothing."""
    try:
        attempt = check_sign_in(session, username, password, guard)
    except attempt_limits.Limited as limited:
        record_refusal(session, limited, username, endpoint="password_grant",
                       client_id=client.client_id, ip=context.ip)
        raise
    if attempt.user is None:
        audit.record(session, audit.SIGN_IN_FAILED, user_id=attempt.account_id,
                     client_id=client.client_id, grant_type="password",
                     cause=attempt.failure, device=context.describe())
        session.commit()
        return None
    audit.record(session, audit.SIGN_IN_SUCCEEDED, user_id=attempt.user.id,
                 client_id=client.client_id, grant_type="password",
                 device=context.describe())
    return refresh_families.start_family(  # commits
        session, client=client, user=attempt.user, scope=scope, grant_type="password",
        issue=issue, with_refresh_token=with_refresh_token, context=context,
        bind_dpop=bind_dpop, clock=clock)


def deactivate_user(session: Session, username: str, *,
                    by: Mapping[str, Any] | None = None) -> int:
    """Deactivate a user: every device is signed out (every family revoked, every browser
    sign-in ended) and no new sign-in, refresh or active introspection is possible.
    Returns how many devices were signed out. Commits."""
    user = find_user(session, username)
    now = utcnow()
    user.active = False
    user.deactivated_at = user.deactivated_at or now
    revoked = sessions.end_all_devices(session, user.id, reason="user_deactivated", now=now,
                                       by=by)
    audit.record(session, audit.USER_DEACTIVATED, user_id=user.id, now=now,
                 devices_signed_out=revoked, **audit.by_detail(by))
    session.commit()
    return revoked


def _new_hash(new_password: str) -> str:
    problem = passwords.password_problem(new_password)
    if problem:
        raise ValidationError(problem, "new_password")
    return passwords.hash_password(new_password)


def change_password(session: Session, user: User, current: str, new_password: str, *,
                    login_session_id: str | None,
                    by: Mapping[str, Any] | None = None) -> int:
    """The user changes their password: every other device is signed out.

    The browser sign-in the change was made from stays, with the apps signed in through
    it; every other family and browser sign-in ends. Returns the number of devices signed
    out. Commits.

    argon2 (verifying the current password, hashing the new one) runs with no transaction
    open: the one ``session`` has open, which read the signed-in user, is committed first
    (on SQLite it holds the write lock). The writes then read the user row again, locked,
    and refuse if the password changed meanwhile.
    """
    user_id, stored = user.id, user.password_hash
    session.commit()  # ends the read (nothing to do when no transaction is open)
    if not passwords.verify_password(stored, current, sign_in=False):
        raise ValidationError("the current password is not correct", "current_password")
    if current == new_password:
        raise ValidationError("the new password must differ from the current one",
                              "new_password")
    new_hash = _new_hash(new_password)
    locked = locked_user(session, user_id)
    if locked is None or locked.password_hash != stored:
        raise ValidationError("the password was changed meanwhile", "current_password")
    locked.password_hash, locked.password_changed_at = new_hash, utcnow()
    revoked = sessions.end_all_devices(session, locked.id, reason="password_changed",
                                       keep_login_session=login_session_id, by=by)
    audit.record(session, audit.PASSWORD_CHANGED, user_id=locked.id, devices_signed_out=revoked,
                 **audit.by_detail(by))
    session.commit()
    return revoked


def reset_password(session: Session, username: str, new_password: str, *,
                   by: Mapping[str, Any] | None = None) -> int:
    """An operator sets a new password: every device is signed out. Commits.

    The new password is hashed before the transaction begins."""
    account = _find_account(session, username)
    if account is None:
        raise NotFound(f"no user {username!r}")
    new_hash = _new_hash(new_password)
    user = locked_user(session, account.id)
    if user is None:
        raise NotFound(f"no user {username!r}")
    user.password_hash, user.password_changed_at = new_hash, utcnow()
    revoked = sessions.end_all_devices(session, user.id, reason="password_reset", by=by)
    audit.record(session, audit.PASSWORD_RESET, user_id=user.id, devices_signed_out=revoked,
                 **audit.by_detail(by))
    session.commit()
    return revoked


def set_admin(session: Session, username: str, admin: bool) -> None:
    """Grant or take away the admin role, audited. Commits."""
    _set_admin(session, find_user(session, username), admin)
    session.commit()


def _set_admin(session: Session, user: User, admin: bool) -> None:
    user.is_admin = admin
    audit.record(session, audit.ADMIN_GRANTED if admin else audit.ADMIN_REVOKED,
                 user_id=user.id)
