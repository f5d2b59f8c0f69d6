"""Where the per-account sign-in counts live (``domain.attempt_limits.AccountStore``).

In memory (one process: each ``serve`` worker counts on its own), or in Redis when
``AUTHSERVER_REDIS_URL`` is set (every instance shares the counts under the key prefix
``authserver:limits:``). Redis's answers are never guessed at: an error raises
``LimitsUnavailable`` and the sign-in is refused with a 503 (docs/design.md, "Operations").
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from ..domain.attempt_limits import AccountState, LimitsUnavailable

T = TypeVar("T")
PREFIX = "authserver:limits:"


class MemoryAccountStore:
    """A bounded dict under a lock. The least recently updated entries go first when it is
    full (a flood of made-up user names cannot grow the process without bound)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, tuple[AccountState, float]] = OrderedDict()
        self._lock = threading.Lock()

    def update(self, key: str,
               change: Callable[[AccountState | None], tuple[AccountState | None, T]],
               ttl: int) -> T:
        now = time.monotonic()
        with self._lock:
            found = self._entries.get(key)
            state = found[0] if found is not None and found[1] > now else None
            new, result = change(state)
            if new is None:
                self._entries.pop(key, None)
            else:
                self._entries[key] = (new, now + ttl)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return result


class RedisAccountStore:
    """One Redis string per user-name digest, changed under ``WATCH``/``MULTI``: another
    instance's update in between makes the transaction fail, and it is retried."""

    RETRIES = 8

    def __init__(self, url: str, prefix: str = PREFIX + "account:",
                 timeout: float = 1.0) -> None:
        import redis

        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._watch_error: type[Exception] = redis.WatchError
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=timeout,
                                           socket_connect_timeout=timeout)

    def update(self, key: str,
               change: Callable[[AccountState | None], tuple[AccountState | None, T]],
               ttl: int) -> T:
        name = self.prefix + key
        try:
            with self.client.pipeline() as pipe:
                for _ in range(self.RETRIES):
                    try:
                        pipe.watch(name)
                        new, result = change(_decode(pipe.get(name)))
                        pipe.multi()
                        if new is None:
                            pipe.delete(name)
                        else:
                            pipe.set(name, _encode(new), ex=ttl)
                        pipe.execute()
                        return result
                    except self._watch_error:
                        continue
        except self._errors as exc:
            raise LimitsUnavailable(type(exc).__name__) from exc
        raise LimitsUnavailable("too many concurrent updates")


def _encode(state: AccountState) -> bytes:
    return json.dumps([state.failures, state.last_failure, state.refused]).encode()


def _decode(raw: Any) -> AccountState | None:
    if raw is None:
        return None
    try:
        failures, last, refused = json.loads(raw)
        return AccountState(int(failures), float(last), bool(refused))
    except (ValueError, TypeError):
        return None  # not ours, or from another version: start afresh
