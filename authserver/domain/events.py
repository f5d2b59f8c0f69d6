"""Security and operational events as they happen, for logs and metrics.

The audit trail (:mod:`.audit`) is the record; this is the live feed beside it. Every
``audit.record`` is published here too, and the hot paths that write no audit row (a
rotation, a token request, a refused DPoP proof, a rate limit, a key changing state)
publish their own events (docs/design.md, "Operations"). Listeners are the log and the
metrics (``authserver.ops``); the domain never knows who listens.

An event is a name and a few fields (ids, counts, causes, error codes): never a token, a
code, a secret or a password. A listener that fails is logged and skipped: an event never
breaks the request that published it. An event is published when it happens, so one whose
transaction then fails (a lock timeout answered 503) is still seen: it says what was tried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

# Events that are not audit rows (those are named in .audit).
TOKEN_REQUEST = "token_request"  # noqa: S105 - an event name; grant_type, outcome ("ok" or the RFC 6749 error code)
REFRESH_ROTATED = "refresh_rotated"  # client_id, family_id
DPOP_FAILED = "dpop_failed"  # client_id, error (what was wrong with the proof)
RATE_LIMITED = "rate_limited"  # scope ("account", "address", "global", "registration", ...)
KEY_ACTIVATED = "key_activated"  # kid, alg
KEY_RETIRED = "key_retired"  # kid
KEYS_UNAVAILABLE = "keys_unavailable"  # detail: why the keys directory could not be read
DATABASE_ERROR = "database_error"  # error: the exception's class name

Listener = Callable[[str, Mapping[str, Any]], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> None:
    """Call ``listener(event, fields)`` for every event from now on (once per listener)."""
    if listener not in _listeners:
        _listeners.append(listener)


def unsubscribe(listener: Listener) -> None:
    if listener in _listeners:
        _listeners.remove(listener)


def emit(event: str, **fields: Any) -> None:
    """Publish ``event`` to every listener. Never raises."""
    for listener in tuple(_listeners):
        try:
            listener(event, fields)
        except Exception:
            log.exception("events: a listener failed on %s", event)
