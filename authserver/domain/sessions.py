"""A user's sessions as they see them: the devices signed in to their account.

Two kinds of sign-in exist. A *browser sign-in* (``LoginSession``, made at ``/login``)
and an *app sign-in* (a refresh family, the ``sid`` of its tokens). They are shown the
way a person thinks of them, one entry per device:

- a browser with every application that signed in through it (families whose
  ``login_session_id`` is that browser sign-in) grouped under it;
- every other live family (a mobile app using the password grant, or an app whose browser
  sign-in has already ended) as a device of its own.

Signing a device out ends everything in that entry: the browser sign-in and every family
under it, or the one family. The ``sign_out*`` functions and ``revoke_for_client`` are each
one transaction and commit; the ``end_*`` functions join the caller's transaction and are
only called from the domain.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.orm import Session

from ..storage.models import Client, LoginSession, RefreshToken, TokenFamily
from . import audit, refresh_families, user_agents
from .client_metadata import ACCESS_TTL_BOUNDS
from .clock import seconds, utcnow

BROWSER, APP = "browser", "app"
BROWSER_ID_PREFIX = "web-"
MAX_ACCESS_TTL = ACCESS_TTL_BOUNDS[1]  # a family without refresh tokens lasts this long
# A browser sign-in's use is recorded at most this often (and at least four times per idle
# lifetime): a page view writes nothing most of the time.
TOUCH_EVERY = 60


@dataclass(frozen=True)
class BrowserLifetime:
    """How long a browser sign-in lasts (docs/design.md, "Operations"): ``idle`` seconds
    after its last recorded use, and ``absolute`` seconds after it was made, whichever
    ends first. Decided from the row's times, so a setting lowered applies to every
    sign-in at once, whatever its cookie says."""

    idle: int
    absolute: int

    def ends_at(self, row: LoginSession) -> dt.datetime:
        last = row.last_seen_at or row.created_at
        return min(row.created_at + seconds(self.absolute), last + seconds(self.idle))

    def live(self, row: LoginSession, now: dt.datetime) -> bool:
        return row.ended_at is None and now < self.ends_at(row)

    def due_for_touch(self, row: LoginSession, now: dt.datetime) -> bool:
        """Whether a use now should be recorded: the last record is older than a minute
        (or a quarter of the idle lifetime, if shorter)."""
        last = row.last_seen_at or row.created_at
        return (now - last).total_seconds() >= min(TOUCH_EVERY, self.idle / 4)


@dataclass(frozen=True)
class AppSession:
    """One application signed in on a device (one live refresh family)."""

    family_id: str
    client_id: str
    client_name: str
    created_at: dt.datetime
    last_used_at: dt.datetime
    last_ip: str | None
    dpop_bound: bool


@dataclass(frozen=True)
class DeviceSession:
    """One entry of "where you're signed in"."""

    id: str  # public: the family id of an app sign-in, "web-..." for a browser sign-in
    kind: str  # BROWSER or APP
    label: str  # "Firefox on macOS", "BankApp on iOS"
    apps: tuple[AppSession, ...]
    created_at: dt.datetime
    last_used_at: dt.datetime
    last_ip: str | None
    device_id: str | None = None
    current: bool = False
    ends_at: dt.datetime | None = None  # a browser sign-in's end unless used again
    login_session_id: str | None = field(default=None, repr=False)  # never shown

    @property
    def family_ids(self) -> list[str]:
        return [a.family_id for a in self.apps]

    @property
    def client_names(self) -> list[str]:
        return list(dict.fromkeys(a.client_name for a in self.apps))

    @property
    def dpop_bound(self) -> bool:
        return any(a.dpop_bound for a in self.apps)

    def to_dict(self) -> dict[str, object]:
        """The JSON API's view (``GET /account/api/sessions``)."""
        single = self.apps[0] if self.kind == APP else None
        return {
            "id": self.id,
            "type": self.kind,
            "device": self.label,
            "client_id": single.client_id if single else None,
            "client_name": single.client_name if single else None,
            "applications": [{"client_id": a.client_id, "name": a.client_name,
                              "session_id": a.family_id} for a in self.apps],
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat(),
            "last_ip": self.last_ip,
            "dpop_bound": self.dpop_bound,
            "current": self.current,
            "expires_at": self.ends_at.isoformat() if self.ends_at else None,
        }


def browser_session_public_id(login_session_id: str) -> str:
    """The id shown for a browser sign-in. The row id itself is what the (signed) cookie
    carries, so pages and APIs show a one-way digest of it instead."""
    return BROWSER_ID_PREFIX + hashlib.sha256(
        b"authserver browser-session\x00" + login_session_id.encode()).hexdigest()[:32]


def _live_family(now: dt.datetime) -> tuple[Any, ...]:
    return (TokenFamily.revoked_at.is_(None),
            or_(TokenFamily.expires_at.is_(None), TokenFamily.expires_at > now))


def _app_sessions(session: Session, user_id: int, now: dt.datetime
                  ) -> list[tuple[TokenFamily, AppSession]]:
    """Every live family of the user with its client's name and its last use (two queries)."""
    families = session.execute(
        select(TokenFamily, Client.name)
        .join(Client, Client.client_id == TokenFamily.client_id)
        .where(TokenFamily.user_id == user_id, *_live_family(now))
    ).all()
    if not families:
        return []
    # The newest token of each family says when it was last used and where it was sent.
    latest_ids = (
        select(func.max(RefreshToken.id))
        .where(RefreshToken.family_id.in_([f.id for f, _ in families]))
        .group_by(RefreshToken.family_id)
    )
    latest = {
        row.family_id: row
        for row in session.execute(
            select(RefreshToken.family_id, RefreshToken.created_at, RefreshToken.ip,
                   RefreshToken.expires_at)
            .where(RefreshToken.id.in_(latest_ids))
        )
    }
    result = []
    for family, client_name in families:
        last = latest.get(family.id)
        if last is not None and last.expires_at is not None and last.expires_at <= now:
            continue  # idle too long: its refresh token expired, nothing can use it
        if last is None and family.created_at <= now - seconds(MAX_ACCESS_TTL):
            continue  # no refresh token, and its access token has expired
        result.append((family, AppSession(
            family_id=family.id, client_id=family.client_id, client_name=client_name,
            created_at=family.created_at,
            last_used_at=last.created_at if last else family.created_at,
            last_ip=last.ip if last and last.ip else family.ip,
            dpop_bound=family.dpop_jkt is not None,
        )))
    return result


def list_for_user(
    session: Session,
    user_id: int,
    now: dt.datetime | None = None,
    *,
    current_login_session: str | None = None,
    current_family: str | None = None,
    browser_lifetime: BrowserLifetime | None = None,
) -> list[DeviceSession]:
    """Every device signed in to the user's account, the current one first, then the most
    recently used. ``current_*`` say which sign-in the request itself belongs to. With
    ``browser_lifetime``, a browser sign-in past its lifetime is no longer listed (its
    apps are, as devices of their own) and each listed one says when it ends."""
    now = now or utcnow()
    logins = [login for login in session.scalars(
        select(LoginSession).where(LoginSession.user_id == user_id,
                                   LoginSession.ended_at.is_(None))
    ).all() if browser_lifetime is None or browser_lifetime.live(login, now)]
    apps = _app_sessions(session, user_id, now)
    under: dict[str, list[AppSession]] = {login.id: [] for login in logins}
    devices = []
    for family, app in apps:
        if family.login_session_id in under:
            under[family.login_session_id].append(app)
            continue
        devices.append(DeviceSession(
            id=family.id, kind=APP,
            label=family.ua_family or user_agents.family(family.user_agent),
            apps=(app,), created_at=app.created_at, last_used_at=app.last_used_at,
            last_ip=app.last_ip, device_id=family.device_id,
            current=family.id == current_family,
        ))
    for login in logins:
        grouped = tuple(sorted(under[login.id], key=lambda a: a.created_at))
        devices.append(DeviceSession(
            id=browser_session_public_id(login.id), kind=BROWSER,
            label=user_agents.family(login.user_agent), apps=grouped,
            created_at=login.created_at,
            last_used_at=max([login.last_seen_at or login.created_at,
                              *(a.last_used_at for a in grouped)]),
            last_ip=login.ip,
            ends_at=browser_lifetime.ends_at(login) if browser_lifetime else None,
            current=(login.id == current_login_session
                     or any(a.family_id == current_family for a in grouped)),
            login_session_id=login.id,
        ))
    devices.sort(key=lambda d: (not d.current, -d.last_used_at.timestamp()))
    return devices


def find_device(devices: Iterable[DeviceSession], device_id: str) -> DeviceSession | None:
    return next((d for d in devices if d.id == device_id), None)


def sign_out_device(session: Session, user_id: int, device: DeviceSession, *, reason: str,
                    now: dt.datetime | None = None, by: Mapping[str, Any] | None = None
                    ) -> None:
    """Sign one device out: its browser sign-in (if any) and every family in it. Commits."""
    end_device(session, user_id, device, reason=reason, now=now, by=by)
    session.commit()


def end_device(session: Session, user_id: int, device: DeviceSession, *, reason: str,
               now: dt.datetime | None = None, by: Mapping[str, Any] | None = None) -> None:
    """Sign one device out: its browser sign-in (if any) and every family in it. Joins the
    caller's transaction; only called from the domain."""
    now = now or utcnow()
    for family_id in device.family_ids:
        refresh_families.revoke_family(session, family_id, reason=reason, now=now, by=by)
    if device.login_session_id is not None:
        end_browser_sign_in(session, user_id, device.login_session_id, reason=reason, now=now,
                            by=by)


def end_browser_sign_in(session: Session, user_id: int, login_session_id: str, *, reason: str,
                        now: dt.datetime | None = None,
                        by: Mapping[str, Any] | None = None) -> bool:
    """End one browser sign-in and audit it; False if it had already ended. Joins the
    caller's transaction; only called from the domain."""
    now = now or utcnow()
    ended = session.execute(
        update(LoginSession)
        .where(LoginSession.id == login_session_id, LoginSession.user_id == user_id,
               LoginSession.ended_at.is_(None))
        .values(ended_at=now)
        .returning(LoginSession.user_agent, LoginSession.ip)
    ).one_or_none()
    if ended is None:
        return False
    audit.record(session, audit.BROWSER_SIGNED_OUT, user_id=user_id, now=now, cause=reason,
                 device={"user_agent_family": user_agents.family(ended.user_agent),
                         "ip": ended.ip},
                 login_session=browser_session_public_id(login_session_id),
                 **audit.by_detail(by))
    return True


def sign_out(session: Session, user_id: int, device_id: str, *, reason: str,
             now: dt.datetime | None = None, by: Mapping[str, Any] | None = None
             ) -> DeviceSession | None:
    """Sign out one of the user's own devices by its public id; None if it is not theirs
    (or no longer signed in): another user's session is indistinguishable from none.
    Commits (when it signed a device out)."""
    now = now or utcnow()
    device = find_device(list_for_user(session, user_id, now), device_id[:64])
    if device is None:
        return None
    end_device(session, user_id, device, reason=reason, now=now, by=by)
    session.commit()
    return device


def sign_out_all(
    session: Session,
    user_id: int,
    *,
    reason: str,
    keep_login_session: str | None = None,
    keep_family: str | None = None,
    now: dt.datetime | None = None,
    by: Mapping[str, Any] | None = None,
) -> int:
    """Sign out every device of the user but the current one (``end_all_devices``); return
    how many. Commits."""
    count = end_all_devices(session, user_id, reason=reason,
                            keep_login_session=keep_login_session, keep_family=keep_family,
                            now=now, by=by)
    session.commit()
    return count


def end_all_devices(
    session: Session,
    user_id: int,
    *,
    reason: str,
    keep_login_session: str | None = None,
    keep_family: str | None = None,
    now: dt.datetime | None = None,
    by: Mapping[str, Any] | None = None,
) -> int:
    """Sign out every device of the user but the current one; return how many.

    The current device is the one holding ``keep_login_session`` (a browser, with the
    apps signed in through it) or ``keep_family`` (an app; if it signed in through a
    live browser sign-in, that whole device is kept). Families that expired but were
    never revoked are revoked too, so that nothing of the user stays usable. Joins the
    caller's transaction; only called from the domain.
    """
    now = now or utcnow()
    devices = list_for_user(session, user_id, now, current_login_session=keep_login_session,
                            current_family=keep_family)
    keep = {d.id for d in devices if d.current and (keep_login_session or keep_family)}
    count = 0
    for device in devices:
        if device.id in keep:
            continue
        end_device(session, user_id, device, reason=reason, now=now, by=by)
        count += 1
    kept = next((d for d in devices if d.id in keep), None)
    kept_families = set(kept.family_ids) if kept else set()
    # Whatever the list does not show (expired families) is revoked as well.
    leftovers = session.scalars(
        select(TokenFamily.id).where(TokenFamily.user_id == user_id,
                                     TokenFamily.revoked_at.is_(None))
    ).all()
    for family_id in leftovers:
        if family_id not in kept_families:
            refresh_families.revoke_family(session, family_id, reason=reason, now=now, by=by)
    return count


def client_active(session: Session, client_id: str) -> bool:
    """One unique-index lookup: is this client registered and enabled?"""
    return bool(session.scalar(select(Client.active).where(Client.client_id == client_id[:64])))


def revoke_for_client(session: Session, family_id: str, client_id: str, *, reason: str,
                      now: dt.datetime | None = None, by: Mapping[str, Any] | None = None
                      ) -> bool:
    """Revoke a family only if it was issued to ``client_id`` (RFC 7009 §2.1). Commits
    (when it revoked it)."""
    owner = session.scalar(select(TokenFamily.client_id).where(TokenFamily.id == family_id))
    if owner != client_id:
        return False
    revoked = refresh_families.revoke_family(session, family_id, reason=reason, now=now, by=by)
    if revoked:
        session.commit()
    return revoked


def sign_out_browser(session: Session, user_id: int | None, login_session_id: str | None,
                     family_id: str | None, *, reason: str,
                     now: dt.datetime | None = None) -> None:
    """Sign-out at ``/logout``: this browser's sign-in (if any) ends, and the application
    sign-in (family) the ID token hint names (if any) is revoked. Commits."""
    if user_id is not None and login_session_id is not None:
        end_browser_sign_in(session, user_id, login_session_id, reason=reason, now=now)
    if family_id is not None:
        refresh_families.revoke_family(session, family_id, reason=reason, now=now)
    session.commit()
