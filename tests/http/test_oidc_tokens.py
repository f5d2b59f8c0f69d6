"""OpenID Connect on top of the code flow: ID tokens (OIDC Core §2, §3.1.3.6-3.1.3.8, §12.2),
refresh tokens and ``offline_access`` (§11), UserInfo (§5.3) and discovery."""

from __future__ import annotations

import base64
import hashlib

import pytest

from tests.support.authorize import (
    ISSUER,
    REDIRECT,
    decode_id_token,
    exchange,
    get_code,
)
from tests.support.oauth import assert_oauth_error


def at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6: base64url of the left half of SHA-256 (RS256)."""
    digest = hashlib.sha256(access_token.encode()).digest()
    return base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()


def test_the_code_flow_returns_a_complete_id_token(oauth, person, spa, clock):
    clock.advance(-5)  # sign in five seconds before the exchange (and the real clock)
    signed_in_at = int(clock().timestamp())
    code, verifier = get_code(person, spa)
    clock.advance(5)
    response = exchange(oauth, spa, code, verifier)
    assert response.status_code == 200, response.get_json()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope",
                         "id_token"}
    assert body["scope"] == "openid profile email offline_access"
    access = oauth.verify_access_token(body["access_token"])
    claims = decode_id_token(oauth, body["id_token"], spa.client_id)
    assert claims["iss"] == ISSUER and claims["aud"] == spa.client_id
    assert claims["sub"] == access["sub"] and claims["sid"] == access["sid"]
    assert claims["nonce"] == "n-0S6"
    assert claims["auth_time"] == signed_in_at  # the sign-in, not the exchange
    assert claims["iat"] == signed_in_at + 5 and claims["exp"] > claims["iat"]
    assert claims["at_hash"] == at_hash(body["access_token"])
    assert access["auth_time"] == signed_in_at and access["client_id"] == spa.client_id


def test_refresh_returns_an_id_token_with_the_original_auth_time(oauth, person, spa, clock):
    code, verifier = get_code(person, spa)
    first = exchange(oauth, spa, code, verifier).get_json()
    original = decode_id_token(oauth, first["id_token"], spa.client_id)
    clock.advance(600)
    refreshed = oauth.refresh(spa, first["refresh_token"]).get_json()
    claims = decode_id_token(oauth, refreshed["id_token"], spa.client_id, leeway=600)
    assert claims["auth_time"] == original["auth_time"]
    assert claims["iat"] == original["iat"] + 600
    assert "nonce" not in claims  # OIDC Core §12.2: only in the authentication response
    assert claims["sub"] == original["sub"] and claims["sid"] == original["sid"]
    assert claims["at_hash"] == at_hash(refreshed["access_token"])


@pytest.mark.parametrize("scope, grants, refresh", [
    ("openid profile offline_access", None, True),
    ("openid profile", None, False),           # OIDC Core §11: openid needs offline_access
    ("read", None, True),                      # plain OAuth: the client may refresh
    ("openid offline_access", ["authorization_code"], False),  # may not refresh at all
])
def test_refresh_tokens_follow_the_offline_access_rule(oauth, person, scope, grants, refresh):
    oauth.create_user()
    spec = {"grant_types": grants} if grants else {}
    client, _ = oauth.create_client(name="Notes", public=True, redirect_uris=[REDIRECT],
                                    scope="openid profile offline_access read", **spec)
    nonce = "n-1" if "openid" in scope else None
    code, verifier = get_code(person, client, scope=scope, nonce=nonce)
    body = exchange(oauth, client, code, verifier).get_json()
    assert ("refresh_token" in body) is refresh
    assert ("id_token" in body) is ("openid" in scope)
    assert body["scope"] == scope


def test_a_refresh_token_family_records_the_sign_in(oauth, person, spa, app):
    from authserver.extensions import db
    from authserver.storage.models import LoginSession, TokenFamily

    code, verifier = get_code(person, spa)
    body = exchange(oauth, spa, code, verifier).get_json()
    sid = oauth.verify_access_token(body["access_token"])["sid"]
    with app.app_context():
        family = db.session.get(TokenFamily, sid)
        login = db.session.get(LoginSession, family.login_session_id)
        assert family.grant_type == "authorization_code" and login is not None
        assert family.auth_time == login.auth_time
        assert family.scope == "openid profile email offline_access"


# -- UserInfo ----------------------------------------------------------------------------

@pytest.fixture
def tokens(oauth, person, spa, app):
    from authserver.domain import users
    from authserver.extensions import db

    with app.app_context():
        user = users.find_user(db.session, "alice")
        user.email, user.name = "alice@example.com", "Alice Liddell"
        db.session.commit()
    code, verifier = get_code(person, spa)
    return exchange(oauth, spa, code, verifier).get_json()


def test_userinfo_by_get_and_post(oauth, tokens):
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}
    by_get = oauth.client.get("/oauth/userinfo", headers=bearer)
    by_post = oauth.client.post("/oauth/userinfo", headers=bearer)
    by_form = oauth.client.post("/oauth/userinfo", data={"access_token": tokens["access_token"]})
    for response in (by_get, by_post, by_form):
        assert response.status_code == 200 and response.mimetype == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
    expected = {"sub": oauth.verify_access_token(tokens["access_token"])["sub"],
                "preferred_username": "alice", "name": "Alice Liddell",
                "email": "alice@example.com", "email_verified": False}
    assert by_get.get_json() == by_post.get_json() == by_form.get_json() == expected


def test_userinfo_releases_claims_per_scope(oauth, person, spa):
    code, verifier = get_code(person, spa, scope="openid")
    token = exchange(oauth, spa, code, verifier).get_json()["access_token"]
    info = oauth.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert set(info.get_json()) == {"sub"}


def test_userinfo_refuses_bad_tokens(oauth, tokens, subtests):
    cases = {
        "no-token": ({}, 401, None),
        "garbage": ({"Authorization": "Bearer abc.def.ghi"}, 401, "invalid_token"),
        "id-token-as-access-token": ({"Authorization": f"Bearer {tokens['id_token']}"}, 401,
                                     "invalid_token"),
        "tampered": ({"Authorization": f"Bearer {tokens['access_token'][:-4]}AAAA"}, 401,
                     "invalid_token"),
    }
    for case, (headers, status, error) in cases.items():
        with subtests.test(case):
            response = oauth.client.get("/oauth/userinfo", headers=headers)
            assert response.status_code == status
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer")
            if error:
                assert f'error="{error}"' in challenge
            else:  # RFC 6750 §3.1: no error code without credentials; DPoP offered too
                assert "error=" not in challenge and 'DPoP algs="' in challenge


def test_userinfo_refuses_a_token_sent_twice(oauth, tokens):
    """RFC 6750 §2: one method only; more is invalid_request (§3.1: 400)."""
    response = oauth.client.post(
        "/oauth/userinfo", data={"access_token": tokens["access_token"]},
        headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 400
    assert 'error="invalid_request"' in response.headers["WWW-Authenticate"]
    # A Basic header carries no access token: the form's is the only one.
    single = oauth.client.post(
        "/oauth/userinfo", data={"access_token": tokens["access_token"]},
        headers={"Authorization": "Basic Zm9vOmJhcg=="})
    assert single.status_code == 200


def test_discovery_lists_no_userinfo_signing(client):
    """UserInfo answers plain JSON, never a signed JWT: the member is left out."""
    document = client.get("/.well-known/openid-configuration").get_json()
    assert "userinfo_signing_alg_values_supported" not in document
    assert document["userinfo_endpoint"].endswith("/oauth/userinfo")


def test_userinfo_needs_the_openid_scope(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read")
    token = oauth.login_pair(app_client)["access_token"]
    response = oauth.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_userinfo_stops_when_the_session_is_revoked(oauth, tokens, spa):
    revoke = oauth.client.post("/oauth/revoke", data={"token": tokens["refresh_token"],
                                                      "client_id": spa.client_id})
    assert revoke.status_code == 200
    info = oauth.client.get("/oauth/userinfo",
                            headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert info.status_code == 401
    assert_oauth_error(oauth.refresh(spa, tokens["refresh_token"]), "invalid_grant")


# -- Discovery ---------------------------------------------------------------------------

def test_discovery_describes_the_code_flow(oauth):
    metadata = oauth.client.get("/.well-known/openid-configuration").get_json()
    assert metadata["issuer"] == ISSUER
    for name, path in [("authorization_endpoint", "/oauth/authorize"),
                       ("token_endpoint", "/oauth/token"),
                       ("userinfo_endpoint", "/oauth/userinfo"),
                       ("jwks_uri", "/.well-known/jwks.json"),
                       ("end_session_endpoint", "/logout")]:
        assert metadata[name] == ISSUER + path
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert {"authorization_code", "refresh_token"} <= set(metadata["grant_types_supported"])
    assert {"openid", "profile", "email", "offline_access"} <= set(metadata["scopes_supported"])
    assert metadata["id_token_signing_alg_values_supported"] == ["RS256"]
    assert metadata["subject_types_supported"] == ["public"]
    assert {"none", "login", "consent"} == set(metadata["prompt_values_supported"])
    assert {"sub", "auth_time", "nonce", "at_hash", "sid", "email", "name"} <= set(
        metadata["claims_supported"])
    rfc8414 = oauth.client.get("/.well-known/oauth-authorization-server").get_json()
    assert rfc8414["authorization_endpoint"] == metadata["authorization_endpoint"]
