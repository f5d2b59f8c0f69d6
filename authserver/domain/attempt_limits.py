"""Brute-force limits: the policy, without storage or HTTP (docs/design.md, "Operations").

Per account (password sign-ins only): the first ``free`` wrong passwords for a user name
cost nothing; then each further attempt must wait a delay since the last failure, doubling
from one second up to ``max_delay``. An attempt inside the delay is refused before argon2
runs, the right password too (otherwise the delay would tell a guesser nothing). There is no
hard lock: once the delay has passed the right password signs in and clears the count.

The count is kept by user name, normalised, whether or not an account has that name (the
answers are the same either way), across every source address. A wrong password is counted
once it has been checked, a right one clears the count, and an attempt still being checked
counts for nothing: a person signing in from several devices at once is never refused for
it. Guesses sent at once can all pass one free slot, but no more of them than argon2 admits
at a time (``passwords``: a process sheds checks that would wait, 503), a handful per process.

Where the counts live is a :class:`AccountStore` (memory or Redis, ``protocol.attempt_store``);
per-address and global counts of failed checks are the protocol's (``protocol.rate_limits``,
the ``limits`` library). Refusals raise :class:`Limited`; the first refusal of a key in its
period is audited (:func:`record_refusal`), every one is an event.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import math
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from sqlalchemy.orm import Session

from . import audit, events

ACCOUNT = "account"
ADDRESS = "address"
GLOBAL = "global"
REGISTRATION = "registration"

T = TypeVar("T")


class Limited(Exception):
    """A check refused by a limit: wait ``retry_after`` seconds. ``first`` is set on the
    first refusal of this key in its period (the one that is audited)."""

    def __init__(self, scope: str, retry_after: float, *, first: bool) -> None:
        self.scope = scope
        self.retry_after = max(1, math.ceil(retry_after))
        self.first = first
        super().__init__(f"{scope} limit: retry in {self.retry_after} s")


class LimitsUnavailable(Exception):
    """The account counts could not be read or written (Redis down): the attempt can be
    neither admitted nor refused with confidence, so it is refused (503)."""


@dataclass(frozen=True)
class AccountState:
    """The wrong attempts of one user name: how many since the last success, when the last
    one was admitted (seconds since the epoch), and whether a refusal was already audited
    since then."""

    failures: int
    last_failure: float
    refused: bool = False


@dataclass(frozen=True)
class AccountPolicy:
    free: int = 5
    max_delay: int = 900

    def delay(self, failures: int) -> float:
        """Seconds the next attempt must wait after the last failure."""
        if failures < self.free:
            return 0.0
        exponent = failures - self.free
        return float(self.max_delay) if exponent >= 32 else float(
            min(self.max_delay, 2 ** exponent))

    @property
    def forget_after(self) -> int:
        """A count with no failure for this long is forgotten (at least a day, and at
        least twice the longest delay): a user who mistypes a month later starts afresh."""
        return max(86_400, 2 * self.max_delay)


def admit(state: AccountState | None, now: float, policy: AccountPolicy
          ) -> tuple[AccountState | None, float, bool]:
    """Decide an attempt: (the state to keep, seconds still to wait or 0 when admitted,
    whether this is the first refusal since the last failure). Admitting counts nothing:
    :func:`failed` does, once the password was found wrong."""
    if state is None:
        return None, 0.0, False
    delay = policy.delay(state.failures)
    # A clock of another instance running ahead cannot make the wait longer than the delay.
    wait = min(delay, state.last_failure + delay - now)
    if wait > 0:
        return dataclasses.replace(state, refused=True), wait, not state.refused
    return state, 0.0, False


def failed(state: AccountState | None, now: float) -> AccountState:
    """A wrong password for the name: one more failure, the delay counted from now."""
    return AccountState((state.failures if state else 0) + 1, now)


class AccountStore(Protocol):
    """Where the per-account counts live: shared by every instance (Redis) or per process.

    ``update`` applies ``change`` to the key's state atomically (no other update of the
    key in between) and returns its second value; a new state of None deletes the key,
    and a kept one expires ``ttl`` seconds after its last update. Raises
    :class:`LimitsUnavailable` when the store cannot be reached."""

    def update(self, key: str,
               change: Callable[[AccountState | None], tuple[AccountState | None, T]],
               ttl: int) -> T: ...


class SignInGuard(Protocol):
    """What a password check asks of the limits (``users.check_sign_in``): ``before`` the
    password is checked (raises :class:`Limited` or :class:`LimitsUnavailable`; admits and
    counts the attempt), then ``after`` with the outcome (None: it was not checked)."""

    def before(self, username: str) -> None: ...

    def after(self, username: str, succeeded: bool | None) -> None: ...


def normalise_username(username: str) -> str:
    """The form in which attempts are counted: NFKC, trimmed, case-folded (so "Alice" and
    "alice " share one count)."""
    return unicodedata.normalize("NFKC", username).strip().casefold()


def account_key(username: str, secret: bytes) -> str:
    """The store's key for a user name: a keyed digest, so the store holds no user names
    (people type their password into the user-name field)."""
    name = normalise_username(username).encode("utf-8", "surrogatepass")
    return hmac.new(secret, name, hashlib.sha256).hexdigest()[:40]


def record_refusal(session: Session, limited: Limited, *, endpoint: str,
                   user_id: int | None = None, client_id: str | None = None,
                   **detail: Any) -> None:
    """A refusal: published as an event every time (``events.RATE_LIMITED``: the metrics
    count it, the log says it), audited once per key and period (``limited.first``; the
    other refusals write nothing). ``detail``: the address, what was counted. Commits
    (when it audits)."""
    events.emit(events.RATE_LIMITED, scope=limited.scope, endpoint=endpoint)
    if not limited.first:
        return
    audit.record(session, audit.RATE_LIMITED, user_id=user_id, client_id=client_id,
                 scope=limited.scope, endpoint=endpoint, retry_after=limited.retry_after,
                 **detail)
    session.commit()
