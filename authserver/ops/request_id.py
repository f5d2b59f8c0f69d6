"""The request id: one per request, in its log lines and echoed in ``X-Request-Id``
(docs/design.md, "Operations").

A request's ``X-Request-Id`` is kept only behind trusted proxies (``trusted_proxies`` > 0: the
proxy in front sets or vouches for it) and only when it is well formed (at most 128 of
``A-Z a-z 0-9 . _ : -``, so it can forge no log line); otherwise the server makes its own,
16 hex digits. The middleware wraps the whole app (outermost in ``create_app``), so every
answer carries the header: the public documents, the token fast path and Flask's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

HEADER = "X-Request-Id"
# Where the app's layers find it (the access log reads it after the app has answered).
ENVIRON_KEY = "authserver.request_id"
_WELL_FORMED = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# The id of the request this thread (context) is serving, for log lines; "" outside one.
current: ContextVar[str] = ContextVar("authserver_request_id", default="")


def new_id() -> str:
    """16 hex digits from the OS's random source (about 0.3 us)."""
    return os.urandom(8).hex()


def well_formed(value: str) -> bool:
    return _WELL_FORMED.fullmatch(value) is not None


class RequestIdMiddleware:
    """WSGI middleware: settles the request's id (``environ[ENVIRON_KEY]`` and
    :data:`current`) and adds ``X-Request-Id`` to the response."""

    def __init__(self, app: WSGIApp, trust_header: bool) -> None:
        self.app = app
        self.trust_header = trust_header

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        request_id = ""
        if self.trust_header:
            offered = environ.get("HTTP_X_REQUEST_ID")
            if offered and well_formed(offered):
                request_id = offered
        request_id = request_id or new_id()
        environ[ENVIRON_KEY] = request_id
        token = current.set(request_id)

        def echo(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append((HEADER, request_id))
            return start_response(status, headers, exc_info)

        try:
            return self.app(environ, echo)
        finally:
            current.reset(token)
