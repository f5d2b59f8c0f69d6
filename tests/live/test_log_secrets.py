"""A full session against a real ``authserver serve`` logging at DEBUG in JSON: every line it
writes (stdout and stderr) is one JSON object, and none carries a secret the session
handled (docs/operators.md, "Logs")."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from tests.live.test_authorize_client_libraries import sign_in_and_allow
from tests.support import live_server
from tests.support.oauth import PASSWORD

WRONG_PASSWORD = "Not-The-Password-0123456789"


def test_a_full_session_logs_json_lines_and_no_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is plain http
    with live_server.running(
            tmp_path, users=[("alice",)], workers=1,
            extra_env={"AUTHSERVER_LOG_LEVEL": "DEBUG", "AUTHSERVER_LOG_FORMAT": "json",
                       "AUTHSERVER_OPEN_REGISTRATION": "true"}) as server:
        secrets = _session(server)
        # The last request's access line is written after its answer.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and '"/oauth/revoke"' not in server.log():
            time.sleep(0.05)
    log = server.log()
    objects = []
    for number, line in enumerate(log.splitlines(), 1):
        try:
            objects.append(json.loads(line))
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line[:200]!r}")
    for name, secret in secrets.items():
        assert secret and secret not in log, f"the {name} is in the log"
    events = {line.get("event") for line in objects}
    assert {"refresh_token_reuse", "sign_in_failed", "token_request"} <= events, events
    access = [line for line in objects if line["logger"] == "authserver.access"]
    assert {"/oauth/token", "/oauth/introspect", "/oauth/revoke", "/oauth/register",
            "/oauth/authorize"} <= {line["path"] for line in access}
    assert all(len(line["request_id"]) == 16 for line in access)


def _session(server) -> dict[str, str]:
    """Every grant and endpoint a client uses; returns each secret it handled."""
    token_url = f"{server.url}/oauth/token"
    secrets: dict[str, str] = {"password": PASSWORD, "wrong password": WRONG_PASSWORD}
    # One confidential first-party client for every grant (each `clients create` is a
    # process start: the test stays short).
    app = server.create_client(
        "--name", "Everything", "--first-party", "--redirect-uri", "https://app.example/cb",
        "--grant-type", "authorization_code", "--grant-type", "refresh_token",
        "--grant-type", "password", "--grant-type", "client_credentials",
        "--scope", "openid offline_access read", "--reuse-grace", "0",
        "--allow-introspection")
    secrets["client secret"] = app["client_secret"]
    auth = (app["client_id"], app["client_secret"])

    # The code flow with PKCE through Authlib, a refresh, then the old token again: reuse.
    client = OAuth2Session(app["client_id"], app["client_secret"],
                           redirect_uri="https://app.example/cb",
                           scope="openid offline_access", code_challenge_method="S256")
    verifier = secrets["PKCE verifier"] = generate_token(64)
    url, _ = client.create_authorization_url(f"{server.url}/oauth/authorize",
                                             code_verifier=verifier, nonce=generate_token(16))
    callback = sign_in_and_allow(server, url)
    secrets["code"] = dict(parse_qsl(urlsplit(callback).query))["code"]
    token = client.fetch_token(token_url, authorization_response=callback,
                               code_verifier=verifier)
    secrets.update({"access token": token["access_token"], "ID token": token["id_token"],
                    "refresh token": token["refresh_token"]})
    refreshed = client.refresh_token(token_url)
    secrets["rotated refresh token"] = refreshed["refresh_token"]
    reused = requests.post(token_url, auth=auth, timeout=10, data={
        "grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    assert reused.status_code == 400

    # The password grant, a wrong password, client_credentials, introspection, revocation.
    mobile = requests.post(token_url, auth=auth, timeout=10, data={
        "grant_type": "password", "username": "alice", "password": PASSWORD, "scope": "read"})
    assert mobile.status_code == 200, mobile.text
    secrets["password grant access token"] = mobile.json()["access_token"]
    secrets["password grant refresh token"] = mobile.json()["refresh_token"]
    wrong = requests.post(token_url, auth=auth, timeout=10, data={
        "grant_type": "password", "username": "alice", "password": WRONG_PASSWORD})
    assert wrong.status_code == 400
    machine = requests.post(token_url, data={"grant_type": "client_credentials"}, auth=auth,
                            timeout=10)
    assert machine.status_code == 200, machine.text
    secrets["client_credentials access token"] = machine.json()["access_token"]
    introspected = requests.post(f"{server.url}/oauth/introspect", auth=auth, timeout=10,
                                 data={"token": mobile.json()["access_token"]})
    assert introspected.json()["active"] is True

    # A registration and its registration access token, used once.
    registered = requests.post(f"{server.url}/oauth/register", timeout=10, json={
        "client_name": "Registered", "redirect_uris": ["https://app.example/cb"]})
    assert registered.status_code == 201, registered.text
    body = registered.json()
    secrets["registration access token"] = body["registration_access_token"]
    if body.get("client_secret"):
        secrets["registered client secret"] = body["client_secret"]
    read = requests.get(body["registration_client_uri"], timeout=10, headers={
        "Authorization": f"Bearer {body['registration_access_token']}"})
    assert read.status_code == 200, read.text

    revoked = requests.post(f"{server.url}/oauth/revoke", auth=auth, timeout=10,
                            data={"token": mobile.json()["refresh_token"]})
    assert revoked.status_code == 200
    return secrets
