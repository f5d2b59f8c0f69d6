"""Authorization code with PKCE, sign-in and consent pages, OpenID Connect (Flask client)."""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

import jwt
import pytest

from authserver.domain import pkce
from authserver.extensions import db
from authserver.storage.models import TokenFamily

from .helpers import BrowserActions, assert_oauth_error, redirect_params

REDIRECT = "https://app.example.com/callback"
ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def browser(app):
    return BrowserActions(app.test_client())


@pytest.fixture
def spa(oauth):
    """A public third-party client (an SPA) allowed OIDC scopes and refresh tokens."""
    oauth.create_user()
    record, _ = oauth.create_client(
        name="Budget Planner", public=True, redirect_uris=[REDIRECT],
        post_logout_redirect_uris=["https://app.example.com/bye"],
        scope="openid profile email offline_access read",
    )
    return record


def start(browser, client, **extra):
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT,
              "scope": "openid profile email offline_access", "state": "xyz-123",
              "nonce": "n-0S6", "code_challenge": pkce.s256(verifier),
              "code_challenge_method": "S256", **extra}
    return params, verifier


def sign_in_and_consent(browser, params):
    first = browser.authorize(**params)
    assert first.status_code == 303 and first.headers["Location"].startswith("/login?")
    logged_in = browser.login(next_url=redirect_params(first)["next"])
    assert logged_in.status_code == 303
    back = browser.client.get(logged_in.headers["Location"])
    assert back.status_code == 200 and b"Allow" in back.data
    return browser.decide(back)


def exchange(oauth, client, code, verifier, redirect_uri=REDIRECT):
    return oauth.token({"grant_type": "authorization_code", "code": code,
                        "redirect_uri": redirect_uri, "code_verifier": verifier,
                        "client_id": client.client_id})


def test_full_flow_with_pkce_and_oidc(oauth, browser, spa):
    params, verifier = start(browser, spa)
    done = sign_in_and_consent(browser, params)
    location = done.headers["Location"]
    assert location.startswith(REDIRECT + "?")
    result = redirect_params(done)
    assert result["state"] == "xyz-123" and result["iss"] == ISSUER
    assert len(result["code"]) >= 43

    response = exchange(oauth, spa, result["code"], verifier)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope",
                         "id_token"}
    access = oauth.verify_access_token(body["access_token"])
    key = jwt.PyJWK(next(k for k in oauth.jwks()["keys"]
                         if k["kid"] == jwt.get_unverified_header(body["id_token"])["kid"]))
    id_token = jwt.decode(body["id_token"], key, algorithms=["RS256"], audience=spa.client_id,
                          issuer=ISSUER)
    assert id_token["nonce"] == "n-0S6" and id_token["sub"] == access["sub"]
    assert id_token["sid"] == access["sid"]
    assert id_token["at_hash"] == jwt.utils.base64url_encode(
        __import__("hashlib").sha256(body["access_token"].encode()).digest()[:16]).decode()
    assert {"auth_time", "iat", "exp"} <= set(id_token)

    refreshed = oauth.refresh(spa, body["refresh_token"]).get_json()
    new_id = jwt.decode(refreshed["id_token"], key, algorithms=["RS256"], audience=spa.client_id)
    assert new_id["auth_time"] == id_token["auth_time"] and "nonce" not in new_id

    info = oauth.client.get("/oauth/userinfo",
                            headers={"Authorization": f"Bearer {refreshed['access_token']}"})
    assert info.status_code == 200
    assert info.get_json()["sub"] == access["sub"]
    assert info.get_json()["preferred_username"] == "alice"


def test_consent_is_remembered_and_prompt_consent_asks_again(oauth, browser, spa):
    params, _ = start(browser, spa)
    sign_in_and_consent(browser, params)
    again = browser.authorize(**params)
    assert redirect_params(again)["code"]
    asked = browser.authorize(**{**params, "prompt": "consent"})
    assert asked.status_code == 200 and b"Allow" in asked.data
    wider = browser.authorize(**{**params, "scope": "openid read"})
    assert wider.status_code == 200 and b"read" in wider.data


def test_denied_consent_redirects_access_denied(browser, spa):
    params, _ = start(browser, spa)
    first = browser.authorize(**params)
    browser.login(next_url=redirect_params(first)["next"])
    page = browser.authorize(**params)
    denied = redirect_params(browser.decide(page, "deny"))
    assert denied["error"] == "access_denied" and denied["state"] == "xyz-123"
    assert denied["iss"] == ISSUER


def test_first_party_clients_skip_consent(oauth, browser):
    oauth.create_user()
    app_client, _ = oauth.create_client(name="Bank web", public=True, first_party=True,
                                        redirect_uris=[REDIRECT], scope="read")
    params, verifier = start(browser, app_client, scope="read")
    params.pop("nonce")
    first = browser.authorize(**params)
    logged = browser.login(next_url=redirect_params(first)["next"])
    code = redirect_params(browser.client.get(logged.headers["Location"]))["code"]
    body = exchange(oauth, app_client, code, verifier).get_json()
    assert "id_token" not in body and "refresh_token" in body


def test_openid_without_offline_access_gets_no_refresh_token(oauth, browser, spa):
    params, verifier = start(browser, spa, scope="openid profile")
    code = redirect_params(sign_in_and_consent(browser, params))["code"]
    body = exchange(oauth, spa, code, verifier).get_json()
    assert "refresh_token" not in body and "id_token" in body


def test_prompt_none(browser, spa):
    params, _ = start(browser, spa, prompt="none")
    assert redirect_params(browser.authorize(**params))["error"] == "login_required"
    browser.login()
    assert redirect_params(browser.authorize(**params))["error"] == "consent_required"


def test_prompt_login_and_max_age_ask_for_a_fresh_sign_in(browser, spa, clock):
    params, _ = start(browser, spa)
    sign_in_and_consent(browser, params)
    forced = browser.authorize(**{**params, "prompt": "login"})
    assert forced.headers["Location"].startswith("/login?")
    clock.advance(120)
    assert browser.authorize(**{**params, "max_age": "60"}).headers["Location"].startswith(
        "/login?")
    assert "code" in redirect_params(browser.authorize(**{**params, "max_age": "600"}))


def test_code_is_single_use_and_a_replay_revokes_its_family(oauth, browser, spa, app):
    params, verifier = start(browser, spa)
    code = redirect_params(sign_in_and_consent(browser, params))["code"]
    body = exchange(oauth, spa, code, verifier).get_json()
    sid = oauth.verify_access_token(body["access_token"])["sid"]
    assert_oauth_error(exchange(oauth, spa, code, verifier), "invalid_grant")
    with app.app_context():
        assert db.session.get(TokenFamily, sid).revoke_reason == "code_replay"
    assert_oauth_error(oauth.refresh(spa, body["refresh_token"]), "invalid_grant")


@pytest.mark.parametrize("case", ["wrong-verifier", "no-verifier", "wrong-redirect",
                                  "wrong-client", "expired"])
def test_code_exchange_failures(oauth, browser, spa, clock, case):
    params, verifier = start(browser, spa)
    code = redirect_params(sign_in_and_consent(browser, params))["code"]
    other, _ = oauth.create_client(name="Other", public=True, redirect_uris=[REDIRECT])
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": spa.client_id}
    if case == "wrong-verifier":
        data["code_verifier"] = secrets.token_urlsafe(48)
    elif case == "no-verifier":
        data.pop("code_verifier")
    elif case == "wrong-redirect":
        data["redirect_uri"] = REDIRECT + "/other"
    elif case == "wrong-client":
        data["client_id"] = other.client_id
    elif case == "expired":
        clock.advance(61)
    assert_oauth_error(oauth.token(data), "invalid_grant")


def test_userinfo_refuses_bad_and_revoked_tokens(oauth, browser, spa, app):
    params, verifier = start(browser, spa)
    code = redirect_params(sign_in_and_consent(browser, params))["code"]
    body = exchange(oauth, spa, code, verifier).get_json()
    missing = oauth.client.get("/oauth/userinfo")
    assert missing.status_code == 401 and "Bearer" in missing.headers["WWW-Authenticate"]
    bad = oauth.client.get("/oauth/userinfo", headers={"Authorization": "Bearer abc.def.ghi"})
    assert bad.status_code == 401 and 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    # RP-initiated logout revokes the sign-in's family: the access token is dead at once.
    out = browser.client.get("/logout", query_string={
        "id_token_hint": body["id_token"], "post_logout_redirect_uri": "https://app.example.com/bye",
        "state": "s1"})
    assert out.status_code == 303
    assert out.headers["Location"] == "https://app.example.com/bye?state=s1"
    revoked = oauth.client.get("/oauth/userinfo",
                               headers={"Authorization": f"Bearer {body['access_token']}"})
    assert revoked.status_code == 401
    assert_oauth_error(oauth.refresh(spa, body["refresh_token"]), "invalid_grant")
    # and the browser is signed out
    assert browser.authorize(**params).headers["Location"].startswith("/login?")


def test_userinfo_needs_openid_scope(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read")
    token = oauth.login_pair(app_client)["access_token"]
    response = oauth.client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_logout_rejects_unregistered_return_address(browser, spa):
    response = browser.client.get("/logout", query_string={
        "client_id": spa.client_id, "post_logout_redirect_uri": "https://evil.example/"})
    assert response.status_code == 400 and b"not registered" in response.data


def test_login_page_needs_csrf_and_keeps_next_local(browser, oauth):
    oauth.create_user()
    no_csrf = browser.client.post("/login", data={"username": "alice", "password": "x" * 10})
    assert no_csrf.status_code == 400
    wrong = browser.login(password="not the password")
    assert wrong.status_code == 401 and b"don&#39;t match" in wrong.data
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        done = browser.login(next_url=evil)
        assert done.status_code == 303 and urlsplit(done.headers["Location"]).netloc in ("",)
        assert done.headers["Location"] == "/"


def test_session_cookie_flags(browser, oauth):
    oauth.create_user()
    response = browser.login()
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # development; production sets Secure (test_config)
