"""``authserver serve`` under abuse and failure, against real server processes.

Idle and trickling sockets, the header timeout, a worker killed with SIGKILL, SIGTERM with
a request in flight, two instances on one host, and an access log without secrets.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.support import live_server
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.xdist_group("live")

PROMPT = 1.0  # seconds a legitimate request may take while the server is under abuse


def _sqlite(workdir: Path) -> str:
    return f"sqlite:///{workdir / 'authserver.sqlite3'}"


@contextlib.contextmanager
def _serving(workdir: Path, **kwargs) -> Iterator[live_server.LiveServer]:
    srv = live_server.start(workdir, _sqlite(workdir), **kwargs)
    try:
        yield srv
    finally:
        srv.stop()


@contextlib.contextmanager
def _sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    try:
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _connect(server: live_server.LiveServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server has closed ``sock`` (EOF or reset); never blocks."""
    sock.setblocking(False)
    try:
        return sock.recv(1024) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def _timed(call) -> tuple[float, requests.Response]:
    started = time.monotonic()
    response = call()
    return time.monotonic() - started, response


def _bad_refresh(server: live_server.LiveServer, client_id: str) -> requests.Response:
    return requests.post(f"{server.url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": "rt_not-a-real-token",
        "client_id": client_id}, timeout=5)


def _jwks(server: live_server.LiveServer) -> requests.Response:
    return requests.get(f"{server.url}/.well-known/jwks.json", timeout=5)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[live_server.LiveServer]:
    with _serving(tmp_path_factory.mktemp("serve")) as srv:
        srv.cli("users", "create", "alice", "--password-stdin", input=PASSWORD + "\n")
        yield srv


@pytest.fixture(scope="module")
def public_client(server) -> str:
    return server.create_client("--name", "Phone", "--public", "--first-party",
                                "--scope", "read")["client_id"]


def test_idle_and_trickling_sockets_do_not_starve_legitimate_requests(server, public_client):
    with _sockets() as idle, _sockets() as trickling:
        for _ in range(200):
            idle.append(_connect(server))
        for _ in range(50):
            sock = _connect(server)
            sock.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            trickling.append(sock)

        timings: list[tuple[str, float, int]] = []
        deadline = time.monotonic() + 4
        for _ in range(8):  # one byte on every trickling socket each ~0.5 s, 4 s at most
            tick = time.monotonic()
            if tick > deadline:
                break
            for sock in trickling:
                sock.sendall(b"a")
            elapsed, response = _timed(lambda: _jwks(server))
            assert response.status_code == 200 and response.json()["keys"]
            timings.append(("jwks", elapsed, response.status_code))
            elapsed, response = _timed(lambda: _bad_refresh(server, public_client))
            assert response.status_code == 400
            assert response.json()["error"] == "invalid_grant"
            timings.append(("token", elapsed, response.status_code))
            time.sleep(max(0.0, 0.5 - (time.monotonic() - tick)))

        assert len(timings) >= 10
        slow = [t for t in timings if t[1] > PROMPT]
        assert not slow, f"slow answers while 250 sockets were held: {slow}"
        # The abusive sockets were held open all along (header timeout 10 s): the server
        # answered beside them, not because it had dropped them.
        assert not [s for s in idle + trickling if _closed_by_server(s)]


def test_requests_waiting_on_the_database_do_not_stall_the_workers(server, public_client):
    """3 refreshes wait on SQLite's write lock: 2 workers x 1 thread would answer no one."""
    token_url = f"{server.url}/oauth/token"
    refresh_tokens = [requests.post(token_url, data={
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "client_id": public_client}, timeout=10).json()["refresh_token"] for _ in range(3)]
    database = server.env["AUTHSERVER_DATABASE_URL"].removeprefix("sqlite:///")
    holder = sqlite3.connect(database, isolation_level=None, timeout=10)
    holder.execute("BEGIN IMMEDIATE")  # SQLite's write lock, as a long transaction would
    try:
        with ThreadPoolExecutor(3) as pool:
            waiting = [pool.submit(requests.post, token_url, data={
                "grant_type": "refresh_token", "refresh_token": token,
                "client_id": public_client}, timeout=30) for token in refresh_tokens]
            time.sleep(0.5)
            for _ in range(5):
                elapsed, response = _timed(lambda: _jwks(server))
                assert response.status_code == 200 and elapsed < PROMPT, elapsed
                time.sleep(0.2)
            done = [f.result().text[:200] for f in waiting if f.done()]
            assert not done, done  # they really were waiting
            holder.execute("COMMIT")
            assert [f.result().status_code for f in waiting] == [200, 200, 200]
    finally:
        holder.close()


def test_header_timeout_closes_idle_trickling_and_kept_alive_sockets(tmp_path):
    with _serving(tmp_path, serve_args=("--header-timeout", "2", "--no-access-log")) as srv, \
            _sockets() as opened:
        started = time.monotonic()
        idle = _connect(srv)
        trickling = _connect(srv)
        trickling.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        kept_alive = _connect(srv)
        kept_alive.sendall(b"GET /.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n\r\n")
        response = http.client.HTTPResponse(kept_alive)
        response.begin()
        assert response.status == 200 and response.getheader("Connection") != "close"
        response.read()
        opened += [idle, trickling, kept_alive]

        closed_after: dict[str, float] = {}
        while len(closed_after) < 3 and time.monotonic() - started < 8:
            with contextlib.suppress(OSError):
                trickling.sendall(b"X")
            for name, sock in (("idle", idle), ("trickling", trickling),
                               ("kept_alive", kept_alive)):
                if name not in closed_after and _closed_by_server(sock):
                    closed_after[name] = time.monotonic() - started
            time.sleep(0.25)

        assert set(closed_after) == {"idle", "trickling", "kept_alive"}, closed_after
        assert all(1.5 <= after <= 4.5 for after in closed_after.values()), closed_after
        assert _jwks(srv).status_code == 200
        assert '"GET ' not in srv.log()  # --no-access-log


def _listeners(port: int) -> int:
    """Listening TCP sockets on ``port`` (one per serving worker: SO_REUSEPORT)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(tmp_path):
    with _serving(tmp_path) as srv:
        workers = srv.worker_pids()
        assert len(workers) == 2
        assert _wait_for(lambda: _listeners(srv.port) == 2, 10)
        for victim in workers:
            os.kill(victim, signal.SIGKILL)
            # Connections the kernel had queued on the victim's own SO_REUSEPORT socket
            # are reset as it dies (net.ipv4.tcp_migrate_req=1 hands them over; docs/operators.md,
            # "Serving", says so). None of ours is sent until its socket is closed: a zombie's other
            # threads may still hold it for a moment.
            assert _wait_for(lambda victim=victim: _listeners(srv.port) == 1
                             or not Path(f"/proc/{victim}").exists(), 5)
            started = time.monotonic()
            while time.monotonic() - started < 1:  # the surviving worker answers alone
                elapsed, response = _timed(lambda: _jwks(srv))
                assert response.status_code == 200 and elapsed < PROMPT
                time.sleep(0.05)
            # The replacement boots and listens before the next worker is killed.
            assert _wait_for(lambda: _listeners(srv.port) == 2, 15), "no replacement"
        now = srv.worker_pids()
        assert len(now) == 2 and not set(now) & set(workers), (workers, now)
        assert srv.process.poll() is None
        for _ in range(10):
            elapsed, response = _timed(lambda: _jwks(srv))
            assert response.status_code == 200 and elapsed < PROMPT


def test_sigterm_finishes_the_request_in_flight_then_exits_cleanly(tmp_path):
    with _serving(tmp_path) as srv, _sockets() as opened:
        body = b"grant_type=refresh_token&refresh_token=rt_in-flight&client_id=nobody"
        in_flight = _connect(srv)
        idle = _connect(srv)
        opened += [in_flight, idle]
        # The headers and half the body: the request is in a worker thread, reading.
        in_flight.sendall(b"POST /oauth/token HTTP/1.1\r\nHost: x\r\nContent-Type: "
                          b"application/x-www-form-urlencoded\r\nContent-Length: "
                          + str(len(body)).encode() + b"\r\n\r\n" + body[:20])
        time.sleep(0.5)
        # As systemd and Ctrl-C do: the whole process group, master and workers.
        os.killpg(srv.process.pid, signal.SIGTERM)
        time.sleep(1)
        assert srv.process.poll() is None  # still draining the request in flight
        in_flight.sendall(body[20:])
        response = http.client.HTTPResponse(in_flight)
        response.begin()
        answer = json.loads(response.read())
        assert response.status in (400, 401) and answer["error"]
        assert srv.process.wait(timeout=10) == 0
        assert _closed_by_server(idle)
        with pytest.raises(requests.ConnectionError):
            _jwks(srv)
        assert "Unexpected exit" not in srv.log()
        assert "Traceback" not in srv.log()


def test_two_instances_on_one_host_are_independent_without_a_writable_home(tmp_path):
    not_a_dir = tmp_path / "home-is-a-file"
    not_a_dir.write_text("")
    # One database and keys/ (as two instances of one deployment would share), two ports.
    with _serving(tmp_path, extra_env={"HOME": "/nonexistent/home"},
                  log_name="first.log") as first, \
            _serving(tmp_path, extra_env={"HOME": str(not_a_dir)}, log_name="second.log",
                     prepare=False) as second:
        assert _jwks(first).status_code == 200 and _jwks(second).status_code == 200
        assert first.worker_pids() and second.worker_pids()

        # A third on the first one's port is refused; it takes nothing over.
        third = subprocess.run(
            [live_server.AUTHSERVER, "serve", "--port", str(first.port)], env=first.env,
            capture_output=True, text=True, timeout=60)
        assert third.returncode != 0
        assert "address already in use" in third.stderr.lower(), third.stderr
        assert _jwks(first).status_code == 200

        first.stop()
        assert first.process.returncode == 0
        with pytest.raises(requests.ConnectionError):
            _jwks(first)
        for _ in range(5):
            elapsed, response = _timed(lambda: _jwks(second))
            assert response.status_code == 200 and elapsed < PROMPT
        assert second.process.poll() is None
        second.stop()
        assert second.process.returncode == 0
        for srv in (first, second):
            assert "ERROR" not in srv.log() and "Traceback" not in srv.log(), srv.log()


SECRET_RT = "rt_SECRET-refresh-0123456789"
SECRET_CODE = "SECRET-code-0123456789"
SECRET_PASSWORD = "SECRET-password-0123456789"
SECRET_CLIENT = "SECRET-client-secret-0123456789"


def test_the_access_log_has_each_request_but_no_token_code_or_password(server, public_client):
    token_url = f"{server.url}/oauth/token"
    sent = [
        requests.post(token_url, data={"grant_type": "refresh_token", "client_id": public_client,
                                       "refresh_token": SECRET_RT}, timeout=5),
        requests.post(f"{token_url}?refresh_token={SECRET_RT}&code={SECRET_CODE}",
                      data={"grant_type": "refresh_token", "client_id": public_client},
                      timeout=5),
        requests.post(token_url, data={"grant_type": "password", "username": "alice",
                                       "password": SECRET_PASSWORD, "client_id": public_client},
                      timeout=5),
        requests.post(token_url, data={"grant_type": "authorization_code", "code": SECRET_CODE,
                                       "redirect_uri": "http://127.0.0.1/cb"},
                      auth=("some-client", SECRET_CLIENT), timeout=5),
        requests.get(f"{server.url}/oauth/authorize?response_type=code&code={SECRET_CODE}"
                     f"&client_id={public_client}&state={SECRET_RT}", timeout=5),
        requests.get(f"{server.url}/.well-known/jwks.json?password={SECRET_PASSWORD}",
                     timeout=5),
        # A client that percent-encodes the '?' puts its query in the path.
        requests.get(f"{server.url}/oauth/token%3Frefresh_token={SECRET_RT}", timeout=5),
    ]
    assert all(r.status_code < 500 for r in sent)
    deadline = time.monotonic() + 5  # the last request's line is written after its answer
    while time.monotonic() < deadline and '"GET /oauth/token"' not in server.log():
        time.sleep(0.1)
    log = server.log()
    for secret in (SECRET_RT, SECRET_CODE, SECRET_PASSWORD, SECRET_CLIENT, "SECRET"):
        assert secret not in log
    line = re.compile(r'^\S+ 127\.0\.0\.1 "(GET|POST) (/\S*)" (\d{3}) \d+\.\dms '
                      r"client_id=\S+ request_id=[0-9a-f]{16}$", re.M)
    logged = line.findall(log)
    assert ("POST", "/oauth/token", "400") in logged
    assert ("GET", "/.well-known/jwks.json", "200") in logged
    assert any(path == "/oauth/authorize" for _, path, _ in logged)


# -- the issuer follows the port, a busy port, a respawned worker without a key ----------------

def _answers(url: str) -> bool:
    with contextlib.suppress(requests.RequestException):
        return requests.get(f"{url}/.well-known/jwks.json", timeout=2).status_code == 200
    return False


def test_the_issuer_follows_the_port_a_busy_port_fails_and_a_keyless_worker_never_serves(
        tmp_path):
    """No AUTHSERVER_ISSUER (nor in config/default.toml): the discovery document and the
    start-up line name the port served, as ``make run PORT=9000`` needs. A second ``serve``
    on that port fails in one line, without saying "serving". Then a worker dies while the
    key file is corrupt: the other worker keeps its key and answers; the replacement refuses
    in one line and granian, seeing it fail within 5.5 s of its respawn, stops the server
    (exit status 1) instead of looping."""
    port = live_server.free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": _sqlite(tmp_path),
           "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
           "AUTHSERVER_SECRET_KEY": "live-test-secret-key-0123456789abcdef"}
    env.pop("AUTHSERVER_ISSUER", None)
    for step in (["db", "upgrade"], ["keys", "ensure"]):
        subprocess.run([live_server.AUTHSERVER, *step], env=env, check=True,
                       capture_output=True, timeout=120)
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [live_server.AUTHSERVER, "serve", "--port", str(port), "--workers", "2"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    srv = live_server.LiveServer(url, env, process, log_path)
    try:
        assert _wait_for(lambda: _answers(url), 60), srv.log()
        metadata = requests.get(f"{url}/.well-known/openid-configuration", timeout=5).json()
        assert metadata["issuer"] == url and metadata["token_endpoint"] == f"{url}/oauth/token"
        assert f"serving {url} on" in srv.log() and "warning" not in srv.log()

        busy = subprocess.run([live_server.AUTHSERVER, "serve", "--port", str(port)],
                              env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 1
        assert busy.stderr == (f"authserver: error: cannot listen on 127.0.0.1:{port}: "
                               "Address already in use\n")

        (pem,) = (tmp_path / "keys").glob("*.pem")
        broken = pem.with_name(".broken")
        broken.write_text("not a key")
        broken.chmod(0o600)
        os.replace(broken, pem)  # a new inode, as a bad copy would leave it
        assert _wait_for(lambda: len(srv.worker_pids()) == 2, 30)
        victim = srv.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        assert _wait_for(lambda: not Path(f"/proc/{victim}").exists(), 5)
        assert requests.get(f"{url}/.well-known/jwks.json", timeout=5).status_code == 200
        assert srv.process.wait(timeout=60) == 1
    finally:
        srv.stop()
    log_text = srv.log()
    assert log_text.count("refuses to start") == 1, log_text
    assert f"private key {pem}" in log_text
    assert "crash loop" in log_text.lower(), log_text
    assert "Traceback" not in log_text and '" 500 ' not in log_text, log_text
