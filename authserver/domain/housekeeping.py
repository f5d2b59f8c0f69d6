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
- authorization codes expired for more than a day, browser sign-ins ended (signed out,
  or past their idle or absolute lifetime when ``browser_lifetime`` is given) longer ago
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
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import InstrumentedAttribute, Session, aliased

from ..storage.models import (
    AuditEvent,
    AuthorizationCode,
    Client,
    DPoPProofJti,
    LoginSession,
    LogoutMessage,
    RefreshToken,
    TokenFamily,
    TokenStatus,
)
from . import token_status
from .client_metadata import ACCESS_TTL_BOUNDS
from .clock import seconds, utcnow
from .sessions import BrowserLifetime

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


def dead_login_condition(cutoff: dt.datetime, lifetime: BrowserLifetime | None
                         ) -> ColumnElement[bool]:
    """A browser sign-in that ended before ``cutoff``: signed out, or (with ``lifetime``)
    idle or past its absolute lifetime then (``BrowserLifetime.ends_at`` before the
    cutoff; docs/design.md, "Hardening")."""
    ended = LoginSession.ended_at < cutoff
    if lifetime is None:
        return ended
    last_use = func.coalesce(LoginSession.last_seen_at, LoginSession.created_at)
    return or_(ended, and_(LoginSession.ended_at.is_(None), or_(
        LoginSession.created_at < cutoff - seconds(lifetime.absolute),
        last_use < cutoff - seconds(lifetime.idle))))


def purge(session: Session, *, retention_days: int = 30, batch_size: int = 1000,
          audit_retention_days: int = 0, now: dt.datetime | None = None,
          browser_lifetime: BrowserLifetime | None = None,
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
        session, RefreshToken.id, _dead_token(now, cutoff),
        batch_size, _deleter(session, RefreshToken.id), "refresh_tokens", after_batch)
    counts["authorization_codes"] = _walk(
        session, AuthorizationCode.id, _old_code(now),
        batch_size, _deleter(session, AuthorizationCode.id), "authorization_codes",
        after_batch)
    counts["login_sessions"] = _walk(
        session, LoginSession.id, dead_login_condition(cutoff, browser_lifetime), batch_size,
        _deleter(session, LoginSession.id), "login_sessions", after_batch)
    counts["dpop_proof_jtis"] = _walk(
        session, DPoPProofJti.jti_digest, DPoPProofJti.expires_at < now, batch_size,
        _deleter(session, DPoPProofJti.jti_digest), "dpop_proof_jtis", after_batch)

    def drop_responses(ids: list[Any]) -> int:
        return _rowcount(session.execute(
            update(RefreshToken).where(RefreshToken.id.in_(ids))
            .values(retry_response=None, retry_until=None)))

    counts["retry_responses"] = _walk(
        session, RefreshToken.id, _stale_response(now),
        batch_size, drop_responses, "retry_responses", after_batch)
    counts["logout_messages"] = _walk(
        session, LogoutMessage.id, _done_message(cutoff),
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


def _dead_token(now: dt.datetime, cutoff: dt.datetime,
                token: Any = RefreshToken) -> ColumnElement[bool]:
    """A single refresh token rotated, revoked or expired before the cutoff."""
    return and_(or_(token.rotated_at < cutoff, token.revoked_at < cutoff,
                    token.expires_at < cutoff),
                # Never a token inside its grace window: its retry must still be answered.
                or_(token.retry_until.is_(None), token.retry_until < now))


def _old_code(now: dt.datetime) -> ColumnElement[bool]:
    return AuthorizationCode.expires_at < now - seconds(86_400)


def _stale_response(now: dt.datetime, token: Any = RefreshToken) -> ColumnElement[bool]:
    return and_(token.retry_until.is_not(None), token.retry_until < now)


def _done_message(cutoff: dt.datetime) -> ColumnElement[bool]:
    return or_(LogoutMessage.delivered_at < cutoff, LogoutMessage.failed_at < cutoff)


def count_purgeable(session: Session, *, retention_days: int = 30,
                    audit_retention_days: int = 0, now: dt.datetime | None = None,
                    browser_lifetime: BrowserLifetime | None = None) -> dict[str, int]:
    """What :func:`purge` with these arguments would delete now, per kind, deleting
    nothing (``db purge --dry-run``): one count per kind, each as the purge's order leaves
    it (a token of a family the purge deletes is counted once, a retry response only on a
    token that stays, a status entry whose family the purge deletes as freed). A purge run
    later may find a little more: what died in between."""
    now = now or utcnow()
    cutoff = now - seconds(retention_days * 86_400)
    dead_family = dead_family_condition(now, retention_days)  # correlates RefreshToken
    token = aliased(RefreshToken)  # the tokens counted: never the condition's own
    in_dead_family = token.family_id.in_(select(TokenFamily.id).where(dead_family))
    deleted_token = _dead_token(now, cutoff, token)

    def count(table: Any, *conditions: ColumnElement[bool]) -> int:
        return int(session.scalar(select(func.count()).select_from(table)
                                  .where(*conditions)) or 0)

    family_gone = or_(~exists().where(TokenFamily.id == TokenStatus.owner_id),
                      exists().where(TokenFamily.id == TokenStatus.owner_id, dead_family))
    client_holds = exists().where(Client.client_id == TokenStatus.owner_id,
                                  Client.status_list == TokenStatus.list_id,
                                  Client.status_idx == TokenStatus.idx)
    counts = {
        "refresh_tokens": count(token, in_dead_family)
        + count(token, ~in_dead_family, deleted_token),
        "token_families": count(TokenFamily, dead_family),
        "authorization_codes": count(AuthorizationCode, _old_code(now)),
        "login_sessions": count(LoginSession, dead_login_condition(cutoff, browser_lifetime)),
        "dpop_proof_jtis": count(DPoPProofJti, DPoPProofJti.expires_at < now),
        # On the tokens that stay: not in a dead family, and not deleted themselves
        # (a NOT of the condition would drop the rows where it is NULL).
        "retry_responses": count(token, _stale_response(now, token), ~in_dead_family,
                                 token.id.not_in(select(RefreshToken.id).where(
                                     _dead_token(now, cutoff)))),
        "logout_messages": count(LogoutMessage, _done_message(cutoff)),
        "status_entries": count(
            TokenStatus, TokenStatus.free_after < now,
            or_(and_(TokenStatus.owner_kind == token_status.FAMILY, family_gone),
                and_(TokenStatus.owner_kind == token_status.CLIENT, ~client_holds))),
        "audit_events": count(
            AuditEvent, AuditEvent.created_at < now - seconds(audit_retention_days * 86_400))
        if audit_retention_days > 0 else 0,
    }
    session.rollback()  # a read: no transaction left open (on SQLite, no lock kept)
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
