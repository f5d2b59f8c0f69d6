"""The audit trail: one row per security event. Callers never pass tokens or secrets."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import insert
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from ..storage.models import AuditEvent
from . import events
from .clock import utcnow

SIGN_IN_SUCCEEDED = "sign_in_succeeded"
SIGN_IN_FAILED = "sign_in_failed"
FAMILY_CREATED = "family_created"
ROTATION_RETRY = "rotation_retry"
REUSE_DETECTED = "refresh_token_reuse"
BINDING_MISMATCH = "binding_mismatch"
FAMILY_BOUND_TO_DPOP_KEY = "family_bound_to_dpop_key"
FAMILY_REVOKED = "family_revoked"
USER_CREATED = "user_created"
USER_DEACTIVATED = "user_deactivated"
# User administration (domain.user_admin): the user the row names is the one changed; who
# changed it is in the detail's ``by``.
USER_UPDATED = "user_updated"
USER_REACTIVATED = "user_reactivated"
USER_DELETED = "user_deleted"
USER_SIGNED_OUT = "user_signed_out"
CONSENT_REVOKED = "consent_revoked"
PASSWORD_CHANGED = "password_changed"
PASSWORD_RESET = "password_reset"
ADMIN_GRANTED = "admin_granted"
ADMIN_REVOKED = "admin_revoked"
CLIENT_CREATED = "client_created"
CLIENT_UPDATED = "client_updated"
CLIENT_SECRET_ROTATED = "client_secret_rotated"
CLIENT_DISABLED = "client_disabled"
CLIENT_ENABLED = "client_enabled"
CLIENT_DELETED = "client_deleted"
BROWSER_SIGNED_OUT = "browser_signed_out"
CODE_REPLAYED = "authorization_code_replay"  # written by domain.codes
# Back-Channel Logout deliveries (domain.logout_outbox): sent, an attempt failed, given up.
BACKCHANNEL_LOGOUT_DELIVERED = "backchannel_logout_delivered"
BACKCHANNEL_LOGOUT_FAILED = "backchannel_logout_failed"
BACKCHANNEL_LOGOUT_GIVEN_UP = "backchannel_logout_given_up"
# A brute-force limit started refusing a key (an account, an address, the whole server):
# once per key and period; every refusal is an event (events.RATE_LIMITED) instead.
RATE_LIMITED = "rate_limit_reached"

# Every event type, for ``authserver audit list --event`` and the admin filter.
EVENTS = (
    SIGN_IN_SUCCEEDED, SIGN_IN_FAILED, FAMILY_CREATED, ROTATION_RETRY, REUSE_DETECTED,
    BINDING_MISMATCH, FAMILY_BOUND_TO_DPOP_KEY, FAMILY_REVOKED, BROWSER_SIGNED_OUT,
    CODE_REPLAYED, USER_CREATED, USER_DEACTIVATED, PASSWORD_CHANGED, PASSWORD_RESET,
    ADMIN_GRANTED, ADMIN_REVOKED, USER_UPDATED, USER_REACTIVATED, USER_DELETED,
    USER_SIGNED_OUT, CONSENT_REVOKED,
    CLIENT_CREATED, CLIENT_UPDATED, CLIENT_SECRET_ROTATED, CLIENT_DISABLED, CLIENT_ENABLED,
    CLIENT_DELETED, BACKCHANNEL_LOGOUT_DELIVERED, BACKCHANNEL_LOGOUT_FAILED,
    BACKCHANNEL_LOGOUT_GIVEN_UP, RATE_LIMITED,
)


# Defence in depth: a credential-shaped string never reaches the table, even if a caller
# slips. Refresh tokens, registration tokens and JWTs (access, ID, DPoP proofs).
_CREDENTIAL = re.compile(r"(?:rt_|reg_)[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _CREDENTIAL.sub("[redacted]", value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def by_detail(by: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``by`` detail of an event done on someone's behalf (none when nobody is named),
    for ``record(..., **by_detail(by))``."""
    return {"by": dict(by)} if by else {}


def record(
    session: Session | Connection,
    event: str,
    *,
    user_id: int | None = None,
    client_id: str | None = None,
    family_id: str | None = None,
    now: dt.datetime | None = None,
    **detail: Any,
) -> None:
    """Add an event to the current transaction. ``session`` may be a Connection in a
    transaction of its own (the refresh claim binding a family's key). Joins the caller's
    transaction; only called from the domain."""
    scrubbed = _scrub(detail)
    session.execute(
        insert(AuditEvent).values(
            created_at=now or utcnow(),
            event=event,
            user_id=user_id,
            client_id=client_id,
            family_id=family_id,
            detail=scrubbed,
        )
    )
    events.emit(event, user_id=user_id, client_id=client_id, family_id=family_id, **scrubbed)
