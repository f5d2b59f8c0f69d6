"""A test helper that speaks the protocol (flaskr's AuthActions, for OAuth)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import jwt
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from authserver.domain import client_admin, users
from authserver.domain.client_metadata import ClientSpec
from authserver.domain.clients import ClientRecord
from authserver.extensions import db

PASSWORD = "correct horse battery staple"


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def _client_auth(data: dict[str, str], app_client: ClientRecord, secret: str | None
                 ) -> dict[str, str]:
    """With a secret, the client authenticates with HTTP Basic instead of ``client_id`` in
    the body (RFC 6749 §2.3.1); returns the request's headers."""
    if secret is None:
        return {}
    data.pop("client_id")
    return {"Authorization": basic(app_client.client_id, secret)}


def assert_oauth_error(response: TestResponse, error: str, status: int = 400) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: the status, a JSON body with ``error``, never cached."""
    assert response.status_code == status, (response.status_code, response.get_data(True))
    assert response.mimetype == "application/json"
    body = json.loads(response.get_data())
    assert body["error"] == error, body
    assert set(body) <= {"error", "error_description", "error_uri"}
    if status == 401:
        assert response.headers.get("WWW-Authenticate"), "401 needs WWW-Authenticate"
    return body


class OAuthActions:
    def __init__(self, app: Flask, client: FlaskClient) -> None:
        self.app = app
        self.client = client

    # -- fixtures' data --------------------------------------------------------------
    def create_user(self, username: str = "alice", password: str = PASSWORD) -> int:
        with self.app.app_context():
            user = users.create_user(db.session, username, password)
            db.session.commit()
            return user.id

    def create_client(self, **spec: Any) -> tuple[ClientRecord, str | None]:
        spec.setdefault("name", "Test app")
        with self.app.app_context():
            record, secret = client_admin.create_client(db.session, ClientSpec(**spec))
            db.session.commit()
        return record, secret

    def first_party_app(self, **spec: Any) -> ClientRecord:
        """A public first-party client (a mobile app) with password + refresh grants."""
        spec.setdefault("scope", "read write")
        record, _ = self.create_client(public=True, first_party=True, **spec)
        return record

    # -- requests ------------------------------------------------------------------
    def token(self, data: dict[str, str], headers: dict[str, str] | None = None,
              client: FlaskClient | None = None) -> TestResponse:
        return (client or self.client).post("/oauth/token", data=data, headers=headers or {})

    def password_login(self, app_client: ClientRecord, username: str = "alice",
                       password: str = PASSWORD, scope: str | None = None,
                       secret: str | None = None) -> TestResponse:
        data = {"grant_type": "password", "username": username, "password": password,
                "client_id": app_client.client_id}
        if scope is not None:
            data["scope"] = scope
        return self.token(data, _client_auth(data, app_client, secret))

    def refresh(self, app_client: ClientRecord, refresh_token: str, scope: str | None = None,
                secret: str | None = None, client: FlaskClient | None = None) -> TestResponse:
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token,
                "client_id": app_client.client_id}
        if scope is not None:
            data["scope"] = scope
        return self.token(data, _client_auth(data, app_client, secret), client)

    def login_pair(self, app_client: ClientRecord, **kwargs: Any) -> dict[str, Any]:
        response = self.password_login(app_client, **kwargs)
        assert response.status_code == 200, response.get_data(True)
        return response.get_json()

    # -- verification ----------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        return self.client.get("/.well-known/jwks.json").get_json()

    def verify_access_token(self, token: str) -> dict[str, Any]:
        """Verify like a resource server: JWKS key by kid, RS256 pinned, iss and aud."""
        header = jwt.get_unverified_header(token)
        jwk = next(k for k in self.jwks()["keys"] if k["kid"] == header["kid"])
        key = jwt.PyJWK(jwk)
        settings = self.app.extensions["authserver"].settings
        return jwt.decode(token, key, algorithms=["RS256"], audience=settings.audience,
                          issuer=settings.issuer)


def form_fields(html: str) -> dict[str, str]:
    """Hidden and named inputs of the first form on a page (enough for our pages)."""
    import html as html_lib
    import re

    fields = {}
    for match in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html):
        fields[html_lib.unescape(match.group(1))] = html_lib.unescape(match.group(2))
    return fields


class BrowserActions:
    """A person in a browser, played by the Flask test client (cookies kept)."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def login(self, username: str = "alice", password: str = PASSWORD,
              next_url: str = "/") -> TestResponse:
        page = self.client.get("/login", query_string={"next": next_url})
        fields = form_fields(page.get_data(as_text=True))
        fields.update(username=username, password=password)
        return self.client.post("/login", data=fields)

    def authorize(self, **params: str) -> TestResponse:
        return self.client.get("/oauth/authorize", query_string=params)

    def decide(self, consent_page: TestResponse, decision: str = "allow") -> TestResponse:
        fields = form_fields(consent_page.get_data(as_text=True))
        fields["decision"] = decision
        return self.client.post("/oauth/authorize", data=fields)


def redirect_params(response: TestResponse) -> dict[str, str]:
    from urllib.parse import parse_qsl, urlsplit

    assert response.status_code in (302, 303), (response.status_code, response.get_data(True))
    return dict(parse_qsl(urlsplit(response.headers["Location"]).query))
