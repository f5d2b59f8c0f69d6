"""Token formats (RFC 9068, RFC 6749 §5.1), the JWKS and the discovery documents."""

from __future__ import annotations

import jwt
import pytest
from sqlalchemy import select

from authserver.extensions import db
from authserver.storage.models import TokenFamily, User
from tests.support.oauth import PASSWORD, basic

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}


def test_password_grant_response_is_exactly_rfc6749_5_1(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app()
    response = oauth.password_login(app_client, scope="read")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["scope"] == "read"
    assert len(body["refresh_token"]) >= 46  # prefix + 256 bits in base64url


def test_access_token_is_an_rfc9068_jwt(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(access_token_ttl=300)
    body = oauth.login_pair(app_client, scope="write")
    header = jwt.get_unverified_header(body["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256"
    assert header["kid"] in {k["kid"] for k in oauth.jwks()["keys"]}
    claims = oauth.verify_access_token(body["access_token"])
    assert set(claims) >= {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti", "sid"}
    assert claims["exp"] - claims["iat"] == 300 == body["expires_in"]
    assert claims["iat"] == int(clock.now.timestamp())
    assert claims["client_id"] == app_client.client_id and claims["scope"] == "write"
    other = oauth.login_pair(app_client)
    assert oauth.verify_access_token(other["access_token"])["jti"] != claims["jti"]
    assert oauth.verify_access_token(other["access_token"])["sid"] != claims["sid"]


def test_client_credentials_token_has_the_client_as_subject(oauth):
    machine, secret = oauth.create_client(scope="reports", grant_types=["client_credentials"])
    response = oauth.token({"grant_type": "client_credentials"},
                           {"Authorization": basic(machine.client_id, secret)})
    body = response.get_json()
    assert response.status_code == 200 and "refresh_token" not in body
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    claims = oauth.verify_access_token(body["access_token"])
    assert claims["sub"] == machine.client_id and "sid" not in claims


# ``status``: the Token Status List entry (docs/design.md, "Revocation that reaches APIs").
USER_CLAIMS = {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti", "sid",
               "auth_time", "status"}
MACHINE_CLAIMS = {"iss", "sub", "aud", "client_id", "scope", "iat", "exp", "jti", "status"}
SUCCESS_KEYS = {"access_token", "token_type", "expires_in", "refresh_token", "scope"}


def _success_requests(oauth):
    """(form, headers) of every way to get tokens, and whose they are."""
    oauth.create_user()
    mobile = oauth.first_party_app(name="mobile")
    web, web_secret = oauth.create_client(name="web", first_party=True, scope="read write")
    machine, machine_secret = oauth.create_client(name="machine", scope="reports",
                                                  grant_types=["client_credentials"])
    login = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    web_basic = {"Authorization": basic(web.client_id, web_secret)}
    mobile_token = oauth.login_pair(mobile)["refresh_token"]
    web_token = oauth.login_pair(web, secret=web_secret)["refresh_token"]
    return {
        "password/public-none": ({**login, "client_id": mobile.client_id}, {}, mobile),
        "password/client_secret_basic": (login, web_basic, web),
        "password/client_secret_post": (
            {**login, "client_id": web.client_id, "client_secret": web_secret}, {}, web),
        "refresh/public-none": ({"grant_type": "refresh_token", "refresh_token": mobile_token,
                                 "client_id": mobile.client_id}, {}, mobile),
        "refresh/client_secret_basic": (
            {"grant_type": "refresh_token", "refresh_token": web_token}, web_basic, web),
        "client_credentials/client_secret_basic": (
            {"grant_type": "client_credentials"},
            {"Authorization": basic(machine.client_id, machine_secret)}, machine),
        "client_credentials/client_secret_post": (
            {"grant_type": "client_credentials", "client_id": machine.client_id,
             "client_secret": machine_secret}, {}, machine),
    }


@pytest.mark.parametrize("way", [
    "password/public-none", "password/client_secret_basic", "password/client_secret_post",
    "refresh/public-none", "refresh/client_secret_basic",
    "client_credentials/client_secret_basic", "client_credentials/client_secret_post",
])
def test_every_success_is_exactly_rfc6749_5_1_with_an_rfc9068_token(oauth, clock, way):
    form, headers, app_client = _success_requests(oauth)[way]
    machine = form["grant_type"] == "client_credentials"

    response = oauth.token(form, headers)

    assert response.status_code == 200, response.get_data(True)
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert set(body) == (SUCCESS_KEYS - {"refresh_token"} if machine else SUCCESS_KEYS)
    assert body["token_type"] == "Bearer" and body["expires_in"] == 900
    assert body["scope"] == " ".join(app_client.scope)
    if not machine:
        assert body["refresh_token"].startswith("rt_")
        assert len(body["refresh_token"]) >= 3 + 43  # 256 random bits, base64url

    header = jwt.get_unverified_header(body["access_token"])
    assert header == {"typ": "at+jwt", "alg": "RS256", "kid": header["kid"]}
    assert header["kid"] in {k["kid"] for k in oauth.jwks()["keys"]}
    claims = oauth.verify_access_token(body["access_token"])  # JWKS, RS256, iss, aud
    assert set(claims) == (MACHINE_CLAIMS if machine else USER_CLAIMS)
    settings = oauth.app.extensions["authserver"].settings
    assert claims["iss"] == settings.issuer and claims["aud"] == settings.audience
    assert claims["client_id"] == app_client.client_id and claims["scope"] == body["scope"]
    assert claims["iat"] == int(clock.now.timestamp())
    assert claims["exp"] - claims["iat"] == 900
    assert isinstance(claims["jti"], str) and len(claims["jti"]) >= 16
    if machine:
        assert claims["sub"] == app_client.client_id
    else:
        with oauth.app.app_context():
            user = db.session.scalar(select(User))
            family = db.session.get(TokenFamily, claims["sid"])
        assert claims["sub"] == user.subject != "alice"
        assert family.client_id == app_client.client_id and family.revoked_at is None


def test_jwks_publishes_public_keys_only_with_caching_headers(client):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    keys = response.get_json()["keys"]
    assert keys and all(not PRIVATE_MEMBERS & set(k) for k in keys)
    assert all(k["use"] == "sig" and k["alg"] == "RS256" and k["kty"] == "RSA" for k in keys)
    etag = response.headers["ETag"]
    assert client.get("/.well-known/jwks.json",
                      headers={"If-None-Match": etag}).status_code == 304


@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server",
                                  "/.well-known/openid-configuration"])
def test_metadata_describes_what_exists(client, path):
    data = client.get(path).get_json()
    issuer = "http://127.0.0.1:8000"
    assert data["issuer"] == issuer
    assert data["token_endpoint"] == f"{issuer}/oauth/token"
    assert data["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
    assert set(data["grant_types_supported"]) == {"authorization_code", "password",
                                                  "client_credentials", "refresh_token"}
    assert data["authorization_endpoint"] == f"{issuer}/oauth/authorize"
    assert data["response_types_supported"] == ["code"]
    assert data["code_challenge_methods_supported"] == ["S256"]
    assert data["authorization_response_iss_parameter_supported"] is True
    assert set(data["token_endpoint_auth_methods_supported"]) == {
        "client_secret_basic", "client_secret_post", "none"}


def test_unknown_paths_get_json_or_html_by_accept(client):
    assert client.get("/nope", headers={"Accept": "application/json"}).get_json()["error"]
    page = client.get("/nope", headers={"Accept": "text/html"})
    assert page.status_code == 404 and page.mimetype == "text/html"


def test_openid_configuration_has_the_oidc_members(client):
    data = client.get("/.well-known/openid-configuration").get_json()
    issuer = "http://127.0.0.1:8000"
    assert data["userinfo_endpoint"] == f"{issuer}/oauth/userinfo"
    assert data["end_session_endpoint"] == f"{issuer}/logout"
    assert data["subject_types_supported"] == ["public"]
    assert "RS256" in data["id_token_signing_alg_values_supported"]
    assert {"openid", "profile", "email", "offline_access"} <= set(data["scopes_supported"])
