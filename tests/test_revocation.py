"""Revocation (RFC 7009), introspection (RFC 7662), the account API, credential events."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from authserver.domain import users
from authserver.extensions import db
from authserver.storage.models import AuditEvent, TokenFamily

from .helpers import PASSWORD, BrowserActions, assert_oauth_error, basic


@pytest.fixture
def setup(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read write account")
    resource, secret = oauth.create_client(name="Orders API", grant_types=["client_credentials"],
                                           allow_introspection=True)
    return app_client, resource, secret


def introspect(oauth, resource, secret, token, hint=None):
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    response = oauth.client.post("/oauth/introspect", data=data,
                                 headers={"Authorization": basic(resource.client_id, secret)})
    assert response.status_code == 200, response.get_data(True)
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def revoke(oauth, app_client, token, hint=None):
    data = {"token": token, "client_id": app_client.client_id}
    if hint:
        data["token_type_hint"] = hint
    return oauth.client.post("/oauth/revoke", data=data)


@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token", "bogus"])
def test_revoking_the_refresh_token_ends_the_family(oauth, setup, hint):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client)
    response = revoke(oauth, app_client, pair["refresh_token"], hint)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]), "invalid_grant")
    assert introspect(oauth, resource, secret, pair["access_token"]) == {"active": False}
    assert introspect(oauth, resource, secret, pair["refresh_token"]) == {"active": False}


def test_revoking_the_access_token_ends_its_family(oauth, setup):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client)
    assert revoke(oauth, app_client, pair["access_token"], "access_token").status_code == 200
    assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]), "invalid_grant")
    assert introspect(oauth, resource, secret, pair["access_token"])["active"] is False


def test_unknown_and_foreign_tokens_answer_200_and_change_nothing(oauth, setup):
    app_client, _, _ = setup
    other = oauth.first_party_app(name="Other app")
    pair = oauth.login_pair(app_client)
    assert revoke(oauth, app_client, "rt_unknown").status_code == 200
    assert revoke(oauth, other, pair["refresh_token"]).status_code == 200
    assert revoke(oauth, other, pair["access_token"]).status_code == 200
    assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 200
    twice = revoke(oauth, app_client, "garbage.garbage.garbage")
    assert twice.status_code == 200


def test_revoke_needs_client_authentication_and_a_token(oauth, setup):
    app_client, resource, _ = setup
    assert_oauth_error(oauth.client.post("/oauth/revoke", data={"token": "x"}), "invalid_client",
                       401)
    assert_oauth_error(
        oauth.client.post("/oauth/revoke", data={"client_id": app_client.client_id}),
        "invalid_request")
    assert_oauth_error(oauth.client.post("/oauth/revoke", data={
        "token": "x"}, headers={"Authorization": basic(resource.client_id, "wrong")}),
        "invalid_client", 401)


def test_introspection_of_live_tokens(oauth, setup):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")
    access = introspect(oauth, resource, secret, pair["access_token"])
    claims = oauth.verify_access_token(pair["access_token"])
    assert access["active"] is True and access["token_type"] == "Bearer"
    for key in ("scope", "client_id", "sub", "exp", "iat", "aud", "iss", "sid"):
        assert access[key] == claims[key], key
    refresh = introspect(oauth, resource, secret, pair["refresh_token"], "refresh_token")
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    assert refresh["scope"] == "read" and refresh["sid"] == claims["sid"]


@pytest.mark.parametrize("token", ["", "x", "a.b.c", "rt_" + "A" * 43, "eyJhbGciOiJub25lIn0.e30."])
def test_introspection_of_garbage_is_inactive(oauth, setup, token):
    _, resource, secret = setup
    if token:
        assert introspect(oauth, resource, secret, token) == {"active": False}


def test_introspection_of_expired_and_rotated(oauth, setup, clock):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client)
    oauth.refresh(app_client, pair["refresh_token"])
    assert introspect(oauth, resource, secret, pair["refresh_token"]) == {"active": False}
    clock.advance(901)
    assert introspect(oauth, resource, secret, pair["access_token"]) == {"active": False}


def test_deactivated_user_is_inactive_at_once(oauth, setup, app):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client)
    with app.app_context():
        users.deactivate_user(db.session, "alice")
        db.session.commit()
    assert introspect(oauth, resource, secret, pair["access_token"]) == {"active": False}
    assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]), "invalid_grant")
    assert_oauth_error(oauth.password_login(app_client), "invalid_grant")


@pytest.mark.parametrize(
    ("who", "status", "error"),
    [
        pytest.param("allowed", 200, None, id="confidential-allowed"),
        pytest.param("not-allowed", 403, "unauthorized_client", id="confidential-not-allowed"),
        pytest.param("public", 401, "invalid_client", id="public-client"),
        pytest.param("wrong-secret", 401, "invalid_client", id="wrong-secret"),
        pytest.param("anonymous", 401, "invalid_client", id="no-authentication"),
    ],
)
def test_introspection_permission_table(oauth, setup, who, status, error):
    app_client, resource, secret = setup
    plain, plain_secret = oauth.create_client(name="No introspection",
                                              grant_types=["client_credentials"])
    headers = {
        "allowed": {"Authorization": basic(resource.client_id, secret)},
        "not-allowed": {"Authorization": basic(plain.client_id, plain_secret)},
        "public": {},
        "wrong-secret": {"Authorization": basic(resource.client_id, "nope")},
        "anonymous": {},
    }[who]
    data = {"token": "x"}
    if who == "public":
        data["client_id"] = app_client.client_id
    response = oauth.client.post("/oauth/introspect", data=data, headers=headers)
    assert response.status_code == status
    if error:
        assert response.get_json()["error"] == error


def test_account_api_lists_and_signs_out_devices(oauth, setup):
    app_client, _, _ = setup
    phone = oauth.login_pair(app_client, scope="read account")
    laptop = oauth.login_pair(app_client, scope="read account")
    auth = {"Authorization": f"Bearer {phone['access_token']}"}
    listed = oauth.client.get("/account/api/sessions", headers=auth).get_json()["sessions"]
    assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
    laptop_sid = oauth.verify_access_token(laptop["access_token"])["sid"]
    deleted = oauth.client.delete(f"/account/api/sessions/{laptop_sid}", headers=auth)
    assert deleted.status_code == 204
    assert_oauth_error(oauth.refresh(app_client, laptop["refresh_token"]), "invalid_grant")
    assert oauth.client.delete("/account/api/sessions/nope", headers=auth).status_code == 404
    everywhere = oauth.client.delete("/account/api/sessions", headers=auth)
    assert everywhere.get_json() == {"signed_out": 1}
    assert_oauth_error(oauth.refresh(app_client, phone["refresh_token"]), "invalid_grant")


def test_account_api_needs_the_account_scope(oauth, setup):
    app_client, _, _ = setup
    pair = oauth.login_pair(app_client, scope="read")
    response = oauth.client.get("/account/api/sessions",
                                headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert response.status_code == 403
    assert 'scope="account"' in response.headers["WWW-Authenticate"]
    assert oauth.client.get("/account/api/sessions").status_code == 401


def test_password_change_signs_out_other_devices_only(oauth, setup, app):
    app_client, _, _ = setup
    other_device = oauth.login_pair(app_client)
    browser = BrowserActions(app.test_client())
    browser.login()
    page = browser.client.get("/account/password")
    from .helpers import form_fields

    fields = form_fields(page.get_data(as_text=True))
    fields.update(current_password=PASSWORD, new_password="a brand new passphrase",
                  confirm_password="a brand new passphrase")
    done = browser.client.post("/account/password", data=fields)
    assert done.status_code == 200 and b"was changed" in done.data
    assert_oauth_error(oauth.refresh(app_client, other_device["refresh_token"]), "invalid_grant")
    # this browser is still signed in, and the new password works
    assert browser.client.get("/account/sessions").status_code == 200
    assert oauth.password_login(app_client, password="a brand new passphrase").status_code == 200
    with app.app_context():
        events = db.session.scalars(select(AuditEvent.event)).all()
        reasons = db.session.scalars(select(TokenFamily.revoke_reason)).all()
    assert "password_changed" in events and "password_changed" in reasons


def test_sessions_page_requires_sign_in(app):
    response = app.test_client().get("/account/sessions")
    assert response.status_code == 303 and response.headers["Location"].startswith("/login?next=")
