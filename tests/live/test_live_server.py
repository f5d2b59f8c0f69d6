"""End to end against a real server process, with the client libraries users use.

The server is started through the CLI and environment variables, as docs/operators.md says;
the clients are Authlib's OAuth2Session, requests-oauthlib and PyJWT's PyJWKClient.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from oauthlib.oauth2 import BackendApplicationClient, LegacyApplicationClient
from requests_oauthlib import OAuth2Session as RequestsOAuth2Session

from tests.support import live_server
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.xdist_group("live")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    yield from live_server.alice_on_backend(request, tmp_path_factory, "live")


@pytest.fixture(scope="module")
def mobile_app(server):
    return server.create_client("--name", "Bank app", "--public", "--first-party",
                                "--scope", "read write", "--reuse-grace", "0")


def _verify(server, token: str) -> dict:
    jwks = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(token)
    assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
    return jwt.decode(token, key, algorithms=["RS256"], audience=server.url, issuer=server.url)


def test_readme_walkthrough_with_requests(server, mobile_app):
    token_url = f"{server.url}/oauth/token"
    first = requests.post(token_url, data={
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "client_id": mobile_app["client_id"], "scope": "read"}, timeout=10)
    assert first.status_code == 200 and first.headers["Cache-Control"] == "no-store"
    pair = first.json()
    claims = _verify(server, pair["access_token"])
    assert claims["scope"] == "read" and claims["client_id"] == mobile_app["client_id"]

    second = requests.post(token_url, data={
        "grant_type": "refresh_token", "refresh_token": pair["refresh_token"],
        "client_id": mobile_app["client_id"]}, timeout=10).json()
    assert _verify(server, second["access_token"])["sid"] == claims["sid"]

    reuse = requests.post(token_url, data={
        "grant_type": "refresh_token", "refresh_token": pair["refresh_token"],
        "client_id": mobile_app["client_id"]}, timeout=10)
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    family_dead = requests.post(token_url, data={
        "grant_type": "refresh_token", "refresh_token": second["refresh_token"],
        "client_id": mobile_app["client_id"]}, timeout=10)
    assert family_dead.json()["error"] == "invalid_grant"


def test_authlib_oauth2session_password_and_refresh(server, mobile_app):
    session = OAuth2Session(mobile_app["client_id"], scope="read write",
                            token_endpoint_auth_method="none")
    token = session.fetch_token(f"{server.url}/oauth/token", username="alice",
                                password=PASSWORD, grant_type="password")
    assert token["token_type"] == "Bearer" and token["expires_in"] == 900
    refreshed = session.refresh_token(f"{server.url}/oauth/token")
    assert refreshed["refresh_token"] != token["refresh_token"]
    assert _verify(server, refreshed["access_token"])["scope"] == "read write"


def test_requests_oauthlib_legacy_and_backend_clients(server, mobile_app, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is plain http
    session = RequestsOAuth2Session(client=LegacyApplicationClient(mobile_app["client_id"]))
    token = session.fetch_token(f"{server.url}/oauth/token", username="alice",
                                password=PASSWORD, include_client_id=True)
    assert token["refresh_token"].startswith("rt_")
    refreshed = session.refresh_token(f"{server.url}/oauth/token",
                                      client_id=mobile_app["client_id"])
    assert refreshed["access_token"] != token["access_token"]

    machine = server.create_client("--name", "Reports", "--scope", "reports")
    backend = RequestsOAuth2Session(client=BackendApplicationClient(machine["client_id"]))
    token = backend.fetch_token(f"{server.url}/oauth/token", client_id=machine["client_id"],
                                client_secret=machine["client_secret"])
    assert "refresh_token" not in token
    assert _verify(server, token["access_token"])["sub"] == machine["client_id"]


def test_concurrent_refreshes_across_processes_rotate_once(server):
    app = server.create_client("--name", "Racer", "--public", "--first-party",
                               "--scope", "read", "--reuse-grace", "30")
    token_url = f"{server.url}/oauth/token"
    pair = requests.post(token_url, data={
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "client_id": app["client_id"]}, timeout=10).json()
    barrier = threading.Barrier(20)

    def one(_):
        barrier.wait()
        return requests.post(token_url, data={
            "grant_type": "refresh_token", "refresh_token": pair["refresh_token"],
            "client_id": app["client_id"]}, timeout=30)

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(one, range(20)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.text for r in responses}) == 1  # identical pair for every racer
    new = responses[0].json()["refresh_token"]
    assert requests.post(token_url, data={
        "grant_type": "refresh_token", "refresh_token": new,
        "client_id": app["client_id"]}, timeout=10).status_code == 200


def test_discovery_and_jwks_from_the_process(server):
    metadata = requests.get(f"{server.url}/.well-known/oauth-authorization-server",
                            timeout=10).json()
    assert metadata["issuer"] == server.url
    assert metadata["token_endpoint"] == f"{server.url}/oauth/token"
    jwks = requests.get(metadata["jwks_uri"], timeout=10)
    assert "max-age=" in jwks.headers["Cache-Control"]
    for key in jwks.json()["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)
