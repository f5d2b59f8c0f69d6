"""Clients: the immutable record the token endpoint uses, its cache, and the admin
operations (create, update, rotate the secret, disable, enable, delete).

The rules a registration must satisfy live in :mod:`.client_metadata`, shared by the CLI,
the registration API and the admin pages; they are re-exported here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..storage import driver
from ..storage.models import Client, TokenFamily
from . import audit, refresh_families, scopes
from . import secrets as creds
from .binding import BindingPolicy
from .client_metadata import (  # noqa: F401 - re-exported: the clients API in one place
    ACCESS_TTL_BOUNDS,
    ADMIN_SCOPE,
    AUTH_METHODS,
    DEFAULT_REFRESH_ABSOLUTE_TTL,
    DEFAULT_REFRESH_IDLE_TTL,
    DEFAULT_REUSE_GRACE,
    REFRESH_ABSOLUTE_TTL_BOUNDS,
    REFRESH_IDLE_TTL_BOUNDS,
    REUSE_GRACE_BOUNDS,
    SPEC_FIELDS,
    SUPPORTED_GRANT_TYPES,
    ClientSpec,
    check_redirect_uri,
    check_response_types,
    default_grant_types,
    validate_spec,
)
from .clock import utcnow
from .errors import NotFound, ValidationError

MAX_CLIENT_ID = 64
# RFC 6749 Appendix A.1: client-id = *VSCHAR. Nothing else is ever looked up (a NUL, for one,
# is not even a legal PostgreSQL string).
_CLIENT_ID = re.compile(r"[\x20-\x7e]{1,64}")
MAX_SECRET_OVERLAP = 30 * 86_400
REGISTRATION_TOKEN_PREFIX = "reg_"  # noqa: S105 - a prefix, not a secret


@dataclass(frozen=True)
class ClientRecord:
    """What the protocol layer knows of a client: immutable, safe to cache and share.

    Implements the parts of Authlib's ``ClientMixin`` that its grants call.
    """

    client_id: str
    name: str
    public: bool
    first_party: bool
    active: bool
    grant_types: tuple[str, ...]
    redirect_uris: tuple[str, ...]
    scope: tuple[str, ...]
    access_token_ttl: int | None
    refresh_idle_ttl: int
    refresh_absolute_ttl: int
    reuse_grace: int
    post_logout_redirect_uris: tuple[str, ...] = ()
    binding: BindingPolicy = field(default_factory=BindingPolicy)
    allow_introspection: bool = False
    created_at: dt.datetime | None = None
    secret_digest: str | None = field(default=None, repr=False)
    previous_secret_digest: str | None = field(default=None, repr=False)
    previous_secret_expires_at: dt.datetime | None = field(default=None, repr=False)
    registration_token_digest: str | None = field(default=None, repr=False)

    @classmethod
    def from_model(cls, row: Client) -> ClientRecord:
        return cls(
            client_id=row.client_id,
            name=row.name,
            public=row.public,
            first_party=row.first_party,
            active=row.active,
            grant_types=tuple(row.grant_types or ()),
            redirect_uris=tuple(row.redirect_uris or ()),
            post_logout_redirect_uris=tuple(row.post_logout_redirect_uris or ()),
            scope=tuple(scopes.parse(row.scope)),
            access_token_ttl=row.access_token_ttl,
            refresh_idle_ttl=row.refresh_idle_ttl,
            refresh_absolute_ttl=row.refresh_absolute_ttl,
            reuse_grace=row.reuse_grace,
            binding=BindingPolicy(
                device_id=row.bind_device_id, user_agent=row.bind_user_agent, ip=row.bind_ip,
                require_device_id=row.require_device_id, on_mismatch=row.on_binding_mismatch,
                require_dpop=row.require_dpop,
            ),
            allow_introspection=row.allow_introspection,
            created_at=row.created_at,
            secret_digest=row.secret_digest,
            previous_secret_digest=row.previous_secret_digest,
            previous_secret_expires_at=row.previous_secret_expires_at,
            registration_token_digest=row.registration_token_digest,
        )

    # -- Authlib ClientMixin ---------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.redirect_uris[0] if self.redirect_uris else None

    def get_allowed_scope(self, scope: str) -> str:
        return scopes.render([s for s in scopes.parse(scope) if s in self.scope])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str, now: dt.datetime | None = None) -> bool:
        """The current secret, or the previous one during the rotation overlap.

        Both digests are always compared, so the time taken says nothing about which
        secret (if any) matched.
        """
        if self.public:
            return False
        current = creds.matches(client_secret, self.secret_digest)
        previous = creds.matches(client_secret, self.previous_secret_digest)
        in_overlap = (self.previous_secret_expires_at is not None
                      and (now or utcnow()) < self.previous_secret_expires_at)
        return current or (previous and in_overlap)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and self.check_grant_type("authorization_code")

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types

    def to_public_dict(self) -> dict[str, object]:
        """The registration as shown to admins (never the secret or its digest)."""
        data = dataclasses.asdict(self)
        for private in ("secret_digest", "previous_secret_digest", "previous_secret_expires_at",
                        "registration_token_digest"):
            data.pop(private)
        policy = data.pop("binding")
        data.update({
            "bind_device_id": policy["device_id"], "bind_user_agent": policy["user_agent"],
            "bind_ip": policy["ip"], "require_device_id": policy["require_device_id"],
            "on_binding_mismatch": policy["on_mismatch"], "require_dpop": policy["require_dpop"],
        })
        data["grant_types"] = list(self.grant_types)
        data["redirect_uris"] = list(self.redirect_uris)
        data["post_logout_redirect_uris"] = list(self.post_logout_redirect_uris)
        data["scope"] = scopes.render(list(self.scope))
        data["token_endpoint_auth_method"] = "none" if self.public else "client_secret_basic"
        data["created_at"] = self.created_at.isoformat() if self.created_at else None
        if not self.public:
            data["previous_secret_valid_until"] = (
                self.previous_secret_expires_at.isoformat()
                if self.previous_secret_expires_at else None)
        return data


@dataclass(frozen=True)
class Actor:
    """Who made a change, for the audit trail: ``name`` ("cli", "admin user NAME", "admin
    client ID", ...) and, for a person signed in to the admin pages, their user id (so the
    trail filtered by that user shows what they did)."""

    name: str
    user_id: int | None = None


def _audit(session: Session, event: str, client_id: str, actor: Actor | str | None,
           now: dt.datetime | None = None, **detail: Any) -> None:
    if isinstance(actor, str):
        actor = Actor(actor)
    if actor is not None:
        detail["actor"] = actor.name
    audit.record(session, event, client_id=client_id, now=now,
                 user_id=actor.user_id if actor else None, **detail)


def create_client(session: Session, spec: ClientSpec, *, actor: Actor | str | None = None,
                  now: dt.datetime | None = None) -> tuple[ClientRecord, str | None]:
    """Register a client; return its record and, for a confidential client, the secret.

    The secret (256 random bits) is returned once and stored only as a SHA-256 digest.
    """
    spec = validate_spec(spec)
    secret = None if spec.public else creds.new_client_secret()
    now = now or utcnow()
    row = Client(
        client_id=creds.new_client_id(),
        secret_digest=creds.digest(secret) if secret else None,
        active=True,
        created_at=now,
    )
    _apply(row, spec, now)
    session.add(row)
    session.flush()
    _audit(session, audit.CLIENT_CREATED, row.client_id, actor, now, name=row.name,
           public=row.public)
    return ClientRecord.from_model(row), secret


def _apply(row: Client, spec: ClientSpec, now: dt.datetime) -> None:
    """Copy a validated spec onto a row (the column names are the spec's field names)."""
    for name in SPEC_FIELDS:
        setattr(row, name, getattr(spec, name))
    row.updated_at = now


def spec_of(record: ClientRecord) -> ClientSpec:
    """The editable registration of a client, as a spec (for updates)."""
    policy = record.binding
    return ClientSpec(
        name=record.name, public=record.public, first_party=record.first_party,
        grant_types=list(record.grant_types), redirect_uris=list(record.redirect_uris),
        post_logout_redirect_uris=list(record.post_logout_redirect_uris),
        scope=scopes.render(list(record.scope)), access_token_ttl=record.access_token_ttl,
        refresh_idle_ttl=record.refresh_idle_ttl,
        refresh_absolute_ttl=record.refresh_absolute_ttl, reuse_grace=record.reuse_grace,
        bind_device_id=policy.device_id, bind_user_agent=policy.user_agent, bind_ip=policy.ip,
        require_device_id=policy.require_device_id, on_binding_mismatch=policy.on_mismatch,
        require_dpop=policy.require_dpop, allow_introspection=record.allow_introspection,
    )


def update_client(session: Session, client_id: str, *, actor: Actor | str | None = None,
                  **changes: object) -> ClientRecord:
    """Change a client's registration, validated like a new one (the caller commits).

    Whether a client is public cannot change: a secret would appear or disappear.
    """
    row = _row(session, client_id)
    unknown = [name for name in changes if name not in SPEC_FIELDS or name == "public"]
    if unknown:
        raise ValidationError(f"cannot change {unknown[0]}", unknown[0])
    if not changes:
        raise ValidationError("nothing to change")
    before = spec_of(ClientRecord.from_model(row))
    after = validate_spec(dataclasses.replace(before, **changes))  # type: ignore[arg-type]
    changed = [name for name in SPEC_FIELDS if getattr(before, name) != getattr(after, name)]
    if changed:
        _apply(row, after, utcnow())
        session.flush()
        _audit(session, audit.CLIENT_UPDATED, client_id, actor, changed=changed)
    return ClientRecord.from_model(row)


def list_clients(session: Session) -> list[ClientRecord]:
    rows = session.scalars(select(Client).order_by(Client.created_at, Client.id))
    return [ClientRecord.from_model(row) for row in rows]


def valid_client_id(client_id: object) -> bool:
    return isinstance(client_id, str) and _CLIENT_ID.fullmatch(client_id) is not None


def find_client(session: Session, client_id: str) -> ClientRecord | None:
    if not valid_client_id(client_id):
        return None
    row = session.scalar(select(Client).where(Client.client_id == client_id))
    return ClientRecord.from_model(row) if row is not None else None


def load_client(connection: Connection, client_id: str) -> ClientRecord | None:
    """The stored record, read on a plain connection (the token endpoint's cache loader:
    no ORM session, no transaction held afterwards)."""
    if not valid_client_id(client_id):
        return None
    row = driver.fetchone(connection, _BY_CLIENT_ID, {"client_id": client_id})
    if row is None:
        return None
    return ClientRecord.from_model(SimpleNamespace(**dict(zip(_COLUMNS, row, strict=True))))  # type: ignore[arg-type]


_BY_CLIENT_ID = select(Client.__table__).where(
    Client.__table__.c.client_id == bindparam("client_id"))
_COLUMNS = tuple(column.name for column in _BY_CLIENT_ID.selected_columns)


def get_client(session: Session, client_id: str) -> ClientRecord:
    record = find_client(session, client_id)
    if record is None:
        raise NotFound(f"no client {client_id[:MAX_CLIENT_ID]!r}")
    return record


class ClientCache:
    """Per-process, time-bounded cache of client records for the token endpoint's hot path:
    a public client's refresh, where nothing the cache could get wrong grants anything
    (a disabled or deleted client's families are revoked with it). Everything else calls
    ``reload``. A change made by another process is seen within ``ttl`` seconds; ``forget``
    drops an entry at once for changes made in this process.
    """

    def __init__(self, load: Callable[[str], ClientRecord | None], ttl: float) -> None:
        self._load = load
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ClientRecord]] = {}
        self._lock = threading.Lock()
        self._generation = 0  # bumped by every forget()

    def get(self, client_id: str) -> ClientRecord | None:
        entry = self._entries.get(client_id)
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return self.reload(client_id)

    def reload(self, client_id: str) -> ClientRecord | None:
        """The record as stored now (and cached from now on)."""
        now = time.monotonic()
        generation = self._generation
        record = self._load(client_id)
        with self._lock:
            if record is None or self.ttl <= 0 or generation != self._generation:
                # A ``forget`` ran while we read: what we read may predate that change.
                self._entries.pop(client_id, None)
                return record
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[client_id] = (now + self.ttl, record)
        return record

    def forget(self, client_ids: Iterable[str] | None = None) -> None:
        with self._lock:
            self._generation += 1
            if client_ids is None:
                self._entries.clear()
            else:
                for client_id in client_ids:
                    self._entries.pop(client_id, None)


def _row(session: Session, client_id: str) -> Client:
    row = None
    if valid_client_id(client_id):
        row = session.scalar(select(Client).where(Client.client_id == client_id))
    if row is None:
        raise NotFound(f"no client {client_id[:MAX_CLIENT_ID]!r}")
    return row


def rotate_secret(session: Session, client_id: str, overlap_seconds: int, *,
                  actor: Actor | str | None = None, now: dt.datetime | None = None) -> str:
    """A new secret, returned once; the old one stays valid for ``overlap_seconds``.

    Only the secret in use until now survives the overlap: rotating twice in a row ends
    the one before it at once.
    """
    if (isinstance(overlap_seconds, bool) or not isinstance(overlap_seconds, int)
            or not 0 <= overlap_seconds <= MAX_SECRET_OVERLAP):
        raise ValidationError(f"overlap must be a whole number of seconds from 0 to "
                              f"{MAX_SECRET_OVERLAP}", "overlap")
    row = _row(session, client_id)
    if row.public:
        raise ValidationError("a public client has no secret to rotate", "client_id")
    secret = creds.new_client_secret()
    now = now or utcnow()
    row.previous_secret_digest = row.secret_digest if overlap_seconds else None
    row.previous_secret_expires_at = (now + dt.timedelta(seconds=overlap_seconds)
                                      if overlap_seconds else None)
    row.secret_digest = creds.digest(secret)
    row.updated_at = now
    _audit(session, audit.CLIENT_SECRET_ROTATED, client_id, actor, now,
           overlap_seconds=overlap_seconds)
    return secret


def issue_registration_token(session: Session, client_id: str) -> str:
    """RFC 7592 §1: a registration access token for the client's own record.

    256 random bits behind a recognisable prefix; only its SHA-256 digest is stored, and a
    new one replaces (and so revokes) the previous one.
    """
    token = REGISTRATION_TOKEN_PREFIX + creds.new_client_secret()
    _row(session, client_id).registration_token_digest = creds.digest(token)
    return token


def set_active(session: Session, client_id: str, active: bool, *,
               actor: Actor | str | None = None) -> int:
    """Enable or disable a client; disabling revokes every family it holds (returns how many).

    A disabled client cannot authenticate, so its refresh tokens fail and introspection
    reports its access tokens inactive. Enabling it again does not revive revoked sessions.
    """
    row = _row(session, client_id)
    row.active = active
    row.updated_at = utcnow()
    revoked = 0
    if not active:
        revoked = revoke_client_families(session, client_id, reason="client_disabled")
    _audit(session, audit.CLIENT_ENABLED if active else audit.CLIENT_DISABLED, client_id,
           actor, families_revoked=revoked)
    return revoked


def revoke_client_families(session: Session, client_id: str, *, reason: str) -> int:
    """Revoke every live family (session) of the client; return how many."""
    family_ids = session.scalars(select(TokenFamily.id).where(
        TokenFamily.client_id == client_id, TokenFamily.revoked_at.is_(None))).all()
    return sum(refresh_families.revoke_family(session, fid, reason=reason) for fid in family_ids)


def delete_client(session: Session, client_id: str, *, actor: Actor | str | None = None) -> int:
    """Delete a client: its families are revoked (audited), then removed with it by the
    foreign keys' cascade, with its codes and consents. Returns how many were revoked."""
    row = _row(session, client_id)
    revoked = revoke_client_families(session, client_id, reason="client_deleted")
    _audit(session, audit.CLIENT_DELETED, client_id, actor, families_revoked=revoked,
           name=row.name)
    session.flush()
    session.delete(row)
    return revoked
