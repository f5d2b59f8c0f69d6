"""``authserver serve``'s access log middleware, in process: the text line and the JSON
object, what they may and may not carry, and their cost."""

from __future__ import annotations

import contextlib
import json
import os
import re
import time

import pytest

from authserver.ops.access_log import CLIENT_ID_KEY, AccessLog
from authserver.ops.request_id import ENVIRON_KEY as REQUEST_ID_KEY

LINE = re.compile(r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4} (\S+) "(.*)" (\d{3}) '
                  r'\d+\.\dms client_id=("(?:[^"\\]|\\.)*"|\S+) request_id=(\S+)$')


def _app(status: str = "200 OK", raises: bool = False, client_id: str | None = None):
    def app(environ, start_response):
        environ["REMOTE_ADDR"] = environ.get("HTTP_X_FORWARDED_FOR", environ["REMOTE_ADDR"])
        if client_id is not None:
            environ[CLIENT_ID_KEY] = client_id
        if raises:
            raise RuntimeError("boom")
        start_response(status, [("Content-Type", "text/plain")])
        return [b"body"]
    return app


def _written(app, json_form: bool = False, quiet_too: bool = False, **environ) -> str:
    read, write = os.pipe()
    try:
        env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "",
               "REMOTE_ADDR": "10.0.0.1", REQUEST_ID_KEY: "rid-1", **environ}
        with contextlib.suppress(RuntimeError):
            AccessLog(app, write, json=json_form, quiet_too=quiet_too)(env, lambda *a: None)
        os.close(write)
        write = -1
        return os.read(read, 65536).decode()
    finally:
        os.close(read)
        if write != -1:
            os.close(write)


def _logged(app, **environ) -> list[tuple[str, ...]]:
    text = _written(app, **environ)
    lines = text.splitlines()
    assert text.endswith("\n") and all(LINE.match(line) for line in lines), text
    return [LINE.match(line).groups() for line in lines]


def _objects(app, **environ) -> list[dict]:
    text = _written(app, json_form=True, **environ)
    assert text.endswith("\n"), text
    return [json.loads(line) for line in text.splitlines()]


def test_one_line_with_method_path_status_client_request_id_and_no_query_string():
    assert _logged(_app("400 BAD REQUEST", client_id="cl_abc"), REQUEST_METHOD="POST",
                   PATH_INFO="/oauth/token",
                   QUERY_STRING="refresh_token=rt_secret&code=c0de") == [
        ("10.0.0.1", "POST /oauth/token", "400", "cl_abc", "rid-1")]


def test_no_client_is_a_dash_and_an_odd_client_id_is_quoted():
    assert _logged(_app())[0][3] == "-"
    assert _logged(_app(client_id='a b"c'))[0][3] == '"a b\\"c"'


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


def test_json_form_is_one_object_with_every_field():
    [line] = _objects(_app("201 CREATED", client_id="cl_abc"), REQUEST_METHOD="POST",
                      PATH_INFO="/oauth/register", QUERY_STRING="code=c0de")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d{4}", line.pop("time"))
    assert isinstance(line.pop("duration_ms"), float)
    assert line == {"level": "INFO", "logger": "authserver.access",
                    "message": "POST /oauth/register 201", "client_addr": "10.0.0.1",
                    "method": "POST", "path": "/oauth/register", "status": 201,
                    "client_id": "cl_abc", "request_id": "rid-1"}
    assert _objects(_app())[0]["client_id"] is None


@pytest.mark.parametrize("path", [
    "/oauth/token?refresh_token=rt_secret", '/a"b\\c', "/a\nb\r\x1b[31m\u2028", "/caf\xe9",
    "/\x00", '/"}, {"status": 200',
])
def test_json_paths_stay_one_valid_object_without_the_query(path):
    [line] = _objects(_app(client_id='x"\n'), PATH_INFO=path)
    assert line["path"] == path.split("?", 1)[0] and line["client_id"] == 'x"\n'
    assert "rt_secret" not in json.dumps(line)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_checks_are_logged_only_at_debug(path):
    assert _written(_app(), PATH_INFO=path) == ""
    assert _written(_app(), json_form=True, PATH_INFO=path) == ""
    assert _logged(_app(), quiet_too=True, PATH_INFO=path)[0][1] == f"GET {path}"


@pytest.mark.parametrize("json_form", [False, True])
def test_a_line_costs_a_few_microseconds(json_form):
    """The figure the docs give (docs/operators.md, "Logs"): a line with its write(2) (to
    /dev/null), over many requests (best of 3 rounds)."""
    null = os.open(os.devnull, os.O_WRONLY)
    log = AccessLog(_app(client_id="cl_abc"), null, json=json_form)
    env = {"REQUEST_METHOD": "POST", "PATH_INFO": "/oauth/token", "REMOTE_ADDR": "10.0.0.1",
           CLIENT_ID_KEY: "cl_abc", REQUEST_ID_KEY: "4bf9c2e07d1a8e35"}
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(2000):
            log._write(env, "200", 0.0012)
        rounds.append((time.perf_counter() - started) / 2000)
    os.close(null)
    # About 3 us (text) and 4 us (JSON) on an idle core; generous for a loaded machine.
    assert min(rounds) < 30e-6, rounds
