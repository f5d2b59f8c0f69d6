"""Purging what can never be used again, in small batches (``authserver db purge``).

Each batch is its own short transaction (select a page of ids, delete them, commit), and
pages are walked in primary-key order from where the previous one ended, so the whole
purge reads each table once. On SQLite every write transaction holds the one write lock:
between batches the token endpoint gets it back, so a purge of millions of rows never
locks sign-ins and refreshes out for longer than one batch.

What is deleted (``retention_days`` keeps dead rows for support and forensics):

- sessions (families) revoked, expired, or idle (no refresh token valid) for longer than
  the retention, with all their refresh tokens;
- single refresh tokens of live sessions that were rotated, or expired, longer ago than
  the retention (a token rotated that long ago presented again is then refused as
  unknown rather than as reuse);
- authorization codes expired for more than a day, browser sign-ins ended longer ago
  than the retention, DPoP ``jti`` rows past their window, sealed retry responses past
  their grace window;
- back-channel logout messages delivered or given up longer ago than the retention;
- audit events older than ``audit_retention_days`` when that is set (0 keeps them all);
- status-list entries past their ``free_after`` whose owner is gone (the family row
  deleted, the client deleted or holding a new entry), so their indices can be handed out
  again; never one whose family row still exists (``token_status.free_entries``;
  docs/design.md, "Revocation that reaches APIs").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Result,
    Select,
    and_,
    delete,
    exists,
    or_,
    select,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session

from ..storage.models import (
    AuditEvent,
    AuthorizationCode,
    DPoPProofJti,
    LoginSession,
    LogoutMessage,
    RefreshToken,
    TokenFamily,
)
from . import token_status
from .client_metadata import ACCESS_TTL_BOUNDS
from .clock import seconds, utcnow

MAX_ACCESS_TTL = ACCESS_TTL_BOUNDS[1]

AfterBatch = Callable[[str, int], None]  # (kind, rows deleted in the batch)


def _no_hook(kind: str, count: int) -> None:
    return None


def _walk(session: Session, key: InstrumentedAttribute[Any], condition: ColumnElement[bool],
          batch_size: int, delete_batch: Callable[[list[Any]], int], kind: str,
          after_batch: AfterBatch) -> int:
    """Delete every row matching ``condition``, one page of keys per transaction."""
    total, last = 0, None
    while True:
        query: Select[Any] = select(key).where(condition)
        if last is not None:
            query = query.where(key > last)
        ids = list(session.scalars(query.order_by(key).limit(batch_size)))
        if not ids:
            session.commit()
            return total
        count = delete_batch(ids)
        session.commit()
        total += count
        last = ids[-1]
        after_batch(kind, count)


def dead_family_condition(now: dt.datetime, retention_days: int) -> ColumnElement[bool]:
    """A family nobody can use again, and not for ``retention_days`` already."""
    cutoff = now - seconds(retention_days * 86_400)
    # Its current refresh token was still valid at the cutoff (one probe of the family_id
    # index). Families without refresh tokens end with their access token (a day at most).
    token_valid_at_cutoff = exists().where(
        RefreshToken.family_id == TokenFamily.id,
        or_(RefreshToken.expires_at.is_(None), RefreshToken.expires_at >= cutoff),
        RefreshToken.rotated_at.is_(None))
    idle = and_(TokenFamily.revoked_at.is_(None),
                TokenFamily.created_at < cutoff - seconds(MAX_ACCESS_TTL),
                ~token_valid_at_cutoff)
    return or_(TokenFamily.revoked_at < cutoff, TokenFamily.expires_at < cutoff, idle)


def purge(session: Session, *, retention_days: int = 30, batch_size: int = 1000,
          audit_retention_days: int = 0, now: dt.datetime | None = None,
          after_batch: AfterBatch = _no_hook) -> dict[str, int]:
    """Delete what is dead (see the module docstring) and return counts per kind.

    ``after_batch`` is called after each committed batch (progress, and tests).
    """
    now = now or utcnow()
    cutoff = now - seconds(retention_days * 86_400)
    counts: dict[str, int] = {"refresh_tokens": 0}

    def delete_families(ids: list[Any]) -> int:
        counts["refresh_tokens"] += _rowcount(session.execute(
            delete(RefreshToken).where(RefreshToken.family_id.in_(ids))))
        return _rowcount(session.execute(delete(TokenFamily).where(TokenFamily.id.in_(ids))))

    counts["token_families"] = _walk(
        session, TokenFamily.id, dead_family_condition(now, retention_days), batch_size,
        delete_families, "token_families", after_batch)
    counts["refresh_tokens"] += _walk(
        session, RefreshToken.id,
        and_(or_(RefreshToken.rotated_at < cutoff, RefreshToken.revoked_at < cutoff,
                 RefreshToken.expires_at < cutoff),
             # Never a token inside its grace window: its retry must still be answered.
             or_(RefreshToken.retry_until.is_(None), RefreshToken.retry_until < now)),
        batch_size, _deleter(session, RefreshToken.id), "refresh_tokens", after_batch)
    counts["authorization_codes"] = _walk(
        session, AuthorizationCode.id, AuthorizationCode.expires_at < now - seconds(86_400),
        batch_size, _deleter(session, AuthorizationCode.id), "authorization_codes",
        after_batch)
    counts["login_sessions"] = _walk(
        session, LoginSession.id, LoginSession.ended_at < cutoff, batch_size,
        _deleter(session, LoginSession.id), "login_sessions", after_batch)
    counts["dpop_proof_jtis"] = _walk(
        session, DPoPProofJti.jti_digest, DPoPProofJti.expires_at < now, batch_size,
        _deleter(session, DPoPProofJti.jti_digest), "dpop_proof_jtis", after_batch)

    def drop_responses(ids: list[Any]) -> int:
        return _rowcount(session.execute(
            update(RefreshToken).where(RefreshToken.id.in_(ids))
            .values(retry_response=None, retry_until=None)))

    counts["retry_responses"] = _walk(
        session, RefreshToken.id,
        and_(RefreshToken.retry_until.is_not(None), RefreshToken.retry_until < now),
        batch_size, drop_responses, "retry_responses", after_batch)
    counts["logout_messages"] = _walk(
        session, LogoutMessage.id,
        or_(LogoutMessage.delivered_at < cutoff, LogoutMessage.failed_at < cutoff),
        batch_size, _deleter(session, LogoutMessage.id), "logout_messages", after_batch)
    counts["status_entries"] = token_status.free_entries(
        session, now=now, batch_size=batch_size, after_batch=after_batch)
    counts["audit_events"] = 0
    if audit_retention_days > 0:
        counts["audit_events"] = _walk(
            session, AuditEvent.id,
            AuditEvent.created_at < now - seconds(audit_retention_days * 86_400), batch_size,
            _deleter(session, AuditEvent.id), "audit_events", after_batch)
    return counts


def _deleter(session: Session, key: InstrumentedAttribute[Any]) -> Callable[[list[Any]], int]:
    table = key.class_

    def delete_batch(ids: list[Any]) -> int:
        return _rowcount(session.execute(delete(table).where(key.in_(ids))))

    return delete_batch


def _rowcount(result: Result[*tuple[Any, ...]]) -> int:
    """The rows a DELETE or UPDATE matched: ``Session.execute`` is typed to return a
    ``Result``, and for these statements it is a ``CursorResult``."""
    return cast(CursorResult[Any], result).rowcount
