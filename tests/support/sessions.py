"""Helpers for the sessions and revocation tests: a resource server, devices, the account API."""

from __future__ import annotations

import re
import secrets
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authserver.domain import pkce
from tests.support.oauth import (
    PASSWORD,
    BrowserActions,
    OAuthActions,
    basic,
    form_fields,
    redirect_params,
)

IPHONE_APP = "BankApp/3.2.1 (iPhone; iOS 17.1; Scale/3.00)"
FIREFOX_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:121.0) Gecko/20100101 "
               "Firefox/121.0")
CHROME_WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
                  "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")
ANDROID_APP = "BankApp/3.2.0 (Linux; Android 14; Pixel 8)"
REDIRECT = "https://app.example.com/callback"


def device_login(oauth: OAuthActions, app_client: Any, user_agent: str,
                 device_id: str | None = None, scope: str | None = None,
                 username: str = "alice", password: str | None = None) -> dict[str, Any]:
    """A password-grant sign-in from a device (its User-Agent and, optionally, device id)."""
    data = {"grant_type": "password", "username": username,
            "password": password or PASSWORD, "client_id": app_client.client_id}
    if scope is not None:
        data["scope"] = scope
    headers = {"User-Agent": user_agent}
    if device_id is not None:
        headers["X-Device-Id"] = device_id
    response = oauth.token(data, headers)
    assert response.status_code == 200, response.get_data(True)
    return response.get_json()


def device_refresh(oauth: OAuthActions, app_client: Any, refresh_token: str, user_agent: str,
                   device_id: str | None = None) -> TestResponse:
    headers = {"User-Agent": user_agent}
    if device_id is not None:
        headers["X-Device-Id"] = device_id
    return oauth.token({"grant_type": "refresh_token", "refresh_token": refresh_token,
                        "client_id": app_client.client_id}, headers)


def introspect(client: FlaskClient, resource_id: str, secret: str, token: str,
               hint: str | None = None) -> dict[str, Any]:
    """RFC 7662 as a resource server calls it; asserts 200 and no-store."""
    data = {"token": token}
    if hint:
        data["token_type_hint"] = hint
    response = client.post("/oauth/introspect", data=data,
                           headers={"Authorization": basic(resource_id, secret)})
    assert response.status_code == 200, response.get_data(True)
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()


def revoke(client: FlaskClient, app_client: Any, token: str, hint: str | None = None,
           secret: str | None = None) -> TestResponse:
    """RFC 7009 as a client calls it (``none`` for public clients, else Basic)."""
    data = {"token": token}
    headers = {}
    if hint:
        data["token_type_hint"] = hint
    if secret is None:
        data["client_id"] = app_client.client_id
    else:
        headers["Authorization"] = basic(app_client.client_id, secret)
    return client.post("/oauth/revoke", data=data, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_sessions(client: FlaskClient, access_token: str) -> list[dict[str, Any]]:
    response = client.get("/account/api/sessions", headers=bearer(access_token))
    assert response.status_code == 200, response.get_data(True)
    assert response.headers["Cache-Control"] == "no-store"
    return response.get_json()["sessions"]


def page_devices(html: str) -> dict[str, str]:
    """Device id -> the text of its row on /account/sessions."""
    rows = re.findall(r'<li class="device[^"]*" data-session-id="([^"]+)">(.*?)</li>', html,
                      re.S)
    return {device_id: re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)).strip()
            for device_id, body in rows}


def post_form(browser: BrowserActions, page_path: str, action: str,
              **extra: str) -> TestResponse:
    """Submit the form with ``action`` from the page at ``page_path`` (with its CSRF token)."""
    page = browser.client.get(page_path).get_data(as_text=True)
    assert f'action="{action}"' in page, f"no form posting to {action}"
    fields = form_fields(page)
    fields.update(extra)
    return browser.client.post(action, data=fields)


def code_flow_pair(oauth: OAuthActions, browser: BrowserActions, web_client: Any,
                   user_agent: str | None = None) -> dict[str, Any]:
    """Tokens through /oauth/authorize (PKCE) in ``browser``, which must be signed in."""
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": web_client.client_id,
              "redirect_uri": REDIRECT, "scope": "read account", "state": "s",
              "code_challenge": pkce.s256(verifier), "code_challenge_method": "S256"}
    first = browser.authorize(**params)
    if first.status_code == 200:  # the consent page
        first = browser.decide(first)
    code = redirect_params(first)["code"]
    headers = {"User-Agent": user_agent} if user_agent else {}
    response = oauth.token({"grant_type": "authorization_code", "code": code,
                            "redirect_uri": REDIRECT, "code_verifier": verifier,
                            "client_id": web_client.client_id}, headers)
    assert response.status_code == 200, response.get_data(True)
    return response.get_json()


def assert_signed_out(oauth: OAuthActions, app_client: Any, refresh_token: str,
                      user_agent: str | None = None) -> None:
    """The refresh is refused *because the session was revoked* (not, say, a binding
    mismatch that a wrong User-Agent in the test would cause)."""
    from tests.support.oauth import assert_oauth_error

    headers = {"User-Agent": user_agent} if user_agent else {}
    response = oauth.token({"grant_type": "refresh_token", "refresh_token": refresh_token,
                            "client_id": app_client.client_id}, headers)
    body = assert_oauth_error(response, "invalid_grant")
    assert "revoked" in body.get("error_description", ""), body
