"""Clients as the protocol layer sees them: the immutable record (``ClientRecord``), its
loading (``find_client``, ``get_client``, ``load_client``, ``list_clients``) and the token
endpoint's per-process cache (``ClientCache``). Read-only: the administration that changes
a registration is :mod:`.client_admin`.

The rules a registration must satisfy live in :mod:`.client_metadata`, shared by the CLI,
the registration API and the admin pages.
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

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..storage import driver
from ..storage.models import Client
from . import credentials as creds
from . import scopes
from .binding import BindingPolicy
from .client_metadata import BODY, COOKIE
from .clock import utcnow
from .errors import NotFound
from .token_status import Entry

MAX_CLIENT_ID = 64
# RFC 6749 Appendix A.1: client-id = *VSCHAR. Nothing else is ever looked up (a NUL, for one,
# is not even a legal PostgreSQL string).
_CLIENT_ID = re.compile(r"[\x20-\x7e]{1,64}")


@dataclass(frozen=True)
class ClientRecord:
    """What the protocol layer knows of a client: immutable, safe to cache and share.

    Its ``get_*`` and ``check_*`` methods are the record's own rules (the secret's overlap,
    grant types, redirect URIs), named as Authlib's ``ClientMixin`` names them so that
    Authlib's grants can call them too; nothing here imports Authlib.
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
    web_origins: tuple[str, ...] = ()
    refresh_token_delivery: str = BODY
    binding: BindingPolicy = field(default_factory=BindingPolicy)
    allow_introspection: bool = False
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = False
    created_at: dt.datetime | None = None
    secret_digest: str | None = field(default=None, repr=False)
    previous_secret_digest: str | None = field(default=None, repr=False)
    previous_secret_expires_at: dt.datetime | None = field(default=None, repr=False)
    registration_token_digest: str | None = field(default=None, repr=False)
    # The status-list entry its client_credentials tokens carry (None: not allocated yet).
    status: Entry | None = field(default=None, repr=False)

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
            web_origins=tuple(row.web_origins or ()),
            refresh_token_delivery=row.refresh_token_delivery or BODY,
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
            backchannel_logout_uri=row.backchannel_logout_uri,
            backchannel_logout_session_required=bool(row.backchannel_logout_session_required),
            created_at=row.created_at,
            secret_digest=row.secret_digest,
            previous_secret_digest=row.previous_secret_digest,
            previous_secret_expires_at=row.previous_secret_expires_at,
            registration_token_digest=row.registration_token_digest,
            status=(Entry(row.status_list, row.status_idx)
                    if row.status_list is not None and row.status_idx is not None else None),
        )

    @property
    def cookie_delivery(self) -> bool:
        """Whether its refresh tokens travel only in an HttpOnly cookie, never in JSON."""
        return self.refresh_token_delivery == COOKIE

    # -- the methods Authlib's grants call (ClientMixin's names) ----------------------
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
                        "registration_token_digest", "status"):
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
        data["web_origins"] = list(self.web_origins)
        data["scope"] = scopes.render(list(self.scope))
        data["token_endpoint_auth_method"] = "none" if self.public else "client_secret_basic"
        data["created_at"] = self.created_at.isoformat() if self.created_at else None
        if not self.public:
            data["previous_secret_valid_until"] = (
                self.previous_secret_expires_at.isoformat()
                if self.previous_secret_expires_at else None)
        return data


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

