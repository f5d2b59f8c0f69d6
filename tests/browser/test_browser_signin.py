"""Third-party sign-in in a real headless Chromium against a real server process.

The client is a native app listening on a loopback port (RFC 8252 §7.3): a small HTTP
server thread stands in for it and records what the browser brings back. The code is then
exchanged with PKCE and refreshed over HTTP, as the app would.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import jwt
import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from authserver.domain import pkce
from tests.support import live_server
from tests.support.browser import fill, wait_for
from tests.support.docs import doc_blocks
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.xdist_group("authorize")

SCOPE = "openid profile email offline_access"


@dataclass
class Callback:
    """The app's loopback redirect endpoint; remembers every query it was sent."""

    url: str
    received: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[live_server.LiveServer]:
    with live_server.running(tmp_path_factory.mktemp("browser-signin"), users=[
            ("alice", "--email", "alice@example.com", "--name", "Alice Liddell")]) as srv:
        yield srv


@pytest.fixture
def callback() -> Iterator[Callback]:
    received: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urlsplit(self.path).path != "/callback":  # the browser's /favicon.ico
                self.send_error(404)
                return
            received.append(dict(parse_qsl(urlsplit(self.path).query)))
            body = b"<!doctype html><title>Budget Planner</title><p>Signed in.</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield Callback(f"http://127.0.0.1:{httpd.server_address[1]}/callback", received)
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def app_client(server) -> dict:
    """A fresh public client per test (consent is remembered per client)."""
    return server.create_client(
        "--name", "Budget Planner", "--public", "--redirect-uri", "http://127.0.0.1/callback",
        "--grant-type", "authorization_code", "--grant-type", "refresh_token",
        "--scope", SCOPE)


def authorization_url(server, app_client, redirect_uri: str, verifier: str,
                      state: str = "st-42") -> str:
    return f"{server.url}/oauth/authorize?" + urlencode({
        "response_type": "code", "client_id": app_client["client_id"],
        "redirect_uri": redirect_uri, "scope": SCOPE, "state": state, "nonce": "nonce-7",
        "code_challenge": pkce.s256(verifier), "code_challenge_method": "S256"})


def sign_in(browser, password: str = PASSWORD, screenshot: str | None = None) -> None:
    wait_for(browser, "#username")
    assert browser.find_element(By.CSS_SELECTOR, "label[for=username]").text == "Username"
    assert browser.find_element(By.CSS_SELECTOR, "label[for=password]").text == "Password"
    if screenshot:
        browser.save_screenshot(screenshot)
    fill(browser, {"username": "alice", "password": password})
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def wait_until_at(browser, prefix: str) -> dict[str, str]:
    WebDriverWait(browser, 15).until(lambda d: d.current_url.startswith(prefix))
    return dict(parse_qsl(urlsplit(browser.current_url).query))


def test_sign_in_consent_code_exchange_and_refresh(browser, server, callback, app_client):
    verifier = secrets.token_urlsafe(48)
    browser.get(authorization_url(server, app_client, callback.url, verifier))
    assert browser.current_url.startswith(f"{server.url}/login?")
    assert browser.title == "Sign in · authserver"
    sign_in(browser, screenshot="/tmp/login.png")  # noqa: S108 - for a person to look at

    allow = wait_for(browser, "#allow")
    page = browser.find_element(By.TAG_NAME, "main").text
    assert "Allow Budget Planner to access your account?" in page
    assert "See your email address" in page and "Budget Planner app on this device" in page
    browser.save_screenshot("/tmp/consent.png")  # noqa: S108
    allow.click()

    returned = wait_until_at(browser, callback.url)
    assert returned["state"] == "st-42" and returned["iss"] == server.url
    assert callback.received == [returned]
    assert "Signed in." in browser.find_element(By.TAG_NAME, "body").text

    token_url = f"{server.url}/oauth/token"
    tokens = requests.post(token_url, data={
        "grant_type": "authorization_code", "code": returned["code"],
        "redirect_uri": callback.url, "code_verifier": verifier,
        "client_id": app_client["client_id"]}, timeout=10)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert {"access_token", "refresh_token", "id_token"} <= set(body)
    key = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json") \
        .get_signing_key_from_jwt(body["id_token"])
    claims = jwt.decode(body["id_token"], key, algorithms=["RS256"],
                        audience=app_client["client_id"], issuer=server.url)
    assert claims["nonce"] == "nonce-7"

    refreshed = requests.post(token_url, data={
        "grant_type": "refresh_token", "refresh_token": body["refresh_token"],
        "client_id": app_client["client_id"]}, timeout=10)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"] != body["refresh_token"]

    # Signed in and consented: a loopback redirect still asks the person to continue (no
    # silent code to an app on a device), with no password, then goes back with a code.
    browser.get(authorization_url(server, app_client, callback.url, verifier, state="again"))
    wait_for(browser, "#allow").click()
    assert wait_until_at(browser, callback.url)["state"] == "again"


def test_a_wrong_password_shows_an_error_and_goes_nowhere(browser, server, callback,
                                                          app_client):
    verifier = secrets.token_urlsafe(48)
    browser.get(authorization_url(server, app_client, callback.url, verifier))
    sign_in(browser, password="not the password")
    alert = wait_for(browser, "#login-error")
    assert alert.text == "That username and password don't match."
    assert alert.get_attribute("role") == "alert"
    assert browser.current_url == f"{server.url}/login"
    assert browser.find_element(By.ID, "username").get_attribute("value") == "alice"
    assert callback.received == []
    # The right password still brings the person back to the application.
    sign_in(browser)
    wait_for(browser, "#allow").click()
    assert "code" in wait_until_at(browser, callback.url)


def test_denied_consent_returns_access_denied(browser, server, callback, app_client):
    verifier = secrets.token_urlsafe(48)
    browser.get(authorization_url(server, app_client, callback.url, verifier))
    sign_in(browser)
    wait_for(browser, "#deny").click()
    returned = wait_until_at(browser, callback.url)
    assert returned["error"] == "access_denied" and returned["state"] == "st-42"
    assert returned["iss"] == server.url and "code" not in returned
    assert callback.received == [returned]


@pytest.mark.parametrize("tamper", ["other-path", "other-host", "prefix"])
def test_a_tampered_redirect_uri_stops_on_our_error_page(browser, server, callback, app_client,
                                                         tamper):
    redirect_uri = {"other-path": callback.url.replace("/callback", "/steal"),
                    "other-host": "https://evil.example/callback",
                    "prefix": callback.url + "/../steal"}[tamper]
    browser.get(authorization_url(server, app_client, redirect_uri, "v" * 43))
    heading = wait_for(browser, "h1")
    assert heading.text == "This sign-in link is not valid"
    if tamper == "other-host":
        browser.save_screenshot("/tmp/authorize-error.png")  # noqa: S108
    assert browser.current_url.startswith(f"{server.url}/oauth/authorize?")
    assert callback.received == []
    # Signing in first changes nothing: still our page, still no redirect.
    browser.get(f"{server.url}/login")
    sign_in(browser)
    # The sign-in must land before the next navigation, or its redirect may overtake it.
    # (The condition tolerates the login page's heading going stale under it.)
    WebDriverWait(browser, 15).until(expected_conditions.text_to_be_present_in_element(
        (By.TAG_NAME, "h1"), "Hello, Alice Liddell"))
    browser.get(authorization_url(server, app_client, redirect_uri, "v" * 43))
    assert wait_for(browser, "h1").text == "This sign-in link is not valid"
    assert callback.received == []


def readme_client_example() -> str:
    blocks = doc_blocks("client-example", "bash")
    assert len(blocks) == 1, "the client example is one bash block"
    return blocks[0]


def test_the_readme_client_example_runs_verbatim(browser, server, tmp_path):
    """The worked example of docs/clients.md, with Chromium as the person at the keyboard."""
    bin_dir = str(Path(sys.executable).parent)
    script = (readme_client_example().replace("http://127.0.0.1:8000", server.url)
              .replace(".venv/bin/", bin_dir + "/"))
    env = {**server.env, "BROWSER": "true"}  # webbrowser.open() must not start a browser
    process = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        first = process.stdout.readline()
        assert first.startswith("Sign in at: "), first + process.stderr.read()
        browser.get(first.removeprefix("Sign in at: ").strip())
        sign_in(browser)
        wait_for(browser, "#allow").click()
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, out + err
    assert "scope openid profile email offline_access" in out
    assert "userinfo: {'sub':" in out and "'preferred_username': 'alice'" in out
    assert "Signed in." in browser.find_element(By.TAG_NAME, "body").text
