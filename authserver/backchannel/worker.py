"""The Back-Channel Logout worker: claims due messages from the outbox, signs each as a
logout token, POSTs it and records the outcome (docs/design.md, "Revocation that reaches
APIs").

Every ``authserver serve`` process runs one in a thread (``AUTHSERVER_BACKCHANNEL_WORKER``,
on by default), and ``authserver worker`` runs one alone. Any number may run against one
database: a message is claimed by compare-and-set for a lease longer than a delivery can
take (:func:`authserver.domain.logout_outbox.claim`), so two workers never send the same
message at once. Up to ``concurrency`` deliveries run at a time, so a receiver that hangs
holds one slot for at most the timeout while the others go on.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from ..crypto.keystore import KeyStore, KeyStoreError
from ..domain import logout_outbox
from ..domain.clock import Clock, utcnow
from ..domain.logout_outbox import Message
from . import logout_token, sender

if TYPE_CHECKING:
    from flask import Flask

    from ..config import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # the longest a due message waits when no commit here woke the worker
CONCURRENCY = 4
DELIVERED, RETRY, GIVEN_UP, LOST = "delivered", "retry", "given_up", "lost"
EXTENSION = "authserver.logout_worker"  # app.extensions key of the in-process worker


def worker_name() -> str:
    """Who holds a claim (``locked_by``): host, process, and a random part for the
    workers of one process."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(3)}"


class LogoutWorker:
    """Delivers logout tokens from the outbox; ``run_once`` drains what is due now,
    ``start`` runs a daemon thread that keeps doing so."""

    def __init__(self, engine: Engine, settings: Settings, keys: KeyStore, *,
                 clock: Clock = utcnow, name: str | None = None,
                 concurrency: int = CONCURRENCY, poll: float = POLL_SECONDS) -> None:
        self.engine = engine
        self.settings = settings
        self.keys = keys
        self.clock = clock
        self.name = name or worker_name()
        self.concurrency = concurrency
        self.poll = poll
        # Development may reach any receiver over http; production only public https ones.
        self.policy = sender.Policy(
            timeout=float(settings.backchannel_timeout_seconds),
            https_only=settings.production,
            allow_private=settings.backchannel_allow_private or not settings.production,
        )
        # Longer than one delivery can take (its timeout, name resolution aside), so a
        # claim never runs out while its delivery is still going.
        self.lease = 2.0 * settings.backchannel_timeout_seconds + 60.0
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="authserver-logout")
        self._lock = threading.Lock()
        self._in_flight = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one message ------------------------------------------------------------------
    def deliver(self, message: Message) -> str:
        """Sign, send and record one claimed message; returns what became of it."""
        try:
            outcome = self._send(message)
            now = self.clock()
            if outcome.ok:
                done = logout_outbox.delivered(self.engine, message, self.name, now=now,
                                               status=outcome.status or 200)
                log.info("back-channel logout %s delivered to client %s (HTTP %s)",
                         message.id, message.client_id, outcome.status)
                return DELIVERED if done else LOST
            result = logout_outbox.failed(self.engine, message, self.name, now=now,
                                          error=outcome.error,
                                          max_attempts=self.settings.backchannel_max_attempts)
        except DBAPIError:
            # The claim runs out and the message is taken again: at least once.
            log.warning("back-channel logout %s: recording the outcome failed; it will be "
                        "retried when its claim runs out", message.id, exc_info=True)
            return LOST
        log.warning("back-channel logout %s to client %s failed (attempt %d): %s%s",
                    message.id, message.client_id, message.attempts + 1, outcome.error,
                    "; given up" if result == GIVEN_UP else "")
        return result or LOST

    def _send(self, message: Message) -> sender.Outcome:
        try:
            key = self.keys.active()
        except KeyStoreError as exc:
            return sender.Outcome(False, error=f"no signing key: {exc}"[:200])
        token = logout_token.sign(key, self.settings.issuer, message, self.clock())
        return sender.send(message.uri, token, self.policy)

    # -- draining ---------------------------------------------------------------------
    def claim(self, limit: int) -> list[Message]:
        return logout_outbox.claim(self.engine, self.name, now=self.clock(), lease=self.lease,
                                   limit=limit)

    def run_once(self) -> Counter[str]:
        """Deliver every message due now (``concurrency`` at a time); what became of
        them."""
        tally: Counter[str] = Counter()
        while True:
            batch = self.claim(self.concurrency)
            tally.update(self._pool.map(self.deliver, batch))
            if len(batch) < self.concurrency:
                return tally

    def start(self) -> None:
        """Run in a daemon thread until :meth:`stop`."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self.run_forever, daemon=True,
                                            name="authserver-logout-worker")
            self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming; wait up to ``timeout`` for the thread (deliveries under way
        finish on their own, each within the delivery timeout)."""
        self._stop.set()
        logout_outbox.wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def run_forever(self) -> None:
        """Claim into free slots whenever woken (a commit here that enqueued, a slot that
        freed) or every ``poll`` seconds, until :meth:`stop`."""
        while not self._stop.is_set():
            with self._lock:
                free = self.concurrency - self._in_flight
            if free > 0:
                try:
                    batch = self.claim(free)
                except Exception:  # the database is away, say: the thread must live on
                    log.warning("back-channel logout: claiming messages failed; retrying",
                                exc_info=True)
                    batch = []
                for message in batch:
                    with self._lock:
                        self._in_flight += 1
                    self._pool.submit(self._deliver_in_slot, message)
                if batch and len(batch) == free:
                    continue  # there may be more: claim again once a slot is free
            logout_outbox.wait_for_work(self.poll)

    def _deliver_in_slot(self, message: Message) -> None:
        try:
            self.deliver(message)
        except Exception:  # a bug must not take the slot with it
            log.exception("back-channel logout %s: delivery failed", message.id)
        finally:
            with self._lock:
                self._in_flight -= 1
            logout_outbox.wake()


def start_in_process(app: Flask) -> LogoutWorker:
    """The worker thread of one ``authserver serve`` process (its app's engine, keys and
    clock); started once per app."""
    from ..extensions import db

    worker: LogoutWorker | None = app.extensions.get(EXTENSION)
    if worker is None:
        svc = app.extensions["authserver"]
        with app.app_context():
            engine = db.engine
        worker = LogoutWorker(engine, svc.settings, svc.keys, clock=svc.clock)
        app.extensions[EXTENSION] = worker
    worker.start()
    return worker
