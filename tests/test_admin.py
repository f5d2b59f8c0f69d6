"""Client administration: the registration API, CLI parity and the admin pages."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo

from authserver.cli import cli
from authserver.domain import users
from authserver.extensions import db

from .helpers import PASSWORD, BrowserActions, assert_oauth_error, basic, form_fields

REDIRECT = "https://partner.example.com/cb"


@pytest.fixture
def admin_token(oauth):
    bot, secret = oauth.create_client(name="Provisioner", grant_types=["client_credentials"],
                                      scope="admin:clients")
    response = oauth.token({"grant_type": "client_credentials"},
                           {"Authorization": basic(bot.client_id, secret)})
    return response.get_json()["access_token"]


def register(oauth, token, body):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return oauth.client.post("/oauth/register", json=body, headers=headers)


def test_register_read_update_delete(oauth, admin_token):
    created = register(oauth, admin_token, {
        "client_name": "Partner portal", "redirect_uris": [REDIRECT],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "scope": "openid profile", "reuse_grace": 5, "bind_ip": "/24"})
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["client_secret"] and body["registration_access_token"].startswith("reg_")
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["registration_client_uri"].endswith(f"/oauth/register/{body['client_id']}")
    assert body["reuse_grace"] == 5 and body["bind_ip"] == "/24"

    own = {"Authorization": f"Bearer {body['registration_access_token']}"}
    read = oauth.client.get(f"/oauth/register/{body['client_id']}", headers=own).get_json()
    assert read["client_name"] == "Partner portal" and "client_secret" not in read

    updated = oauth.client.put(f"/oauth/register/{body['client_id']}", headers=own, json={
        "client_id": body["client_id"], "client_name": "Partner portal 2",
        "redirect_uris": [REDIRECT, REDIRECT + "2"]})
    assert updated.status_code == 200, updated.get_json()
    assert updated.get_json()["redirect_uris"] == [REDIRECT, REDIRECT + "2"]
    assert updated.get_json()["scope"] == "openid profile"  # absent fields keep their value

    gone = oauth.client.delete(f"/oauth/register/{body['client_id']}",
                               headers={"Authorization": f"Bearer {admin_token}"})
    assert gone.status_code == 204
    again = oauth.client.get(f"/oauth/register/{body['client_id']}",
                             headers={"Authorization": f"Bearer {admin_token}"})
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        pytest.param({"redirect_uris": [REDIRECT]}, "invalid_client_metadata", "client_name",
                     id="no-name"),
        pytest.param({"client_name": "x", "redirect_uris": ["http://evil.example/cb"]},
                     "invalid_redirect_uri", "redirect_uris", id="http-redirect"),
        pytest.param({"client_name": "x", "redirect_uris": [REDIRECT + "#frag"]},
                     "invalid_redirect_uri", "redirect_uris", id="fragment"),
        pytest.param({"client_name": "x", "redirect_uris": ["/relative"]},
                     "invalid_redirect_uri", "redirect_uris", id="relative"),
        pytest.param({"client_name": "x"}, "invalid_redirect_uri", "redirect_uris",
                     id="code-without-redirect"),
        pytest.param({"client_name": "x", "redirect_uris": [REDIRECT],
                      "response_types": ["token"]}, "invalid_client_metadata", "response_types",
                     id="implicit"),
        pytest.param({"client_name": "x", "grant_types": ["client_credentials"],
                      "response_types": ["code"]}, "invalid_client_metadata", "response_types",
                     id="inconsistent-types"),
        pytest.param({"client_name": "x", "grant_types": ["client_credentials"],
                      "token_endpoint_auth_method": "none"}, "invalid_client_metadata",
                     "grant_types", id="public-client-credentials"),
        pytest.param({"client_name": "x", "grant_types": ["client_credentials"],
                      "access_token_ttl": 5}, "invalid_client_metadata", "access_token_ttl",
                     id="ttl-bounds"),
        pytest.param({"client_name": "x", "grant_types": ["client_credentials"],
                      "token_endpoint_auth_method": "private_key_jwt"},
                     "invalid_client_metadata", "token_endpoint_auth_method",
                     id="unsupported-auth-method"),
        pytest.param({"client_name": "x", "grant_types": ["client_credentials"],
                      "bind_ip": "/99"}, "invalid_client_metadata", "bind_ip", id="bind-ip"),
        pytest.param(["not", "an", "object"], "invalid_client_metadata", "body", id="array"),
    ],
)
def test_validation_errors_name_the_field(oauth, admin_token, body, error, field):
    response = register(oauth, admin_token, body)
    assert response.status_code == 400
    assert response.get_json()["error"] == error
    assert field in response.get_json()["error_description"]


def test_authorisation(oauth, admin_token):
    body = {"client_name": "x", "grant_types": ["client_credentials"]}
    assert register(oauth, None, body).status_code == 401
    assert register(oauth, "not-a-token", body).status_code == 401
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read")
    user_token = oauth.login_pair(app_client)["access_token"]
    wrong_scope = register(oauth, user_token, body)
    assert wrong_scope.status_code == 403
    assert 'scope="admin:clients"' in wrong_scope.headers["WWW-Authenticate"]
    first = register(oauth, admin_token, body).get_json()
    second = register(oauth, admin_token, body).get_json()
    foreign = oauth.client.get(f"/oauth/register/{second['client_id']}", headers={
        "Authorization": f"Bearer {first['registration_access_token']}"})
    assert foreign.status_code == 401


def test_open_registration_is_off_by_default_and_unprivileged(oauth, app, admin_token):
    body = {"client_name": "x", "grant_types": ["client_credentials"]}
    assert register(oauth, None, body).status_code == 401
    app.extensions["authserver"].settings = app.extensions["authserver"].settings.__class__(
        **{**app.extensions["authserver"].settings.__dict__, "open_registration": True})
    assert register(oauth, None, body).status_code == 201
    privileged = register(oauth, None, {**body, "first_party": True})
    assert privileged.status_code == 403


def test_secret_rotation_keeps_the_old_secret_for_the_overlap(oauth, admin_token, clock):
    created = register(oauth, admin_token, {"client_name": "m2m",
                                            "grant_types": ["client_credentials"]}).get_json()
    cid, old = created["client_id"], created["client_secret"]
    rotated = oauth.client.post(f"/oauth/register/{cid}/secret", json={"overlap_seconds": 60},
                                headers={"Authorization": f"Bearer {admin_token}"}).get_json()
    new = rotated["client_secret"]
    assert new != old

    def token_with(secret):
        return oauth.token({"grant_type": "client_credentials"},
                           {"Authorization": basic(cid, secret)})

    assert token_with(new).status_code == 200
    assert token_with(old).status_code == 200  # during the overlap
    import datetime as dt
    from unittest import mock

    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=61)
    with mock.patch("authserver.domain.clients.utcnow", return_value=later):
        assert_oauth_error(token_with(old), "invalid_client", 401)
        assert token_with(new).status_code == 200


def test_disable_and_delete_revoke_the_clients_sessions(oauth, app):
    oauth.create_user()
    app_client = oauth.first_party_app()
    resource, secret = oauth.create_client(name="API", grant_types=["client_credentials"],
                                           allow_introspection=True)
    pair = oauth.login_pair(app_client)
    runner = CliRunner()

    def run(*args):
        return runner.invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))

    out = run("clients", "disable", app_client.client_id, "--json")
    assert out.exit_code == 0 and '"sessions_revoked": 1' in out.output
    assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]), "invalid_client", 401)
    introspected = oauth.client.post("/oauth/introspect", data={"token": pair["access_token"]},
                                     headers={"Authorization": basic(resource.client_id, secret)})
    assert introspected.get_json() == {"active": False}
    assert run("clients", "enable", app_client.client_id).exit_code == 0
    assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]), "invalid_grant")
    second = oauth.login_pair(app_client)
    deleted = run("clients", "delete", app_client.client_id, "--yes", "--json")
    assert deleted.exit_code == 0 and '"deleted": true' in deleted.output
    assert_oauth_error(oauth.refresh(app_client, second["refresh_token"]), "invalid_client", 401)
    assert run("clients", "show", app_client.client_id).exit_code != 0


def test_cli_rotate_secret(oauth, app):
    machine, old = oauth.create_client(name="m", grant_types=["client_credentials"])
    result = CliRunner().invoke(cli, ["clients", "rotate-secret", machine.client_id, "--overlap",
                                      "0", "--json"], obj=ScriptInfo(create_app=lambda: app))
    assert result.exit_code == 0
    import json

    new = json.loads(result.output)["client_secret"]
    assert_oauth_error(oauth.token({"grant_type": "client_credentials"},
                                   {"Authorization": basic(machine.client_id, old)}),
                       "invalid_client", 401)
    assert oauth.token({"grant_type": "client_credentials"},
                       {"Authorization": basic(machine.client_id, new)}).status_code == 200


@pytest.fixture
def admin_browser(app, oauth):
    oauth.create_user("root")
    with app.app_context():
        users.set_admin(db.session, "root", True)
        db.session.commit()
    browser = BrowserActions(app.test_client())
    browser.login("root", PASSWORD)
    return browser


def test_admin_pages_create_edit_and_revoke(admin_browser, oauth):
    client = admin_browser.client
    page = client.get("/admin/clients/new")
    assert page.status_code == 200 and b"Register a client" in page.data
    fields = form_fields(page.get_data(as_text=True))
    fields.update(name="Shop", client_type="confidential", redirect_uris=REDIRECT,
                  grant_types=["authorization_code", "refresh_token"], scope="openid",
                  refresh_idle_ttl="3600", refresh_absolute_ttl="0", reuse_grace="10",
                  access_token_ttl="", bind_ip="off", on_binding_mismatch="revoke",
                  bind_user_agent="on")
    created = client.post("/admin/clients/new", data=fields)
    assert created.status_code == 200 and b"shown only once" in created.data
    text = created.get_data(as_text=True)
    client_id = text.split('id="client-id">')[1].split("<")[0]
    detail = client.get(f"/admin/clients/{client_id}")
    assert detail.status_code == 200 and b"client-secret" not in detail.data
    fields.update(redirect_uris=f"{REDIRECT}\n{REDIRECT}/v2")
    fields["csrf_token"] = form_fields(detail.get_data(as_text=True))["csrf_token"]
    saved = client.post(f"/admin/clients/{client_id}", data=fields)
    assert saved.status_code == 200 and b"Saved." in saved.data
    bad = client.post(f"/admin/clients/{client_id}", data={**fields,
                                                           "redirect_uris": "http://x.example"})
    assert bad.status_code == 400 and b"redirect_uris" in bad.data

    app_client = oauth.first_party_app(name="Mobile")
    oauth.create_user("alice")
    pair = oauth.login_pair(app_client)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]
    listing = client.get(f"/admin/clients/{app_client.client_id}")
    assert sid.encode() in listing.data
    revoked = client.post(f"/admin/clients/{app_client.client_id}/families/{sid}/revoke",
                          data={"csrf_token": fields["csrf_token"]})
    assert revoked.status_code == 303
    assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]), "invalid_grant")
    audit = client.get(f"/admin/audit?client={app_client.client_id}")
    assert b"family_revoked" in audit.data


def test_admin_pages_need_the_admin_role(app, oauth):
    oauth.create_user()
    browser = BrowserActions(app.test_client())
    assert browser.client.get("/admin/clients").status_code == 303
    browser.login()
    assert browser.client.get("/admin/clients").status_code == 403
    forged = browser.client.post("/admin/clients/new", data={"name": "x"})
    assert forged.status_code in (400, 403)
