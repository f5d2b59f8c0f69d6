"""Revocation (RFC 7009) and introspection (RFC 7662) over HTTP, and credential events.

Each revocation path is followed end to end as clients see it: the refresh is refused and
a resource server's introspection says ``active: false`` at once.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select, text

from authserver.domain import client_admin
from authserver.extensions import db
from authserver.storage.models import AuditEvent, TokenFamily
from tests.support.oauth import PASSWORD, BrowserActions, assert_oauth_error, basic
from tests.support.sessions import (
    IPHONE_APP,
    assert_signed_out,
    bearer,
    code_flow_pair,
    device_login,
    introspect,
    post_form,
    revoke,
)
from tests.support.sessions import REDIRECT as WEB_REDIRECT
from tests.support.statements import recorded_statements

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def setup(oauth):
    """Alice, her bank's first-party app, and a resource server allowed to introspect."""
    oauth.create_user()
    app_client = oauth.first_party_app(name="BankApp", scope="openid read write account")
    resource, secret = oauth.create_client(name="Orders API", grant_types=["client_credentials"],
                                           allow_introspection=True)
    return app_client, resource, secret


def inspect(oauth, resource, secret, token, hint=None):
    return introspect(oauth.client, resource.client_id, secret, token, hint)


def family_state(app, sid):
    with app.app_context():
        return db.session.execute(
            select(TokenFamily.revoked_at, TokenFamily.revoke_reason)
            .where(TokenFamily.id == sid)).one()


# -- RFC 7009 revocation ----------------------------------------------------------------
@pytest.mark.parametrize("hint", [None, "refresh_token", "access_token", "bogus"])
def test_revoking_the_refresh_token_ends_the_family(oauth, setup, hint):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")
    oauth.refresh(app_client, pair["refresh_token"])  # rotated once: two tokens in the family
    newest = oauth.refresh(app_client, pair["refresh_token"]).get_json()  # grace retry
    response = revoke(oauth.client, app_client, newest["refresh_token"], hint)
    assert response.status_code == 200 and response.data == b""
    assert response.headers["Cache-Control"] == "no-store"
    assert_signed_out(oauth, app_client, newest["refresh_token"])
    for token in (pair["access_token"], newest["access_token"], newest["refresh_token"]):
        assert inspect(oauth, resource, secret, token) == {"active": False}


def test_revoking_an_access_token_ends_the_family_named_by_its_sid(oauth, setup, app):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")
    other = oauth.login_pair(app_client, scope="read")  # another device: untouched
    assert revoke(oauth.client, app_client, pair["access_token"], "access_token"
                  ).status_code == 200
    assert_signed_out(oauth, app_client, pair["refresh_token"])
    assert inspect(oauth, resource, secret, pair["access_token"]) == {"active": False}
    assert inspect(oauth, resource, secret, other["access_token"])["active"] is True
    assert oauth.refresh(app_client, other["refresh_token"]).status_code == 200
    sid = oauth.verify_access_token(pair["access_token"])["sid"]
    assert family_state(app, sid).revoke_reason == "revoked_by_client"
    with app.app_context():
        row = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "family_revoked", AuditEvent.family_id == sid)).one()
    assert row.client_id == app_client.client_id and row.detail["cause"] == "revoked_by_client"
    assert row.detail["by"]["via"] == "revocation_endpoint"
    assert row.detail["by"]["token_type"] == "access_token"


def test_an_expired_access_token_still_names_its_session(oauth, setup, clock):
    """Signing out with the last (stale) access token an app holds still signs it out."""
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")
    clock.advance(3600)
    assert revoke(oauth.client, app_client, pair["access_token"]).status_code == 200
    assert_signed_out(oauth, app_client, pair["refresh_token"])
    assert inspect(oauth, resource, secret, pair["refresh_token"]) == {"active": False}


def test_the_metadata_advertises_both_endpoints(oauth):
    """RFC 8414 §2: where they are and how clients authenticate there."""
    metadata = oauth.client.get("/.well-known/oauth-authorization-server").get_json()
    issuer = metadata["issuer"]
    assert metadata["revocation_endpoint"] == issuer + "/oauth/revoke"
    assert metadata["introspection_endpoint"] == issuer + "/oauth/introspect"
    assert "none" in metadata["revocation_endpoint_auth_methods_supported"]
    assert "none" not in metadata["introspection_endpoint_auth_methods_supported"]


def test_a_wrong_hint_is_not_trusted(oauth, setup):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")
    assert revoke(oauth.client, app_client, pair["refresh_token"], "access_token"
                  ).status_code == 200
    assert inspect(oauth, resource, secret, pair["access_token"], "refresh_token"
                   ) == {"active": False}


def test_confidential_clients_revoke_with_their_secret(oauth, setup):
    _, resource, secret = setup
    web, web_secret = oauth.create_client(name="Web shop", first_party=True,
                                          grant_types=["password", "refresh_token"],
                                          scope="read")
    pair = oauth.login_pair(web, secret=web_secret)
    assert_oauth_error(revoke(oauth.client, web, pair["refresh_token"], secret="wrong"),
                       "invalid_client", 401)
    assert oauth.refresh(web, pair["refresh_token"], secret=web_secret).status_code == 200
    fresh = oauth.login_pair(web, secret=web_secret)
    posted = oauth.client.post("/oauth/revoke", data={
        "token": fresh["refresh_token"], "client_id": web.client_id, "client_secret": web_secret})
    assert posted.status_code == 200
    assert_oauth_error(oauth.refresh(web, fresh["refresh_token"], secret=web_secret),
                       "invalid_grant")
    assert inspect(oauth, resource, secret, fresh["access_token"]) == {"active": False}


def test_another_clients_tokens_answer_200_and_change_nothing(oauth, setup):
    """RFC 7009 §2.1: a client may only revoke tokens issued to it."""
    app_client, resource, secret = setup
    other = oauth.first_party_app(name="Other app")
    pair = oauth.login_pair(app_client, scope="read")
    for token in (pair["refresh_token"], pair["access_token"]):
        for hint in (None, "access_token", "refresh_token"):
            assert revoke(oauth.client, other, token, hint).status_code == 200
    assert inspect(oauth, resource, secret, pair["access_token"])["active"] is True
    assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 200


def test_tokens_that_are_not_our_access_tokens_revoke_nothing(oauth, setup):
    """An ID token carries the same sid, and a JWT made with another key can carry any:
    neither is an access token of this server."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="openid read")
    claims = oauth.verify_access_token(pair["access_token"])
    assert revoke(oauth.client, app_client, pair["id_token"]).status_code == 200
    forged = jwt.encode(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                        algorithm="RS256", headers={"typ": "at+jwt", "kid": "nope"})
    assert revoke(oauth.client, app_client, forged).status_code == 200
    none = jwt.encode(claims, None, algorithm="none", headers={"typ": "at+jwt"})
    assert revoke(oauth.client, app_client, none).status_code == 200
    assert inspect(oauth, resource, secret, pair["access_token"])["active"] is True


@pytest.mark.parametrize("token", ["rt_unknown", "garbage.garbage.garbage", "x" * 4096,
                                   "x" * 20_000, "rt_" + "A" * 9000, "a." * 4000 + "a", "é"])
def test_unknown_tokens_answer_200(oauth, setup, token):
    app_client, _, _ = setup
    response = revoke(oauth.client, app_client, token)
    assert response.status_code == 200 and response.data == b""


def test_revoking_twice_and_a_client_credentials_token(oauth, setup):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")
    assert revoke(oauth.client, app_client, pair["refresh_token"]).status_code == 200
    assert revoke(oauth.client, app_client, pair["refresh_token"]).status_code == 200
    machine = oauth.token({"grant_type": "client_credentials"},
                          {"Authorization": basic(resource.client_id, secret)}).get_json()
    # No sid: a self-contained token; revocation has nothing to end (it expires at exp).
    assert revoke(oauth.client, resource, machine["access_token"], secret=secret
                  ).status_code == 200
    assert inspect(oauth, resource, secret, machine["access_token"])["active"] is True


@pytest.mark.parametrize(
    ("data", "headers", "error", "status"),
    [
        pytest.param({"token": "x"}, {}, "invalid_client", 401, id="no-client-authentication"),
        pytest.param({"token": "x", "client_id": "cl_nobody"}, {}, "invalid_client", 401,
                     id="unknown-client"),
        pytest.param({"client_id": "APP"}, {}, "invalid_request", 400, id="no-token"),
        pytest.param({"token": "x", "client_id": "APP", "client_secret": "s"}, {},
                     "invalid_client", 401, id="public-client-with-a-secret"),
        pytest.param({"token": "x"}, {"Authorization": "Basic !!!"}, "invalid_client", 401,
                     id="malformed-basic"),
    ],
)
def test_revoke_rejects_bad_requests(oauth, setup, data, headers, error, status):
    app_client, _, _ = setup
    data = {k: (app_client.client_id if v == "APP" else v) for k, v in data.items()}
    assert_oauth_error(oauth.client.post("/oauth/revoke", data=data, headers=headers),
                       error, status)


def test_revoke_wants_a_form_body(oauth, setup):
    app_client, _, _ = setup
    as_json = oauth.client.post("/oauth/revoke", json={"token": "x",
                                                       "client_id": app_client.client_id})
    assert_oauth_error(as_json, "invalid_request")
    in_query = oauth.client.post(f"/oauth/revoke?token=x&client_id={app_client.client_id}")
    assert_oauth_error(in_query, "invalid_request")
    assert oauth.client.get("/oauth/revoke").status_code == 405


@pytest.mark.parametrize("path", ["/oauth/revoke", "/oauth/introspect"])
def test_a_database_outage_is_503_never_a_stack_trace(oauth, setup, monkeypatch, path):
    from sqlalchemy.exc import OperationalError

    from authserver.domain import refresh_lookup

    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")

    def down(*args, **kwargs):
        raise OperationalError("SELECT 1", {}, Exception("database is locked"))

    monkeypatch.setattr(refresh_lookup, "find_refresh_token", down)
    response = oauth.client.post(path, data={"token": pair["refresh_token"]},
                                 headers={"Authorization": basic(resource.client_id, secret)})
    body = assert_oauth_error(response, "temporarily_unavailable", 503)
    assert response.headers["Retry-After"] == "1" and "SELECT" not in json.dumps(body)


# -- RFC 7662 introspection ---------------------------------------------------------------
def test_introspection_of_live_tokens(oauth, setup):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")
    access = inspect(oauth, resource, secret, pair["access_token"])
    claims = oauth.verify_access_token(pair["access_token"])
    assert access["active"] is True and access["token_type"] == "Bearer"
    for key in ("scope", "client_id", "sub", "exp", "iat", "aud", "iss", "sid"):
        assert access[key] == claims[key], key
    refresh = inspect(oauth, resource, secret, pair["refresh_token"], "refresh_token")
    assert refresh["active"] is True and refresh["token_type"] == "refresh_token"
    assert refresh["scope"] == "read" and refresh["sid"] == claims["sid"]
    assert refresh["client_id"] == app_client.client_id and refresh["sub"] == claims["sub"]
    assert refresh["exp"] > refresh["iat"]


def test_introspection_of_a_dpop_bound_token_has_cnf(oauth, setup):
    from tests.support.dpop import ProofKey

    app_client, resource, secret = setup
    key = ProofKey()
    response = oauth.token({"grant_type": "password", "username": "alice",
                            "password": PASSWORD, "client_id": app_client.client_id,
                            "scope": "read"}, {"DPoP": key.proof()})
    assert response.status_code == 200, response.get_data(True)
    pair = response.get_json()
    access = inspect(oauth, resource, secret, pair["access_token"])
    assert access["active"] is True and access["token_type"] == "DPoP"
    assert access["cnf"] == {"jkt": key.jkt}
    assert inspect(oauth, resource, secret, pair["refresh_token"])["cnf"] == {"jkt": key.jkt}


@pytest.mark.parametrize("token", ["x", "a.b.c", "rt_" + "A" * 43, "eyJhbGciOiJub25lIn0.e30.",
                                   "é.é.é", "x" * 4096, "x" * 20_000, "a.b." + "c" * 9000,
                                   "rt_" + "A" * 9000])
def test_introspection_of_garbage_is_inactive(oauth, setup, token):
    _, resource, secret = setup
    assert inspect(oauth, resource, secret, token) == {"active": False}


def test_introspection_of_expired_rotated_and_id_tokens(oauth, setup, clock):
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="openid read")
    assert inspect(oauth, resource, secret, pair["id_token"]) == {"active": False}
    oauth.refresh(app_client, pair["refresh_token"])
    assert inspect(oauth, resource, secret, pair["refresh_token"]) == {"active": False}
    clock.advance(901)
    assert inspect(oauth, resource, secret, pair["access_token"]) == {"active": False}


def test_an_access_token_outlives_no_session_that_reached_its_absolute_expiry(oauth, setup,
                                                                              clock):
    """The family's absolute lifetime ends the session, and with it its access tokens."""
    _, resource, secret = setup
    short = oauth.first_party_app(name="Kiosk", scope="read account", refresh_idle_ttl=60,
                                  refresh_absolute_ttl=120)
    pair = oauth.login_pair(short, scope="read account")
    assert inspect(oauth, resource, secret, pair["access_token"])["active"] is True
    clock.advance(121)  # the access token (900 s) has not expired; its session has
    assert inspect(oauth, resource, secret, pair["access_token"]) == {"active": False}
    api = oauth.client.get("/account/api/sessions",
                           headers={"Authorization": f"Bearer {pair['access_token']}"})
    assert api.status_code == 401


def test_disabling_a_client_makes_its_tokens_inactive_at_once(oauth, setup, app):
    app_client, resource, secret = setup
    machine, machine_secret = oauth.create_client(name="Reports", scope="reports")
    pair = oauth.login_pair(app_client, scope="read")
    machine_token = oauth.token({"grant_type": "client_credentials"}, {
        "Authorization": basic(machine.client_id, machine_secret)}).get_json()["access_token"]
    assert inspect(oauth, resource, secret, machine_token)["active"] is True
    with app.app_context():
        client_admin.set_active(db.session, app_client.client_id, False)
        client_admin.set_active(db.session, machine.client_id, False)
        db.session.commit()
    for token in (pair["access_token"], pair["refresh_token"], machine_token):
        assert inspect(oauth, resource, secret, token) == {"active": False}


@pytest.mark.parametrize(
    ("who", "status", "error"),
    [
        pytest.param("allowed-basic", 200, None, id="confidential-allowed-basic"),
        pytest.param("allowed-post", 200, None, id="confidential-allowed-post"),
        pytest.param("not-allowed", 403, "unauthorized_client", id="confidential-not-allowed"),
        pytest.param("public", 401, "invalid_client", id="public-client"),
        pytest.param("public-with-secret", 401, "invalid_client", id="public-client-secret"),
        pytest.param("wrong-secret", 401, "invalid_client", id="wrong-secret"),
        pytest.param("unknown-client", 401, "invalid_client", id="unknown-client"),
        pytest.param("disabled", 401, "invalid_client", id="disabled-resource-server"),
        pytest.param("anonymous", 401, "invalid_client", id="no-authentication"),
    ],
)
def test_introspection_permission_table(oauth, setup, app, who, status, error):
    """RFC 7662 §2.1 / §4: only authenticated resource servers allowed to introspect."""
    app_client, resource, secret = setup
    plain, plain_secret = oauth.create_client(name="No introspection",
                                              grant_types=["client_credentials"])
    if who == "disabled":
        with app.app_context():
            client_admin.set_active(db.session, resource.client_id, False)
            db.session.commit()
    pair = oauth.login_pair(app_client, scope="read")
    data = {"token": pair["access_token"]}
    headers = {}
    if who in ("allowed-basic", "disabled"):
        headers["Authorization"] = basic(resource.client_id, secret)
    elif who == "allowed-post":
        data.update(client_id=resource.client_id, client_secret=secret)
    elif who == "not-allowed":
        headers["Authorization"] = basic(plain.client_id, plain_secret)
    elif who == "public":
        data["client_id"] = app_client.client_id
    elif who == "public-with-secret":
        headers["Authorization"] = basic(app_client.client_id, "guess")
    elif who == "wrong-secret":
        headers["Authorization"] = basic(resource.client_id, "nope")
    elif who == "unknown-client":
        headers["Authorization"] = basic("cl_nobody", "nope")
    response = oauth.client.post("/oauth/introspect", data=data, headers=headers)
    if error is None:
        assert response.status_code == 200 and response.get_json()["active"] is True
        assert response.headers["Cache-Control"] == "no-store"
    else:
        body = assert_oauth_error(response, error, status)
        assert "active" not in body and response.headers["Cache-Control"] == "no-store"


def test_introspection_needs_a_token(oauth, setup):
    _, resource, secret = setup
    assert_oauth_error(oauth.client.post("/oauth/introspect", data={},
                                         headers={"Authorization": basic(resource.client_id,
                                                                         secret)}),
                       "invalid_request")


def test_introspection_is_one_indexed_lookup(oauth, setup, app, backend):
    """Each answer reads the token's session once, through primary-key or unique indexes:
    the query plan of each statement searches, never scans
    (docs/design.md, "Performance budget")."""
    app_client, resource, secret = setup
    pair = oauth.login_pair(app_client, scope="read")
    with app.app_context():
        engine = db.engine
    for token in (pair["access_token"], pair["refresh_token"]):
        with recorded_statements(app) as recorded:
            assert inspect(oauth, resource, secret, token)["active"] is True
        statements = [(statement, parameters) for statement, parameters in recorded
                      if "token_families" in statement or "refresh_tokens" in statement]
        assert len(statements) == 1, statements
        statement, parameters = statements[0]
        with engine.connect() as conn:
            if backend == "sqlite":
                plan = [row[-1] for row in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, parameters)]
                assert plan and all(step.startswith("SEARCH") for step in plan), plan
            else:
                conn.execute(text("SET enable_seqscan = off"))
                plan = [row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement,
                                                               parameters)]
                assert not any("Seq Scan" in line for line in plan), plan
                assert any("Index" in line for line in plan), plan


# -- Credential events, end to end ----------------------------------------------------------
def test_password_change_signs_out_other_devices_only(oauth, setup, app):
    app_client, resource, secret = setup
    web, _ = oauth.create_client(name="Web banking", public=True, redirect_uris=[WEB_REDIRECT],
                                 scope="read account")
    phone = device_login(oauth, app_client, IPHONE_APP, scope="read")
    other_browser = BrowserActions(app.test_client())
    other_browser.login()
    browser = BrowserActions(app.test_client())
    browser.login()
    this_device = code_flow_pair(oauth, browser, web)  # an app signed in through this browser

    done = post_form(browser, "/account/password", "/account/password",
                     current_password=PASSWORD, new_password=NEW_PASSWORD,
                     confirm_password=NEW_PASSWORD)
    assert done.status_code == 200 and b"was changed" in done.data
    # other devices: refused at once, everywhere
    assert_signed_out(oauth, app_client, phone["refresh_token"], IPHONE_APP)
    assert inspect(oauth, resource, secret, phone["access_token"]) == {"active": False}
    assert other_browser.client.get("/account/sessions").status_code == 303  # to /login
    # this device: the browser and the app signed in through it keep working
    assert browser.client.get("/account/sessions").status_code == 200
    assert inspect(oauth, resource, secret, this_device["access_token"])["active"] is True
    assert oauth.refresh(web, this_device["refresh_token"]).status_code == 200
    # the old password is gone, the new one works
    assert_oauth_error(oauth.password_login(app_client), "invalid_grant")
    assert oauth.password_login(app_client, password=NEW_PASSWORD).status_code == 200
    with app.app_context():
        changed = db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == "password_changed")).one()
        reasons = db.session.scalars(select(TokenFamily.revoke_reason)).all()
    assert changed.detail["devices_signed_out"] == 2  # the phone and the other browser
    assert changed.detail["by"]["via"] == "account_page"
    assert reasons.count("password_changed") == 1


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"current_password": "wrong password!", "new_password": NEW_PASSWORD,
                      "confirm_password": NEW_PASSWORD}, b"current password is not correct",
                     id="wrong-current"),
        pytest.param({"current_password": PASSWORD, "new_password": NEW_PASSWORD,
                      "confirm_password": NEW_PASSWORD + "!"}, b"do not match",
                     id="mismatch"),
        pytest.param({"current_password": PASSWORD, "new_password": "short",
                      "confirm_password": "short"}, b"at least 8 characters", id="too-short"),
        pytest.param({"current_password": PASSWORD, "new_password": PASSWORD,
                      "confirm_password": PASSWORD}, b"must differ", id="unchanged"),
    ],
)
def test_a_refused_password_change_changes_nothing(oauth, setup, app, fields, message):
    app_client, _, _ = setup
    phone = oauth.login_pair(app_client, scope="read")
    browser = BrowserActions(app.test_client())
    browser.login()
    refused = post_form(browser, "/account/password", "/account/password", **fields)
    assert refused.status_code == 400 and message in refused.data
    assert oauth.refresh(app_client, phone["refresh_token"]).status_code == 200
    assert oauth.password_login(app_client).status_code == 200


def test_password_change_needs_the_form_token(oauth, setup, app):
    app_client, _, _ = setup
    phone = oauth.login_pair(app_client, scope="read")
    browser = BrowserActions(app.test_client())
    browser.login()
    forged = browser.client.post("/account/password", data={
        "current_password": PASSWORD, "new_password": NEW_PASSWORD,
        "confirm_password": NEW_PASSWORD})
    assert forged.status_code == 400
    assert oauth.refresh(app_client, phone["refresh_token"]).status_code == 200
    assert app.test_client().get("/account/password").status_code == 303


def test_deactivation_ends_everything_at_once(oauth, setup, app, run):
    app_client, resource, secret = setup
    phone = oauth.login_pair(app_client, scope="read account")
    browser = BrowserActions(app.test_client())
    browser.login()
    result = run("users", "deactivate", "alice")
    assert result.exit_code == 0 and "revoked 2 session(s)" in result.output  # phone, browser
    assert_signed_out(oauth, app_client, phone["refresh_token"])
    for token in (phone["access_token"], phone["refresh_token"]):
        assert inspect(oauth, resource, secret, token) == {"active": False}
    assert oauth.client.get("/account/api/sessions",
                            headers=bearer(phone["access_token"])).status_code == 401
    assert browser.client.get("/account/sessions").status_code == 303
    # ... and no new sign-in: neither the password grant nor the login page
    assert_oauth_error(oauth.password_login(app_client), "invalid_grant")
    assert BrowserActions(app.test_client()).login().status_code == 401
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.event.in_(
            ["user_deactivated", "sign_in_failed"]))).all()
    causes = {r.event: r.detail.get("cause") for r in rows}
    assert causes == {"user_deactivated": None, "sign_in_failed": "deactivated"}


def test_reset_password_signs_out_every_device(oauth, setup, app, run):
    app_client, resource, secret = setup
    phone = oauth.login_pair(app_client, scope="read")
    browser = BrowserActions(app.test_client())
    browser.login()
    result = run("users", "reset-password", "alice", "--password-stdin",
                 input=NEW_PASSWORD + "\n")
    assert result.exit_code == 0 and "revoked 2 session(s)" in result.output
    assert_signed_out(oauth, app_client, phone["refresh_token"])
    assert inspect(oauth, resource, secret, phone["access_token"]) == {"active": False}
    assert browser.client.get("/account/sessions").status_code == 303
    assert oauth.password_login(app_client, password=NEW_PASSWORD).status_code == 200
