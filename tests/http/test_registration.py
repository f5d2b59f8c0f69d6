"""The registration API (RFC 7591 / RFC 7592) over HTTP, with a real admin client's token.

Admin tokens come from the token endpoint (client_credentials of a client registered with
``admin:clients``), exactly as an operator's automation gets them.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import update

from authserver.extensions import db
from authserver.storage.models import Client
from tests.support.admin import (
    ADMIN_SCOPE,
    REDIRECT,
    admin_token,
    audit_events,
    bearer,
    client_rows,
    count_clients,
    machine_token,
)
from tests.support.oauth import assert_oauth_error, basic

WEB_APP = {"client_name": "Partner portal", "redirect_uris": [REDIRECT],
           "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
           "scope": "openid profile"}
MACHINE = {"client_name": "Reports job", "grant_types": ["client_credentials"],
           "scope": "reports"}


@pytest.fixture
def admin(oauth):
    return admin_token(oauth)


def register(oauth, token, body, **kwargs):
    headers = bearer(token) if token else {}
    return oauth.client.post("/oauth/register", json=body, headers=headers, **kwargs)


def registered(oauth, token, body):
    response = register(oauth, token, body)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def assert_registration_error(response, error, field, status=400):
    """RFC 7591 §3.2.2: 400, JSON, the error code, the field named in the description."""
    assert response.status_code == status, response.get_data(True)
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["error"] == error, body
    assert body["error_description"].startswith(f"{field}: "), body
    return body


def assert_bearer_error(response, status, error):
    """RFC 6750 §3: the status, the error in the body and in WWW-Authenticate."""
    assert response.status_code == status, response.get_data(True)
    assert response.get_json()["error"] == error
    assert f'error="{error}"' in response.headers["WWW-Authenticate"]
    return response


def assert_no_credentials(response):
    """RFC 6750 §3.1: 401 and a challenge without an error code when no token was sent."""
    assert response.status_code == 401, response.get_data(True)
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer") and "error=" not in challenge
    return response


def introspect(oauth, token):
    resource, secret = oauth.create_client(name="Orders API", grant_types=["client_credentials"],
                                           allow_introspection=True)
    return oauth.client.post("/oauth/introspect", data={"token": token}, headers={
        "Authorization": basic(resource.client_id, secret)}).get_json()


# -- the happy path --------------------------------------------------------------------------
def test_register_read_update_delete(oauth, admin, app):
    response = register(oauth, admin, {**WEB_APP, "reuse_grace": 5, "bind_ip": "/24",
                                       "logo_uri": "https://ignored.example/logo.png"})
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Location"] == body["registration_client_uri"]
    assert body["registration_client_uri"] == (
        f"http://127.0.0.1:8000/oauth/register/{body['client_id']}")
    assert len(body["client_secret"]) >= 43 and body["client_secret_expires_at"] == 0
    assert body["registration_access_token"].startswith("reg_")
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["response_types"] == ["code"] and body["grant_types"] == WEB_APP["grant_types"]
    assert body["reuse_grace"] == 5 and body["bind_ip"] == "/24" and "logo_uri" not in body
    assert abs(body["client_id_issued_at"] - time.time()) < 60
    stored = client_rows(app)[-1]  # only digests are stored
    assert stored["secret_digest"] == hashlib.sha256(body["client_secret"].encode()).hexdigest()
    assert stored["registration_token_digest"] == hashlib.sha256(
        body["registration_access_token"].encode()).hexdigest()
    assert body["client_secret"] not in json.dumps(stored, default=str)

    own = bearer(body["registration_access_token"])
    read = oauth.client.get(f"/oauth/register/{body['client_id']}", headers=own)
    assert read.status_code == 200 and read.headers["Cache-Control"] == "no-store"
    read = read.get_json()
    assert read["client_name"] == "Partner portal" and "client_secret" not in read
    # RFC 7592 §3: the registration access token comes back with the client information.
    assert read["registration_access_token"] == body["registration_access_token"]

    updated = oauth.client.put(f"/oauth/register/{body['client_id']}", headers=own, json={
        **read, "client_name": "Partner portal 2", "redirect_uris": [REDIRECT, REDIRECT + "2"]})
    assert updated.status_code == 200, updated.get_json()
    assert updated.get_json()["redirect_uris"] == [REDIRECT, REDIRECT + "2"]
    partial = oauth.client.put(f"/oauth/register/{body['client_id']}", headers=bearer(admin),
                               json={"client_id": body["client_id"], "reuse_grace": 0})
    assert partial.status_code == 200, partial.get_json()
    assert partial.get_json()["scope"] == "openid profile"  # absent members keep their value
    assert partial.get_json()["reuse_grace"] == 0
    assert "registration_access_token" not in partial.get_json()  # an admin did not send one
    assert [e.detail["changed"] for e in audit_events(app, "client_updated")] == [
        ["name", "redirect_uris"], ["reuse_grace"]]

    gone = oauth.client.delete(f"/oauth/register/{body['client_id']}", headers=bearer(admin))
    assert gone.status_code == 204 and gone.headers["Cache-Control"] == "no-store"
    again = oauth.client.get(f"/oauth/register/{body['client_id']}", headers=bearer(admin))
    assert_oauth_error(again, "not_found", 404)
    # RFC 7592 §2.1: the registration token of a client that no longer exists is refused.
    assert_bearer_error(oauth.client.get(f"/oauth/register/{body['client_id']}", headers=own),
                        401, "invalid_token")
    assert audit_events(app, "client_deleted")[0].detail["actor"].startswith("admin client ")


def test_a_registered_machine_client_gets_tokens(oauth, admin):
    body = registered(oauth, admin, MACHINE)
    assert body["response_types"] == [] and "redirect_uris" in body
    token = machine_token(oauth, body["client_id"], body["client_secret"])
    assert oauth.verify_access_token(token)["scope"] == "reports"


def test_public_native_app_registration(oauth, admin):
    body = registered(oauth, admin, {
        "client_name": "Phone app", "token_endpoint_auth_method": "none",
        "redirect_uris": ["com.example.phone:/oauth/callback", "http://127.0.0.1/cb",
                          "http://[::1]:8080/cb"],
        "grant_types": ["authorization_code", "refresh_token"]})
    assert body["token_endpoint_auth_method"] == "none" and "client_secret" not in body
    assert body["registration_access_token"]


def test_discovery_names_the_registration_endpoint(client):
    metadata = client.get("/.well-known/oauth-authorization-server").get_json()
    assert metadata["registration_endpoint"] == "http://127.0.0.1:8000/oauth/register"


# -- validation: every error names its field and changes nothing ------------------------------
CASES = [
    ({"redirect_uris": [REDIRECT]}, "invalid_client_metadata", "client_name", "no-name"),
    ({**WEB_APP, "client_name": "   "}, "invalid_client_metadata", "client_name", "blank-name"),
    ({**WEB_APP, "client_name": "x" * 256}, "invalid_client_metadata", "client_name", "long-name"),
    ({**WEB_APP, "client_name": "a\nb"}, "invalid_client_metadata", "client_name", "ctl-name"),
    ({**WEB_APP, "client_name": 7}, "invalid_client_metadata", "client_name", "name-type"),
    ({**WEB_APP, "client_name": "\ud800"}, "invalid_client_metadata", "client_name",
     "lone-surrogate"),
    ({**WEB_APP, "redirect_uris": [REDIRECT + "/\udfff"]}, "invalid_redirect_uri",
     "redirect_uris", "surrogate-in-uri"),
    ({**WEB_APP, "redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri",
     "redirect_uris", "http-redirect"),
    ({**WEB_APP, "redirect_uris": [REDIRECT + "#frag"]}, "invalid_redirect_uri",
     "redirect_uris", "fragment"),
    ({**WEB_APP, "redirect_uris": ["/relative/cb"]}, "invalid_redirect_uri", "redirect_uris",
     "relative"),
    ({**WEB_APP, "redirect_uris": ["https://user:pw@partner.example.com/cb"]},
     "invalid_redirect_uri", "redirect_uris", "userinfo"),
    ({**WEB_APP, "redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri",
     "redirect_uris", "javascript"),
    ({**WEB_APP, "redirect_uris": ["myapp:/cb"]}, "invalid_redirect_uri", "redirect_uris",
     "scheme-not-reversed-domain"),
    ({**WEB_APP, "redirect_uris": ["https://[::1/cb"]}, "invalid_redirect_uri",
     "redirect_uris", "unparseable"),
    ({**WEB_APP, "redirect_uris": ["https://partner.example.com:99999/cb"]},
     "invalid_redirect_uri", "redirect_uris", "bad-port"),
    ({**WEB_APP, "redirect_uris": "https://partner.example.com/cb"}, "invalid_redirect_uri",
     "redirect_uris", "not-a-list"),
    ({**WEB_APP, "redirect_uris": [REDIRECT] * 0}, "invalid_redirect_uri", "redirect_uris",
     "code-without-redirect"),
    ({**WEB_APP, "post_logout_redirect_uris": ["http://evil.example/bye"]},
     "invalid_redirect_uri", "post_logout_redirect_uris", "post-logout"),
    ({**WEB_APP, "response_types": ["token"]}, "invalid_client_metadata", "response_types",
     "implicit"),
    ({**MACHINE, "response_types": ["code"]}, "invalid_client_metadata", "response_types",
     "code-without-authorization-code"),
    ({**WEB_APP, "response_types": []}, "invalid_client_metadata", "response_types",
     "authorization-code-without-code"),
    ({**WEB_APP, "response_types": "code"}, "invalid_client_metadata", "response_types",
     "response-types-type"),
    ({**MACHINE, "token_endpoint_auth_method": "none"}, "invalid_client_metadata",
     "grant_types", "public-client-credentials"),
    ({**MACHINE, "grant_types": ["refresh_token"]}, "invalid_client_metadata", "grant_types",
     "refresh-alone"),
    ({**MACHINE, "grant_types": ["client_credentials", "refresh_token"]},
     "invalid_client_metadata", "grant_types", "refresh-with-client-credentials"),
    ({**MACHINE, "grant_types": ["password"]}, "invalid_client_metadata", "grant_types",
     "password-third-party"),
    ({**MACHINE, "grant_types": ["implicit"]}, "invalid_client_metadata", "grant_types",
     "unknown-grant"),
    ({**MACHINE, "grant_types": [{"a": 1}]}, "invalid_client_metadata", "grant_types",
     "grant-type-type"),
    ({**MACHINE, "access_token_ttl": 5}, "invalid_client_metadata", "access_token_ttl",
     "access-ttl-low"),
    ({**MACHINE, "access_token_ttl": 86_401}, "invalid_client_metadata", "access_token_ttl",
     "access-ttl-high"),
    ({**MACHINE, "access_token_ttl": "900"}, "invalid_client_metadata", "access_token_ttl",
     "access-ttl-string"),
    ({**MACHINE, "refresh_idle_ttl": -1}, "invalid_client_metadata", "refresh_idle_ttl",
     "idle-negative"),
    ({**MACHINE, "refresh_absolute_ttl": 10**12}, "invalid_client_metadata",
     "refresh_absolute_ttl", "absolute-huge"),
    ({**MACHINE, "reuse_grace": 301}, "invalid_client_metadata", "reuse_grace", "grace-high"),
    ({**MACHINE, "reuse_grace": True}, "invalid_client_metadata", "reuse_grace", "grace-bool"),
    ({**MACHINE, "token_endpoint_auth_method": "private_key_jwt"}, "invalid_client_metadata",
     "token_endpoint_auth_method", "unsupported-auth-method"),
    ({**MACHINE, "bind_ip": "/99"}, "invalid_client_metadata", "bind_ip", "bind-ip"),
    ({**MACHINE, "on_binding_mismatch": "ignore"}, "invalid_client_metadata",
     "on_binding_mismatch", "mismatch-action"),
    ({**MACHINE, "require_dpop": "yes"}, "invalid_client_metadata", "require_dpop",
     "bool-type"),
    ({**MACHINE, "scope": 'a"b'}, "invalid_client_metadata", "scope", "bad-scope"),
    ({**MACHINE, "scope": ["reports"]}, "invalid_client_metadata", "scope", "scope-type"),
    ({**WEB_APP, "token_endpoint_auth_method": "none", "scope": ADMIN_SCOPE},
     "invalid_client_metadata", "scope", "admin-scope-public"),
    ({**WEB_APP, "grant_types": ["authorization_code", "client_credentials"],
      "scope": ADMIN_SCOPE}, "invalid_client_metadata", "scope", "admin-scope-with-users"),
    ({**MACHINE, "token_endpoint_auth_method": "none", "grant_types": ["authorization_code"],
      "redirect_uris": [REDIRECT], "allow_introspection": True}, "invalid_client_metadata",
     "allow_introspection", "public-introspection"),
    (["not", "an", "object"], "invalid_client_metadata", "body", "array"),
]


@pytest.mark.parametrize(("body", "error", "field"),
                         [pytest.param(*case[:3], id=case[3]) for case in CASES])
def test_each_validation_error_names_the_field(oauth, admin, app, body, error, field):
    before = client_rows(app)
    assert_registration_error(register(oauth, admin, body), error, field)
    assert client_rows(app) == before


def test_a_body_that_is_not_json_is_refused(oauth, admin, app):
    before = count_clients(app)
    response = oauth.client.post("/oauth/register", data="client_name=x",
                                 headers={**bearer(admin), "Content-Type": "text/plain"})
    assert_registration_error(response, "invalid_client_metadata", "body")
    response = oauth.client.post("/oauth/register", data="{not json",
                                 headers={**bearer(admin), "Content-Type": "application/json"})
    assert_registration_error(response, "invalid_client_metadata", "body")
    assert count_clients(app) == before


def test_an_invalid_update_changes_nothing(oauth, admin, app):
    body = registered(oauth, admin, WEB_APP)
    before = client_rows(app)
    url = f"/oauth/register/{body['client_id']}"
    for change, field in [({"redirect_uris": ["http://evil.example/cb"]}, "redirect_uris"),
                          ({"grant_types": ["client_credentials"]}, "response_types"),
                          ({"token_endpoint_auth_method": "none"},
                           "token_endpoint_auth_method"),
                          ({"access_token_ttl": 0}, "access_token_ttl")]:
        response = oauth.client.put(url, headers=bearer(admin),
                                    json={"client_id": body["client_id"],
                                          "response_types": ["code"], **change})
        assert response.status_code == 400, (change, response.get_json())
        assert response.get_json()["error_description"].startswith(f"{field}: ")
    no_id = oauth.client.put(url, headers=bearer(admin), json={"client_name": "x"})
    assert_registration_error(no_id, "invalid_client_metadata", "client_id")
    other_id = oauth.client.put(url, headers=bearer(admin), json={"client_id": "cl_other"})
    assert_registration_error(other_id, "invalid_client_metadata", "client_id")
    wrong_secret = oauth.client.put(url, headers=bearer(admin), json={
        "client_id": body["client_id"], "client_secret": "chosen-by-the-client"})
    assert_registration_error(wrong_secret, "invalid_client_metadata", "client_secret")
    assert client_rows(app) == before
    same_secret = oauth.client.put(url, headers=bearer(admin), json={
        "client_id": body["client_id"], "client_secret": body["client_secret"],
        "client_name": "Renamed"})
    assert same_secret.status_code == 200 and "client_secret" not in same_secret.get_json()


# -- who may call --------------------------------------------------------------------------------
def test_no_token_or_a_bad_one_is_401(oauth, app):
    for headers in ({}, {"Authorization": "Basic abc"}):
        assert_no_credentials(oauth.client.post("/oauth/register", json=MACHINE,
                                                headers=headers))
    for headers in (bearer("not-a-token"), bearer("reg_" + "x" * 43), bearer("x" * 9000)):
        response = oauth.client.post("/oauth/register", json=MACHINE, headers=headers)
        assert_bearer_error(response, 401, "invalid_token")
    for header in ("Bearer", "Bearer a b"):  # malformed: RFC 6750 §3.1 invalid_request
        response = oauth.client.post("/oauth/register", json=MACHINE,
                                     headers={"Authorization": header})
        assert_bearer_error(response, 400, "invalid_request")
    assert count_clients(app) == 0


def test_wrong_scope_is_403_insufficient_scope(oauth, app):
    oauth.create_user()
    user_token = oauth.login_pair(oauth.first_party_app(scope="read"))["access_token"]
    machine, secret = oauth.create_client(name="Other machine", scope="reports")
    machine_only = machine_token(oauth, machine.client_id, secret)
    for token in (user_token, machine_only):
        response = register(oauth, token, MACHINE)
        assert_bearer_error(response, 403, "insufficient_scope")
        assert f'scope="{ADMIN_SCOPE}"' in response.headers["WWW-Authenticate"]
    assert count_clients(app) == 2


def test_a_user_token_never_administers_even_with_the_scope(oauth, app):
    """Admin tokens come from client_credentials: a token of a user's sign-in (it has a
    ``sid``) is refused even if a legacy client could put admin:clients in it."""
    oauth.create_user()
    legacy = oauth.first_party_app(scope="read")
    with app.app_context():
        db.session.execute(update(Client).where(Client.client_id == legacy.client_id)
                           .values(scope=f"read {ADMIN_SCOPE}"))
        db.session.commit()
    token = oauth.login_pair(legacy, scope=ADMIN_SCOPE)["access_token"]
    assert_bearer_error(register(oauth, token, MACHINE), 403, "insufficient_scope")


def test_admin_token_of_a_disabled_or_demoted_client_is_refused(oauth, app, admin):
    owner = oauth.verify_access_token(admin)["client_id"]
    assert register(oauth, admin, MACHINE).status_code == 201
    with app.app_context():
        db.session.execute(update(Client).where(Client.client_id == owner)
                           .values(scope="reports"))
        db.session.commit()
    assert_bearer_error(register(oauth, admin, MACHINE), 401, "invalid_token")
    with app.app_context():
        db.session.execute(update(Client).where(Client.client_id == owner)
                           .values(scope=ADMIN_SCOPE, active=False))
        db.session.commit()
    assert_bearer_error(register(oauth, admin, MACHINE), 401, "invalid_token")


def test_an_expired_admin_token_is_refused(oauth, admin, clock):
    clock.advance(900 + 31)  # past exp and the 30 s leeway
    assert_bearer_error(register(oauth, admin, MACHINE), 401, "invalid_token")


def _forged(claims, key, kid, alg="RS256"):
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_forged_admin_tokens_are_refused(oauth, app, admin):
    genuine = jwt.decode(admin, options={"verify_signature": False})
    kid = jwt.get_unverified_header(admin)["kid"]
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other_key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    forged = _forged(genuine, pem, kid)
    unsigned = ".".join([_b64(json.dumps({"alg": "none", "kid": kid, "typ": "at+jwt"}).encode()),
                         _b64(json.dumps(genuine).encode()), ""])
    public_jwk = next(k for k in oauth.jwks()["keys"] if k["kid"] == kid)
    public_pem = jwt.PyJWK(public_jwk).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    signing_input = ".".join([_b64(json.dumps({"alg": "HS256", "kid": kid, "typ": "at+jwt"})
                                   .encode()), _b64(json.dumps(genuine).encode())])
    hs256 = signing_input + "." + _b64(hmac.new(public_pem, signing_input.encode(),
                                                hashlib.sha256).digest())
    with app.app_context():  # our key, but another issuer, audience or type
        key = app.extensions["authserver"].keys.active()
        foreign_issuer = key.sign({**genuine, "iss": "https://other.example"}, "at+jwt")
        foreign_audience = key.sign({**genuine, "aud": "https://api.example"}, "at+jwt")
        id_token_type = key.sign(genuine, "JWT")
    for token in (forged, unsigned, hs256, foreign_issuer, foreign_audience, id_token_type,
                  admin[:-4] + "AAAA"):
        assert_bearer_error(register(oauth, token, MACHINE), 401, "invalid_token")
    assert count_clients(app) == 1  # only the admin client itself


def test_a_registration_token_manages_only_its_own_client(oauth, admin, app):
    first = registered(oauth, admin, WEB_APP)
    second = registered(oauth, admin, {**WEB_APP, "client_name": "Second"})
    theirs = bearer(first["registration_access_token"])
    before = client_rows(app)
    url = f"/oauth/register/{second['client_id']}"
    for response in (
        oauth.client.get(url, headers=theirs),
        oauth.client.put(url, headers=theirs, json={"client_id": second["client_id"],
                                                    "client_name": "Hijacked"}),
        oauth.client.post(url + "/secret", headers=theirs),
        oauth.client.delete(url, headers=theirs),
        register(oauth, first["registration_access_token"], MACHINE),  # nor register
    ):
        assert_bearer_error(response, 401, "invalid_token")
    assert client_rows(app) == before
    # ... and it may not use the admin-only operations on its own client either.
    own = f"/oauth/register/{first['client_id']}"
    assert_bearer_error(oauth.client.post(own + "/disable", headers=theirs), 403,
                        "insufficient_scope")
    assert client_rows(app) == before


def test_a_registration_token_cannot_raise_its_own_privileges(oauth, admin, app):
    body = registered(oauth, admin, MACHINE)
    own = bearer(body["registration_access_token"])
    url = f"/oauth/register/{body['client_id']}"
    before = client_rows(app)
    for change, field in [({"first_party": True}, "first_party"),
                          ({"allow_introspection": True}, "allow_introspection"),
                          ({"scope": f"reports {ADMIN_SCOPE}"}, "scope")]:
        response = oauth.client.put(url, headers=own,
                                    json={"client_id": body["client_id"], **change})
        assert_registration_error(response, "invalid_client_metadata", field)
    assert client_rows(app) == before
    by_admin = oauth.client.put(url, headers=bearer(admin), json={
        "client_id": body["client_id"], "allow_introspection": True})
    assert by_admin.status_code == 200 and by_admin.get_json()["allow_introspection"] is True
    # What an admin set, the client keeps when it updates the rest.
    renamed = oauth.client.put(url, headers=own, json={**by_admin.get_json(),
                                                       "client_name": "Reports v2"})
    assert renamed.status_code == 200 and renamed.get_json()["allow_introspection"] is True


def test_a_disabled_clients_registration_token_is_refused(oauth, admin):
    body = registered(oauth, admin, MACHINE)
    url = f"/oauth/register/{body['client_id']}"
    disabled = oauth.client.post(url + "/disable", headers=bearer(admin))
    assert disabled.status_code == 200 and disabled.get_json()["active"] is False
    assert_bearer_error(oauth.client.get(url, headers=bearer(body["registration_access_token"])),
                        401, "invalid_token")
    assert oauth.client.post(url + "/enable", headers=bearer(admin)).get_json()["active"]
    assert oauth.client.get(url, headers=bearer(body["registration_access_token"])
                            ).status_code == 200


# -- open registration ------------------------------------------------------------------------
def test_open_registration_is_off_by_default(oauth, app):
    assert app.extensions["authserver"].settings.open_registration is False
    assert_no_credentials(register(oauth, None, WEB_APP))
    assert count_clients(app) == 0


@pytest.mark.parametrize("settings_overrides", [{"open_registration": True}])
def test_open_registration_when_on_is_unprivileged(oauth, app):
    body = registered(oauth, None, WEB_APP)
    assert body["registration_access_token"] and body["client_secret"]
    assert audit_events(app, "client_created")[0].detail["actor"] == "open registration"
    before = client_rows(app)
    for change, field in [({"first_party": True}, "first_party"),
                          ({"allow_introspection": True}, "allow_introspection"),
                          ({"grant_types": ["client_credentials"], "response_types": [],
                            "scope": ADMIN_SCOPE}, "scope")]:
        response = register(oauth, None, {**WEB_APP, **change})
        assert_registration_error(response, "invalid_client_metadata", field)
    # Nor any scope beyond the open-registration ones (RFC 7591 §2).
    response = register(oauth, None, {**WEB_APP, "scope": "openid read write"})
    assert_registration_error(response, "invalid_client_metadata", "scope")
    assert "'read write'" in response.get_json()["error_description"]
    # A token, if one is sent, must still be valid: never read as "no token".
    assert_bearer_error(register(oauth, "garbage", WEB_APP), 401, "invalid_token")
    assert_no_credentials(oauth.client.post("/oauth/register", json=WEB_APP,
                                            headers={"Authorization": "Basic Zm9vOmJhcg=="}))
    for header in ("Bearer", "Bearer " + "x" * 9000):
        response = oauth.client.post("/oauth/register", json=WEB_APP,
                                     headers={"Authorization": header})
        assert response.status_code in (400, 401)
    # Reading or changing a client still needs its registration token (or an admin).
    url = f"/oauth/register/{body['client_id']}"
    assert_no_credentials(oauth.client.get(url))
    assert_no_credentials(oauth.client.delete(url))
    assert client_rows(app) == before


@pytest.mark.parametrize("settings_overrides", [{"open_registration": True}])
def test_a_client_cannot_widen_its_own_scopes(oauth, admin, app):
    """With its registration token a client may keep what an admin gave it, and add
    open-registration scopes, but not give itself another API's scope."""
    body = registered(oauth, admin, {**MACHINE, "scope": "reports"})
    cid, token = body["client_id"], body["registration_access_token"]
    url = f"/oauth/register/{cid}"
    kept = oauth.client.put(url, json={"client_id": cid, "scope": "reports openid"},
                            headers=bearer(token))
    assert kept.status_code == 200, kept.get_json()
    widened = oauth.client.put(url, json={"client_id": cid, "scope": "reports payments"},
                               headers=bearer(token))
    assert_registration_error(widened, "invalid_client_metadata", "scope")


@pytest.mark.parametrize("depth", [50, 20_000])
def test_deeply_nested_json_is_invalid_metadata_not_a_500(oauth, admin, depth):
    nested = "[" * depth + "]" * depth
    headers = {**bearer(admin), "Content-Type": "application/json"}
    created = registered(oauth, admin, MACHINE)
    cid = created["client_id"]
    for method, url in (("post", "/oauth/register"), ("put", f"/oauth/register/{cid}"),
                        ("post", f"/oauth/register/{cid}/secret")):
        response = getattr(oauth.client, method)(url, data=nested, headers=headers)
        assert response.status_code == 400, (url, response.get_data(True)[:200])
        assert response.get_json()["error"] == "invalid_client_metadata"


# -- secret rotation --------------------------------------------------------------------------
def _token_with(oauth, client_id, secret):
    return oauth.token({"grant_type": "client_credentials"},
                       {"Authorization": basic(client_id, secret)})


def test_rotation_keeps_the_old_secret_for_the_overlap(oauth, admin, clock, app):
    body = registered(oauth, admin, MACHINE)
    cid, old = body["client_id"], body["client_secret"]
    rotated = oauth.client.post(f"/oauth/register/{cid}/secret", json={"overlap_seconds": 60},
                                headers=bearer(admin))
    assert rotated.status_code == 200 and rotated.headers["Cache-Control"] == "no-store"
    rotated = rotated.get_json()
    new = rotated["client_secret"]
    assert new != old and len(new) >= 43 and rotated["previous_secret_valid_for"] == 60
    assert rotated["previous_secret_expires_at"] == int(clock.now.timestamp()) + 60
    assert client_rows(app)[-1]["secret_digest"] == hashlib.sha256(new.encode()).hexdigest()

    assert _token_with(oauth, cid, new).status_code == 200
    assert _token_with(oauth, cid, old).status_code == 200  # during the overlap
    clock.advance(59)
    assert _token_with(oauth, cid, old).status_code == 200
    clock.advance(2)
    assert_oauth_error(_token_with(oauth, cid, old), "invalid_client", 401)
    assert _token_with(oauth, cid, new).status_code == 200
    assert audit_events(app, "client_secret_rotated")[0].detail["overlap_seconds"] == 60


@pytest.mark.parametrize("settings_overrides", [{"client_secret_overlap": 120}])
def test_rotation_overlap_defaults_to_the_setting(oauth, admin, clock):
    body = registered(oauth, admin, MACHINE)
    cid, old = body["client_id"], body["client_secret"]
    rotated = oauth.client.post(f"/oauth/register/{cid}/secret", headers=bearer(admin))
    assert rotated.get_json()["previous_secret_valid_for"] == 120
    clock.advance(119)
    assert _token_with(oauth, cid, old).status_code == 200
    clock.advance(2)
    assert_oauth_error(_token_with(oauth, cid, old), "invalid_client", 401)


def test_rotation_without_overlap_and_by_the_client_itself(oauth, admin):
    body = registered(oauth, admin, MACHINE)
    cid, old = body["client_id"], body["client_secret"]
    rotated = oauth.client.post(f"/oauth/register/{cid}/secret", json={"overlap_seconds": 0},
                                headers=bearer(body["registration_access_token"])).get_json()
    assert rotated["previous_secret_expires_at"] is None
    assert_oauth_error(_token_with(oauth, cid, old), "invalid_client", 401)
    assert _token_with(oauth, cid, rotated["client_secret"]).status_code == 200


@pytest.mark.parametrize("overlap", [-1, 30 * 86_400 + 1, "60", True, None, 1.5])
def test_rotation_with_a_bad_overlap_changes_nothing(oauth, admin, app, overlap):
    body = registered(oauth, admin, MACHINE)
    before = client_rows(app)
    response = oauth.client.post(f"/oauth/register/{body['client_id']}/secret",
                                 json={"overlap_seconds": overlap}, headers=bearer(admin))
    assert_registration_error(response, "invalid_client_metadata", "overlap_seconds")
    assert client_rows(app) == before


def test_a_public_client_has_no_secret_to_rotate(oauth, admin):
    body = registered(oauth, admin, {**WEB_APP, "token_endpoint_auth_method": "none"})
    response = oauth.client.post(f"/oauth/register/{body['client_id']}/secret",
                                 headers=bearer(admin))
    assert_registration_error(response, "invalid_client_metadata", "client_id")


# -- disabling and deleting end the client's sessions -----------------------------------------
@pytest.mark.parametrize("how", ["disable", "delete"])
def test_disable_or_delete_revokes_sessions_and_refuses_tokens(oauth, admin, app, how):
    oauth.create_user()
    mobile = oauth.first_party_app()
    pair = oauth.login_pair(mobile)
    machine = registered(oauth, admin, MACHINE)
    machine_access = machine_token(oauth, machine["client_id"], machine["client_secret"])
    assert introspect(oauth, pair["access_token"])["active"] is True
    for cid in (mobile.client_id, machine["client_id"]):
        url = f"/oauth/register/{cid}"
        response = (oauth.client.post(url + "/disable", headers=bearer(admin)) if how == "disable"
                    else oauth.client.delete(url, headers=bearer(admin)))
        assert response.status_code in (200, 204)
    assert_oauth_error(oauth.refresh(mobile, pair["refresh_token"]), "invalid_client", 401)
    assert introspect(oauth, pair["access_token"]) == {"active": False}
    assert introspect(oauth, pair["refresh_token"]) == {"active": False}
    assert introspect(oauth, machine_access) == {"active": False}
    assert_oauth_error(_token_with(oauth, machine["client_id"], machine["client_secret"]),
                       "invalid_client", 401)
    revoked = audit_events(app, "family_revoked")
    assert [e.detail["cause"] for e in revoked] == [f"client_{how}d"]
    if how == "disable":  # enabling does not bring the session back
        oauth.client.post(f"/oauth/register/{mobile.client_id}/enable", headers=bearer(admin))
        assert_oauth_error(oauth.refresh(mobile, pair["refresh_token"]), "invalid_grant")


def test_the_client_id_in_the_url_is_checked(oauth, admin):
    for cid in ("cl_unknown", "x" * 300, "%00"):
        assert_oauth_error(oauth.client.get(f"/oauth/register/{cid}", headers=bearer(admin)),
                           "not_found", 404)


def test_dates_are_utc_and_no_response_is_cached(oauth, admin):
    body = registered(oauth, admin, MACHINE)
    read = oauth.client.get(f"/oauth/register/{body['client_id']}", headers=bearer(admin))
    created = dt.datetime.fromisoformat(read.get_json()["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    assert read.headers["Pragma"] == "no-cache"


def test_a_dpop_bound_admin_token_needs_its_proof(oauth, app):
    """RFC 9449 §7: a bound token is refused as a Bearer token, and with another key."""
    from tests.support.dpop import ISSUER, ProofKey, ath

    bot, secret = oauth.create_client(name="Bound provisioner", scope=ADMIN_SCOPE,
                                      grant_types=["client_credentials"], require_dpop=True)
    key = ProofKey()
    issued = oauth.token({"grant_type": "client_credentials"},
                         {"Authorization": basic(bot.client_id, secret), "DPoP": key.proof()})
    assert issued.status_code == 200, issued.get_json()
    token = issued.get_json()["access_token"]
    url = ISSUER + "/oauth/register"
    as_bearer = register(oauth, token, MACHINE)
    assert_bearer_error(as_bearer, 401, "invalid_token")
    assert as_bearer.headers["WWW-Authenticate"].startswith("DPoP ")
    other = ProofKey().proof(htu=url, ath=ath(token))
    wrong_key = oauth.client.post("/oauth/register", json=MACHINE, headers={
        "Authorization": f"DPoP {token}", "DPoP": other})
    assert_bearer_error(wrong_key, 401, "invalid_dpop_proof")
    no_ath = oauth.client.post("/oauth/register", json=MACHINE, headers={
        "Authorization": f"DPoP {token}", "DPoP": key.proof(htu=url)})
    assert_bearer_error(no_ath, 401, "invalid_dpop_proof")
    assert count_clients(app) == 1
    proof = key.proof(htu=url, ath=ath(token))
    ok = oauth.client.post("/oauth/register", json=MACHINE, headers={
        "Authorization": f"DPoP {token}", "DPoP": proof})
    assert ok.status_code == 201, ok.get_json()
    replayed = oauth.client.post("/oauth/register", json=MACHINE, headers={
        "Authorization": f"DPoP {token}", "DPoP": proof})
    assert_bearer_error(replayed, 401, "invalid_dpop_proof")
