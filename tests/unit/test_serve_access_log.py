"""``authserver serve``'s access log middleware, in process."""

from __future__ import annotations

import contextlib
import os
import re

import pytest

from authserver.ops.access_log import AccessLog

LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} (\S+) "(.*)" (\d{3}) '
                  r'\d+\.\dms$')


def _app(status: str = "200 OK", raises: bool = False):
    def app(environ, start_response):
        environ["REMOTE_ADDR"] = environ.get("HTTP_X_FORWARDED_FOR", environ["REMOTE_ADDR"])
        if raises:
            raise RuntimeError("boom")
        start_response(status, [("Content-Type", "text/plain")])
        return [b"body"]
    return app


def _logged(app, **environ) -> list[tuple[str, str, str]]:
    read, write = os.pipe()
    try:
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
               "REMOTE_ADDR": "10.0.0.1", **environ}
        with contextlib.suppress(RuntimeError):
            AccessLog(app, write)(env, lambda *args: None)
        os.close(write)
        write = -1
        text = os.read(read, 65536).decode()
    finally:
        os.close(read)
        if write != -1:
            os.close(write)
    lines = text.splitlines()
    assert text.endswith("\n") and all(LINE.match(line) for line in lines), text
    return [LINE.match(line).groups() for line in lines]


def test_one_line_with_method_path_status_and_no_query_string():
    assert _logged(_app("400 BAD REQUEST"), REQUEST_METHOD="POST", PATH_INFO="/oauth/token",
                   QUERY_STRING="refresh_token=rt_secret&code=c0de") == [
        ("10.0.0.1", "POST /oauth/token", "400")]


def test_the_address_is_the_one_the_app_settled_on_behind_trusted_proxies():
    assert _logged(_app(), HTTP_X_FORWARDED_FOR="203.0.113.7")[0][0] == "203.0.113.7"


@pytest.mark.parametrize(("path", "logged"), [
    ("/oauth/token?refresh_token=rt_secret", "/oauth/token"),  # a percent-encoded '?'
    ('/a"b', '/a\\"b'),
    ("/a\nb\r\x1b[31m", "/a\\nb\\r\\x1b[31m"),
    ("/caf\xe9", "/caf\xe9"),
])
def test_paths_cannot_leak_a_query_or_forge_lines(path, logged):
    assert _logged(_app(), PATH_INFO=path)[0][1] == f"GET {logged}"


def test_an_app_that_raises_is_logged_as_500():
    assert _logged(_app(raises=True))[0][2] == "500"
