"""Token formats (RFC 9068, RFC 6749 §5.1), the JWKS and the discovery documents."""

from __future__ import annotations

import jwt
import pytest

from .helpers import basic

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
