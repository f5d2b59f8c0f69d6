"""The user's devices: the /account/sessions page (Flask client) and the JSON API."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from authserver.extensions import db
from authserver.storage.models import AuditEvent, TokenFamily
from tests.support.oauth import PASSWORD, BrowserActions, assert_oauth_error, basic, form_fields
from tests.support.sessions import (
    ANDROID_APP,
    CHROME_WINDOWS,
    FIREFOX_MAC,
    IPHONE_APP,
    REDIRECT,
    api_sessions,
    assert_signed_out,
    bearer,
    code_flow_pair,
    device_login,
    device_refresh,
    page_devices,
    post_form,
)


@pytest.fixture
def bank(oauth):
    oauth.create_user()
    return oauth.first_party_app(name="BankApp", scope="read account")


def browser_with(app, user_agent: str, username: str = "alice") -> BrowserActions:
    """A browser (its own cookies and User-Agent) signed in at /login."""
    client = app.test_client()
    client.environ_base["HTTP_USER_AGENT"] = user_agent
    browser = BrowserActions(client)
    assert browser.login(username=username).status_code == 303
    return browser


def sessions_page(browser: BrowserActions) -> dict[str, str]:
    response = browser.client.get("/account/sessions")
    assert response.status_code == 200
    return page_devices(response.get_data(as_text=True))


def by_label(devices: dict[str, str], label: str) -> str:
    """The id of the one device whose row starts with ``label``."""
    found = [i for i, text in devices.items() if text.startswith(label)]
    assert len(found) == 1, (label, devices)
    return found[0]


def revoke_reasons(app) -> list[str]:
    with app.app_context():
        return sorted(r or "" for r in db.session.scalars(select(TokenFamily.revoke_reason)))


# -- The page ----------------------------------------------------------------------------
def test_the_page_lists_every_device_with_a_readable_label(oauth, bank, app):
    device_login(oauth, bank, IPHONE_APP, device_id="iphone-0001")
    device_login(oauth, bank, ANDROID_APP)
    browser_with(app, FIREFOX_MAC)
    me = browser_with(app, CHROME_WINDOWS)
    devices = sessions_page(me)
    assert len(devices) == 4
    rows = list(devices.values())
    assert rows[0].startswith("Chrome on Windows This device Browser sign-in")  # first
    assert sum("This device" in row for row in rows) == 1
    assert "BankApp" in devices[by_label(devices, "BankApp on iOS")]
    assert "Browser sign-in" in devices[by_label(devices, "Firefox on macOS")]
    assert "BankApp" in devices[by_label(devices, "BankApp on Android")]
    for row in rows:
        assert "Signed in just now" in row and "Last active just now" in row
        assert "127.0.0.1" in row


def test_apps_signed_in_through_a_browser_are_grouped_under_it(oauth, bank, app):
    web, _ = oauth.create_client(name="Web banking", public=True, redirect_uris=[REDIRECT],
                                 scope="read account")
    me = browser_with(app, FIREFOX_MAC)
    code_flow_pair(oauth, me, web)
    devices = sessions_page(me)
    assert list(devices.values()) == [devices[by_label(devices, "Firefox on macOS")]]
    assert "Browser sign-in · Web banking" in next(iter(devices.values()))


def test_signing_out_one_device_with_its_button(oauth, bank, app):
    phone = device_login(oauth, bank, IPHONE_APP)
    tablet = device_login(oauth, bank, ANDROID_APP)
    me = browser_with(app, CHROME_WINDOWS)
    phone_id = by_label(sessions_page(me), "BankApp on iOS")
    done = post_form(me, "/account/sessions", f"/account/sessions/{phone_id}/sign-out")
    assert done.status_code == 303 and done.headers["Location"].endswith("done=device")
    assert "That device was signed out." in me.client.get(done.headers["Location"]).get_data(
        as_text=True)
    assert_oauth_error(device_refresh(oauth, bank, phone["refresh_token"], IPHONE_APP),
                       "invalid_grant")
    assert device_refresh(oauth, bank, tablet["refresh_token"], ANDROID_APP).status_code == 200
    assert phone_id not in sessions_page(me)
    with app.app_context():
        row = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "family_revoked")).one()
    assert row.family_id == phone_id and row.detail["cause"] == "signed_out_by_user"
    assert row.detail["by"] == {"via": "account_page", "ip": "127.0.0.1",
                                "user_agent_family": "Chrome on Windows"}
    assert row.detail["device"]["user_agent_family"] == "BankApp on iOS"


def test_signing_out_another_browser_ends_it_and_its_apps(oauth, bank, app):
    web, _ = oauth.create_client(name="Web banking", public=True, redirect_uris=[REDIRECT],
                                 scope="read account")
    other = browser_with(app, FIREFOX_MAC)
    through_other = code_flow_pair(oauth, other, web)
    me = browser_with(app, CHROME_WINDOWS)
    other_id = by_label(sessions_page(me), "Firefox on macOS")
    assert other_id.startswith("web-")
    post_form(me, "/account/sessions", f"/account/sessions/{other_id}/sign-out")
    assert other.client.get("/account/sessions").status_code == 303  # back to /login
    assert_signed_out(oauth, web, through_other["refresh_token"])
    assert me.client.get("/account/sessions").status_code == 200
    with app.app_context():
        ended = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "browser_signed_out")).one()
    assert ended.detail["cause"] == "signed_out_by_user"
    assert ended.detail["device"]["user_agent_family"] == "Firefox on macOS"
    assert ended.detail["login_session"] == other_id


def test_signing_out_this_device_from_its_row(oauth, bank, app):
    me = browser_with(app, CHROME_WINDOWS)
    my_id = by_label(sessions_page(me), "Chrome on Windows")
    done = post_form(me, "/account/sessions", f"/account/sessions/{my_id}/sign-out")
    assert done.status_code == 200 and b"You are signed out" in done.data
    assert me.client.get("/account/sessions").status_code == 303


def test_sign_out_all_other_devices(oauth, bank, app):
    web, _ = oauth.create_client(name="Web banking", public=True, redirect_uris=[REDIRECT],
                                 scope="read account")
    phone = device_login(oauth, bank, IPHONE_APP)
    other = browser_with(app, FIREFOX_MAC)
    me = browser_with(app, CHROME_WINDOWS)
    mine = code_flow_pair(oauth, me, web)
    done = post_form(me, "/account/sessions", "/account/sessions/sign-out-others")
    assert done.headers["Location"].endswith("done=others")
    assert_signed_out(oauth, bank, phone["refresh_token"], IPHONE_APP)
    assert other.client.get("/account/sessions").status_code == 303
    devices = sessions_page(me)
    assert len(devices) == 1 and "This device" in next(iter(devices.values()))
    assert oauth.refresh(web, mine["refresh_token"]).status_code == 200
    assert revoke_reasons(app) == ["", "signed_out_other_devices"]


def test_sign_out_everywhere(oauth, bank, app):
    phone = device_login(oauth, bank, IPHONE_APP)
    other = browser_with(app, FIREFOX_MAC)
    me = browser_with(app, CHROME_WINDOWS)
    done = post_form(me, "/account/sessions", "/account/sessions/sign-out-everywhere")
    assert done.status_code == 200 and b"You are signed out" in done.data
    assert_signed_out(oauth, bank, phone["refresh_token"], IPHONE_APP)
    for browser in (me, other):
        assert browser.client.get("/account/sessions").status_code == 303
    with app.app_context():
        ended = db.session.scalars(select(AuditEvent.detail).where(
            AuditEvent.event == "browser_signed_out")).all()
    assert sorted(d["cause"] for d in ended) == ["signed_out_everywhere"] * 2


@pytest.mark.parametrize("action", ["/account/sessions/DEVICE/sign-out",
                                    "/account/sessions/sign-out-others",
                                    "/account/sessions/sign-out-everywhere"])
def test_every_sign_out_form_needs_its_csrf_token(oauth, bank, app, action):
    phone = device_login(oauth, bank, IPHONE_APP)
    me = browser_with(app, CHROME_WINDOWS)
    action = action.replace("DEVICE", by_label(sessions_page(me), "BankApp on iOS"))
    for token in (None, "forged"):
        data = {} if token is None else {"csrf_token": token}
        assert me.client.post(action, data=data).status_code == 400
    assert device_refresh(oauth, bank, phone["refresh_token"], IPHONE_APP).status_code == 200
    assert me.client.get("/account/sessions").status_code == 200


def test_another_users_device_cannot_be_signed_out(oauth, bank, app):
    oauth.create_user("bob")
    bobs = device_login(oauth, bank, IPHONE_APP, username="bob")
    bobs_sid = oauth.verify_access_token(bobs["access_token"])["sid"]
    bob_browser = browser_with(app, FIREFOX_MAC, "bob")
    bobs_browser_id = by_label(sessions_page(bob_browser), "Firefox on macOS")
    me = browser_with(app, CHROME_WINDOWS)
    for target in (bobs_sid, bobs_browser_id, "no-such-device"):
        tried = me.client.post(f"/account/sessions/{target}/sign-out",
                               data={"csrf_token": _csrf(me)})
        assert tried.status_code == 303 and tried.headers["Location"].endswith("done=gone")
    assert device_refresh(oauth, bank, bobs["refresh_token"], IPHONE_APP).status_code == 200
    assert bob_browser.client.get("/account/sessions").status_code == 200


def _csrf(browser: BrowserActions) -> str:
    page = browser.client.get("/account/sessions").get_data(as_text=True)
    return form_fields(page)["csrf_token"]


def test_a_device_whose_refresh_token_expired_is_not_listed(oauth, app, clock):
    oauth.create_user()
    short = oauth.first_party_app(name="Kiosk", refresh_idle_ttl=3600, scope="read")
    device_login(oauth, short, ANDROID_APP)
    me = browser_with(app, CHROME_WINDOWS)
    assert len(sessions_page(me)) == 2
    clock.advance(3601)
    assert len(sessions_page(me)) == 1


def test_the_page_requires_sign_in(app):
    response = app.test_client().get("/account/sessions")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=%2Faccount%2Fsessions"


# -- The JSON API ------------------------------------------------------------------------
def test_the_api_lists_devices_and_marks_the_current_one(oauth, bank, app):
    phone = device_login(oauth, bank, IPHONE_APP, device_id="iphone-0001")
    device_login(oauth, bank, ANDROID_APP)
    browser_with(app, FIREFOX_MAC)
    listed = api_sessions(oauth.client, phone["access_token"])
    assert listed[0]["device"] == "BankApp on iOS"
    assert [s["current"] for s in listed] == [True, False, False]
    assert {s["device"] for s in listed} == {"BankApp on iOS", "BankApp on Android",
                                             "Firefox on macOS"}
    first = listed[0]
    assert first["type"] == "app" and first["client_name"] == "BankApp"
    assert first["id"] == oauth.verify_access_token(phone["access_token"])["sid"]
    assert first["applications"] == [{"client_id": bank.client_id, "name": "BankApp",
                                      "session_id": first["id"]}]
    assert first["last_ip"] == "127.0.0.1" and first["dpop_bound"] is False
    web = next(s for s in listed if s["type"] == "browser")
    assert web["id"].startswith("web-") and web["client_id"] is None
    assert set(first) == {"id", "type", "device", "client_id", "client_name", "applications",
                          "created_at", "last_used_at", "last_ip", "dpop_bound", "current",
                          "expires_at"}


def test_the_api_signs_out_one_device(oauth, bank, app):
    phone = device_login(oauth, bank, IPHONE_APP)
    tablet = device_login(oauth, bank, ANDROID_APP)
    other = browser_with(app, FIREFOX_MAC)
    listed = api_sessions(oauth.client, phone["access_token"])
    for device in ("BankApp on Android", "Firefox on macOS"):
        target = next(s["id"] for s in listed if s["device"] == device)
        response = oauth.client.delete(f"/account/api/sessions/{target}",
                                       headers=bearer(phone["access_token"]))
        assert response.status_code == 204 and response.data == b""
        again = oauth.client.delete(f"/account/api/sessions/{target}",
                                    headers=bearer(phone["access_token"]))
        assert again.status_code == 404
    assert_signed_out(oauth, bank, tablet["refresh_token"], ANDROID_APP)
    assert other.client.get("/account/sessions").status_code == 303
    assert [s["device"] for s in api_sessions(oauth.client, phone["access_token"])] == [
        "BankApp on iOS"]


def test_the_api_never_touches_another_users_sessions(oauth, bank, app):
    phone = device_login(oauth, bank, IPHONE_APP)
    oauth.create_user("bob")
    bobs = device_login(oauth, bank, ANDROID_APP, username="bob")
    bob_browser = browser_with(app, FIREFOX_MAC, "bob")
    bobs_devices = api_sessions(oauth.client, bobs["access_token"])
    assert len(bobs_devices) == 2
    for device in bobs_devices:
        response = oauth.client.delete(f"/account/api/sessions/{device['id']}",
                                       headers=bearer(phone["access_token"]))
        assert response.status_code == 404
        assert response.get_json()["error"] == "not_found"
    assert device_refresh(oauth, bank, bobs["refresh_token"], ANDROID_APP).status_code == 200
    assert bob_browser.client.get("/account/sessions").status_code == 200
    assert len(api_sessions(oauth.client, phone["access_token"])) == 1


def test_the_api_signs_out_all_other_devices_or_everywhere(oauth, bank, app):
    phone = device_login(oauth, bank, IPHONE_APP)
    tablet = device_login(oauth, bank, ANDROID_APP)
    browser_with(app, FIREFOX_MAC)
    bad = oauth.client.delete("/account/api/sessions?keep_current=maybe",
                              headers=bearer(phone["access_token"]))
    assert bad.status_code == 400 and bad.get_json()["error"] == "invalid_request"
    others = oauth.client.delete("/account/api/sessions?keep_current=true",
                                 headers=bearer(phone["access_token"]))
    assert others.status_code == 200 and others.get_json() == {"signed_out": 2}
    assert_signed_out(oauth, bank, tablet["refresh_token"], ANDROID_APP)
    assert [s["current"] for s in api_sessions(oauth.client, phone["access_token"])] == [True]
    refreshed = device_refresh(oauth, bank, phone["refresh_token"], IPHONE_APP)
    assert refreshed.status_code == 200
    token = refreshed.get_json()["access_token"]
    everywhere = oauth.client.delete("/account/api/sessions", headers=bearer(token))
    assert everywhere.get_json() == {"signed_out": 1}
    assert_signed_out(oauth, bank, refreshed.get_json()["refresh_token"], IPHONE_APP)
    assert oauth.client.get("/account/api/sessions", headers=bearer(token)).status_code == 401


@pytest.mark.parametrize(
    ("authorization", "status", "error"),
    [
        pytest.param(None, 401, None, id="no-credentials"),
        pytest.param("Basic YWxpY2U6eA==", 401, None, id="another-scheme"),
        pytest.param("Bearer", 400, "invalid_request", id="empty-bearer"),
        pytest.param("Bearer a b", 400, "invalid_request", id="two-tokens"),
        pytest.param("Bearer not-a-jwt", 401, "invalid_token", id="garbage"),
        pytest.param("Bearer ID_TOKEN", 401, "invalid_token", id="id-token"),
        pytest.param("Bearer REVOKED", 401, "invalid_token", id="revoked-session"),
        pytest.param("Bearer NO_ACCOUNT_SCOPE", 403, "insufficient_scope", id="no-scope"),
        pytest.param("Bearer MACHINE", 401, "invalid_token", id="client-credentials"),
    ],
)
def test_the_api_answers_rfc_6750_errors(oauth, app, authorization, status, error):
    """RFC 6750 §3: the challenge names the realm and scope; §3.1: no error code when
    the request carried no token; 400/401/403 by error."""
    oauth.create_user()
    bank = oauth.first_party_app(name="BankApp", scope="openid read account")
    machine, machine_secret = oauth.create_client(name="Robot", scope="account")
    tokens = {
        "ID_TOKEN": oauth.login_pair(bank, scope="openid account")["id_token"],
        "NO_ACCOUNT_SCOPE": oauth.login_pair(bank, scope="read")["access_token"],
        "MACHINE": oauth.token({"grant_type": "client_credentials"}, {
            "Authorization": basic(machine.client_id, machine_secret)}).get_json()[
                "access_token"],
    }
    revoked = oauth.login_pair(bank, scope="account")
    oauth.client.post("/oauth/revoke", data={"token": revoked["refresh_token"],
                                             "client_id": bank.client_id})
    tokens["REVOKED"] = revoked["access_token"]
    headers = {}
    if authorization is not None:
        scheme, _, value = authorization.partition(" ")
        headers["Authorization"] = f"{scheme} {tokens.get(value, value)}".strip()
    for method, path in (("get", "/account/api/sessions"),
                         ("delete", "/account/api/sessions"),
                         ("delete", "/account/api/sessions/some-id")):
        response = getattr(oauth.client, method)(path, headers=headers)
        assert response.status_code == status, (method, path, response.get_data(True))
        challenge = response.headers["WWW-Authenticate"] if status != 400 else (
            response.headers.get("WWW-Authenticate", ""))
        if status in (401, 403):
            assert challenge.startswith('Bearer realm="account"')
            assert 'scope="account"' in challenge
            assert ("error=" in challenge) == (error is not None)
        if error is not None:
            assert f'error="{error}"' in challenge and response.get_json()["error"] == error
        assert response.headers["Cache-Control"] == "no-store"
    assert oauth.refresh(bank, oauth.login_pair(bank, scope="read")["refresh_token"]
                         ).status_code == 200  # nothing was signed out by any of it


def test_a_dpop_bound_token_needs_its_proof(oauth, bank):
    from tests.support.dpop import ISSUER, ProofKey, ath

    key = ProofKey()
    response = oauth.token({"grant_type": "password", "username": "alice",
                            "password": PASSWORD, "client_id": bank.client_id},
                           {"DPoP": key.proof(), "User-Agent": IPHONE_APP})
    token = response.get_json()["access_token"]
    as_bearer = oauth.client.get("/account/api/sessions", headers=bearer(token))
    assert as_bearer.status_code == 401
    assert as_bearer.headers["WWW-Authenticate"].startswith("DPoP ")
    url = ISSUER + "/account/api/sessions"
    without_proof = oauth.client.get("/account/api/sessions",
                                     headers={"Authorization": f"DPoP {token}"})
    assert without_proof.status_code == 401
    other_key = ProofKey().proof(htm="GET", htu=url, ath=ath(token))
    assert oauth.client.get("/account/api/sessions", headers={
        "Authorization": f"DPoP {token}", "DPoP": other_key}).status_code == 401
    proof = key.proof(htm="GET", htu=url, ath=ath(token))
    listed = oauth.client.get("/account/api/sessions",
                              headers={"Authorization": f"DPoP {token}", "DPoP": proof})
    assert listed.status_code == 200, listed.get_data(True)
    [device] = listed.get_json()["sessions"]
    assert device["dpop_bound"] is True and device["current"] is True
