"""Clients: registration rules, the immutable record the token endpoint uses, and its cache.

Validation lives here only, so the CLI (and later the admin API and pages) share it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import Client
from . import audit, refresh_families, scopes
from . import secrets as creds
from .binding import BindingPolicy
from .clock import utcnow
from .errors import NotFound, ValidationError

SUPPORTED_GRANT_TYPES = ("authorization_code", "password", "client_credentials", "refresh_token")

ACCESS_TTL_BOUNDS = (60, 86_400)  # DESIGN.md: per client 60 s to 1 day
REFRESH_IDLE_TTL_BOUNDS = (0, 31_536_000)  # 0 = no idle limit; at most a year
REFRESH_ABSOLUTE_TTL_BOUNDS = (0, 315_360_000)  # 0 = never expires, only revoked
REUSE_GRACE_BOUNDS = (0, 300)

DEFAULT_REFRESH_IDLE_TTL = 14 * 86_400
DEFAULT_REFRESH_ABSOLUTE_TTL = 90 * 86_400
DEFAULT_REUSE_GRACE = 10


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

    def check_client_secret(self, client_secret: str) -> bool:
        """The current secret, or the previous one during the rotation overlap."""
        if self.public:
            return False
        if creds.matches(client_secret, self.secret_digest):
            return True
        return (self.previous_secret_expires_at is not None
                and utcnow() < self.previous_secret_expires_at
                and creds.matches(client_secret, self.previous_secret_digest))

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
        return data


@dataclass
class ClientSpec:
    """Registration input, as given by an admin."""

    name: str
    public: bool = False
    first_party: bool = False
    grant_types: list[str] = field(default_factory=list)
    redirect_uris: list[str] = field(default_factory=list)
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    scope: str = ""
    access_token_ttl: int | None = None
    refresh_idle_ttl: int = DEFAULT_REFRESH_IDLE_TTL
    refresh_absolute_ttl: int = DEFAULT_REFRESH_ABSOLUTE_TTL
    reuse_grace: int = DEFAULT_REUSE_GRACE
    bind_device_id: bool = True
    bind_user_agent: bool = True
    bind_ip: str = "off"
    require_device_id: bool = False
    on_binding_mismatch: str = "revoke"
    require_dpop: bool = False
    allow_introspection: bool = False

    def binding(self) -> BindingPolicy:
        return BindingPolicy(
            device_id=self.bind_device_id, user_agent=self.bind_user_agent, ip=self.bind_ip,
            require_device_id=self.require_device_id, on_mismatch=self.on_binding_mismatch,
            require_dpop=self.require_dpop,
        ).validate()


def default_grant_types(spec: ClientSpec) -> list[str]:
    """Apps with redirect URIs sign users in through the browser; first-party apps without
    them use the password grant; other confidential clients are machines."""
    if spec.redirect_uris:
        return ["authorization_code", "refresh_token"]
    if spec.first_party:
        return ["password", "refresh_token"]
    if not spec.public:
        return ["client_credentials"]
    raise ValidationError("a public client needs --redirect-uri or --first-party",
                          "redirect_uris")


def _check_bounds(value: int | None, bounds: tuple[int, int], name: str) -> None:
    if value is None:
        return
    low, high = bounds
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValidationError(f"{name} must be an integer from {low} to {high}", name)


def _check_redirect_uri(uri: str) -> None:
    """RFC 6749 §3.1.2 and RFC 8252: absolute, no fragment, https except loopback/native."""
    parts = urlsplit(uri)
    if not parts.scheme or parts.fragment or "#" in uri:
        raise ValidationError(f"redirect URI {uri!r} must be absolute, without a fragment",
                              "redirect_uris")
    if parts.scheme == "http":
        if parts.hostname not in ("127.0.0.1", "::1", "localhost"):
            raise ValidationError(f"redirect URI {uri!r} must use https (loopback excepted)",
                                  "redirect_uris")
    elif parts.scheme != "https" and "." not in parts.scheme:
        raise ValidationError(
            f"redirect URI {uri!r}: a private-use scheme must be a reversed domain name "
            "(RFC 8252 §7.1)",
            "redirect_uris",
        )
    if parts.scheme in ("http", "https") and not parts.hostname:
        raise ValidationError(f"redirect URI {uri!r} has no host", "redirect_uris")


def validate_spec(spec: ClientSpec) -> ClientSpec:
    """Check a registration; return it with defaults filled in. Raises ValidationError."""
    name = spec.name.strip() if isinstance(spec.name, str) else ""
    if not name or len(name) > 255:
        raise ValidationError("name must be 1 to 255 characters", "name")
    grant_types = list(dict.fromkeys(spec.grant_types)) or default_grant_types(spec)
    unknown = [g for g in grant_types if g not in SUPPORTED_GRANT_TYPES]
    if unknown:
        raise ValidationError(
            f"unsupported grant type {unknown[0]!r}; supported: {', '.join(SUPPORTED_GRANT_TYPES)}",
            "grant_types",
        )
    if spec.public and "client_credentials" in grant_types:
        raise ValidationError("a public client cannot use client_credentials", "grant_types")
    if spec.public and spec.allow_introspection:
        raise ValidationError("only confidential clients may introspect tokens",
                              "allow_introspection")
    if "password" in grant_types and not spec.first_party:
        raise ValidationError("the password grant is only for first-party clients",
                              "grant_types")
    if grant_types == ["refresh_token"]:
        raise ValidationError("refresh_token needs a grant that issues refresh tokens",
                              "grant_types")
    if "authorization_code" in grant_types and not spec.redirect_uris:
        raise ValidationError("the authorization_code grant needs at least one redirect URI",
                              "redirect_uris")
    for uri in [*spec.redirect_uris, *spec.post_logout_redirect_uris]:
        _check_redirect_uri(uri)
    scope = scopes.render(scopes.parse(spec.scope))
    _check_bounds(spec.access_token_ttl, ACCESS_TTL_BOUNDS, "access_token_ttl")
    _check_bounds(spec.refresh_idle_ttl, REFRESH_IDLE_TTL_BOUNDS, "refresh_idle_ttl")
    _check_bounds(spec.refresh_absolute_ttl, REFRESH_ABSOLUTE_TTL_BOUNDS, "refresh_absolute_ttl")
    _check_bounds(spec.reuse_grace, REUSE_GRACE_BOUNDS, "reuse_grace")
    spec.binding()
    return dataclasses.replace(
        spec, name=name, grant_types=grant_types, scope=scope,
        redirect_uris=list(dict.fromkeys(spec.redirect_uris)),
        post_logout_redirect_uris=list(dict.fromkeys(spec.post_logout_redirect_uris)),
    )


def create_client(session: Session, spec: ClientSpec) -> tuple[ClientRecord, str | None]:
    """Register a client; return its record and, for a confidential client, the secret.

    The secret is returned once and stored only as a digest.
    """
    spec = validate_spec(spec)
    secret = None if spec.public else creds.new_client_secret()
    now = utcnow()
    row = Client(
        client_id=creds.new_client_id(),
        secret_digest=creds.digest(secret) if secret else None,
        active=True,
        created_at=now,
    )
    _apply(row, spec, now)
    session.add(row)
    session.flush()
    audit.record(session, audit.CLIENT_CREATED, client_id=row.client_id, now=now,
                 name=row.name, public=row.public)
    return ClientRecord.from_model(row), secret


SPEC_FIELDS = [f.name for f in dataclasses.fields(ClientSpec)]


def _apply(row: Client, spec: ClientSpec, now: object) -> None:
    """Copy a validated spec onto a row (the column names are the spec's field names)."""
    for name in SPEC_FIELDS:
        setattr(row, name, getattr(spec, name))
    row.updated_at = now  # type: ignore[assignment]


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


def update_client(session: Session, client_id: str, **changes: object) -> ClientRecord:
    """Change a client's registration (validated like a new one; the caller commits).

    Whether a client is public cannot change: a secret would appear or disappear.
    """
    row = session.scalar(select(Client).where(Client.client_id == client_id))
    if row is None:
        raise NotFound(f"no client {client_id!r}")
    unknown = [name for name in changes if name not in SPEC_FIELDS or name == "public"]
    if unknown:
        raise ValidationError(f"cannot change {unknown[0]}", unknown[0])
    spec = dataclasses.replace(spec_of(ClientRecord.from_model(row)), **changes)  # type: ignore[arg-type]
    _apply(row, validate_spec(spec), utcnow())
    session.flush()
    audit.record(session, audit.CLIENT_UPDATED, client_id=client_id, changed=sorted(changes))
    return ClientRecord.from_model(row)


def list_clients(session: Session) -> list[ClientRecord]:
    rows = session.scalars(select(Client).order_by(Client.created_at, Client.id))
    return [ClientRecord.from_model(row) for row in rows]


def find_client(session: Session, client_id: str) -> ClientRecord | None:
    row = session.scalar(select(Client).where(Client.client_id == client_id))
    return ClientRecord.from_model(row) if row is not None else None


def get_client(session: Session, client_id: str) -> ClientRecord:
    record = find_client(session, client_id)
    if record is None:
        raise NotFound(f"no client {client_id!r}")
    return record


class ClientCache:
    """Per-process, time-bounded cache of client records (the token endpoint's hot path).

    A change made by another process is seen within ``ttl`` seconds; ``forget`` drops an
    entry at once for changes made in this process.
    """

    def __init__(self, load: Callable[[str], ClientRecord | None], ttl: float) -> None:
        self._load = load
        self.ttl = ttl
        self._entries: dict[str, tuple[float, ClientRecord]] = {}
        self._lock = threading.Lock()

    def get(self, client_id: str) -> ClientRecord | None:
        now = time.monotonic()
        entry = self._entries.get(client_id)
        if entry is not None and entry[0] > now:
            return entry[1]
        record = self._load(client_id)
        if record is not None and self.ttl > 0:
            with self._lock:
                if len(self._entries) > 10_000:
                    self._entries.clear()
                self._entries[client_id] = (now + self.ttl, record)
        return record

    def forget(self, client_ids: Iterable[str] | None = None) -> None:
        with self._lock:
            if client_ids is None:
                self._entries.clear()
            else:
                for client_id in client_ids:
                    self._entries.pop(client_id, None)


def _row(session: Session, client_id: str) -> Client:
    row = session.scalar(select(Client).where(Client.client_id == client_id))
    if row is None:
        raise NotFound(f"no client {client_id!r}")
    return row


MAX_SECRET_OVERLAP = 30 * 86_400


def rotate_secret(session: Session, client_id: str, overlap_seconds: int) -> str:
    """A new secret, returned once; the old one stays valid for ``overlap_seconds``."""
    if not 0 <= overlap_seconds <= MAX_SECRET_OVERLAP:
        raise ValidationError(f"overlap must be 0 to {MAX_SECRET_OVERLAP} seconds", "overlap")
    row = _row(session, client_id)
    if row.public:
        raise ValidationError("a public client has no secret", "client_id")
    secret = creds.new_client_secret()
    now = utcnow()
    row.previous_secret_digest = row.secret_digest if overlap_seconds else None
    row.previous_secret_expires_at = (now + dt.timedelta(seconds=overlap_seconds)
                                      if overlap_seconds else None)
    row.secret_digest = creds.digest(secret)
    row.updated_at = now
    audit.record(session, audit.CLIENT_SECRET_ROTATED, client_id=client_id, now=now,
                 overlap_seconds=overlap_seconds)
    return secret


def issue_registration_token(session: Session, client_id: str) -> str:
    """RFC 7592 §1: a registration access token for the client's own record (digest stored)."""
    token = "reg_" + creds.new_client_secret()
    _row(session, client_id).registration_token_digest = creds.digest(token)
    return token


def set_active(session: Session, client_id: str, active: bool) -> int:
    """Enable or disable a client; disabling revokes every family it holds (returns how many)."""
    row = _row(session, client_id)
    row.active = active
    row.updated_at = utcnow()
    revoked = 0
    if not active:
        revoked = revoke_client_families(session, client_id, reason="client_disabled")
    audit.record(session, audit.CLIENT_ENABLED if active else audit.CLIENT_DISABLED,
                 client_id=client_id, families_revoked=revoked)
    return revoked


def revoke_client_families(session: Session, client_id: str, *, reason: str) -> int:
    from ..storage.models import TokenFamily

    family_ids = session.scalars(select(TokenFamily.id).where(
        TokenFamily.client_id == client_id, TokenFamily.revoked_at.is_(None))).all()
    return sum(refresh_families.revoke_family(session, fid, reason=reason) for fid in family_ids)


def delete_client(session: Session, client_id: str) -> int:
    """Delete a client: its families are revoked, then removed with it (returns how many)."""
    row = _row(session, client_id)
    revoked = revoke_client_families(session, client_id, reason="client_deleted")
    audit.record(session, audit.CLIENT_DELETED, client_id=client_id, families_revoked=revoked,
                 name=row.name)
    session.flush()
    session.delete(row)
    return revoked
