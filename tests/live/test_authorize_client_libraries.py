"""The authorization-code flow with PKCE, driven by standard client libraries (Authlib's
``OAuth2Session`` and requests-oauthlib) against a real ``authserver serve`` process.

The person in the middle (sign-in form, consent form) is a ``requests.Session`` that keeps
cookies and posts the forms with their CSRF token, as a browser would.
"""

from __future__ import annotations

import html
import re
import secrets
from urllib.parse import parse_qsl, urljoin, urlsplit

import jwt
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session
from requests_oauthlib import OAuth2Session as RequestsOAuth2Session

from tests.support import live_server
from tests.support.databases import backend_database
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.xdist_group("authorize")

NATIVE_REDIRECT = "http://127.0.0.1/callback"  # registered; any port at request time
SCOPE = "openid profile email offline_access"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("authorize-live")
    url = backend_database(request, workdir, "authorize")
    with live_server.running(workdir, url, users=[
            ("alice", "--email", "alice@example.com", "--name", "Alice Liddell")]) as srv:
        yield srv


@pytest.fixture(scope="module")
def native_app(server):
    """A public client registered exactly as docs/clients.md tells client developers."""
    return server.create_client(
        "--name", "Budget Planner", "--public", "--redirect-uri", NATIVE_REDIRECT,
        "--grant-type", "authorization_code", "--grant-type", "refresh_token",
        "--scope", SCOPE)


def _form(page: requests.Response) -> tuple[str, dict[str, str]]:
    """The action and hidden fields of the page's form."""
    text = page.text
    action = re.search(r'<form method="post" action="([^"]+)"', text)
    assert action, text
    fields = {html.unescape(k): html.unescape(v) for k, v in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', text)}
    return html.unescape(action.group(1)), fields


def sign_in_and_allow(server, authorization_url: str) -> str:
    """What the person does in the browser; returns the URL the browser is sent back to."""
    web = requests.Session()
    response = web.get(authorization_url, allow_redirects=False, timeout=10)
    assert response.status_code == 303, response.text
    login_page = web.get(urljoin(server.url, response.headers["Location"]), timeout=10)
    action, fields = _form(login_page)
    fields.update(username="alice", password=PASSWORD)
    signed_in = web.post(urljoin(server.url, action), data=fields, allow_redirects=False,
                         timeout=10)
    assert signed_in.status_code == 303, signed_in.text
    consent = web.get(urljoin(server.url, signed_in.headers["Location"]),
                      allow_redirects=False, timeout=10)
    if consent.status_code == 302:  # consent given earlier in this module is remembered
        return consent.headers["Location"]
    assert consent.status_code == 200 and 'id="allow"' in consent.text, consent.text
    action, fields = _form(consent)
    fields["decision"] = "allow"
    back = web.post(urljoin(server.url, action), data=fields, allow_redirects=False,
                    timeout=10)
    assert back.status_code == 303, back.text
    return back.headers["Location"]


def verify_id_token(server, token: str, client_id: str, nonce: str) -> dict:
    key = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=client_id,
                        issuer=server.url)
    assert claims["nonce"] == nonce
    return claims


def test_authlib_oauth2session_with_pkce(server, native_app, monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test server is plain http
    metadata = requests.get(f"{server.url}/.well-known/openid-configuration", timeout=10).json()
    port = live_server.free_port()  # RFC 8252 §7.3: the app's ephemeral loopback port
    redirect_uri = f"http://127.0.0.1:{port}/callback"
    client = OAuth2Session(native_app["client_id"], redirect_uri=redirect_uri, scope=SCOPE,
                           code_challenge_method="S256", token_endpoint_auth_method="none")
    verifier = generate_token(64)
    nonce = generate_token(16)
    url, state = client.create_authorization_url(metadata["authorization_endpoint"],
                                                 code_verifier=verifier, nonce=nonce)
    assert "code_challenge=" in url and "code_challenge_method=S256" in url

    callback = sign_in_and_allow(server, url)
    assert callback.startswith(redirect_uri + "?")
    returned = dict(parse_qsl(urlsplit(callback).query))
    assert returned["state"] == state and returned["iss"] == server.url  # RFC 9207

    token = client.fetch_token(metadata["token_endpoint"], authorization_response=callback,
                               code_verifier=verifier)
    assert token["token_type"] == "Bearer" and token["scope"] == SCOPE
    assert token["refresh_token"].startswith("rt_")
    claims = verify_id_token(server, token["id_token"], native_app["client_id"], nonce)

    info = client.get(metadata["userinfo_endpoint"], timeout=10)
    assert info.status_code == 200
    assert info.json() == {"sub": claims["sub"], "preferred_username": "alice",
                           "name": "Alice Liddell", "email": "alice@example.com",
                           "email_verified": False}

    refreshed = client.refresh_token(metadata["token_endpoint"])
    assert refreshed["refresh_token"] != token["refresh_token"]
    again = jwt.decode(refreshed["id_token"], options={"verify_signature": False})
    assert again["auth_time"] == claims["auth_time"] and again["sid"] == claims["sid"]
    assert client.get(metadata["userinfo_endpoint"], timeout=10).status_code == 200

    # The code was used once; presenting it again is refused and revokes the sign-in.
    replay = requests.post(metadata["token_endpoint"], data={
        "grant_type": "authorization_code", "code": returned["code"],
        "redirect_uri": redirect_uri, "code_verifier": verifier,
        "client_id": native_app["client_id"]}, timeout=10)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    dead = requests.post(metadata["token_endpoint"], data={
        "grant_type": "refresh_token", "refresh_token": refreshed["refresh_token"],
        "client_id": native_app["client_id"]}, timeout=10)
    assert dead.status_code == 400 and dead.json()["error"] == "invalid_grant"


def test_requests_oauthlib_confidential_client_with_pkce(server, monkeypatch):
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    portal = server.create_client(
        "--name", "Partner portal", "--redirect-uri", "https://partner.example.com/cb",
        "--grant-type", "authorization_code", "--grant-type", "refresh_token",
        "--scope", "openid profile offline_access")
    session = RequestsOAuth2Session(portal["client_id"],
                                    redirect_uri="https://partner.example.com/cb",
                                    scope=["openid", "profile", "offline_access"], pkce="S256")
    nonce = secrets.token_urlsafe(16)
    url, _ = session.authorization_url(f"{server.url}/oauth/authorize", nonce=nonce)
    callback = sign_in_and_allow(server, url)
    assert callback.startswith("https://partner.example.com/cb?")
    token = session.fetch_token(f"{server.url}/oauth/token", authorization_response=callback,
                                client_secret=portal["client_secret"])
    assert set(token["scope"]) == {"openid", "profile", "offline_access"}
    verify_id_token(server, token["id_token"], portal["client_id"], nonce)
    refreshed = session.refresh_token(f"{server.url}/oauth/token",
                                      auth=(portal["client_id"], portal["client_secret"]))
    assert refreshed["access_token"] != token["access_token"]
    profile = session.get(f"{server.url}/oauth/userinfo", timeout=10).json()
    assert profile["preferred_username"] == "alice" and "email" not in profile


def test_a_wrong_verifier_gets_invalid_grant_from_the_process(server, native_app,
                                                             monkeypatch):
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")
    client = OAuth2Session(native_app["client_id"], redirect_uri=NATIVE_REDIRECT, scope=SCOPE,
                           code_challenge_method="S256", token_endpoint_auth_method="none")
    url, _ = client.create_authorization_url(f"{server.url}/oauth/authorize",
                                             code_verifier=generate_token(64), nonce="n")
    code = dict(parse_qsl(urlsplit(sign_in_and_allow(server, url)).query))["code"]
    response = requests.post(f"{server.url}/oauth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": NATIVE_REDIRECT,
        "code_verifier": generate_token(64), "client_id": native_app["client_id"]},
        timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert response.headers["Cache-Control"] == "no-store"
