"""Brute-force limits at the endpoints (docs/design.md, "Operations", "Brute-force limits").

- Per account: ``domain.attempt_limits`` (the progressive delay), counts in
  ``attempt_store`` (Redis or memory), asked by :class:`PasswordGuard` before argon2 runs.
- Per source address and for the whole server: failed password checks and failed
  client-secret checks, counted apart (a client's flood of wrong secrets does not stop
  people signing in), in moving windows of the ``limits`` library (``RedisStorage`` under
  ``authserver:limits:`` when ``AUTHSERVER_REDIS_URL`` is set, ``MemoryStorage`` per process
  otherwise). Over a limit, a password is refused before it is checked. A client secret is
  a digest compare, so it is always checked: a right one is never slowed and costs no
  storage round trip (the limits are asked only after a failure, and a key this process
  already knows to be over is refused without asking); a wrong one over the limit is a 429.
- Open registrations per source address (successful ones are counted).

Redis down: the address and global limits fail open (one log line a minute), the account
delay fails closed (503): it is the limit that protects one user's password.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import threading
import time
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error
from flask import has_request_context, request
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import MovingWindowRateLimiter

from ..config import Settings
from ..domain import attempt_limits
from ..domain.attempt_limits import (
    ACCOUNT,
    ADDRESS,
    GLOBAL,
    REGISTRATION,
    AccountPolicy,
    AccountStore,
    Limited,
)
from ..extensions import db
from ..services import services
from .attempt_store import PREFIX, MemoryAccountStore, RedisAccountStore

log = logging.getLogger(__name__)

PASSWORD = "password"  # noqa: S105 - what is counted, not a secret
CLIENT_SECRET = "client_secret"  # noqa: S105 - what is counted, not a secret
UNAVAILABLE_RETRY_AFTER = 5
_MAX_MEMO = 10_000
_LOG_EVERY = 60.0


class RateLimited(OAuth2Error):
    """RFC 6749 §5.2 ``temporarily_unavailable`` with 429 and ``Retry-After``."""

    error = "temporarily_unavailable"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(description=f"too many attempts; retry in {retry_after} s")
        self.retry_after = retry_after

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]


class SignInUnavailable(OAuth2Error):
    """503: the account counts cannot be asked (Redis down); nothing was checked."""

    error = "temporarily_unavailable"
    status_code = 503

    def __init__(self) -> None:
        super().__init__(description="sign-in limits unavailable; try again shortly")

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(UNAVAILABLE_RETRY_AFTER))]


def address_key(remote_addr: str | None) -> str:
    """The source address as counted: an IPv4 address, or the /64 of an IPv6 one (one
    host's allocation; counting single IPv6 addresses would count nothing)."""
    if not remote_addr:
        return "unknown"
    try:
        address = ipaddress.ip_address(remote_addr)
    except ValueError:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Limits:
    """The limits of one app (``services().limits``): settings, storages (made at first use,
    so an app that is never asked opens no connection and starts no thread), and what this
    process already knows to be over."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.ratelimit_enabled
        self.policy = AccountPolicy(settings.ratelimit_account_free,
                                    settings.ratelimit_account_max_delay)
        self.per_address: list[RateLimitItem] = parse_many(settings.ratelimit_per_address)
        self.everyone: list[RateLimitItem] = parse_many(settings.ratelimit_global)
        self.registrations: list[RateLimitItem] = parse_many(settings.ratelimit_registration)
        self.redis_url = settings.redis_url
        self.key_secret = hashlib.sha256(
            b"authserver brute-force limits\0" + settings.secret_key.encode()).digest()
        self._lock = threading.Lock()
        self._limiter: MovingWindowRateLimiter | None = None
        self._accounts: AccountStore | None = None
        self._redis_errors: tuple[type[Exception], ...] = ()
        if self.redis_url:
            import redis
            self._redis_errors = (redis.RedisError,)
        self._over: dict[str, float] = {}  # key -> until (time.time()): known to be over
        self._logged_at = 0.0

    # -- storages ----------------------------------------------------------------------
    @property
    def limiter(self) -> MovingWindowRateLimiter:
        if self._limiter is None:
            with self._lock:
                if self._limiter is None:
                    storage = RedisStorage(self.redis_url, key_prefix=PREFIX.rstrip(":"),
                                           socket_timeout=1, socket_connect_timeout=1) \
                        if self.redis_url else MemoryStorage()
                    self._limiter = MovingWindowRateLimiter(storage)
        return self._limiter

    @property
    def accounts(self) -> AccountStore:
        if self._accounts is None:
            with self._lock:
                if self._accounts is None:
                    self._accounts = RedisAccountStore(self.redis_url) if self.redis_url \
                        else MemoryAccountStore()
        return self._accounts

    def _failed_open(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            log.warning("brute-force limits: Redis unavailable (%s): the per-address and "
                        "global limits are not applied meanwhile", type(exc).__name__)

    # -- what this process knows to be over ------------------------------------------
    def _known_over(self, key: str, now: float) -> float:
        until = self._over.get(key)
        if until is None:
            return 0.0
        if until <= now:
            self._over.pop(key, None)
            return 0.0
        return until - now

    def _remember_over(self, key: str, until: float, now: float) -> bool:
        """Remember ``key`` is over until ``until``; True when this is news to every
        instance (the refusal to audit). Redis: ``SET NX`` shares the news."""
        if len(self._over) >= _MAX_MEMO:
            self._over = {k: v for k, v in self._over.items() if v > now}
            if len(self._over) >= _MAX_MEMO:
                self._over.clear()
        self._over[key] = until
        accounts = self.accounts
        if isinstance(accounts, RedisAccountStore):
            try:
                return bool(accounts.client.set(f"{PREFIX}refused:{key}", b"1", nx=True,
                                                ex=max(1, round(until - now))))
            except self._redis_errors:  # fail open: audited again, no harm
                return True
        return True

    def _scopes(self, counted: str, address: str) -> list[tuple[str, str, list[RateLimitItem]]]:
        return [(ADDRESS, f"{counted}/{ADDRESS}/{address}", self.per_address),
                (GLOBAL, f"{counted}/{GLOBAL}", self.everyone)]

    def _check(self, scope: str, key: str, items: list[RateLimitItem], *,
               hit: bool) -> Limited | None:
        """Whether ``key`` is over one of ``items`` (``hit``: count one failure first)."""
        now = time.time()
        remaining = self._known_over(key, now)
        if remaining:
            return Limited(scope, remaining, first=False)
        limiter = self.limiter
        try:
            for item in items:
                allowed = limiter.hit(item, key) if hit else limiter.test(item, key)
                if not allowed:
                    reset = limiter.get_window_stats(item, key).reset_time
                    until = max(reset, now + 1)
                    return Limited(scope, until - now,
                                   first=self._remember_over(key, until, now))
        except self._redis_errors as exc:
            self._failed_open(exc)
        return None

    # -- passwords ---------------------------------------------------------------------
    def check_passwords(self, address: str) -> None:
        """Before a password is checked: raise ``Limited`` when the address or the server
        is over its count of failed passwords."""
        for scope, key, items in self._scopes(PASSWORD, address):
            limited = self._check(scope, key, items, hit=False)
            if limited is not None:
                raise limited

    def password_failed(self, address: str) -> None:
        for scope, key, items in self._scopes(PASSWORD, address):
            self._check(scope, key, items, hit=True)

    def guard(self, remote_addr: str | None) -> PasswordGuard | None:
        """What ``users.check_sign_in`` asks for a request from ``remote_addr``."""
        return PasswordGuard(self, address_key(remote_addr)) if self.enabled else None

    # -- client secrets ----------------------------------------------------------------
    def secret_failed(self, address: str) -> Limited | None:
        """After a wrong client secret: the limit it takes the address or server over."""
        if not self.enabled:
            return None
        for scope, key, items in self._scopes(CLIENT_SECRET, address):
            limited = self._check(scope, key, items, hit=True)
            if limited is not None:
                return limited
        return None

    # -- open registration -------------------------------------------------------------
    def check_registration(self, address: str) -> Limited | None:
        if not self.enabled:
            return None
        return self._check(REGISTRATION, f"{REGISTRATION}/{address}", self.registrations,
                           hit=False)

    def registered(self, address: str) -> None:
        if self.enabled:
            self._check(REGISTRATION, f"{REGISTRATION}/{address}", self.registrations,
                        hit=True)


class PasswordGuard:
    """``attempt_limits.SignInGuard`` for one request: the address and global counts of
    failed passwords, and the account's delay (the app's clock, so tests can step it)."""

    def __init__(self, limits: Limits, address: str) -> None:
        self.limits = limits
        self.address = address

    def _key(self, username: str) -> str:
        return attempt_limits.account_key(username, self.limits.key_secret)

    def before(self, username: str) -> None:
        self.limits.check_passwords(self.address)
        now = services().clock().timestamp()
        policy = self.limits.policy

        def change(state: attempt_limits.AccountState | None
                   ) -> tuple[attempt_limits.AccountState | None, tuple[float, bool]]:
            new, wait, first = attempt_limits.admit(state, now, policy)
            return new, (wait, first)

        wait, first = self.limits.accounts.update(self._key(username), change,
                                                  policy.forget_after)
        if wait > 0:
            raise Limited(ACCOUNT, wait, first=first)

    def after(self, username: str, succeeded: bool | None) -> None:
        if succeeded is None:
            return  # not checked (the process was too busy): it counts for nothing
        if succeeded:
            change: Any = lambda state: (None, None)  # noqa: E731
        else:
            self.limits.password_failed(self.address)
            now = services().clock().timestamp()
            change = lambda state: (attempt_limits.failed(state, now), None)  # noqa: E731
        try:
            self.limits.accounts.update(self._key(username), change,
                                        self.limits.policy.forget_after)
        except attempt_limits.LimitsUnavailable as exc:
            # The answer stands (signed in, or a wrong password); the count could not move.
            log.warning("brute-force limits: could not update an account's count (%s)", exc)


# -- the endpoints' side ---------------------------------------------------------------
def guard() -> PasswordGuard | None:
    """The password guard for the current request."""
    return services().limits.guard(request.remote_addr)


def secret_failed() -> None:
    """A client secret (or a client named with one) failed at the current request: raise
    :class:`RateLimited` when that takes its address or the server over the limit.

    Outside a request context this is the token endpoint's fast path, whose refusals go on
    to the Flask view, which authenticates again and counts the failure there (once)."""
    if not has_request_context():
        return
    limited = services().limits.secret_failed(address_key(request.remote_addr))
    if limited is not None:
        attempt_limits.record_refusal(db.session(), limited, endpoint=request.path,
                                      counted=CLIENT_SECRET, ip=request.remote_addr)
        raise RateLimited(limited.retry_after)
