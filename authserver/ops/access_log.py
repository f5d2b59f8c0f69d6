"""The access log: one line per request (docs/design.md, "Operations")."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any


class AccessLog:
    """WSGI middleware: one line per request on stdout, written with one ``write(2)``::

        2026-12-02T17:12:33.001+0000 127.0.0.1 "POST /oauth/token" 400 2.9ms

    Time, client address (after the app's trusted-proxy handling), method, path, status,
    time in the app. Never the query string, headers or body, which may carry a code, a
    token or a password: the path is cut at a ``?`` (one that came percent-encoded), and
    control characters and quotes in it are escaped so that a request cannot forge lines.
    About 3 us of CPU a request, an eighth of what a line through ``logging`` costs.
    """

    def __init__(self, app: Any, fd: int = 1) -> None:
        self.app = app
        self.fd = fd
        self._clock: tuple[int, str, str] = (-1, "", "")  # second, its local time, zone

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
            self._write(environ, status, time.perf_counter() - started)

    def _write(self, environ: dict[str, Any], status: str, seconds: float) -> None:
        now = time.time()
        clock = self._clock
        if int(now) != clock[0]:
            local = time.localtime(now)
            clock = (int(now), time.strftime("%Y-%m-%dT%H:%M:%S", local),
                     time.strftime("%z", local))
            self._clock = clock
        path = environ.get("PATH_INFO", "")
        if "?" in path or '"' in path or not path.isprintable():
            path = (path.split("?", 1)[0].encode("unicode_escape").decode("ascii")
                    .replace('"', '\\"'))
        line = (f"{clock[1]}.{int((now - clock[0]) * 1000):03d}{clock[2]} "
                f"{environ.get('REMOTE_ADDR') or '-'} "
                f'"{environ.get("REQUEST_METHOD", "-")} {path}" {status} '
                f"{seconds * 1000:.1f}ms\n")
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode("utf-8", "backslashreplace"))
