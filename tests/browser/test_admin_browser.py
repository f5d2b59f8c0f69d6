"""The admin pages in a real headless Chromium against a real server process.

The server and its admin user are set up through the CLI, as docs/admins.md tells an admin;
sessions to revoke are created over HTTP with the password grant, as a mobile app does.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import jwt
import pytest
import requests
from selenium.webdriver.common.by import By

from tests.support import live_server
from tests.support.browser import click_through, fill
from tests.support.browser import wait_for as _wait_for
from tests.support.oauth import PASSWORD

pytestmark = pytest.mark.xdist_group("admin")

REDIRECT = "https://partner.example.com/cb"
# Screenshots for a person to look at (admin.png: the client list).
SCREENSHOTS = Path(os.environ.get("AUTHSERVER_SCREENSHOTS", tempfile.gettempdir()))


def wait_for(driver, css):
    """The element once present; generous, as the test machine may be busy (no sleeps)."""
    return _wait_for(driver, css, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_server.running(tmp_path_factory.mktemp("admin-live"), workers=1,
                             users=[("root", "--admin"), ("alice",)]) as srv:
        yield srv


def screenshot(driver, name: str) -> None:
    """The whole page (not only the window), for a person to look at."""
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], max(height, size["height"]))
    driver.save_screenshot(str(SCREENSHOTS / name))
    driver.set_window_size(size["width"], size["height"])


def sign_in(driver, server, username, next_path):
    driver.get(f"{server.url}{next_path}")
    wait_for(driver, "#username")
    assert "/login?next=" in driver.current_url  # anonymous: sent to sign in first
    fill(driver, {"username": username, "password": PASSWORD})
    # Wait for the login page to go: both pages have a "main h1" the caller waits for.
    click_through(driver, driver.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def shown(server, client_id):
    return json.loads(server.cli("clients", "show", client_id, "--json"))


def password_login(server, client_id):
    response = requests.post(f"{server.url}/oauth/token", data={
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "client_id": client_id}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def test_an_admin_manages_clients_in_the_browser(browser, server):
    mobile = server.create_client("--name", "Bank app", "--public", "--first-party",
                                  "--scope", "read write")
    pairs = [password_login(server, mobile["client_id"]) for _ in range(2)]
    sid = jwt.decode(pairs[0]["access_token"], options={"verify_signature": False})["sid"]

    sign_in(browser, server, "root", "/admin/clients")
    heading = wait_for(browser, "main h1")
    assert heading.text == "Clients" and browser.current_url.endswith("/admin/clients")

    # Register a client: the secret is shown once.
    browser.find_element(By.ID, "new-client").click()
    wait_for(browser, "#save-client")
    fill(browser, {"name": "Partner portal", "redirect_uris": REDIRECT,
                   "scope": "openid profile"})
    for grant in ("authorization_code", "refresh_token"):
        browser.find_element(By.CSS_SELECTOR, f"input[name=grant_types][value={grant}]").click()
    browser.find_element(By.ID, "save-client").click()
    secret = wait_for(browser, "#client-secret").text
    screenshot(browser, "admin_secret.png")
    client_id = browser.find_element(By.ID, "client-id").text
    assert len(secret) >= 43 and "shown only once" in browser.page_source
    auth = requests.post(f"{server.url}/oauth/token", data={"grant_type": "client_credentials"},
                         auth=(client_id, secret), timeout=10)
    assert auth.json()["error"] == "unauthorized_client"  # authenticated; not its grant

    # Not again: a reload shows the client's page, and so does the client list's link.
    browser.refresh()
    wait_for(browser, "#rotate-secret")
    assert browser.current_url == f"{server.url}/admin/clients/{client_id}"
    assert secret not in browser.page_source
    browser.get(f"{server.url}/admin/clients")
    wait_for(browser, f"tr[data-client-id='{client_id}'] a").click()
    wait_for(browser, "#rotate-secret")
    assert secret not in browser.page_source

    # Edit its redirect URIs: an invalid one is a readable error by the field.
    fill(browser, {"redirect_uris": f"{REDIRECT}\nhttp://evil.example/cb"})
    browser.find_element(By.ID, "save-client").click()
    error = wait_for(browser, "#redirect_uris-error")
    assert "must use https" in error.text and "http://evil.example/cb" in error.text
    textarea = browser.find_element(By.ID, "redirect_uris")
    assert textarea.get_attribute("aria-invalid") == "true"
    assert "redirect_uris-error" in textarea.get_attribute("aria-describedby")
    assert shown(server, client_id)["redirect_uris"] == [REDIRECT]  # nothing changed
    screenshot(browser, "admin_form_error.png")
    fill(browser, {"redirect_uris": f"{REDIRECT}\n{REDIRECT}/v2"})
    browser.find_element(By.ID, "save-client").click()
    assert wait_for(browser, "p.alert.ok").text == "Saved."
    assert shown(server, client_id)["redirect_uris"] == [REDIRECT, REDIRECT + "/v2"]
    screenshot(browser, "admin_client.png")

    # The client list, as an admin sees it.
    browser.get(f"{server.url}/admin/clients")
    wait_for(browser, f"tr[data-client-id='{client_id}']")
    browser.save_screenshot(str(SCREENSHOTS / "admin.png"))

    # Revoke one of the mobile app's sessions.
    browser.get(f"{server.url}/admin/clients/{mobile['client_id']}")
    row = wait_for(browser, f"tr[data-family-id='{sid}']")
    assert "alice" in row.text
    screenshot(browser, "admin_sessions.png")
    row.find_element(By.CSS_SELECTOR, "button").click()
    assert wait_for(browser, "p.alert.ok").text == "The session was revoked."
    assert not browser.find_elements(By.CSS_SELECTOR, f"tr[data-family-id='{sid}']")
    refresh = requests.post(f"{server.url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": pairs[0]["refresh_token"],
        "client_id": mobile["client_id"]}, timeout=10)
    assert refresh.status_code == 400 and refresh.json()["error"] == "invalid_grant"
    still = requests.post(f"{server.url}/oauth/token", data={
        "grant_type": "refresh_token", "refresh_token": pairs[1]["refresh_token"],
        "client_id": mobile["client_id"]}, timeout=10)
    assert still.status_code == 200  # only that one session ended

    # The audit trail, filtered by this client.
    browser.get(f"{server.url}/admin/audit?client={mobile['client_id']}")
    table = wait_for(browser, "table[aria-label='Audit events']")
    assert "family_revoked" in table.text and "revoked_by_admin" in table.text
    screenshot(browser, "admin_audit.png")

    # Delete the partner client, after confirming.
    browser.get(f"{server.url}/admin/clients/{client_id}")
    wait_for(browser, "#delete-client").click()
    confirm = wait_for(browser, "#confirm-delete")
    screenshot(browser, "admin_delete.png")
    confirm.click()
    assert "deleted" in wait_for(browser, "p.alert.ok").text
    assert not browser.find_elements(By.CSS_SELECTOR, f"tr[data-client-id='{client_id}']")


def test_a_user_without_the_admin_role_is_refused(browser, server):
    sign_in(browser, server, "alice", "/admin/clients")
    heading = wait_for(browser, "main h1")
    assert heading.text == "Admins only"
    assert "does not have the admin role" in browser.page_source
    browser.get(f"{server.url}/admin/audit")
    assert wait_for(browser, "main h1").text == "Admins only"
