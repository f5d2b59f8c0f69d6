"""Purging what can never be used again, in small batches (``authserver db purge``).

Each batch is its own short transaction, so the token endpoint is never locked out for
long (on SQLite every write transaction holds the one write lock).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from ..storage.models import (
    AuthorizationCode,
    DPoPProofJti,
    LoginSession,
    RefreshToken,
    TokenFamily,
)
from .clock import seconds, utcnow


def _in_batches(session: Session, ids_query: Callable[[], object], delete_ids: Callable[
        [list], object], batch_size: int) -> int:
    total = 0
    while True:
        ids = list(session.scalars(ids_query().limit(batch_size)))  # type: ignore[attr-defined]
        if not ids:
            return total
        session.execute(delete_ids(ids))  # type: ignore[arg-type]
        session.commit()
        total += len(ids)


def purge(session: Session, *, retention_days: int = 30, batch_size: int = 1000,
          now: dt.datetime | None = None) -> dict[str, int]:
    """Delete dead families (revoked or expired more than ``retention_days`` ago) with their
    tokens, expired codes, ended browser sessions, old DPoP ``jti`` rows, and expired
    sealed retry responses. Returns counts per kind."""
    now = now or utcnow()
    cutoff = now - seconds(retention_days * 86_400)
    dead_family = or_(TokenFamily.revoked_at < cutoff, TokenFamily.expires_at < cutoff)
    counts = {}
    counts["refresh_tokens"] = _in_batches(
        session,
        lambda: select(RefreshToken.id).join(
            TokenFamily, TokenFamily.id == RefreshToken.family_id).where(dead_family),
        lambda ids: delete(RefreshToken).where(RefreshToken.id.in_(ids)),
        batch_size,
    )
    counts["token_families"] = _in_batches(
        session,
        lambda: select(TokenFamily.id).where(dead_family),
        lambda ids: delete(TokenFamily).where(TokenFamily.id.in_(ids)),
        batch_size,
    )
    counts["authorization_codes"] = _in_batches(
        session,
        lambda: select(AuthorizationCode.id).where(
            AuthorizationCode.expires_at < now - seconds(86_400)),
        lambda ids: delete(AuthorizationCode).where(AuthorizationCode.id.in_(ids)),
        batch_size,
    )
    counts["login_sessions"] = _in_batches(
        session,
        lambda: select(LoginSession.id).where(LoginSession.ended_at < cutoff),
        lambda ids: delete(LoginSession).where(LoginSession.id.in_(ids)),
        batch_size,
    )
    counts["dpop_proof_jtis"] = _in_batches(
        session,
        lambda: select(DPoPProofJti.jti_digest).where(DPoPProofJti.expires_at < now),
        lambda ids: delete(DPoPProofJti).where(DPoPProofJti.jti_digest.in_(ids)),
        batch_size,
    )
    result = session.execute(
        update(RefreshToken)
        .where(RefreshToken.retry_until.is_not(None), RefreshToken.retry_until < now)
        .values(retry_response=None, retry_until=None)
    )
    session.commit()
    counts["retry_responses"] = result.rowcount
    return counts
