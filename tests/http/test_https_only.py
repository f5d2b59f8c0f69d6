"""In production the endpoints that take client credentials or tokens refuse plain http
(RFC 6749 §3.2, RFC 7009 §2, RFC 7662 §4), whatever the Host header says; the exception,
a loopback issuer reached from a loopback address: tests/http/test_hardening_headers.py."""

from __future__ import annotations

import pytest

from tests.support.oauth import basic

PRODUCTION = {"env": "production", "issuer": "https://auth.example.com"}


@pytest.fixture
def settings_overrides(monkeypatch) -> dict[str, object]:
    # A development app made earlier in this process allowed plain http process-wide.
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    return PRODUCTION


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/revoke", "/oauth/introspect"])
def test_plain_http_is_refused_in_production(oauth, path):
    api, secret = oauth.create_client(name="api", grant_types=["client_credentials"],
                                      allow_introspection=True)
    form = {"grant_type": "client_credentials", "token": "x"}
    headers = {"Authorization": basic(api.client_id, secret)}
    plain = oauth.client.post(path, data=form, headers=headers,
                              base_url="http://auth.example.com")
    assert plain.status_code == 400, plain.get_data(True)
    assert plain.get_json()["error"] == "invalid_request"
    assert "https" in plain.get_json()["error_description"]
    secure = oauth.client.post(path, data=form, headers=headers,
                               base_url="https://auth.example.com")
    assert secure.status_code == 200, secure.get_data(True)
    # A loopback Host header is no proof of a loopback connection.
    loopback = oauth.client.post(path, data=form, headers=headers,
                                 base_url="http://127.0.0.1:8000")
    assert loopback.status_code == 400, loopback.get_data(True)
