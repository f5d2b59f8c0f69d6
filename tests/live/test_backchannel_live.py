"""Back-Channel Logout (issue 13 item 4) against real server processes: ``authserver serve``
delivers from the worker thread of each of its worker processes, and two ``authserver
worker`` processes share one outbox without ever sending a message twice at once. The
receiver is a real HTTP server on loopback (tests/support/logout_receiver.py) and checks each
logout token with PyJWT's ``PyJWKClient`` against the server's JWKS.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from sqlalchemy import create_engine, text

from tests.support import live_server, logout_receiver
from tests.support.databases import backend_database
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.xdist_group("backchannel")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Any, str]:
    workdir = tmp_path_factory.mktemp("backchannel")
    return workdir, backend_database(request, workdir, "backchannel")


@pytest.fixture(scope="module")
def receiver(database: tuple[Any, str]) -> Iterator[logout_receiver.Receiver]:
    """One per backend: its paths count their hits (``/flaky`` fails the first two)."""
    with logout_receiver.running(slow_seconds=0.4) as running:
        yield running


@pytest.fixture(scope="module")
def server(database: tuple[Any, str]) -> Iterator[live_server.LiveServer]:
    """``authserver serve`` with 2 worker processes, each running its logout worker."""
    workdir, url = database
    with live_server.running(workdir, url, users=[("alice",)]) as srv:
        yield srv


def app_with_logout_uri(srv: live_server.LiveServer, uri: str, name: str) -> str:
    created = srv.create_client("--name", name, "--public", "--first-party", "--scope",
                                "openid read", "--backchannel-logout-uri", uri,
                                "--backchannel-logout-session-required")
    assert created["backchannel_logout_uri"] == uri
    return created["client_id"]


def sign_in(srv: live_server.LiveServer, client_id: str) -> dict[str, Any]:
    response = requests.post(f"{srv.url}/oauth/token", timeout=10, data={
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "client_id": client_id, "scope": "openid read"})
    assert response.status_code == 200, response.text
    return response.json()


def revoke(srv: live_server.LiveServer, client_id: str, refresh_token: str) -> float:
    """Revoke; how long the request took."""
    started = time.monotonic()
    response = requests.post(f"{srv.url}/oauth/revoke", timeout=10,
                             data={"token": refresh_token, "client_id": client_id})
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def sid_of(tokens: dict[str, Any]) -> str:
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})["sid"]


def test_serve_delivers_a_verifiable_logout_token_within_seconds(server, receiver):
    client_id = app_with_logout_uri(server, receiver.url("/ok"), "Live RP")
    tokens = sign_in(server, client_id)
    before = len(receiver.tokens("/ok"))
    started = time.monotonic()
    revoke(server, client_id, tokens["refresh_token"])
    (token,) = receiver.wait_for("/ok", before + 1, timeout=10)[before:]
    assert time.monotonic() - started < 3, "delivered by a worker within a couple of seconds"
    jwks = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json")
    claims = logout_receiver.verify(token, jwks, issuer=server.url, client_id=client_id)
    assert claims["sid"] == sid_of(tokens)
    time.sleep(1.5)  # no second worker process sends it again
    assert len(receiver.tokens("/ok")) == before + 1


def test_a_receiver_that_fails_twice_is_retried_with_backoff_until_delivered(server, receiver):
    client_id = app_with_logout_uri(server, receiver.url("/flaky"), "Flaky RP")
    tokens = sign_in(server, client_id)
    revoke(server, client_id, tokens["refresh_token"])
    received = receiver.wait_for("/flaky", 3, timeout=20)
    assert len(received) == 3
    jwks = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json")
    claims = [logout_receiver.verify(t, jwks, issuer=server.url, client_id=client_id)
              for t in received]
    assert len({c["jti"] for c in claims}) == 1
    assert {c["sid"] for c in claims} == {sid_of(tokens)}
    arrivals = [d.at for d in receiver.deliveries if d.path == "/flaky"]
    assert arrivals[1] - arrivals[0] >= 1.4 and arrivals[2] - arrivals[1] >= 3.0  # 2 s, 4 s
    audit = server.cli("audit", "list", "--client", client_id, "--json")
    deadline = time.monotonic() + 5
    while "backchannel_logout_delivered" not in audit and time.monotonic() < deadline:
        time.sleep(0.2)
        audit = server.cli("audit", "list", "--client", client_id, "--json")
    assert audit.count("backchannel_logout_failed") == 2
    assert audit.count("backchannel_logout_delivered") == 1
    assert "eyJ" not in audit


@pytest.fixture(params=["postgresql"])
def own_database(request: pytest.FixtureRequest, tmp_path) -> str:
    """A database of its own: no other server's workers drain it. PostgreSQL, the store of
    deployments with several processes (claims there read FOR UPDATE SKIP LOCKED); SQLite's
    claim, the same compare-and-set under its one writer lock, is raced by threads in
    tests/http/test_backchannel_logout.py."""
    return backend_database(request, tmp_path, "backchannel_workers")


def test_two_worker_processes_never_send_the_same_message_at_once(own_database, tmp_path):
    url = own_database
    # A receiver of its own too: the module's has counted the other backend's run.
    with logout_receiver.running(slow_seconds=0.4) as receiver, \
            live_server.running(tmp_path, url, users=[("bob",)],
                                extra_env={"AUTHSERVER_BACKCHANNEL_WORKER": "false"}) as srv:
        created = srv.create_client("--name", "Busy RP", "--public", "--first-party",
                                    "--scope", "openid read", "--backchannel-logout-uri",
                                    receiver.url("/slow"))
        client_id = created["client_id"]
        for _ in range(12):
            response = requests.post(f"{srv.url}/oauth/token", timeout=10, data={
                "grant_type": "password", "username": "bob", "password": PASSWORD,
                "client_id": client_id, "scope": "openid read"})
            assert response.status_code == 200, response.text
        srv.cli("clients", "disable", client_id)
        time.sleep(1.5)
        assert receiver.tokens("/slow") == [], "serve runs no worker when told not to"

        workers = [subprocess.Popen([live_server.AUTHSERVER, "worker"], env=srv.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True) for _ in range(2)]
        try:
            received = receiver.wait_for("/slow", 12, timeout=30)
            time.sleep(1.5)  # and nothing more arrives
            assert len(receiver.tokens("/slow")) == 12
        finally:
            for worker in workers:
                os.killpg(worker.pid, signal.SIGTERM)
            outputs = [worker.communicate(timeout=20)[0].decode() for worker in workers]
        assert [worker.returncode for worker in workers] == [0, 0], outputs
        jtis = [logout_receiver._jti(token) for token in received]
        assert len(set(jtis)) == 12
        assert all(receiver.max_overlap[jti] == 1 for jti in jtis)
        engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        with engine.connect() as connection:
            holders = connection.execute(text(
                "SELECT DISTINCT locked_by FROM logout_outbox WHERE client_id = :c"),
                {"c": client_id}).scalars().all()
            pending = connection.execute(text(
                "SELECT count(*) FROM logout_outbox WHERE delivered_at IS NULL")).scalar()
        engine.dispose()
        assert len(holders) == 2, f"both worker processes took part: {holders}"
        assert pending == 0
