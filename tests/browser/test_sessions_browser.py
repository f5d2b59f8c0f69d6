"""The "Where you're signed in" page in a real headless Chromium against a real server.

Four devices sign in to one account: a phone and a tablet through the first-party app
(password grant with their own User-Agent and device id), and two browsers (two Chromium
profiles with different user agents) at /login. The page lists all four with readable
labels; its buttons sign one device out while the others keep working.
"""

from __future__ import annotations

import pytest
import requests
from selenium.webdriver.common.by import By

from tests.support import browser as chromium
from tests.support import live_server
from tests.support.oauth import PASSWORD
from tests.support.sessions import ANDROID_APP, FIREFOX_MAC, IPHONE_APP

pytestmark = pytest.mark.xdist_group("sessions")

SCREENSHOT = "/tmp/sessions.png"  # noqa: S108 - a fixed place to look at the page


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sessions-live")
    with live_server.running(workdir, workers=1,
                             users=[("alice", "--name", "Alice Martin")]) as srv:
        srv.workdir = workdir  # type: ignore[attr-defined]
        yield srv


@pytest.fixture(scope="module")
def bank_app(server):
    return server.create_client("--name", "BankApp", "--public", "--first-party",
                                "--scope", "read account", "--reuse-grace", "0")


class Device:
    """A phone or tablet running the first-party app: its own User-Agent and device id."""

    def __init__(self, server, app: dict, user_agent: str, device_id: str) -> None:
        self.url = f"{server.url}/oauth/token"
        self.app = app
        self.headers = {"User-Agent": user_agent, "X-Device-Id": device_id}
        response = requests.post(self.url, data={
            "grant_type": "password", "username": "alice", "password": PASSWORD,
            "client_id": app["client_id"], "scope": "read account"},
            headers=self.headers, timeout=10)
        assert response.status_code == 200, response.text
        self.tokens = response.json()

    def refresh(self) -> requests.Response:
        response = requests.post(self.url, data={
            "grant_type": "refresh_token", "refresh_token": self.tokens["refresh_token"],
            "client_id": self.app["client_id"]}, headers=self.headers, timeout=10)
        if response.status_code == 200:
            self.tokens = response.json()
        return response


def sign_in(driver, server) -> None:
    driver.get(f"{server.url}/login?next=/account/sessions")
    chromium.fill(driver, {"username": "alice", "password": PASSWORD})
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    chromium.wait_for(driver, "ul.devices")


def rows(driver) -> dict[str, str]:
    """Device label -> the visible text of its row."""
    found = {}
    for row in driver.find_elements(By.CSS_SELECTOR, "li.device"):
        label = row.find_element(By.CSS_SELECTOR, ".device-name strong").text
        found[label] = " ".join(row.text.split())
    return found


def sign_out_button(driver, label: str):
    for row in driver.find_elements(By.CSS_SELECTOR, "li.device"):
        if row.find_element(By.CSS_SELECTOR, ".device-name strong").text == label:
            return row.find_element(By.CSS_SELECTOR, "button")
    raise AssertionError(f"no device {label!r} on the page")


def test_two_browsers_and_two_apps_one_signed_out_by_its_button(server, bank_app, browser):
    phone = Device(server, bank_app, IPHONE_APP, "iphone-0001")
    tablet = Device(server, bank_app, ANDROID_APP, "pixel-tablet-01")
    with chromium.chromium(user_agent=FIREFOX_MAC) as laptop:
        sign_in(laptop, server)
        sign_in(browser, server)
        assert "Where you're signed in" in browser.title
        listed = rows(browser)
        assert set(listed) == {"Chrome on Linux", "Firefox on macOS", "BankApp on iOS",
                               "BankApp on Android"}, listed
        assert next(iter(listed)) == "Chrome on Linux"  # this device first, and marked
        assert "This device" in listed["Chrome on Linux"]
        assert sum("This device" in text for text in listed.values()) == 1
        assert "Browser sign-in" in listed["Firefox on macOS"]
        for app_row in ("BankApp on iOS", "BankApp on Android"):
            assert "BankApp" in listed[app_row].removeprefix(app_row)
            assert "Last active just now" in listed[app_row]
            assert "127.0.0.1" in listed[app_row]
        # The Firefox laptop sees the same devices, itself marked as this device.
        laptop.refresh()
        assert "This device" in rows(laptop)["Firefox on macOS"]
        browser.set_window_size(1280, 1150)  # the whole page in the picture
        browser.save_screenshot(SCREENSHOT)

        # Sign the phone out with its button: the page confirms, the row is gone.
        chromium.click_through(browser, sign_out_button(browser, "BankApp on iOS"))
        chromium.wait_for(browser, "p.alert.ok")
        assert "That device was signed out." in browser.find_element(
            By.CSS_SELECTOR, "p.alert.ok").text
        assert "BankApp on iOS" not in rows(browser)
        refused = phone.refresh()
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert "revoked" in refused.json()["error_description"]
        # The tablet keeps working: its refresh succeeds, its token still reaches the API.
        assert tablet.refresh().status_code == 200
        api = requests.get(f"{server.url}/account/api/sessions", timeout=10, headers={
            "Authorization": f"Bearer {tablet.tokens['access_token']}"})
        assert api.status_code == 200
        assert {s["device"] for s in api.json()["sessions"]} == {
            "BankApp on Android", "Chrome on Linux", "Firefox on macOS"}

        # Sign the Firefox laptop out from here: it is sent back to the sign-in page.
        chromium.click_through(browser, sign_out_button(browser, "Firefox on macOS"))
        chromium.wait_for(browser, "p.alert.ok")
        laptop.get(f"{server.url}/account/sessions")
        chromium.wait_for(laptop, "input[name=username]")
        assert "/login" in laptop.current_url
        assert set(rows(browser)) == {"Chrome on Linux", "BankApp on Android"}
        assert tablet.refresh().status_code == 200

        # "Sign out all other devices" leaves only this browser.
        chromium.click_through(browser, browser.find_element(By.ID, "sign-out-others"))
        chromium.wait_for(browser, "p.alert.ok")
        assert set(rows(browser)) == {"Chrome on Linux"}
        assert tablet.refresh().status_code == 400
    log = (server.workdir / "server.log").read_text()
    for secret in (PASSWORD, phone.tokens["refresh_token"], tablet.tokens["refresh_token"],
                   tablet.tokens["access_token"]):
        assert secret not in log


def test_sign_out_everywhere_from_the_page(server, bank_app, browser):
    phone = Device(server, bank_app, IPHONE_APP, "iphone-0002")
    sign_in(browser, server)
    chromium.click_through(browser, browser.find_element(By.ID, "sign-out-everywhere"))
    chromium.wait_for(browser, "h1")
    assert browser.find_element(By.TAG_NAME, "h1").text == "You are signed out"
    assert phone.refresh().status_code == 400
    browser.get(f"{server.url}/account/sessions")
    chromium.wait_for(browser, "input[name=username]")
    assert "/login" in browser.current_url


def test_revoke_and_introspect_with_authlib_clients(server, bank_app):
    """What client libraries send: Authlib's ``revoke_token`` and ``introspect_token``."""
    from authlib.integrations.requests_client import OAuth2Session

    api = server.create_client("--name", "Orders API", "--grant-type", "client_credentials",
                               "--allow-introspection")
    resource = OAuth2Session(api["client_id"], api["client_secret"])
    introspect_url = f"{server.url}/oauth/introspect"
    app = OAuth2Session(bank_app["client_id"], token_endpoint_auth_method="none",
                        scope="read")
    token = app.fetch_token(f"{server.url}/oauth/token", username="alice", password=PASSWORD,
                            grant_type="password")
    live = resource.introspect_token(introspect_url, token=token["access_token"],
                                     token_type_hint="access_token")
    assert live.status_code == 200 and live.json()["active"] is True
    assert live.json()["client_id"] == bank_app["client_id"]
    revoked = app.revoke_token(f"{server.url}/oauth/revoke", token=token["refresh_token"],
                               token_type_hint="refresh_token")
    assert revoked.status_code == 200
    for value in (token["access_token"], token["refresh_token"]):
        assert resource.introspect_token(introspect_url, token=value).json() == {
            "active": False}
    public = OAuth2Session(bank_app["client_id"], token_endpoint_auth_method="none")
    refused = public.introspect_token(introspect_url, token=token["access_token"])
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"
