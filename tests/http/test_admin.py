"""The admin pages at /admin through the Flask test client (the browser tests drive the same
pages in Chromium): who may see them, CSRF, the secret shown once, field-level errors,
sessions, disable/enable/delete, the audit trail."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from authserver.extensions import db
from authserver.storage.models import Client
from tests.support.admin import (
    REDIRECT,
    audit_events,
    client_rows,
    count_clients,
    page_fields,
    signed_in_admin,
)
from tests.support.oauth import BrowserActions, assert_oauth_error, basic


@pytest.fixture
def admin(app, oauth):
    return signed_in_admin(app, oauth)


NEW_CLIENT = {
    "name": "Shop", "client_type": "confidential", "redirect_uris": REDIRECT,
    "grant_types": ["authorization_code", "refresh_token"], "scope": "openid",
    "refresh_idle_ttl": "3600", "refresh_absolute_ttl": "0", "reuse_grace": "10",
    "access_token_ttl": "", "bind_ip": "off", "on_binding_mismatch": "revoke",
    "bind_user_agent": "on", "post_logout_redirect_uris": "",
}


def create(admin, **changes):
    page = admin.client.get("/admin/clients/new")
    fields = {**page_fields(page.get_data(as_text=True)), **NEW_CLIENT, **changes}
    return admin.client.post("/admin/clients/new", data=fields), fields


def created_id(response) -> str:
    return re.search(r'id="client-id">([^<]+)<', response.get_data(as_text=True)).group(1)


def edit_fields(admin, client_id, **changes):
    page = admin.client.get(f"/admin/clients/{client_id}")
    return {**page_fields(page.get_data(as_text=True)), **NEW_CLIENT, **changes}


# -- who may see the pages --------------------------------------------------------------
def test_anonymous_visitors_are_sent_to_sign_in(client):
    response = client.get("/admin/clients?x=1")
    assert response.status_code == 303
    assert response.headers["Location"] == "/login?next=%2Fadmin%2Fclients%3Fx%3D1"


def test_a_signed_in_user_without_the_admin_role_gets_a_403_page(app, oauth):
    oauth.create_user()
    browser = BrowserActions(app.test_client())
    browser.login()
    for path in ("/admin", "/admin/clients", "/admin/clients/new", "/admin/audit"):
        page = browser.client.get(path)
        assert page.status_code == 403, path
        assert b"Admins only" in page.data and b"<h1>" in page.data
    home = browser.client.get("/")
    fields = page_fields(home.get_data(as_text=True))
    forged = browser.client.post("/admin/clients/new", data={**NEW_CLIENT, **fields})
    assert forged.status_code == 403 and count_clients(app) == 0


def test_the_admin_role_can_be_taken_away(app, oauth, admin):
    assert admin.client.get("/admin/clients").status_code == 200
    from authserver.domain import users

    with app.app_context():
        users.set_admin(db.session, "root", False)
        db.session.commit()
    assert admin.client.get("/admin/clients").status_code == 403


def test_pages_are_not_cached_nor_framed(admin):
    page = admin.client.get("/admin/clients")
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_a_post_without_the_csrf_token_is_refused_and_changes_nothing(app, admin, oauth):
    record, _ = oauth.create_client(name="Kept", grant_types=["client_credentials"])
    before = client_rows(app)
    for path, data in [("/admin/clients/new", NEW_CLIENT),
                       (f"/admin/clients/{record.client_id}", {**NEW_CLIENT, "name": "X"}),
                       (f"/admin/clients/{record.client_id}/disable", {}),
                       (f"/admin/clients/{record.client_id}/delete", {}),
                       (f"/admin/clients/{record.client_id}/secret", {}),
                       (f"/admin/clients/{record.client_id}/delete",
                        {"csrf_token": "forged"})]:
        response = admin.client.post(path, data=data)
        assert response.status_code == 400, path
        assert b"The form has expired" in response.data
        assert b"None" not in response.data and b"reload the page" in response.data
        assert response.headers["X-Frame-Options"] == "DENY"
    assert client_rows(app) == before


# -- create: the secret is shown once -----------------------------------------------------
def test_create_shows_the_secret_once(app, admin, oauth):
    response, fields = create(admin)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    text = response.get_data(as_text=True)
    secret = re.search(r'id="client-secret">([^<]+)<', text).group(1)
    client_id = created_id(response)
    assert "shown only once" in text
    token = oauth.token({"grant_type": "client_credentials"},
                        {"Authorization": basic(client_id, secret)})
    assert_oauth_error(token, "unauthorized_client")  # the secret authenticates the client

    detail = admin.client.get(f"/admin/clients/{client_id}")
    assert detail.status_code == 200 and secret not in detail.get_data(as_text=True)
    assert secret not in admin.client.get("/admin/clients").get_data(as_text=True)
    # The same form posted again (a reload, a double click) creates nothing, shows nothing.
    again = admin.client.post("/admin/clients/new", data=fields)
    assert again.status_code == 303 and again.headers["Location"].endswith("done=resubmitted")
    assert count_clients(app) == 1
    assert secret not in admin.client.get(again.headers["Location"]).get_data(as_text=True)
    assert audit_events(app, "client_created")[0].detail["actor"] == "admin user root"
    mine = admin.client.get("/admin/audit?user=root").get_data(as_text=True)
    assert "client_created" in mine and client_id in mine  # what this admin did


def test_create_a_public_client(admin):
    response, _ = create(admin, name="Phone", client_type="public",
                         redirect_uris="com.example.phone:/cb")
    assert response.status_code == 200
    assert b"client-secret" not in response.data and b"has no secret" in response.data


@pytest.mark.parametrize(("changes", "field", "message"), [
    ({"redirect_uris": "http://shop.example/cb"}, "redirect_uris", "must use https"),
    ({"name": ""}, "name", "1 to 255"),
    ({"access_token_ttl": "soon"}, "access_token_ttl", "whole number"),
    ({"reuse_grace": "999"}, "reuse_grace", "0 to 300"),
    ({"client_type": "public", "grant_types": ["client_credentials"]}, "grant_types",
     "public client"),
    ({"scope": 'a"b'}, "scope", "invalid scope"),
])
def test_an_invalid_new_client_shows_the_error_by_the_field(app, admin, changes, field,
                                                          message):
    response, _ = create(admin, **changes)
    assert response.status_code == 400
    text = response.get_data(as_text=True)
    assert f'id="{field}-error"' in text and message in text
    assert 'aria-invalid="true"' in text and f'href="#{field}"' in text
    # What was typed is shown again, and nothing was created.
    if changes.get("redirect_uris"):
        assert changes["redirect_uris"] in text
    assert count_clients(app) == 0


# -- edit -------------------------------------------------------------------------------------
def test_edit_redirect_uris(app, admin):
    client_id = created_id(create(admin)[0])
    fields = edit_fields(admin, client_id, redirect_uris=f"{REDIRECT}\n{REDIRECT}/v2")
    saved = admin.client.post(f"/admin/clients/{client_id}", data=fields)
    assert saved.status_code == 303 and saved.headers["Location"].endswith("?done=saved")
    page = admin.client.get(saved.headers["Location"]).get_data(as_text=True)
    assert "Saved." in page and f"{REDIRECT}/v2" in page
    with app.app_context():
        row = db.session.scalar(select(Client).where(Client.client_id == client_id))
        assert row.redirect_uris == [REDIRECT, REDIRECT + "/v2"]

    before = client_rows(app)
    bad = admin.client.post(f"/admin/clients/{client_id}", data={
        **fields, "redirect_uris": f"{REDIRECT}\nhttps://shop.example/cb#frag"})
    assert bad.status_code == 400
    text = bad.get_data(as_text=True)
    assert 'id="redirect_uris-error"' in text and "fragment" in text
    assert "https://shop.example/cb#frag" in text  # the input is kept for correcting
    assert client_rows(app) == before
    assert [e.detail["changed"] for e in audit_events(app, "client_updated")] == [
        ["redirect_uris"]]


def test_an_unknown_client_is_a_404_page(admin):
    for path in ("/admin/clients/cl_nope", "/admin/clients/cl_nope/delete"):
        page = admin.client.get(path)
        assert page.status_code == 404 and b"No such client" in page.data


# -- secret rotation --------------------------------------------------------------------------
@pytest.mark.parametrize("settings_overrides", [{"client_secret_overlap": 300}])
def test_rotate_the_secret(app, admin, oauth, clock):
    machine, old = oauth.create_client(name="Batch", grant_types=["client_credentials"])
    fields = page_fields(admin.client.get(f"/admin/clients/{machine.client_id}")
                         .get_data(as_text=True))
    rotated = admin.client.post(f"/admin/clients/{machine.client_id}/secret", data=fields)
    text = rotated.get_data(as_text=True)
    new = re.search(r'id="client-secret">([^<]+)<', text).group(1)
    assert "keeps working for 300 seconds" in text

    def token(secret):
        return oauth.token({"grant_type": "client_credentials"},
                           {"Authorization": basic(machine.client_id, secret)})

    assert token(new).status_code == 200 and token(old).status_code == 200
    clock.advance(301)
    assert_oauth_error(token(old), "invalid_client", 401)
    assert token(new).status_code == 200
    again = admin.client.post(f"/admin/clients/{machine.client_id}/secret", data=fields)
    assert again.status_code == 303 and "resubmitted" in again.headers["Location"]
    assert token(new).status_code == 200  # not rotated a second time


# -- disable, enable, delete; sessions --------------------------------------------------------
def test_disable_enable_and_delete_with_confirmation(app, admin, oauth):
    oauth.create_user("alice")
    mobile = oauth.first_party_app(name="Mobile")
    pair = oauth.login_pair(mobile)
    resource, secret = oauth.create_client(name="API", grant_types=["client_credentials"],
                                           allow_introspection=True)
    fields = page_fields(admin.client.get(f"/admin/clients/{mobile.client_id}")
                         .get_data(as_text=True))

    def introspect(token):
        return oauth.client.post("/oauth/introspect", data={"token": token}, headers={
            "Authorization": basic(resource.client_id, secret)}).get_json()

    disabled = admin.client.post(f"/admin/clients/{mobile.client_id}/disable", data=fields)
    assert disabled.status_code == 303
    assert b"disabled and its sessions revoked" in admin.client.get(
        disabled.headers["Location"]).data
    assert_oauth_error(oauth.refresh(mobile, pair["refresh_token"]), "invalid_client", 401)
    assert introspect(pair["access_token"]) == {"active": False}
    admin.client.post(f"/admin/clients/{mobile.client_id}/enable", data=fields)
    assert_oauth_error(oauth.refresh(mobile, pair["refresh_token"]), "invalid_grant")

    second = oauth.login_pair(mobile)
    confirm = admin.client.get(f"/admin/clients/{mobile.client_id}/delete")
    assert confirm.status_code == 200 and b"1 live session will be revoked" in confirm.data
    assert count_clients(app) == 2  # asking is not deleting
    deleted = admin.client.post(f"/admin/clients/{mobile.client_id}/delete", data=fields)
    assert deleted.status_code == 303 and deleted.headers["Location"].endswith("done=deleted")
    assert count_clients(app) == 1
    assert_oauth_error(oauth.refresh(mobile, second["refresh_token"]), "invalid_client", 401)
    assert introspect(second["access_token"]) == {"active": False}


def test_see_and_revoke_a_clients_sessions(app, admin, oauth):
    oauth.create_user("alice")
    mobile = oauth.first_party_app(name="Mobile")
    other = oauth.first_party_app(name="Other")
    pairs = [oauth.login_pair(mobile) for _ in range(3)]
    foreign = oauth.login_pair(other)
    sids = [oauth.verify_access_token(p["access_token"])["sid"] for p in pairs]
    page = admin.client.get(f"/admin/clients/{mobile.client_id}").get_data(as_text=True)
    assert all(f'data-family-id="{sid}"' in page for sid in sids)
    assert "alice" in page
    fields = page_fields(page)

    revoked = admin.client.post(
        f"/admin/clients/{mobile.client_id}/sessions/{sids[0]}/revoke", data=fields)
    assert revoked.status_code == 303
    assert_oauth_error(oauth.refresh(mobile, pairs[0]["refresh_token"]), "invalid_grant")
    assert oauth.refresh(mobile, pairs[1]["refresh_token"]).status_code == 200
    after = admin.client.get(f"/admin/clients/{mobile.client_id}").get_data(as_text=True)
    assert sids[0] not in after and sids[1] in after

    foreign_sid = oauth.verify_access_token(foreign["access_token"])["sid"]
    wrong = admin.client.post(
        f"/admin/clients/{mobile.client_id}/sessions/{foreign_sid}/revoke", data=fields)
    assert wrong.status_code == 404
    assert oauth.refresh(other, foreign["refresh_token"]).status_code == 200

    admin.client.post(f"/admin/clients/{mobile.client_id}/sessions/revoke-all", data=fields)
    assert_oauth_error(oauth.refresh(mobile, pairs[2]["refresh_token"]), "invalid_grant")
    causes = {e.detail["cause"] for e in audit_events(app, "family_revoked")}
    assert causes == {"revoked_by_admin"}


# -- the audit trail -------------------------------------------------------------------------
def test_the_audit_trail_filters_by_client_user_and_event(app, admin, oauth):
    oauth.create_user("alice")
    oauth.create_user("bob")
    mobile = oauth.first_party_app(name="Mobile")
    web = oauth.first_party_app(name="Web")
    oauth.login_pair(mobile, username="alice")
    oauth.login_pair(web, username="bob")

    def rows(**query):
        page = admin.client.get("/admin/audit", query_string=query)
        assert page.status_code == 200
        return re.findall(r"<tr><td><time", page.get_data(as_text=True)), page.get_data(
            as_text=True)

    everything, _ = rows()
    by_client, text = rows(client=mobile.client_id)
    assert 0 < len(by_client) < len(everything) and web.client_id not in text
    by_user, text = rows(user="bob")
    assert by_user and "alice" not in text.split("<tbody>")[1]
    by_event, text = rows(event="client_created")
    assert len(by_event) == 2
    none, text = rows(client="cl_\x00nope", before="99999999999999999999", user="²")
    assert none == [] and "No events match." in text


def test_the_audit_trail_pages(app, admin, oauth):
    for n in range(105):
        oauth.create_client(name=f"m{n}", grant_types=["client_credentials"])
    first = admin.client.get("/admin/audit?event=client_created").get_data(as_text=True)
    assert first.count("<tr><td><time") == 100
    older = re.search(r'href="(/admin/audit\?[^"]+)">Older events', first).group(1)
    second = admin.client.get(older.replace("&amp;", "&")).get_data(as_text=True)
    assert second.count("<tr><td><time") == 5 and "Older events" not in second
