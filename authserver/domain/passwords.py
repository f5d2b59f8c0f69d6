"""Human passwords: argon2id (argon2-cffi's defaults follow RFC 9106's second recommendation).

One argon2id hash or verification costs ~0.2 s of CPU and 64 MiB, spread over four lanes
(threads). Anyone can make the server spend that by sending a wrong password, so hashing
is bounded per process (see :func:`_run`):

- It runs on one hashing thread per process, at a lower CPU priority than the threads
  that serve requests (Linux; argon2's lane threads inherit it). One hash at a time
  already keeps up to four cores busy; more at once would only split the same CPU, hold
  more request threads and more memory. Under a flood of sign-ins the CPU goes first to
  the requests that need little of it (a refresh needs a few milliseconds), and sign-ins
  take turns.
- A sign-in check waits for the hashing thread only if its turn should come within
  :data:`MAX_WAIT_SECONDS` (judged by how long the latest hash took); otherwise it is
  refused at once with :class:`Busy` and the caller answers 503 with ``Retry-After``.
  A waiting check holds a request thread: without this bound a flood of wrong passwords
  would occupy every thread of every worker, and the requests queued behind them, the
  refreshes among them, would wait for seconds. A bound in time rather than in number
  holds whatever the server's thread count: it admits about three checks at once with
  real argon2 on an idle machine, one under contention, and many when hashing is cheap.

Callers hold no database transaction while they hash (``users.check_sign_in``): on SQLite
a transaction holds the database's write lock.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id
_dummy: str | None = None

MIN_LENGTH = 8
MAX_LENGTH = 1024

# How long a sign-in check may expect to wait for the hashing thread before it starts.
MAX_WAIT_SECONDS = 0.25
# How much less CPU priority the hashing thread has than request threads (nice values:
# at +10 a runnable request thread gets ~9 times the CPU share of the hashing thread).
HASHING_NICENESS = 10

T = TypeVar("T")


class Busy(Exception):
    """A sign-in check would wait too long for its turn in this process; try again soon."""


_admission = threading.Lock()
_sign_in_checks = 0  # admitted and not yet finished, in this process
_hash_seconds = 0.0  # how long the latest hash took on the hashing thread (wall clock)
_executor: ThreadPoolExecutor | None = None
_executor_pid = 0
_executor_lock = threading.Lock()


def _lower_priority() -> None:
    """Make the calling thread (and the threads it starts) yield the CPU to request
    threads. Linux only: there the nice value is per thread, elsewhere per process."""
    if sys.platform.startswith("linux"):
        tid = threading.get_native_id()
        with contextlib.suppress(OSError):  # not permitted: hash at normal priority
            os.setpriority(os.PRIO_PROCESS, tid,
                           os.getpriority(os.PRIO_PROCESS, tid) + HASHING_NICENESS)


def _hashing_thread() -> ThreadPoolExecutor:
    """This process's hashing thread (a forked worker starts its own on first use)."""
    global _executor, _executor_pid
    with _executor_lock:
        if _executor is None or _executor_pid != os.getpid():
            _executor = ThreadPoolExecutor(1, thread_name_prefix="argon2",
                                           initializer=_lower_priority)
            _executor_pid = os.getpid()
        return _executor


def _timed(work: Callable[[], T]) -> T:
    global _hash_seconds
    started = time.monotonic()
    try:
        return work()
    finally:
        _hash_seconds = time.monotonic() - started


def _admit() -> None:
    global _sign_in_checks
    with _admission:
        if _sign_in_checks and _sign_in_checks * _hash_seconds > MAX_WAIT_SECONDS:
            raise Busy("too many password checks at once")
        _sign_in_checks += 1


def _leave() -> None:
    global _sign_in_checks
    with _admission:
        _sign_in_checks -= 1


def _run(work: Callable[[], T], *, sign_in: bool = False) -> T:
    """Run ``work`` (one argon2 computation) on the hashing thread and wait for it.

    A sign-in check (anyone may send one) is refused with :class:`Busy` when those
    already admitted would keep it waiting longer than :data:`MAX_WAIT_SECONDS`; other
    hashing (a signed-in user changing a password, the CLI) waits its turn.
    """
    if sign_in:
        _admit()
    try:
        return _hashing_thread().submit(_timed, work).result()
    finally:
        if sign_in:
            _leave()


def _dummy_hash() -> str:
    """Verified when the user does not exist, so that a missing user costs as long as a
    wrong password and user names cannot be probed by timing. Made on first use (hashing
    costs ~0.15 s, which every CLI command would otherwise pay at import)."""
    global _dummy
    if _dummy is None:
        _dummy = _run(lambda: _hasher.hash("not-a-real-password"))
    return _dummy


def warm_up() -> None:
    """Make the dummy hash now (a server process calls this before serving)."""
    _dummy_hash()


def hash_password(password: str) -> str:
    """A new argon2id hash (waits its turn on the hashing thread; never :class:`Busy`)."""
    return _run(lambda: _hasher.hash(password))


def _verify(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def verify_password(stored_hash: str | None, password: str, *, sign_in: bool = True) -> bool:
    """True when ``password`` matches; always spends one argon2 verification.

    With ``sign_in`` (the default: anyone may ask) this raises :class:`Busy` rather than
    wait longer than :data:`MAX_WAIT_SECONDS` for its turn.
    """
    checked = stored_hash or _dummy_hash()
    return _run(lambda: _verify(checked, password), sign_in=sign_in) and stored_hash is not None


def needs_rehash(stored_hash: str) -> bool:
    """The hash was made with other parameters than the server's (rehash at sign-in)."""
    try:
        return _hasher.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return False


def password_problem(password: str) -> str | None:
    """A reason the password is unacceptable, or None."""
    if len(password) < MIN_LENGTH:
        return f"password must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must be at most {MAX_LENGTH} characters"
    return None
