"""A single-page app keeps its refresh token out of JavaScript: a real Chromium, a real server.

The app is examples/spa/ around the README's "Browser apps" example, which is served verbatim
as its auth.js (tests/support/spa.py), on another port of 127.0.0.1: the same site as the
server, another origin. The client is public, registered for that origin with cookie delivery.
One browser tells the whole story: sign-in with the code flow and PKCE through our pages, the
code exchange by ``fetch(..., {credentials: "include"})``, the ``__Host-`` cookie, a refresh
that rotates it, UserInfo across origins, a lost refresh response retried, the CSRF rule, the
same page on another site, and sign-out.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import live_server, spa
from tests.support.browser import fill, wait_for
from tests.support.docs import doc_blocks
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.xdist_group("authorize")

SCOPE = "openid profile offline_access"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[live_server.LiveServer]:
    with live_server.running(tmp_path_factory.mktemp("spa-cookie"), users=[
            ("alice", "--email", "alice@example.com", "--name", "Alice Liddell")]) as srv:
        yield srv


def readme_spa_example() -> str:
    blocks = doc_blocks("spa-example", "js")
    assert len(blocks) == 1, "the browser-app example is one js block"
    return blocks[0]


def in_page(browser: WebDriver, body: str, *args: Any) -> dict[str, Any]:
    """Run ``body``, the body of an async function of ``args``, in the page:
    ``{"value": what it returned}`` or ``{"error": what it threw}``."""
    return browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"(async (...args) => {{ {body} }})(...Array.from(arguments).slice(0, -1))"
        ".then((value) => done({value}), (error) => done({error: String(error)}));", *args)


def refresh_cookie(browser: WebDriver, client_id: str) -> dict[str, Any] | None:
    """The client's refresh cookie in the browser's cookie store (HttpOnly ones included)."""
    cookies = browser.execute_cdp_cmd("Network.getAllCookies", {})["cookies"]
    named = [c for c in cookies if c["name"] == f"__Host-refresh-{client_id}"]
    assert len(named) <= 1, named
    return named[0] if named else None


def cookie_value(browser: WebDriver, client_id: str) -> str:
    cookie = refresh_cookie(browser, client_id)
    assert cookie is not None, "no refresh cookie"
    return cookie["value"]


def status(browser: WebDriver, expected: str) -> str:
    """Wait until the page's status reads ``expected``; the error it shows beside it."""
    WebDriverWait(browser, 15).until(
        lambda d: d.find_element(By.ID, "status").text == expected,
        f"status never became {expected!r}")
    return browser.find_element(By.ID, "error").text


def shown(browser: WebDriver, element_id: str) -> dict[str, Any]:
    return json.loads(browser.find_element(By.ID, element_id).text)


def set_cookie_value(response: requests.Response, client_id: str) -> str:
    match = re.search(rf"__Host-refresh-{re.escape(client_id)}=([^;,]*)",
                      response.headers.get("Set-Cookie", ""))
    assert match, response.headers
    return match.group(1)


def test_a_browser_app_keeps_its_refresh_token_in_an_httponly_cookie(
        browser: WebDriver, server: live_server.LiveServer) -> None:
    browser.set_script_timeout(15)
    token_url = f"{server.url}/oauth/token"
    with spa.serving(readme_spa_example(), server.url) as app:
        client = server.create_client(
            "--public", "--name", "Budget Planner web", "--redirect-uri", app.url,
            "--web-origin", app.origin, "--grant-type", "authorization_code",
            "--grant-type", "refresh_token", "--scope", SCOPE,
            "--refresh-token-delivery", "cookie")
        client_id = client["client_id"]
        app.config.update(issuer=server.url, clientId=client_id, redirectUri=app.url,
                          scope=SCOPE)

        # Not signed in: the page's refresh finds no cookie, and the refusal is readable.
        browser.get(app.url)
        assert status(browser, "Signed out")
        assert refresh_cookie(browser, client_id) is None

        # Sign in through our pages: the code flow with PKCE, then the code exchange by fetch.
        browser.find_element(By.ID, "sign-in").click()
        WebDriverWait(browser, 15).until(lambda d: d.current_url.startswith(f"{server.url}/login"))
        wait_for(browser, "#username")
        fill(browser, {"username": "alice", "password": PASSWORD})
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(browser, "#allow").click()
        assert status(browser, "Signed in as alice") == ""
        assert browser.current_url == app.url  # the code left the address bar
        tokens = shown(browser, "tokens")
        assert {"access_token", "id_token", "expires_in"} <= set(tokens)
        assert "refresh_token" not in tokens
        assert shown(browser, "userinfo")["name"] == "Alice Liddell"  # UserInfo, cross-origin

        # The refresh token is in the browser's cookie store, out of JavaScript's reach.
        assert "__Host-refresh" not in browser.execute_script("return document.cookie")
        cookie = refresh_cookie(browser, client_id)
        assert cookie is not None
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
        assert (cookie["path"], cookie["domain"], cookie["session"]) == ("/", "127.0.0.1", False)
        lifetime = min(ttl for ttl in (client["refresh_idle_ttl"],
                                       client["refresh_absolute_ttl"]) if ttl)
        assert lifetime - 60 < cookie["expires"] - time.time() <= lifetime + 1

        # A refresh answers without the token and rotates the cookie.
        browser.find_element(By.ID, "refresh").click()
        assert status(browser, "Refreshed") == ""
        assert "refresh_token" not in shown(browser, "tokens")
        signed_in = cookie_value(browser, client_id)
        assert signed_in != cookie["value"]

        # A lost response: the server rotated (the request below, from this browser's device:
        # its cookie, user agent, device id and origin), but the page saw only a network
        # failure. Its retry sends the old cookie and gets the identical answer, and the same
        # child in the cookie.
        device = {"user_agent": browser.execute_script("return navigator.userAgent"),
                  "device_id": browser.execute_script("return localStorage.device_id")}
        lost = requests.post(token_url, data={
            "grant_type": "refresh_token", "client_id": client_id,
            "device_id": device["device_id"]}, headers={
            "Origin": app.origin, "X-CSRF": "1", "User-Agent": device["user_agent"],
            "Cookie": f"__Host-refresh-{client_id}={signed_in}"}, timeout=10)
        assert lost.status_code == 200, lost.text
        assert "refresh_token" not in lost.json()
        child = set_cookie_value(lost, client_id)
        retried = in_page(browser, """
            const real = window.fetch, calls = [];
            window.fetch = (url, init) => {
              calls.push(String(url));
              if (calls.length === 1) return Promise.reject(new TypeError("Failed to fetch"));
              return real(url, init);
            };
            try {
              const auth = await import("/auth.js");
              return {body: await auth.refresh(), calls};
            } finally {
              window.fetch = real;
            }""")
        assert retried == {"value": {"body": lost.json(), "calls": [token_url, token_url]}}
        assert cookie_value(browser, client_id) == child

        # CSRF: without X-CSRF the request is refused (readable: the origin is registered),
        # and nothing changes.
        refused = in_page(browser, """
            const response = await fetch(args[0], {method: "POST", credentials: "include",
              body: new URLSearchParams({grant_type: "refresh_token", client_id: args[1]})});
            return {status: response.status, body: await response.json()};""",
            token_url, client_id)
        assert refused["value"]["status"] == 400, refused
        assert refused["value"]["body"]["error"] == "invalid_request"
        assert cookie_value(browser, client_id) == child

        # The same page on another site (localhost is not 127.0.0.1, and no web origin):
        # its refresh never gets an answer, and nothing changes.
        browser.get(app.foreign_url)
        assert status(browser, "Signed out") == "Failed to fetch"
        assert cookie_value(browser, client_id) == child

        # Back on the app's origin, a reload is still signed in: the cookie refreshes.
        browser.get(app.url)
        assert status(browser, "Signed in as alice") == ""
        last = cookie_value(browser, client_id)
        assert last != child

        # Sign-out revokes the family and expires the cookie; the next refresh fails.
        browser.find_element(By.ID, "sign-out").click()
        assert status(browser, "Signed out") == ""
        assert refresh_cookie(browser, client_id) is None
        browser.find_element(By.ID, "refresh").click()
        assert status(browser, "Refresh failed")
        replayed = requests.post(token_url, data={
            "grant_type": "refresh_token", "client_id": client_id,
            "device_id": device["device_id"]}, headers={
            "Origin": app.origin, "X-CSRF": "1", "User-Agent": device["user_agent"],
            "Cookie": f"__Host-refresh-{client_id}={last}"}, timeout=10)
        assert (replayed.status_code, replayed.json()["error"]) == (400, "invalid_grant")
        userinfo = requests.get(f"{server.url}/oauth/userinfo", headers={
            "Authorization": f"Bearer {lost.json()['access_token']}"}, timeout=10)
        assert userinfo.status_code == 401
