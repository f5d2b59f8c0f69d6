"""The access log: one line per request (docs/design.md, "Operations")."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import time
from typing import Any

from .request_id import ENVIRON_KEY as REQUEST_ID_KEY

# Where the app notes the client a request came from once it knows it (an authenticated
# client at the token, revocation and introspection endpoints, the client of an access token
# at UserInfo, the client an authorization request names): ``environ[CLIENT_ID_KEY]``.
CLIENT_ID_KEY = "authserver.client_id"
# Polled every few seconds by load balancers and orchestrators: logged at DEBUG only.
QUIET_PATHS = frozenset({"/healthz", "/readyz"})
# A client id (RFC 6749: any printable ASCII) written as is; any other is quoted.
_PLAIN = re.compile(r"[A-Za-z0-9._~:@+/=-]{1,64}")


@functools.lru_cache(maxsize=4096)
def _json(value: str) -> str:
    """``value`` as a JSON string (remembered: the same few paths and ids come back)."""
    return f'"{value}"' if _PLAIN.fullmatch(value) else json.dumps(value)


@functools.lru_cache(maxsize=1024)
def _text_client(client_id: str) -> str:
    return client_id if _PLAIN.fullmatch(client_id) else json.dumps(client_id)


def note_client(environ: dict[str, Any], client_id: str) -> None:
    """Tell the access log which client this request is from."""
    environ[CLIENT_ID_KEY] = client_id


class AccessLog:
    """WSGI middleware: one line per request on stdout, written with one ``write(2)``::

        2026-12-02T17:12:33.001+0000 127.0.0.1 "POST /oauth/token" 400 2.9ms client_id=cl_x
        request_id=4bf9c2e07d1a8e35

    (on one line), or, with ``json``, one object a line::

        {"time": "2026-12-02T17:12:33.001+0000", "level": "INFO", "logger": "authserver.access",
         "message": "POST /oauth/token 400", "client_addr": "127.0.0.1", "method": "POST",
         "path": "/oauth/token", "status": 400, "duration_ms": 2.9, "client_id": "cl_x",
         "request_id": "4bf9c2e07d1a8e35"}

    Time, client address (after the app's trusted-proxy handling), method, path, status,
    time in the app, the client when the app learned it (``-``/null otherwise), the request
    id. Never the query string, headers or body, which may carry a code, a token or a
    password: the path is cut at a ``?`` (one that came percent-encoded), and control
    characters and quotes in it are escaped so that a request cannot forge lines.
    ``/healthz`` and ``/readyz`` are logged only when ``quiet_too`` (the DEBUG level).
    About 3 us of CPU a request (4 us as JSON), an eighth of a line through ``logging``.
    """

    def __init__(self, app: Any, fd: int = 1, *, json: bool = False,
                 quiet_too: bool = False) -> None:
        self.app = app
        self.fd = fd
        self.json = json
        self.quiet_paths = frozenset() if quiet_too else QUIET_PATHS
        self._clock: tuple[int, str, str] = (-1, "", "")  # second, its local time, zone

    @classmethod
    def for_app(cls, app: Any, fd: int = 1) -> AccessLog:
        """The access log of an authserver app, in the form and level its settings say."""
        settings = app.extensions["authserver"].settings
        return cls(app, fd, json=settings.log_json,
                   quiet_too=settings.log_level.upper() == "DEBUG")

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        started = time.perf_counter()
        status = "500"

        def record(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = status_line[:3]
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, record)
        finally:
            if environ.get("PATH_INFO") not in self.quiet_paths:
                self._write(environ, status, time.perf_counter() - started)

    def _write(self, environ: dict[str, Any], status: str, seconds: float) -> None:
        now = time.time()
        clock = self._clock
        if int(now) != clock[0]:
            local = time.localtime(now)
            clock = (int(now), time.strftime("%Y-%m-%dT%H:%M:%S", local),
                     time.strftime("%z", local))
            self._clock = clock
        stamp = f"{clock[1]}.{int((now - clock[0]) * 1000):03d}{clock[2]}"
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "-")
        address = environ.get("REMOTE_ADDR") or "-"
        client_id = environ.get(CLIENT_ID_KEY)
        request_id = environ.get(REQUEST_ID_KEY) or "-"
        if self.json:
            cut = path.split("?", 1)[0] if "?" in path else path
            method_json, path_json = _json(method), _json(cut)
            if len(method_json) == len(method) + 2 and len(path_json) == len(cut) + 2:
                message = f'"{method} {cut} {status}"'  # neither needed an escape
            else:
                message = json.dumps(f"{method} {cut} {status}")
            line = (f'{{"time": "{stamp}", "level": "INFO", "logger": "authserver.access", '
                    f'"message": {message}, "client_addr": {_json(address)}, '
                    f'"method": {method_json}, "path": {path_json}, "status": {status}, '
                    f'"duration_ms": {seconds * 1000:.1f}, '
                    f'"client_id": {"null" if client_id is None else _json(client_id)}, '
                    f'"request_id": {_json(request_id)}}}\n')
        else:
            if "?" in path or '"' in path or not path.isprintable():
                path = (path.split("?", 1)[0].encode("unicode_escape").decode("ascii")
                        .replace('"', '\\"'))
            client_id = "-" if client_id is None else _text_client(client_id)
            line = (f'{stamp} {address} "{method} {path}" {status} {seconds * 1000:.1f}ms '
                    f"client_id={client_id} request_id={request_id}\n")
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode("utf-8", "backslashreplace"))
