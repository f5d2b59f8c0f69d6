"""The Back-Channel Logout outbox (docs/design.md, "Revocation that reaches APIs").

Ending a family of a client that registered a ``backchannel_logout_uri`` adds one row here
in the revocation's own transaction (:func:`enqueue`, called by
``refresh_families.revoke_family``): a rolled-back revocation leaves no message, and a
committed one cannot lose its message. Nothing is sent on the request that caused it.

A worker (``authserver.backchannel.worker``) drains the table, each step its own short
transaction: :func:`claim` takes due rows by compare-and-set on ``locked_until`` (so two
workers, threads or processes, never hold the same message at once), then
:func:`delivered` or :func:`failed` (which reschedules with exponential backoff, or gives
up after the retry limit). Every outcome is audited. Delivery is at least once: a worker
that dies after sending but before :func:`delivered` leaves the row to be claimed again
when its lease has run out.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, func, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from ..storage import engine as storage_engine
from ..storage.models import Client, LogoutMessage, User
from . import audit
from .clock import seconds

MAX_BACKOFF = 3600  # seconds: the longest wait between two attempts
MAX_ERROR = 255  # characters of last_error kept

# Set when a transaction that enqueued a message commits, so this process's worker starts
# at once instead of at its next poll.
_work = threading.Event()
_listening = threading.Lock()
_INFO_KEY = "logout_outbox_enqueued"
_installed = False


@dataclass(frozen=True)
class Message:
    """A claimed message: what the worker needs to sign and send it."""

    id: int
    client_id: str
    uri: str
    subject: str | None
    sid: str | None
    attempts: int  # failed attempts so far
    created_at: dt.datetime


def _after_commit(session: Session) -> None:
    if session.info.pop(_INFO_KEY, False):
        _work.set()


def _install_wake_up() -> None:
    """Listen (once per process) for commits of sessions that enqueued a message."""
    global _installed
    with _listening:
        if not _installed:
            event.listen(Session, "after_commit", _after_commit)
            _installed = True


def enqueue(session: Session, *, family_id: str, client_id: str, user_id: int,
            now: dt.datetime) -> bool:
    """Add the logout message for an ended family if its client has a
    ``backchannel_logout_uri``; True if one was added. The message carries a snapshot of
    the URI, ``sid`` = the family id (the ID tokens' ``sid``) and the user's subject.
    Joins the caller's transaction; only called from the domain (``revoke_family``)."""
    row = session.execute(
        select(Client.backchannel_logout_uri, User.subject)
        .select_from(Client)
        .join(User, User.id == user_id)
        .where(Client.client_id == client_id)
    ).one_or_none()
    if row is None or not row.backchannel_logout_uri:
        return False
    session.add(LogoutMessage(
        client_id=client_id, uri=row.backchannel_logout_uri, subject=row.subject,
        sid=family_id, created_at=now, attempts=0, next_attempt_at=now,
    ))
    _install_wake_up()
    session.info[_INFO_KEY] = True
    return True


def wait_for_work(timeout: float) -> bool:
    """Block until a commit in this process enqueued a message, or ``timeout`` seconds;
    True if woken by one."""
    woken = _work.wait(timeout)
    _work.clear()
    return woken


def wake() -> None:
    """Wake this process's worker now (its stop, or a test)."""
    _work.set()


def _pending() -> ColumnElement[bool]:
    return LogoutMessage.delivered_at.is_(None) & LogoutMessage.failed_at.is_(None)


def _unlocked(now: dt.datetime) -> ColumnElement[bool]:
    return LogoutMessage.locked_until.is_(None) | (LogoutMessage.locked_until < now)


def claim(engine: Engine, worker: str, *, now: dt.datetime, lease: float,
          limit: int = 20) -> list[Message]:
    """Claim up to ``limit`` due messages for ``worker`` until ``now + lease``. Commits.

    Each is a compare-and-set (``UPDATE ... WHERE id = ? AND delivered_at IS NULL AND
    failed_at IS NULL AND (locked_until IS NULL OR locked_until < now)``): of two workers
    that saw the same candidate only one matches it. On PostgreSQL the candidates are read
    ``FOR UPDATE SKIP LOCKED``, so concurrent workers pick different rows without waiting;
    on SQLite the transaction holds the writer lock (``BEGIN IMMEDIATE``).
    """
    candidates = (select(LogoutMessage.id)
                  .where(_pending(), _unlocked(now), LogoutMessage.next_attempt_at <= now)
                  .order_by(LogoutMessage.next_attempt_at, LogoutMessage.id)
                  .limit(limit))
    claimed: list[Message] = []
    # Most polls find nothing: find that out without a write transaction (on SQLite, the
    # writer lock the token endpoint waits for).
    with storage_engine.autocommit(engine.connect()) as reader:
        if reader.execute(candidates.limit(1)).first() is None:
            return claimed
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        for message_id in connection.scalars(candidates).all():
            won = connection.execute(
                update(LogoutMessage)
                .where(LogoutMessage.id == message_id, _pending(), _unlocked(now))
                .values(locked_until=now + seconds(lease), locked_by=worker[:64])
            ).rowcount == 1
            if won:
                claimed.append(_message(connection.execute(
                    select(LogoutMessage.__table__).where(LogoutMessage.id == message_id)
                ).one()))
    return claimed


def _message(row: Any) -> Message:
    return Message(id=row.id, client_id=row.client_id, uri=row.uri, subject=row.subject,
                   sid=row.sid, attempts=row.attempts, created_at=row.created_at)


def delivered(engine: Engine, message: Message, worker: str, *, now: dt.datetime,
              status: int) -> bool:
    """Record a delivery (the receiver answered 200 or 204) and audit it; False if the
    message was already settled. Commits."""
    with engine.begin() as connection:
        done = connection.execute(
            update(LogoutMessage)
            .where(LogoutMessage.id == message.id, _pending())
            .values(delivered_at=now, locked_until=None, locked_by=worker[:64],
                    attempts=LogoutMessage.attempts + 1, last_error=None)
        ).rowcount == 1
        if done:
            audit.record(connection, audit.BACKCHANNEL_LOGOUT_DELIVERED,
                         client_id=message.client_id, family_id=message.sid, now=now,
                         message=message.id, attempts=message.attempts + 1, status=status,
                         uri=_shown(message.uri))
    return done


def _shown(uri: str) -> str:
    """The receiver as the audit trail shows it: without its query, which a client may
    have used for a credential of its own."""
    return uri.split("?", 1)[0][:200]


def backoff(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failures: ``2^attempts``, at most
    an hour, less up to a fifth at random so that messages failed together spread out."""
    return min(2.0 ** attempts, MAX_BACKOFF) * random.uniform(0.8, 1.0)


def failed(engine: Engine, message: Message, worker: str, *, now: dt.datetime, error: str,
           max_attempts: int) -> str | None:
    """Record a failed attempt: reschedule the message with backoff, or give it up after
    ``max_attempts``; audit it. Returns "retry", "given_up", or None when the claim was
    lost (the lease ran out and another worker holds it). Commits."""
    attempts = message.attempts + 1
    given_up = attempts >= max_attempts
    values: dict[str, Any] = {"attempts": attempts, "locked_until": None,
                              "last_error": error[:MAX_ERROR]}
    if given_up:
        values["failed_at"] = now
    else:
        values["next_attempt_at"] = now + seconds(backoff(attempts))
    with engine.begin() as connection:
        done = connection.execute(
            update(LogoutMessage)
            .where(LogoutMessage.id == message.id, LogoutMessage.locked_by == worker[:64],
                   _pending())
            .values(**values)
        ).rowcount == 1
        if not done:
            return None
        audit.record(connection,
                     audit.BACKCHANNEL_LOGOUT_GIVEN_UP if given_up
                     else audit.BACKCHANNEL_LOGOUT_FAILED,
                     client_id=message.client_id, family_id=message.sid, now=now,
                     message=message.id, attempts=attempts, error=error[:MAX_ERROR],
                     uri=_shown(message.uri),
                     **({} if given_up else
                        {"next_attempt_at": values["next_attempt_at"].isoformat()}))
    return "given_up" if given_up else "retry"


def counts(engine: Engine) -> dict[str, int]:
    """How many messages are pending, delivered and given up (for the worker's report).
    Read-only."""
    with engine.connect() as connection:
        rows = connection.execute(select(
            func.count().filter(_pending()),
            func.count().filter(LogoutMessage.delivered_at.is_not(None)),
            func.count().filter(LogoutMessage.failed_at.is_not(None)),
        ).select_from(LogoutMessage)).one()
    return {"pending": rows[0], "delivered": rows[1], "given_up": rows[2]}


def backlog(engine: Engine) -> int:
    """How many messages are neither delivered nor given up (the metrics' gauge): a count
    over the pending index, on a connection of its own. Read-only."""
    with storage_engine.autocommit(engine.connect()) as connection:
        return int(connection.execute(
            select(func.count()).select_from(LogoutMessage).where(_pending())).scalar_one())
