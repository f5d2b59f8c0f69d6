"""The figure of issue 13: how soon a resource server that verifies locally refuses a
revoked session's access tokens, against a real ``authserver serve`` (two worker processes)
with ``AUTHSERVER_STATUS_LIST_TTL=10``.

Several sessions of two users; a ``TokenVerifier`` (authserver.resource, its real HTTP
client) polls every session's access tokens. After ``POST /oauth/revoke`` of one session,
and after "sign out everywhere" (``DELETE /account/api/sessions``) of one user, the time
until the verifier refuses those tokens is at most ttl + 2 s, measured from just before the
request, with the list fetched just before it (the worst case: a whole ttl to wait). Every
other session's tokens pass on every poll, and nothing ever calls introspection: the
verifier's requests are the JWKS and the status list alone, and the server's access log
has no request to ``/oauth/introspect``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import jwt
import pytest
import requests

from authserver.resource import HttpResponse, TokenRevoked, TokenVerifier, UrllibClient
from tests.support import live_server
from tests.support.databases import backend_database
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.xdist_group("status-lists")

TTL = 10
BOUND = TTL + 2
POLL = 0.05


class RecordingHttp(UrllibClient):
    """The verifier's real HTTP client, remembering every URL it asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        self.urls.append(url)
        return super().get(url, headers, timeout)

    def post(self, url: str, form: Mapping[str, str], headers: Mapping[str, str],
             timeout: float) -> HttpResponse:
        self.urls.append(url)
        return super().post(url, form, headers, timeout)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[live_server.LiveServer]:
    workdir = tmp_path_factory.mktemp("status-lists")
    url = backend_database(request, workdir, "status_lists")
    with live_server.running(workdir, url, users=[("alice",), ("bob",)],
                             extra_env={"AUTHSERVER_STATUS_LIST_TTL": str(TTL)}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client_id(server: live_server.LiveServer) -> str:
    return server.create_client("--name", "Shop app", "--public", "--first-party",
                                "--scope", "read account")["client_id"]


def sign_in(server: live_server.LiveServer, client_id: str, username: str) -> dict[str, Any]:
    response = requests.post(f"{server.url}/oauth/token", timeout=10, data={
        "grant_type": "password", "username": username, "password": PASSWORD,
        "client_id": client_id, "scope": "read account"})
    assert response.status_code == 200, response.text
    return response.json()


def refresh(server: live_server.LiveServer, client_id: str, tokens: dict[str, Any]
            ) -> dict[str, Any]:
    response = requests.post(f"{server.url}/oauth/token", timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "client_id": client_id})
    assert response.status_code == 200, response.text
    return response.json()


class Sessions:
    """Sign-ins by user; each keeps every access token it was given."""

    def __init__(self, server: live_server.LiveServer, client_id: str) -> None:
        self.server, self.client_id = server, client_id
        self.by_name: dict[str, dict[str, Any]] = {}

    def add(self, name: str, username: str) -> None:
        first = sign_in(self.server, self.client_id, username)
        second = refresh(self.server, self.client_id, first)  # the same session, rotated
        self.by_name[name] = {"user": username, "latest": second,
                              "access_tokens": [first["access_token"],
                                                second["access_token"]]}

    def tokens(self, names: list[str]) -> list[str]:
        return [t for name in names for t in self.by_name[name]["access_tokens"]]


def refusal_time(verifier: TokenVerifier, ended: list[str], others: list[str],
                 started: float) -> tuple[float, int, list[str]]:
    """Poll until every token of ``ended`` is refused as revoked; (seconds since
    ``started``, polls, failures of ``others``). Others are verified on every poll."""
    failures: list[str] = []
    polls = 0
    while True:
        polls += 1
        for token in others:
            try:
                verifier.verify(token)
            except Exception as exc:
                failures.append(repr(exc))
        refused = 0
        for token in ended:
            try:
                verifier.verify(token)
            except TokenRevoked:
                refused += 1
        elapsed = time.monotonic() - started
        if refused == len(ended):
            return elapsed, polls, failures
        assert refused == 0 or elapsed < BOUND, "some of the session's tokens still pass"
        if elapsed > BOUND + 5:
            pytest.fail(f"still accepted {elapsed:.1f} s after the revocation")
        time.sleep(POLL)


def fresh_verifier(server: live_server.LiveServer, every_token: list[str]
                   ) -> tuple[TokenVerifier, RecordingHttp]:
    """A resource server's verifier whose list was fetched just now: the worst case."""
    http = RecordingHttp()
    verifier = TokenVerifier(server.url, server.url, http=http)
    for token in every_token:
        assert verifier.verify(token).sub
    return verifier, http


def assert_no_introspection(server: live_server.LiveServer, http: RecordingHttp) -> None:
    assert not any("/oauth/introspect" in url for url in http.urls)
    assert {url.rsplit("/", 1)[0] for url in http.urls} <= {
        f"{server.url}/.well-known", f"{server.url}/oauth/status"}, http.urls
    log = server.log()  # the access log: every request the server answered
    assert "GET /oauth/status/" in log and "/oauth/introspect" not in log


def test_every_access_token_names_its_sessions_list_entry(server, client_id):
    sessions = Sessions(server, client_id)
    sessions.add("one", "alice")
    sessions.add("two", "alice")
    claims = [jwt.decode(t, options={"verify_signature": False})
              for t in sessions.tokens(["one", "two"])]
    entries = [(c["status"]["status_list"]["uri"], c["status"]["status_list"]["idx"])
               for c in claims]
    assert all(uri.startswith(f"{server.url}/oauth/status/") for uri, _ in entries)
    # One entry per session: its rotated access token names the same one.
    assert entries[0] == entries[1] and entries[2] == entries[3] and entries[0] != entries[2]


def test_a_revoked_session_is_refused_within_ttl_plus_2_seconds(server, client_id):
    sessions = Sessions(server, client_id)
    for name, user in [("alice-phone", "alice"), ("alice-laptop", "alice"),
                       ("alice-tablet", "alice"), ("bob-phone", "bob")]:
        sessions.add(name, user)
    others = sessions.tokens(["alice-laptop", "alice-tablet", "bob-phone"])
    ended = sessions.tokens(["alice-phone"])
    verifier, http = fresh_verifier(server, others + ended)

    started = time.monotonic()
    revoked = requests.post(f"{server.url}/oauth/revoke", timeout=10, data={
        "token": sessions.by_name["alice-phone"]["latest"]["refresh_token"],
        "client_id": client_id})
    assert revoked.status_code == 200, revoked.text
    elapsed, polls, failures = refusal_time(verifier, ended, others, started)

    print(f"\nrevoke -> refused: {elapsed:.2f} s (ttl {TTL} s), {polls} polls, "
          f"{len(others)} other tokens verified on each")
    assert elapsed <= BOUND
    assert failures == []
    assert_no_introspection(server, http)
    assert verifier.status_lists is not None and verifier.status_lists.failures == 0


def test_sign_out_everywhere_is_refused_within_ttl_plus_2_seconds(server, client_id):
    sessions = Sessions(server, client_id)
    for name, user in [("bob-phone", "bob"), ("bob-laptop", "bob"), ("bob-tv", "bob"),
                       ("alice-phone", "alice"), ("alice-laptop", "alice")]:
        sessions.add(name, user)
    ended = sessions.tokens(["bob-phone", "bob-laptop", "bob-tv"])
    others = sessions.tokens(["alice-phone", "alice-laptop"])
    verifier, http = fresh_verifier(server, others + ended)

    bob_token = sessions.by_name["bob-laptop"]["latest"]["access_token"]
    started = time.monotonic()
    everywhere = requests.delete(f"{server.url}/account/api/sessions", timeout=10,
                                 headers={"Authorization": f"Bearer {bob_token}"})
    assert everywhere.status_code == 200, everywhere.text
    assert everywhere.json()["signed_out"] >= 3
    elapsed, polls, failures = refusal_time(verifier, ended, others, started)

    print(f"\nsign out everywhere -> refused: {elapsed:.2f} s (ttl {TTL} s), {polls} polls, "
          f"{len(ended)} tokens of 3 sessions")
    assert elapsed <= BOUND
    assert failures == []
    assert_no_introspection(server, http)
