"""User administration: list and search users, one user's whole picture (profile, devices,
consents, recent audit events), and what an administrator changes: the profile,
reactivation, deletion, signing a session or every device out, taking a consent back.
Shared by the ``users`` commands and the admin pages.

Every change is one transaction and is audited with the user it concerns as the row's user
and who asked in the detail's ``by``. Sessions end through :mod:`.sessions` and
:func:`.refresh_families.revoke_family` (each family revocation audited with its cause), as
for a user's own sign-out (docs/design.md, "Operations").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from ..storage.models import AuditEvent, AuthorizationCode, Client, Consent, TokenFamily, User
from . import audit, audit_trail, refresh_families, sessions
from .clock import utcnow
from .errors import NotFound, ValidationError
from .users import clean_email, clean_name, find_user, locked_user

RECENT_EVENTS = 20
MAX_SEARCH = 150

# The causes the family revocations of these changes carry (metrics count by cause).
DELETED, SIGNED_OUT, REVOKED, CONSENT_TAKEN_BACK = (
    "user_deleted", "signed_out_by_admin", "revoked_by_admin", "consent_revoked")


@dataclass(frozen=True)
class UserSummary:
    """One row of the user list."""

    username: str
    subject: str
    email: str | None
    name: str | None
    active: bool
    admin: bool
    created_at: dt.datetime
    deactivated_at: dt.datetime | None
    password_changed_at: dt.datetime | None
    last_sign_in_at: dt.datetime | None  # the newest sign-in the audit trail still holds

    @property
    def state(self) -> str:
        return "active" if self.active else "deactivated"

    def to_dict(self) -> dict[str, Any]:
        def iso(moment: dt.datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {"username": self.username, "sub": self.subject, "email": self.email,
                "name": self.name, "active": self.active, "state": self.state,
                "admin": self.admin, "created_at": self.created_at.isoformat(),
                "deactivated_at": iso(self.deactivated_at),
                "password_changed_at": iso(self.password_changed_at),
                "last_sign_in_at": iso(self.last_sign_in_at)}


@dataclass(frozen=True)
class ConsentView:
    client_id: str
    client_name: str
    scope: str
    created_at: dt.datetime
    updated_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {"client_id": self.client_id, "client_name": self.client_name,
                "scope": self.scope, "created_at": self.created_at.isoformat(),
                "updated_at": self.updated_at.isoformat()}


@dataclass(frozen=True)
class UserDetail:
    """Everything an administrator sees of one user."""

    user: UserSummary
    devices: list[sessions.DeviceSession]
    consents: list[ConsentView]
    events: list[tuple[AuditEvent, str | None]]  # newest first, with the user's name

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.user.to_dict(),
            "sessions": [_device_dict(d) for d in self.devices],
            "consents": [c.to_dict() for c in self.consents],
            "recent_events": [
                {"time": e.created_at.isoformat(), "event": e.event,
                 "client_id": e.client_id, "session": e.family_id, "detail": e.detail}
                for e, _ in self.events],
        }


def _device_dict(device: sessions.DeviceSession) -> dict[str, Any]:
    """A device as the admin's JSON shows it: its id (what ``revoke-session`` takes) and
    each application session (refresh family) in it."""
    return {
        "id": device.id, "type": device.kind, "device": device.label,
        "device_id": device.device_id, "created_at": device.created_at.isoformat(),
        "last_used_at": device.last_used_at.isoformat(), "last_ip": device.last_ip,
        "dpop_bound": device.dpop_bound,
        "applications": [
            {"session_id": a.family_id, "client_id": a.client_id, "client_name": a.client_name,
             "created_at": a.created_at.isoformat(), "last_used_at": a.last_used_at.isoformat(),
             "last_ip": a.last_ip, "dpop_bound": a.dpop_bound}
            for a in device.apps],
    }


# -- reading -----------------------------------------------------------------------------
def _last_sign_ins(session: Session, user_ids: list[int]) -> dict[int, dt.datetime]:
    if not user_ids:
        return {}
    rows = session.execute(
        select(AuditEvent.user_id, func.max(AuditEvent.created_at))
        .where(AuditEvent.event == audit.SIGN_IN_SUCCEEDED, AuditEvent.user_id.in_(user_ids))
        .group_by(AuditEvent.user_id)).all()
    return {int(user_id): moment for user_id, moment in rows if user_id is not None}


def _summary(user: User, last: dt.datetime | None) -> UserSummary:
    return UserSummary(user.username, user.subject, user.email, user.name, bool(user.active),
                       bool(user.is_admin), user.created_at, user.deactivated_at,
                       user.password_changed_at, last)


def list_users(session: Session, search: str | None = None) -> list[UserSummary]:
    """Every user, oldest first; with ``search``, those whose username, e-mail address or
    name contains it (case-insensitive)."""
    query = select(User).order_by(User.id)
    text = "".join(c for c in (search or "") if c.isprintable()).strip()[:MAX_SEARCH]
    if text:
        needle = text.lower()
        query = query.where(or_(
            *(func.lower(column).contains(needle, autoescape=True)
              for column in (User.username, User.email, User.name))))
    rows = session.scalars(query).all()
    last = _last_sign_ins(session, [u.id for u in rows])
    return [_summary(u, last.get(u.id)) for u in rows]


def user_detail(session: Session, username: str, now: dt.datetime | None = None, *,
                browser_lifetime: sessions.BrowserLifetime | None = None) -> UserDetail:
    """The user's profile, signed-in devices (browser sign-ins with the applications under
    them, and app sessions), consents and newest audit events; NotFound if unknown.
    ``browser_lifetime`` (the server's settings) leaves out browser sign-ins that have
    ended by their idle or absolute lifetime, as the user's own devices page does."""
    user = find_user(session, username)
    devices = sessions.list_for_user(session, user.id, now or utcnow(),
                                     browser_lifetime=browser_lifetime)
    consents = [
        ConsentView(c.client_id, name, c.scope, c.created_at, c.updated_at)
        for c, name in session.execute(
            select(Consent, Client.name).join(Client, Client.client_id == Consent.client_id)
            .where(Consent.user_id == user.id).order_by(Consent.created_at)).all()]
    page = audit_trail.search(session, username=user.username, limit=RECENT_EVENTS)
    summary = _summary(user, _last_sign_ins(session, [user.id]).get(user.id))
    return UserDetail(summary, devices, consents, page.events)


# -- changes -----------------------------------------------------------------------------
def _locked(session: Session, username: str) -> User:
    """The user row, locked for the change (PostgreSQL): a sign-in racing a deletion or
    a reactivation waits for it (``users.check_sign_in`` takes the same lock)."""
    user = locked_user(session, find_user(session, username).id)
    if user is None:
        raise NotFound(f"no user {username!r}")
    return user


def update_user(session: Session, username: str, *, email: str | None = None,
                name: str | None = None, by: Mapping[str, Any] | None = None) -> list[str]:
    """Change the e-mail address and/or display name (None: unchanged; "": removed),
    validated as at creation; return the fields that changed (audited). Commits."""
    if email is None and name is None:
        raise ValidationError("nothing to change: give an e-mail address or a name", "form")
    wanted: dict[str, str | None] = {}
    if email is not None:
        wanted["email"] = clean_email(email)
    if name is not None:
        wanted["name"] = clean_name(name)
    user = _locked(session, username)
    changed = [field for field, value in wanted.items() if getattr(user, field) != value]
    for field in changed:
        setattr(user, field, wanted[field])
    if changed:
        audit.record(session, audit.USER_UPDATED, user_id=user.id, fields=changed,
                     **audit.by_detail(by))
    session.commit()
    return changed


def reactivate_user(session: Session, username: str, *,
                    by: Mapping[str, Any] | None = None) -> bool:
    """Let a deactivated user sign in again; False when they were active already (nothing
    changes). Sessions revoked at the deactivation stay revoked. Commits."""
    user = _locked(session, username)
    if user.active:
        session.commit()
        return False
    user.active, user.deactivated_at = True, None
    audit.record(session, audit.USER_REACTIVATED, user_id=user.id, **audit.by_detail(by))
    session.commit()
    return True


@dataclass(frozen=True)
class Deletion:
    devices_signed_out: int
    consents: int
    codes: int


def delete_user(session: Session, username: str, *,
                by: Mapping[str, Any] | None = None) -> Deletion:
    """Delete a user and everything that lets anyone act as them. Commits.

    Every family is revoked through ``refresh_families.revoke_family`` (audited with the
    cause ``user_deleted``, its status-list entry set INVALID, its back-channel logout
    queued) and every browser sign-in ended, then the row is deleted: the foreign keys'
    cascade removes the families, sign-ins, consents and unused codes with it.

    The audit trail stays. Its rows' user column is emptied by the foreign key (SQLite may
    hand a deleted row's id to the next user, so an old row must never point at a new
    one); the ``user_deleted`` row keeps the former id, username and ``sub`` in its detail,
    and the earlier rows keep their client and session ids."""
    user = _locked(session, username)
    now = utcnow()
    devices = sessions.end_all_devices(session, user.id, reason=DELETED, now=now, by=by)
    consents = session.scalar(select(func.count()).select_from(Consent)
                              .where(Consent.user_id == user.id)) or 0
    codes = session.scalar(select(func.count()).select_from(AuthorizationCode)
                           .where(AuthorizationCode.user_id == user.id,
                                  AuthorizationCode.used_at.is_(None))) or 0
    audit.record(session, audit.USER_DELETED, user_id=user.id, now=now,
                 deleted_user={"id": user.id, "username": user.username, "sub": user.subject},
                 devices_signed_out=devices, consents_removed=consents,
                 codes_discarded=codes, **audit.by_detail(by))
    session.flush()
    session.execute(delete(User).where(User.id == user.id))
    session.expunge(user)
    session.commit()
    return Deletion(devices, consents, codes)


def revoke_session(session: Session, username: str, session_id: str, *,
                   by: Mapping[str, Any] | None = None) -> str:
    """End one session of the user: a refresh family by its id (what ``users show`` lists
    as an application's ``session_id``), or a browser device by its ``web-...`` id (the
    browser sign-in and every application signed in through it). Returns "family" or
    "browser"; NotFound when the user has no such live session. Commits."""
    user = find_user(session, username)
    session_id = session_id[:64]
    if session_id.startswith(sessions.BROWSER_ID_PREFIX):
        device = sessions.find_device(sessions.list_for_user(session, user.id), session_id)
        if device is None or device.kind != sessions.BROWSER:
            raise NotFound(f"user {username!r} has no live session {session_id!r}")
        sessions.end_device(session, user.id, device, reason=REVOKED, by=by)
        session.commit()
        return "browser"
    family = session.scalar(select(TokenFamily.id).where(
        TokenFamily.id == session_id, TokenFamily.user_id == user.id,
        TokenFamily.revoked_at.is_(None)))
    if family is None:
        raise NotFound(f"user {username!r} has no live session {session_id!r}")
    refresh_families.revoke_family(session, family, reason=REVOKED, by=by)
    session.commit()
    return "family"


def sign_out_everywhere(session: Session, username: str, *,
                        by: Mapping[str, Any] | None = None) -> int:
    """Sign every device of the user out (``sessions.end_all_devices``: every family
    revoked, every browser sign-in ended); return how many devices. The user may sign in
    again. Commits."""
    user = find_user(session, username)
    count = sessions.end_all_devices(session, user.id, reason=SIGNED_OUT, by=by)
    audit.record(session, audit.USER_SIGNED_OUT, user_id=user.id, devices_signed_out=count,
                 **audit.by_detail(by))
    session.commit()
    return count


def revoke_consent(session: Session, username: str, client_id: str, *,
                   by: Mapping[str, Any] | None = None) -> int:
    """Take back what the user granted a client, and end what the grant allowed: every
    live session (family) of the user at that client is revoked and its unused codes are
    discarded; the next authorization asks for consent again. Returns how many sessions
    ended; NotFound for an unknown client or no consent. Commits."""
    user = find_user(session, username)
    client_id = client_id[:64]
    if session.scalar(select(Client.id).where(Client.client_id == client_id)) is None:
        raise NotFound(f"no client {client_id!r}")
    consent = session.scalar(select(Consent).where(Consent.user_id == user.id,
                                                   Consent.client_id == client_id))
    if consent is None:
        raise NotFound(f"user {username!r} has no consent for client {client_id!r}")
    now = utcnow()
    family_ids = session.scalars(select(TokenFamily.id).where(
        TokenFamily.user_id == user.id, TokenFamily.client_id == client_id,
        TokenFamily.revoked_at.is_(None))).all()
    ended = sum(refresh_families.revoke_family(session, family_id, reason=CONSENT_TAKEN_BACK,
                                               now=now, by=by)
                for family_id in family_ids)
    session.execute(delete(AuthorizationCode).where(
        AuthorizationCode.user_id == user.id, AuthorizationCode.client_id == client_id,
        AuthorizationCode.used_at.is_(None)))
    scope = consent.scope
    session.delete(consent)
    audit.record(session, audit.CONSENT_REVOKED, user_id=user.id, client_id=client_id, now=now,
                 scope=scope, sessions_revoked=ended, **audit.by_detail(by))
    session.commit()
    return ended
