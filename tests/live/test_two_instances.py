"""Two ``authserver serve`` instances behind one (imagined) load balancer, as docs/operators.md
"Several instances" describes the deployment: one PostgreSQL database, one Redis, one keys
directory, one AUTHSERVER_SECRET_KEY and one issuer (the balancer's URL), each instance a
process of its own on its own port. Every test sends its requests to both and proves that
what one instance does, the other knows at once:

- one refresh token raced at both rotates exactly once (docs/design.md "Rotation");
- a DPoP proof (with a server nonce from one instance) used at one is refused at the other;
- the brute-force limits count attempts at both instances together (Redis);
- a client disabled through one instance's admin API is refused by the other at once, with
  the default client cache;
- a next key starts signing at both at the same instant (activation by time), and a key
  activated by hand within the key store's re-scan interval (1 s);
- a session revoked at one is inactive at the other's introspection at once;
- a browser's sign-in and the authorization code flow hop between instances (no sticky
  sessions);
- an additive migration applied while they serve leaves them serving.

One pair of servers serves the whole module.
"""

from __future__ import annotations

import html
import math
import re
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
import pytest
import redis
import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from authserver.crypto.key_admin import KeyAdmin
from authserver.crypto.lifecycle import KeyPolicy
from authserver.domain import pkce
from authserver.domain.client_metadata import ClientSpec
from tests.support import instances
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    require_postgres,
)
from tests.support.dpop import ProofKey
from tests.support.live_server import LiveServer
from tests.support.oauth import PASSWORD, basic

pytestmark = pytest.mark.xdist_group("two_instances")

ISSUER = "https://auth.example.test"  # the load balancer's URL: neither instance's own
TOKEN_URL = ISSUER + "/oauth/token"  # what DPoP proofs name (htu), whichever instance answers
ACCOUNT_FREE = 2  # wrong passwords per account before the delay starts (of both, together)
REDIRECT = "https://app.example.com/callback"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[dict[str, Any]]:
    require_postgres()
    workdir = tmp_path_factory.mktemp("two-instances")
    database_url = create_postgres_database("instances")
    try:
        with instances.redis_database() as redis_url:
            made = instances.prepare(workdir, database_url, users=("alice",), clients={
                "admin": ClientSpec(name="Provisioner", grant_types=["client_credentials"],
                                    scope="admin:clients")})
            servers = instances.start(workdir, database_url, 2, workers=1, env={
                "AUTHSERVER_ISSUER": ISSUER,
                "AUTHSERVER_REDIS_URL": redis_url,
                "AUTHSERVER_DPOP_NONCE": "true",
                # A next key made by `keys rotate` would sign after 5 s (0 + the margin).
                "AUTHSERVER_JWKS_MAX_AGE": "0",
                "AUTHSERVER_RATELIMIT_ACCOUNT_FREE": str(ACCOUNT_FREE),
            })
            try:
                yield {"servers": servers, "redis_url": redis_url,
                       "database_url": database_url, "admin": made["admin"]}
            finally:
                instances.stop(servers)
    finally:
        drop_postgres_database(database_url)


@pytest.fixture(scope="module")
def servers(deployment) -> list[LiveServer]:
    return deployment["servers"]


@pytest.fixture(scope="module")
def register(deployment, servers):
    """Register a client through the registration API (RFC 7591 metadata) of one instance,
    as the admin client (a command line would cost a second per client)."""
    tokens: dict[int, str] = {}

    def register(server: int = 0, **metadata: Any) -> dict[str, Any]:
        if server not in tokens:
            answer = machine_token(servers[server], deployment["admin"])
            assert answer.status_code == 200, answer.text
            tokens[server] = answer.json()["access_token"]
        answer = requests.post(f"{servers[server].url}/oauth/register", json=metadata,
                               headers={"Authorization": f"Bearer {tokens[server]}"},
                               timeout=30)
        assert answer.status_code == 201, answer.text
        return answer.json()

    return register


def mobile_app(register, server: int = 0, **metadata: Any) -> dict[str, Any]:
    """A first-party mobile app: public, password and refresh grants."""
    return register(server, **{"client_name": "Shop app", "token_endpoint_auth_method": "none",
                               "first_party": True,
                               "grant_types": ["password", "refresh_token"], **metadata})


def backend(register, server: int = 0, **metadata: Any) -> dict[str, Any]:
    """A confidential machine client (client_credentials)."""
    return register(server, **{"client_name": "Reports",
                               "grant_types": ["client_credentials"], **metadata})


@pytest.fixture(scope="module")
def app(register) -> dict[str, Any]:
    """The mobile app most tests use (10 s retry grace, the default)."""
    return mobile_app(register)


@pytest.fixture(scope="module")
def api(register) -> dict[str, Any]:
    """A resource server that may introspect, registered at the other instance."""
    return backend(register, 1, client_name="Orders API", allow_introspection=True)


@pytest.fixture(scope="module")
def database(deployment) -> Iterator[Engine]:
    engine = create_engine(deployment["database_url"], isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def post(server: LiveServer, path: str, data: dict[str, str],
         headers: dict[str, str] | None = None,
         session: requests.Session | None = None) -> requests.Response:
    return (session or requests).post(server.url + path, data=data, headers=headers or {},
                                      timeout=30)


def sign_in(server: LiveServer, client: dict[str, Any], username: str = "alice",
            password: str = PASSWORD) -> requests.Response:
    return post(server, "/oauth/token", {"grant_type": "password", "username": username,
                                         "password": password,
                                         "client_id": client["client_id"]})


def pair(server: LiveServer, client: dict[str, Any]) -> dict[str, Any]:
    response = sign_in(server, client)
    assert response.status_code == 200, response.text
    return response.json()


def refresh(server: LiveServer, client: dict[str, Any], token: str,
            session: requests.Session | None = None) -> requests.Response:
    return post(server, "/oauth/token", {"grant_type": "refresh_token", "refresh_token": token,
                                         "client_id": client["client_id"]}, session=session)


def machine_token(server: LiveServer, client: dict[str, Any]) -> requests.Response:
    return post(server, "/oauth/token", {"grant_type": "client_credentials"},
                {"Authorization": basic(client["client_id"], client["client_secret"])})


def introspect(server: LiveServer, api: dict[str, Any], token: str) -> dict[str, Any]:
    response = post(server, "/oauth/introspect", {"token": token},
                    {"Authorization": basic(api["client_id"], api["client_secret"])})
    assert response.status_code == 200, response.text
    return response.json()


def audited(database: Engine, event: str, client_id: str) -> int:
    with database.connect() as connection:
        return connection.execute(text(
            "SELECT count(*) FROM audit_events WHERE event = :event AND client_id = :client"),
            {"event": event, "client": client_id}).scalar_one()


def kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def error(response: requests.Response) -> str:
    assert response.headers["Content-Type"].startswith("application/json"), response.text
    return response.json()["error"]


# -- one refresh token, two instances ----------------------------------------------------

def race(pool: ThreadPoolExecutor, servers: list[LiveServer], sessions: list[requests.Session],
         client: dict[str, Any], token: str) -> list[requests.Response]:
    """The same refresh token sent to each instance at the same moment."""
    start = threading.Barrier(len(servers))

    def one(index: int) -> requests.Response:
        start.wait(timeout=30)
        return refresh(servers[index], client, token, sessions[index])

    futures = [pool.submit(one, index) for index in range(len(servers))]
    return [future.result() for future in futures]


ROUNDS = 25


def test_one_refresh_token_raced_at_both_instances_rotates_once(servers, app, database):
    """Rotation 1 and 2: one compare-and-set wins; the other request, the same client from
    the same device inside the grace window, gets the identical response, not a second
    rotation. The chain goes on from that one child, round after round."""
    token = pair(servers[0], app)["refresh_token"]
    sessions = [requests.Session() for _ in servers]
    children: set[str] = set()
    with ThreadPoolExecutor(len(servers)) as pool:
        for _ in range(ROUNDS):
            answers = race(pool, servers, sessions, app, token)
            assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
            bodies = [a.json() for a in answers]
            assert bodies[0] == bodies[1]  # one rotation, the same new pair for both
            token = bodies[0]["refresh_token"]
            children.add(token)
    assert len(children) == ROUNDS
    assert refresh(servers[1], app, token).status_code == 200  # the family lives on
    assert audited(database, "rotation_retry", app["client_id"]) == ROUNDS
    assert audited(database, "refresh_token_reuse", app["client_id"]) == 0


def test_without_a_grace_window_the_race_is_reuse_and_ends_the_session(servers, register,
                                                                      database):
    """Rotation 3 with ``reuse_grace`` 0: the loser is reuse, which revokes the family, so
    the winner's new token is dead as well."""
    strict = mobile_app(register, 1, client_name="Strict app", reuse_grace=0)
    sessions = [requests.Session() for _ in servers]
    with ThreadPoolExecutor(len(servers)) as pool:
        for _ in range(2):
            token = pair(servers[0], strict)["refresh_token"]
            answers = race(pool, servers, sessions, strict, token)
            assert sorted(a.status_code for a in answers) == [200, 400], \
                [a.text for a in answers]
            loser = next(a for a in answers if a.status_code == 400)
            assert error(loser) == "invalid_grant"
            won = next(a for a in answers if a.status_code == 200).json()
            for server in servers:
                assert error(refresh(server, strict, won["refresh_token"])) == "invalid_grant"
    assert audited(database, "refresh_token_reuse", strict["client_id"]) == 2


# -- DPoP ------------------------------------------------------------------------------------

def dpop_sign_in(server: LiveServer, client: dict[str, Any], proof: str) -> requests.Response:
    return post(server, "/oauth/token", {
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "client_id": client["client_id"]}, {"DPoP": proof})


def test_a_dpop_proof_used_at_one_instance_is_refused_at_the_other(deployment, servers, app,
                                                                   database):
    key = ProofKey("ES256")
    challenge = dpop_sign_in(servers[0], app, key.proof(htu=TOKEN_URL))
    assert challenge.status_code == 400 and error(challenge) == "use_dpop_nonce"
    nonce = challenge.headers["DPoP-Nonce"]

    proof = key.proof(htu=TOKEN_URL, nonce=nonce)
    accepted = dpop_sign_in(servers[1], app, proof)  # one instance's nonce, the other's answer
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["token_type"] == "DPoP"

    for server in servers:  # replayed, at the other instance and at the same one
        replayed = dpop_sign_in(server, app, proof)
        assert replayed.status_code == 400 and error(replayed) == "invalid_dpop_proof"
        assert "already used" in replayed.json()["error_description"]
    fresh = dpop_sign_in(servers[0], app, key.proof(htu=TOKEN_URL, nonce=nonce))
    assert fresh.status_code == 200, fresh.text  # a new jti is fine: only the replay failed

    # The proofs were remembered in the shared Redis, not in the database.
    cache = redis.Redis.from_url(deployment["redis_url"])
    assert len(list(cache.scan_iter("authserver:dpop:*"))) == 2
    with database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM dpop_proof_jtis")).scalar() == 0


# -- clients disabled, sessions revoked ------------------------------------------------------

def test_a_client_disabled_through_one_instance_is_refused_by_the_other_at_once(
        deployment, servers, register, api):
    """With the default AUTHSERVER_CLIENT_CACHE_SECONDS (5 s): the other instance has just
    used the client (its cache holds the record) and still refuses it at once."""
    machine = backend(register)
    mobile = mobile_app(register, client_name="Field app")
    tokens = pair(servers[1], mobile)
    refreshed = refresh(servers[1], mobile, tokens["refresh_token"])  # cached at B now
    assert refreshed.status_code == 200
    assert machine_token(servers[1], machine).status_code == 200

    admin_token = machine_token(servers[0], deployment["admin"]).json()["access_token"]
    for client in (machine, mobile):
        answer = requests.post(f"{servers[0].url}/oauth/register/{client['client_id']}/disable",
                               headers={"Authorization": f"Bearer {admin_token}"}, timeout=30)
        assert answer.status_code == 200 and answer.json()["active"] is False, answer.text

    refused = machine_token(servers[1], machine)
    assert refused.status_code == 401 and error(refused) == "invalid_client"
    assert error(refresh(servers[1], mobile, refreshed.json()["refresh_token"])) in {
        "invalid_grant", "invalid_client"}
    assert introspect(servers[1], api, refreshed.json()["access_token"]) == {"active": False}


def test_a_revocation_at_one_instance_is_seen_by_introspection_at_the_other(servers, app, api):
    first, second = pair(servers[0], app), pair(servers[1], app)
    for tokens in (first, second):
        for server in servers:
            assert introspect(server, api, tokens["access_token"])["active"] is True

    # By refresh token at A, by access token at B (RFC 7009: either ends the session).
    assert post(servers[0], "/oauth/revoke", {"token": first["refresh_token"],
                                              "client_id": app["client_id"]}).status_code == 200
    assert post(servers[1], "/oauth/revoke", {"token": second["access_token"],
                                              "client_id": app["client_id"]}).status_code == 200
    for tokens in (first, second):
        for server in servers:
            assert introspect(server, api, tokens["access_token"]) == {"active": False}
            assert introspect(server, api, tokens["refresh_token"]) == {"active": False}


# -- keys --------------------------------------------------------------------------------------

def sample_kids(servers: list[LiveServer], client: dict[str, Any], until: float
                ) -> list[list[tuple[float, float, str]]]:
    """Each instance, in a thread of its own, issues tokens until ``until`` (time.time());
    per instance: (request sent, answer received, kid) of each."""

    def one(server: LiveServer) -> list[tuple[float, float, str]]:
        session, seen = requests.Session(), []
        while time.time() < until:
            sent = time.time()
            response = post(server, "/oauth/token", {"grant_type": "client_credentials"},
                            {"Authorization": basic(client["client_id"],
                                                    client["client_secret"])}, session)
            assert response.status_code == 200, response.text
            seen.append((sent, time.time(), kid(response.json()["access_token"])))
        return seen

    with ThreadPoolExecutor(len(servers)) as pool:
        return list(pool.map(one, servers))


def published(server: LiveServer) -> set[str]:
    response = requests.get(f"{server.url}/.well-known/jwks.json", timeout=30)
    return {key["kid"] for key in response.json()["keys"]}


def wait_until(condition, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_rotated_key_signs_at_both_instances_from_the_same_instant(servers, register):
    """Activation by time (docs/design.md "Keys"): the next key is read by both within the
    re-scan interval (1 s) of `keys rotate`, and both start signing with it at the instant
    written in its metadata: no tolerance but the clock's. A key activated by hand
    (`keys activate --force`, a file change) reaches both within that re-scan interval."""
    machine = backend(register, client_name="Key watcher")
    old = {kid(machine_token(server, machine).json()["access_token"]) for server in servers}
    assert len(old) == 1

    # What `keys rotate` does (in this process: a command costs seconds of start-up here),
    # with a pre-publication of 3 s instead of the JWKS max-age + 5 s: the instances read the
    # activation time from the key's metadata, whatever their own settings.
    store = KeyAdmin(servers[0].env["AUTHSERVER_KEYS_DIR"], policy=KeyPolicy(prepublish=3))
    created = store.rotate()[0]
    nxt, activates = created.kid, created.activates_at.timestamp()
    wait_until(lambda: all(nxt in published(server) for server in servers),
               "both instances to publish the next key", timeout=2)
    documents = [requests.get(f"{server.url}/.well-known/jwks.json", timeout=30)
                 for server in servers]
    assert documents[0].content == documents[1].content  # the same JWKS, byte for byte
    assert documents[0].headers["ETag"] == documents[1].headers["ETag"]
    assert activates - time.time() > 0.8, "the next key must wait before it signs"

    time.sleep(max(0.0, activates - time.time() - 0.8))
    for samples in sample_kids(servers, machine, until=activates + 0.7):
        before = {k for sent, received, k in samples if received < activates}
        after = {k for sent, received, k in samples if sent > activates}
        assert before == old and after == {nxt}, samples

    # By hand: rotate, activate at once (`keys rotate`, `keys activate KID --force`). Both
    # sign with it within the re-scan interval.
    forced = store.rotate()[0].kid
    # `activate` stamps whole seconds, after the key it replaces: one second on from the
    # activation above, the stamp is now and not a second ahead.
    time.sleep(max(0.0, math.floor(activates) + 1.05 - time.time()))
    store.activate(forced, force=True)
    activated = time.time()
    for samples in sample_kids(servers, machine, until=activated + 1.4):
        # The re-scan interval, plus a request's time.
        assert {k for sent, _, k in samples if sent > activated + 1.1} == {forced}, samples


# -- limits ----------------------------------------------------------------------------------

def test_wrong_passwords_at_both_instances_add_up(servers, app):
    """AUTHSERVER_RATELIMIT_ACCOUNT_FREE=2 for the deployment: wrong passwords sent to the two
    instances in turn are held (429) once the two together pass the free attempts, where each
    instance counting alone would have seen half of them. The account is counted whether or
    not it exists; this one does not, so no other test's user is held."""
    answers = []
    for attempt in range(2 * ACCOUNT_FREE + 2):
        answer = sign_in(servers[attempt % 2], app, "mallory", "not-" + PASSWORD)
        answers.append(answer)
        if answer.status_code == 429:
            break
    assert [a.status_code for a in answers[:ACCOUNT_FREE]] == [400] * ACCOUNT_FREE
    held = answers[-1]
    assert held.status_code == 429, [a.text for a in answers]
    assert len(answers) <= ACCOUNT_FREE + 2  # the delay starts after the free attempts
    assert error(held) == "temporarily_unavailable"
    assert int(held.headers["Retry-After"]) >= 1
    for server in servers:  # held at both, the right password too (the delay tells nothing)
        again = sign_in(server, app, "mallory")
        assert again.status_code == 429, again.text


# -- no sticky sessions ----------------------------------------------------------------------

def _form(page: requests.Response) -> tuple[str, dict[str, str]]:
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action, page.text
    fields = {html.unescape(k): html.unescape(v) for k, v in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)}
    return html.unescape(action.group(1)), fields


def test_a_browser_sign_in_and_code_flow_hop_between_instances(servers, register):
    """Each step of the authorization-code flow at the other instance, as a round-robin
    balancer would send it: the browser session is a cookie signed with the shared secret
    key, the sign-in, consent and code are rows in the shared database."""
    web_app = register(1, client_name="Partner portal", token_endpoint_auth_method="none",
                       redirect_uris=[REDIRECT], grant_types=["authorization_code"],
                       scope="openid")
    a, b = servers
    browser = requests.Session()
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": web_app["client_id"],
              "redirect_uri": REDIRECT, "scope": "openid", "state": "s-1", "nonce": "n-1",
              "code_challenge": pkce.s256(verifier), "code_challenge_method": "S256"}
    first = browser.get(f"{a.url}/oauth/authorize", params=params, allow_redirects=False,
                        timeout=30)
    assert first.status_code in (302, 303), first.text
    assert first.headers["Location"].startswith("/login?"), first.headers["Location"]
    action, fields = _form(browser.get(b.url + first.headers["Location"], timeout=30))
    fields.update(username="alice", password=PASSWORD)
    signed_in = browser.post(a.url + action, data=fields, allow_redirects=False, timeout=30)
    assert signed_in.status_code == 303, signed_in.text
    consent = browser.get(b.url + signed_in.headers["Location"], allow_redirects=False,
                          timeout=30)
    assert consent.status_code == 200 and 'id="allow"' in consent.text, consent.text
    action, fields = _form(consent)
    fields["decision"] = "allow"
    back = browser.post(a.url + action, data=fields, allow_redirects=False, timeout=30)
    assert back.status_code == 303, back.text
    returned = dict(parse_qsl(urlsplit(back.headers["Location"]).query))
    assert returned["state"] == "s-1" and returned["iss"] == ISSUER
    tokens = post(b, "/oauth/token", {"grant_type": "authorization_code",
                                      "code": returned["code"], "redirect_uri": REDIRECT,
                                      "client_id": web_app["client_id"],
                                      "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    assert "id_token" in tokens.json()
    devices = browser.get(f"{b.url}/account/sessions", allow_redirects=False, timeout=30)
    assert devices.status_code == 200 and "Partner portal" in devices.text


# -- migrations while serving ----------------------------------------------------------------

def test_instances_keep_serving_through_an_additive_migration(database, servers, app):
    """Expand, then contract: a later release's migration that only adds (a nullable column,
    a table, a revision) is applied while the running instances serve; they go on issuing,
    rotating and revoking, writing rows into the tables it changed."""
    with database.connect() as connection:
        (revision,) = connection.execute(text("SELECT version_num FROM alembic_version")).one()
        connection.execute(text("ALTER TABLE token_families ADD COLUMN later_release TEXT"))
        connection.execute(text("ALTER TABLE refresh_tokens ADD COLUMN later_release TEXT"))
        connection.execute(text("CREATE TABLE later_release (id INTEGER PRIMARY KEY)"))
        connection.execute(text("UPDATE alembic_version SET version_num = 'later_release'"))
    try:
        for server in servers:
            tokens = pair(server, app)
            rotated = refresh(server, app, tokens["refresh_token"])
            assert rotated.status_code == 200, rotated.text
            assert post(server, "/oauth/revoke", {
                "token": rotated.json()["refresh_token"],
                "client_id": app["client_id"]}).status_code == 200
    finally:
        with database.connect() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :revision"),
                               {"revision": revision})
            connection.execute(text("DROP TABLE later_release"))
            connection.execute(text("ALTER TABLE token_families DROP COLUMN later_release"))
            connection.execute(text("ALTER TABLE refresh_tokens DROP COLUMN later_release"))


def test_both_instances_are_ready_on_the_shared_database_keys_and_redis(servers):
    """What the balancer polls: /readyz 200 with each dependency's check, /healthz 200."""
    for server in servers:
        ready = requests.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert all(checks[name]["ok"] for name in ("database", "migrations", "keys", "redis"))
        assert requests.get(f"{server.url}/healthz", timeout=30).status_code == 200


def test_older_instances_stay_ready_through_an_additive_migration(database, servers):
    """A database at a revision this code does not know is a later release's (expand, then
    contract): the instance can serve it and must stay in the balancer's rotation; only a
    revision this code knows and has not reached is "not migrated"."""
    with database.connect() as connection:
        (revision,) = connection.execute(text("SELECT version_num FROM alembic_version")).one()
        connection.execute(text("UPDATE alembic_version SET version_num = 'later_release'"))
    try:
        for server in servers:
            ready = requests.get(f"{server.url}/readyz", timeout=30)
            assert ready.status_code == 200, ready.text
    finally:
        with database.connect() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :revision"),
                               {"revision": revision})
