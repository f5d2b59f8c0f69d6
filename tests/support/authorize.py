"""Shared pieces of the authorization-code tests: PKCE requests, sign-in and consent, the code
exchange (the person and the SPA they use are fixtures in tests/http/conftest.py)."""

from __future__ import annotations

import secrets
from typing import Any

import jwt
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authserver.domain import pkce
from tests.support.oauth import BrowserActions, redirect_params

REDIRECT = "https://app.example.com/callback"
LOGOUT_RETURN = "https://app.example.com/bye"
ISSUER = "http://127.0.0.1:8000"
OIDC_SCOPE = "openid profile email offline_access"


def start(client, **extra: str | None) -> tuple[dict[str, str], str]:
    """Authorization-request parameters with a fresh PKCE pair; ``None`` drops one."""
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT,
              "scope": OIDC_SCOPE, "state": "xyz-123", "nonce": "n-0S6",
              "code_challenge": pkce.s256(verifier), "code_challenge_method": "S256", **extra}
    return {k: v for k, v in params.items() if v is not None}, verifier


def sign_in_and_consent(person: BrowserActions, params: dict[str, str]) -> TestResponse:
    """Authorize → sign-in page → back → consent page → Allow; the redirect to the client."""
    first = person.authorize(**params)
    assert first.status_code == 303 and first.headers["Location"].startswith("/login?")
    logged_in = person.login(next_url=redirect_params(first)["next"])
    assert logged_in.status_code == 303
    back = person.client.get(logged_in.headers["Location"])
    assert back.status_code == 200 and b"Allow" in back.data, back.get_data(True)
    return person.decide(back)


def get_code(person: BrowserActions, client, **extra: str | None) -> tuple[str, str]:
    """A fresh code and its verifier, through the whole sign-in."""
    params, verifier = start(client, **extra)
    return redirect_params(sign_in_and_consent(person, params))["code"], verifier


def exchange(oauth, client, code: str, verifier: str | None, redirect_uri: str = REDIRECT,
             via: FlaskClient | None = None) -> TestResponse:
    """The token request of a public client (RFC 6749 §4.1.3 with RFC 7636 §4.5)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "client_id": client.client_id}
    if verifier is not None:
        data["code_verifier"] = verifier
    return oauth.token(data, client=via)


def decode_id_token(oauth, token: str, client_id: str, leeway: int = 0) -> dict[str, Any]:
    """Verify an ID token as a relying party does: JWKS key by kid, RS256, iss, aud.
    (``leeway`` for tests that moved the server's clock ahead of the real one.)"""
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT"
    key = jwt.PyJWK(next(k for k in oauth.jwks()["keys"] if k["kid"] == header["kid"]))
    return jwt.decode(token, key, algorithms=["RS256"], audience=client_id, issuer=ISSUER,
                      leeway=leeway, options={"require": ["iss", "sub", "aud", "exp", "iat"]})
