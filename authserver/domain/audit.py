"""The audit trail: one row per security event. Callers never pass tokens or secrets."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from ..storage.models import AuditEvent
from .clock import utcnow

SIGN_IN_SUCCEEDED = "sign_in_succeeded"
SIGN_IN_FAILED = "sign_in_failed"
FAMILY_CREATED = "family_created"
ROTATION_RETRY = "rotation_retry"
REUSE_DETECTED = "refresh_token_reuse"
BINDING_MISMATCH = "binding_mismatch"
FAMILY_REVOKED = "family_revoked"
USER_CREATED = "user_created"
USER_DEACTIVATED = "user_deactivated"
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


def record(
    session: Session,
    event: str,
    *,
    user_id: int | None = None,
    client_id: str | None = None,
    family_id: str | None = None,
    now: dt.datetime | None = None,
    **detail: Any,
) -> None:
    """Add an event to the current transaction (the caller commits)."""
    session.execute(
        insert(AuditEvent).values(
            created_at=now or utcnow(),
            event=event,
            user_id=user_id,
            client_id=client_id,
            family_id=family_id,
            detail=detail,
        )
    )
