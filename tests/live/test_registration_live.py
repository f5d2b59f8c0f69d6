"""The registration API against a real server process, with the client libraries automation
uses (Authlib's OAuth2Session for the admin token, requests, requests-oauthlib), and the
registration example of docs/admins.md run verbatim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session as RequestsOAuth2Session

from tests.support import live_server
from tests.support.docs import doc_blocks

pytestmark = pytest.mark.xdist_group("admin")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server.running(tmp_path_factory.mktemp("registration-live"), workers=1) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin_session(server):
    """An operator's automation: an admin client, its token from client_credentials."""
    admin = server.create_client("--name", "Provisioner", "--grant-type", "client_credentials",
                                 "--scope", "admin:clients")
    session = OAuth2Session(admin["client_id"], admin["client_secret"],
                            token_endpoint_auth_method="client_secret_basic")
    session.fetch_token(f"{server.url}/oauth/token", grant_type="client_credentials")
    return session


def test_register_use_rotate_and_delete_over_http(server, admin_session, monkeypatch):
    created = admin_session.post(f"{server.url}/oauth/register", json={
        "client_name": "Nightly export", "grant_types": ["client_credentials"],
        "scope": "reports"})
    assert created.status_code == 201, created.text
    body = created.json()
    assert created.headers["Location"] == f"{server.url}/oauth/register/{body['client_id']}"

    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is plain http
    machine = RequestsOAuth2Session(client=BackendApplicationClient(body["client_id"]))
    token = machine.fetch_token(f"{server.url}/oauth/token", client_id=body["client_id"],
                                client_secret=body["client_secret"])
    assert token["scope"] == ["reports"]

    own = {"Authorization": f"Bearer {body['registration_access_token']}"}
    read = requests.get(body["registration_client_uri"], headers=own, timeout=10)
    assert read.status_code == 200 and read.json()["client_name"] == "Nightly export"
    rotated = requests.post(body["registration_client_uri"] + "/secret", headers=own,
                            json={"overlap_seconds": 0}, timeout=10).json()
    stale = requests.post(f"{server.url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(body["client_id"], body["client_secret"]), timeout=10)
    assert stale.status_code == 401 and stale.json()["error"] == "invalid_client"
    fresh = requests.post(f"{server.url}/oauth/token", data={"grant_type": "client_credentials"},
                          auth=(body["client_id"], rotated["client_secret"]), timeout=10)
    assert fresh.status_code == 200

    bad = admin_session.put(body["registration_client_uri"], json={
        "client_id": body["client_id"], "grant_types": ["refresh_token"]})
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client_metadata"
    assert bad.json()["error_description"].startswith("grant_types: ")

    assert admin_session.delete(body["registration_client_uri"]).status_code == 204
    gone = requests.post(f"{server.url}/oauth/token", data={"grant_type": "client_credentials"},
                         auth=(body["client_id"], rotated["client_secret"]), timeout=10)
    assert gone.status_code == 401


def test_the_readme_registration_example_runs_verbatim(server, tmp_path):
    script = doc_blocks("registration-api", "bash")[0]
    script = (script.replace("http://127.0.0.1:8000", server.url)
              .replace(".venv/bin/", str(Path(sys.executable).parent) + "/"))
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                            env=server.env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    rotated, refused = [json.loads(line) for line in result.stdout.splitlines() if line]
    assert rotated["previous_secret_valid_for"] == 600 and rotated["client_secret"]
    assert refused["error"] == "invalid_redirect_uri"
    assert refused["error_description"].startswith("redirect_uris: ")
