"""Typed models. Secrets appear here only as digests; schema changes go through migrations/."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from .base import Base, OptionalTimestamp, ShortText, Timestamp


class User(Base):
    """A resource owner. ``subject`` is the stable, non-guessable ``sub`` claim."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(64), unique=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))  # argon2id, PHC string
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[Timestamp]
    deactivated_at: Mapped[OptionalTimestamp]
    password_changed_at: Mapped[OptionalTimestamp]
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class Client(Base):
    """A registered OAuth client and its token policy."""

    __tablename__ = "clients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[ShortText]
    # SHA-256 hex digest of a server-generated 256-bit secret; None for public clients.
    secret_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # After a rotation the previous secret stays valid until this time (the overlap).
    previous_secret_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous_secret_expires_at: Mapped[OptionalTimestamp]
    # RFC 7592 registration access token (digest), for the client's own record.
    registration_token_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    first_party: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    post_logout_redirect_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Browser apps (docs/design.md, "Browser apps"): the origins their code runs on (CORS),
    # and where their refresh token travels: "body" (JSON) or "cookie" (HttpOnly).
    web_origins: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    refresh_token_delivery: Mapped[str] = mapped_column(String(8), default="body",
                                                        server_default="body")
    scope: Mapped[str] = mapped_column(Text, default="")
    access_token_ttl: Mapped[int | None] = mapped_column(Integer, nullable=True)
    refresh_idle_ttl: Mapped[int] = mapped_column(Integer)
    refresh_absolute_ttl: Mapped[int] = mapped_column(Integer)  # 0 = never expires
    reuse_grace: Mapped[int] = mapped_column(Integer)
    # Device-binding policy (domain.binding.BindingPolicy).
    bind_device_id: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    bind_user_agent: Mapped[bool] = mapped_column(Boolean, default=True, server_default="1")
    bind_ip: Mapped[str] = mapped_column(String(8), default="off", server_default="off")
    require_device_id: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    on_binding_mismatch: Mapped[str] = mapped_column(String(8), default="revoke",
                                                     server_default="revoke")
    require_dpop: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # A resource server that may call the introspection endpoint (RFC 7662 §2.1).
    allow_introspection: Mapped[bool] = mapped_column(Boolean, default=False,
                                                      server_default="0")
    # OpenID Connect Back-Channel Logout 1.0 §2.2: where logout tokens are POSTed, and
    # whether the client needs ``sid`` in them.
    backchannel_logout_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    backchannel_logout_session_required: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="0")
    # The status-list entry of the client's own (client_credentials) access tokens.
    status_list: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status_idx: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]


class TokenFamily(Base):
    """One sign-in on one device: every refresh token descends from it (the ``sid``)."""

    __tablename__ = "token_families"

    id: Mapped[str] = mapped_column(String(43), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.client_id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(Text, default="")
    grant_type: Mapped[str] = mapped_column(String(64))
    auth_time: Mapped[Timestamp]
    created_at: Mapped[Timestamp]
    expires_at: Mapped[OptionalTimestamp]  # absolute expiry; None = never, only revoked
    revoked_at: Mapped[OptionalTimestamp]
    revoke_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The browser sign-in (login session) this family came from, for authorization codes.
    login_session_id: Mapped[str | None] = mapped_column(String(43), nullable=True, index=True)
    # The device the family was issued to (docs/design.md, "Device binding").
    device_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    ua_family: Mapped[str | None] = mapped_column(String(128), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    dpop_jkt: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The family's entry in a Token Status List (docs/design.md, "Revocation that reaches
    # APIs"): every access token of the family carries it. None for families older than it.
    status_list: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status_idx: Mapped[int | None] = mapped_column(Integer, nullable=True)

    __table_args__ = (Index("ix_token_families_device", "user_id", "client_id", "device_id"),)


class RefreshToken(Base):
    """One refresh token of a family. Only its SHA-256 digest is stored."""

    __tablename__ = "refresh_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    family_id: Mapped[str] = mapped_column(
        ForeignKey("token_families.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("refresh_tokens.id", ondelete="SET NULL"), nullable=True, index=True
    )
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[Timestamp]
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)  # where it was sent
    expires_at: Mapped[OptionalTimestamp]  # idle expiry capped by the family's; None = never
    rotated_at: Mapped[OptionalTimestamp]
    revoked_at: Mapped[OptionalTimestamp]
    revoke_reason: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The response given when this token was rotated, sealed under a key derived from the
    # token itself, kept only for the client's grace window (docs/design.md, "Rotation" 2).
    retry_response: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    retry_until: Mapped[OptionalTimestamp]

    __table_args__ = (Index("ix_refresh_tokens_retry_until", "retry_until"),)


class LoginSession(Base):
    """A user's signed-in browser (the cookie holds only this row's random id)."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(43), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    auth_time: Mapped[Timestamp]
    created_at: Mapped[Timestamp]
    ended_at: Mapped[OptionalTimestamp]
    user_agent: Mapped[str | None] = mapped_column(String(512), nullable=True)
    ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
    # Last use, recorded at most once a minute (NULL: not since created_at).
    last_seen_at: Mapped[OptionalTimestamp]


class Consent(Base):
    """Scopes a user has granted a client; asked again only for scopes outside this set."""

    __tablename__ = "consents"
    __table_args__ = (UniqueConstraint("user_id", "client_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    client_id: Mapped[str] = mapped_column(
        ForeignKey("clients.client_id", ondelete="CASCADE"), index=True
    )
    scope: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]


class AuthorizationCode(Base):
    """An authorization code (RFC 6749 §4.1.2): only its digest is stored; used once."""

    __tablename__ = "authorization_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_digest: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    login_session_id: Mapped[str | None] = mapped_column(String(43), nullable=True)
    redirect_uri: Mapped[str] = mapped_column(Text)
    redirect_uri_given: Mapped[bool] = mapped_column(Boolean, default=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    nonce: Mapped[str | None] = mapped_column(String(512), nullable=True)
    code_challenge: Mapped[str | None] = mapped_column(String(128), nullable=True)
    auth_time: Mapped[Timestamp]
    created_at: Mapped[Timestamp]
    expires_at: Mapped[Timestamp] = mapped_column(index=True)
    used_at: Mapped[OptionalTimestamp]
    # The family issued from this code, so that a replay can revoke it (§4.1.2).
    family_id: Mapped[str | None] = mapped_column(String(43), nullable=True)


class DPoPProofJti(Base):
    """Seen DPoP proof ``jti`` values (digests), kept for the proof's acceptance window."""

    __tablename__ = "dpop_proof_jtis"

    jti_digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[Timestamp] = mapped_column(index=True)


class AuditEvent(Base):
    """One security event. Never holds a token, secret or password."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[Timestamp] = mapped_column(index=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    client_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    family_id: Mapped[str | None] = mapped_column(String(43), nullable=True, index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class StatusList(Base):
    """One shard of the Token Status List (draft-ietf-oauth-status-list): a fixed number of
    entries, served at ``/oauth/status/<id>``. ``version`` changes with every entry that
    changes, so a server process knows when to rebuild the list it serves."""

    __tablename__ = "status_lists"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(Integer)  # entries (indices 0 .. size-1)
    allocated: Mapped[int] = mapped_column(Integer, default=0)  # entries handed out so far
    version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[Timestamp]
    updated_at: Mapped[Timestamp]


class TokenStatus(Base):
    """One entry of a status list, owned by a family or a client. ``status`` is the
    draft's value (0 VALID, 1 INVALID, 2 SUSPENDED). An entry outlives its owner until no
    token that carries it can still be valid (``free_after``); only then may the index be
    handed out again."""

    __tablename__ = "token_statuses"

    list_id: Mapped[int] = mapped_column(ForeignKey("status_lists.id"), primary_key=True,
                                         autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    status: Mapped[int] = mapped_column(Integer, default=0)
    owner_kind: Mapped[str] = mapped_column(String(8))  # "family" or "client"
    owner_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[Timestamp]
    changed_at: Mapped[OptionalTimestamp]
    free_after: Mapped[OptionalTimestamp]  # set when it ends: the last token's expiry

    __table_args__ = (Index("ix_token_statuses_list_status", "list_id", "status"),)


class LogoutMessage(Base):
    """A Back-Channel Logout token to deliver: the durable outbox, written in the
    revocation's own transaction and drained by the worker (at least once)."""

    __tablename__ = "logout_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    uri: Mapped[str] = mapped_column(Text)  # the backchannel_logout_uri when it was written
    subject: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sid: Mapped[str | None] = mapped_column(String(43), nullable=True)
    created_at: Mapped[Timestamp]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[Timestamp]
    locked_until: Mapped[OptionalTimestamp]  # a worker's claim
    locked_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    delivered_at: Mapped[OptionalTimestamp]
    failed_at: Mapped[OptionalTimestamp]  # gave up after the retry limit
    last_error: Mapped[str | None] = mapped_column(String(255), nullable=True)

    __table_args__ = (Index("ix_logout_outbox_pending", "delivered_at", "failed_at",
                            "next_attempt_at"),)


__all__ = [
    "AuditEvent",
    "AuthorizationCode",
    "Client",
    "Consent",
    "DPoPProofJti",
    "LoginSession",
    "LogoutMessage",
    "RefreshToken",
    "StatusList",
    "TokenFamily",
    "TokenStatus",
    "User",
]
