"""Client administration: register, update, rotate the secret, issue a registration access
token, disable, enable, delete, and who did it (``Actor``) for the audit trail. Shared by
the CLI, the registration API and the admin pages.

The record these return, and its loading and cache, are :mod:`.clients`; the rules a
registration must satisfy are :mod:`.client_metadata`. Disabling or deleting a client
revokes its families through :func:`.refresh_families.revoke_family`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..storage.models import Client, TokenFamily
from . import audit, refresh_families, scopes, token_status
from . import credentials as creds
from .client_metadata import SPEC_FIELDS, ClientSpec, validate_spec
from .clients import MAX_CLIENT_ID, ClientRecord, valid_client_id
from .clock import utcnow
from .errors import NotFound, ValidationError

MAX_SECRET_OVERLAP = 30 * 86_400
REGISTRATION_TOKEN_PREFIX = "reg_"  # noqa: S105 - a prefix, not a secret


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
    Commits.
    """
    row, secret = _create(session, spec, actor, now)
    record = ClientRecord.from_model(row)
    session.commit()
    return record, secret


def register_client(session: Session, spec: ClientSpec, *, actor: Actor | str | None = None,
                    now: dt.datetime | None = None) -> tuple[ClientRecord, str | None, str]:
    """RFC 7591 §3: ``create_client`` and ``issue_registration_token`` in one transaction;
    the record, the secret (None for a public client) and the registration access token.
    Commits."""
    row, secret = _create(session, spec, actor, now)
    record = ClientRecord.from_model(row)
    token = issue_registration_token(session, record.client_id)
    session.commit()
    return record, secret, token


def _create(session: Session, spec: ClientSpec, actor: Actor | str | None,
            now: dt.datetime | None) -> tuple[Client, str | None]:
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
    _ensure_status(session, row, now)
    _audit(session, audit.CLIENT_CREATED, row.client_id, actor, now, name=row.name,
           public=row.public)
    return row, secret


def _ensure_status(session: Session, row: Client, now: dt.datetime, *,
                   replace: bool = False) -> None:
    """A client allowed ``client_credentials`` has a status-list entry for those tokens
    (docs/design.md, "Revocation that reaches APIs"); ``replace`` gives it a new one."""
    if not row.active or "client_credentials" not in (row.grant_types or ()):
        return
    old = (token_status.Entry(row.status_list, row.status_idx)
           if row.status_list is not None and row.status_idx is not None else None)
    if old is None or replace:
        token_status.allocate_for_client(session, row, now, replacing=old)


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
        web_origins=list(record.web_origins),
        refresh_token_delivery=record.refresh_token_delivery,
        scope=scopes.render(list(record.scope)), access_token_ttl=record.access_token_ttl,
        refresh_idle_ttl=record.refresh_idle_ttl,
        refresh_absolute_ttl=record.refresh_absolute_ttl, reuse_grace=record.reuse_grace,
        bind_device_id=policy.device_id, bind_user_agent=policy.user_agent, bind_ip=policy.ip,
        require_device_id=policy.require_device_id, on_binding_mismatch=policy.on_mismatch,
        require_dpop=policy.require_dpop, allow_introspection=record.allow_introspection,
        backchannel_logout_uri=record.backchannel_logout_uri,
        backchannel_logout_session_required=record.backchannel_logout_session_required,
    )


def update_client(session: Session, client_id: str, *, actor: Actor | str | None = None,
                  **changes: object) -> ClientRecord:
    """Change a client's registration, validated like a new one. Commits.

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
        now = utcnow()
        _apply(row, after, now)
        session.flush()
        _ensure_status(session, row, now)
        _audit(session, audit.CLIENT_UPDATED, client_id, actor, changed=changed)
    record = ClientRecord.from_model(row)
    session.commit()
    return record


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
    the one before it at once. Commits.
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
    session.commit()
    return secret


def issue_registration_token(session: Session, client_id: str) -> str:
    """RFC 7592 §1: a registration access token for the client's own record.

    256 random bits behind a recognisable prefix; only its SHA-256 digest is stored, and a
    new one replaces (and so revokes) the previous one. Joins the caller's transaction
    (``register_client``); only called from the domain.
    """
    token = REGISTRATION_TOKEN_PREFIX + creds.new_client_secret()
    _row(session, client_id).registration_token_digest = creds.digest(token)
    return token


def set_active(session: Session, client_id: str, active: bool, *,
               actor: Actor | str | None = None) -> int:
    """Enable or disable a client; disabling revokes every family it holds (returns how many).

    A disabled client cannot authenticate, so its refresh tokens fail and introspection
    reports its access tokens inactive. Enabling it again does not revive revoked sessions.
    Disabling sets its own status-list entry INVALID (its ``client_credentials`` tokens);
    enabling it again gives it a new one. Commits.
    """
    row = _row(session, client_id)
    was_active = row.active
    now = utcnow()
    row.active = active
    row.updated_at = now
    revoked = 0
    if not active:
        token_status.invalidate_client(session, row, now)
        revoked = _revoke_families(session, client_id, reason="client_disabled")
    elif not was_active:
        _ensure_status(session, row, now, replace=True)  # the old one stays INVALID
    _audit(session, audit.CLIENT_ENABLED if active else audit.CLIENT_DISABLED, client_id,
           actor, families_revoked=revoked)
    session.commit()
    return revoked


def revoke_client_families(session: Session, client_id: str, *, reason: str) -> int:
    """Revoke every live family (session) of the client; return how many. Commits."""
    revoked = _revoke_families(session, client_id, reason=reason)
    session.commit()
    return revoked


def _revoke_families(session: Session, client_id: str, *, reason: str) -> int:
    family_ids = session.scalars(select(TokenFamily.id).where(
        TokenFamily.client_id == client_id, TokenFamily.revoked_at.is_(None))).all()
    return sum(refresh_families.revoke_family(session, fid, reason=reason) for fid in family_ids)


def delete_client(session: Session, client_id: str, *, actor: Actor | str | None = None) -> int:
    """Delete a client: its families are revoked (audited), then removed with it by the
    foreign keys' cascade, with its codes and consents. Returns how many were revoked.
    Commits."""
    row = _row(session, client_id)
    token_status.invalidate_client(session, row)
    revoked = _revoke_families(session, client_id, reason="client_deleted")
    _audit(session, audit.CLIENT_DELETED, client_id, actor, families_revoked=revoked,
           name=row.name)
    session.flush()
    session.delete(row)
    session.commit()
    return revoked
