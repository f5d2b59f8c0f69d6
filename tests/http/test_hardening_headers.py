"""Production transport and browser hardening (docs/operators.md, "Production hardening"):

- ``Strict-Transport-Security`` on every response: pages, APIs, the token endpoint's fast
  path, the public documents, 404s;
- the https rule decided by the configured trust of proxies, never by a ``Host`` header or
  an ``X-Forwarded-Proto`` from a peer that is not a trusted proxy;
- a script-restricting Content-Security-Policy and the other page headers on every page,
  error pages and the 404 page included, whose ``form-action`` lets a consent or sign-in
  form end at the client's redirect URI and nowhere else;
- the session cookie ``__Host-`` prefixed, Secure, Path=/, host-only.
"""

from __future__ import annotations

import pytest

from authserver.protocol.token_fast_path import TokenFastPath
from tests.support.authorize import REDIRECT, start
from tests.support.oauth import basic, redirect_params

# The database plays no part here: SQLite only.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

HTTPS = "https://auth.example.com"
PRODUCTION = {"env": "production", "issuer": HTTPS}
HSTS = "max-age=31536000; includeSubDomains"
PAGE_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY"}


@pytest.fixture
def https(app):
    """The test client speaks https (Flask builds its requests on this scheme)."""
    app.config["PREFERRED_URL_SCHEME"] = "https"
    return app


def assert_page_headers(response, form_action: str = "form-action 'self'") -> list[str]:
    for name, value in PAGE_HEADERS.items():
        assert response.headers.get(name) == value, (name, response.headers)
    directives = [d.strip() for d in response.headers["Content-Security-Policy"].split(";")]
    for directive in ("script-src 'self'", "frame-ancestors 'none'", "base-uri 'none'",
                      form_action):
        assert directive in directives, (directive, directives)
    assert any(d in directives for d in ("default-src 'none'", "default-src 'self'"))
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]
    return directives


@pytest.mark.parametrize("settings_overrides", [PRODUCTION])
def test_hsts_and_page_headers_on_every_response_in_production(oauth, https, monkeypatch):
    client = oauth.client
    answered_early: list[bool] = []
    original = TokenFastPath._answer

    def spy(self, environ, form):
        result = original(self, environ, form)
        answered_early.append(result is not None)
        return result

    monkeypatch.setattr(TokenFastPath, "_answer", spy)
    oauth.create_user()
    app_client = oauth.first_party_app()
    pair = oauth.login_pair(app_client)
    refreshed = oauth.refresh(app_client, pair["refresh_token"])
    assert refreshed.status_code == 200 and answered_early == [True]  # the fast path

    responses = {
        "login page": client.get("/login"),
        "static file": client.get("/static/style.css"),
        "token": refreshed,
        "token error": client.post("/oauth/token", data={"grant_type": "password"}),
        "discovery": client.get("/.well-known/openid-configuration"),
        "jwks": client.get("/.well-known/jwks.json"),
        "404 page": client.get("/no/such/page", headers={"Accept": "text/html"}),
        "404 api": client.get("/oauth/nothing"),
        "405": client.get("/oauth/token"),
        "error page": client.get("/oauth/authorize?client_id=nobody"),
    }
    for what, response in responses.items():
        assert response.headers.get("Strict-Transport-Security") == HSTS, what
        assert response.headers.get("X-Content-Type-Options") == "nosniff", what
    for what in ("login page", "404 page", "error page"):
        assert responses[what].mimetype == "text/html", what
        assert_page_headers(responses[what])
    assert responses["404 page"].status_code == 404


@pytest.mark.parametrize("settings_overrides", [{}, {**PRODUCTION, "hsts_max_age": 0}])
def test_no_hsts_in_development_or_when_turned_off(oauth, https, settings_overrides):
    for path in ("/login", "/.well-known/jwks.json", "/nothing"):
        response = oauth.client.get(path)
        assert "Strict-Transport-Security" not in response.headers, path
    assert_page_headers(oauth.client.get("/nothing", headers={"Accept": "text/html"}))


@pytest.mark.parametrize("settings_overrides", [PRODUCTION])
def test_production_session_cookie_is_host_prefixed(oauth, https):
    response = oauth.client.get("/login")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("__Host-authserver_session=")
    attributes = [a.strip().lower() for a in cookie.split(";")]
    assert "secure" in attributes and "path=/" in attributes and "httponly" in attributes
    assert not any(a.startswith("domain=") for a in attributes)


def test_development_session_cookie_keeps_its_name(oauth):
    cookie = oauth.client.get("/login").headers["Set-Cookie"]
    assert cookie.startswith("authserver_session=") and "Secure" not in cookie


def test_consent_and_sign_in_forms_may_end_at_the_client_only(oauth, person, spa):
    params, _ = start(spa)
    first = person.authorize(**params)
    sign_in = person.client.get("/login", query_string={"next": redirect_params(first)["next"]})
    assert_page_headers(sign_in, "form-action 'self' https://app.example.com")
    assert_page_headers(person.client.get("/login"))  # a sign-in of its own: here only
    person.login(next_url=redirect_params(first)["next"])
    consent = person.authorize(**params)
    assert b"Allow" in consent.data
    assert_page_headers(consent, "form-action 'self' https://app.example.com")
    assert person.decide(consent).headers["Location"].startswith(REDIRECT)


def test_form_action_sources_of_native_redirects(oauth, person):
    from authserver.web.security import csp_source

    assert csp_source("http://127.0.0.1/cb") == "http://127.0.0.1:*"  # any port, RFC 8252
    assert csp_source("com.example.app:/callback") == "com.example.app:"
    assert csp_source("https://App.Example.com:8443/cb?x=1") == "https://app.example.com:8443"
    assert csp_source("http://[::1]:5000/cb") == "http:"
    assert csp_source("https://a;b/") is None


# -- the https rule ------------------------------------------------------------------------
def _machine(oauth):
    api, secret = oauth.create_client(name="api", grant_types=["client_credentials"],
                                      allow_introspection=True)
    return {"Authorization": basic(api.client_id, secret)}


def _post(oauth, path, headers, **kwargs):
    form = {"grant_type": "client_credentials", "token": "x"}
    return oauth.client.post(path, data=form, headers=headers, **kwargs)


PATHS = ["/oauth/token", "/oauth/revoke", "/oauth/introspect"]


@pytest.mark.parametrize("settings_overrides", [PRODUCTION])
def test_neither_host_nor_an_untrusted_forwarded_proto_makes_http_secure(oauth, monkeypatch):
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    auth = _machine(oauth)
    oauth.create_user()
    app_client = oauth.first_party_app()
    for path in PATHS:
        for headers in ({"Host": "localhost"}, {"Host": "127.0.0.1:8000"},
                        {"X-Forwarded-Proto": "https"}, {"X-Forwarded-Ssl": "on"}):
            response = _post(oauth, path, {**auth, **headers}, base_url="http://auth.example.com")
            assert response.status_code == 400, (path, headers, response.get_data(True))
            assert "https" in response.get_json()["error_description"]
    # The refresh grant's fast path and the password grant follow the same rule.
    refresh = oauth.client.post("/oauth/token", base_url="http://localhost", data={
        "grant_type": "refresh_token", "refresh_token": "x", "client_id": app_client.client_id})
    assert refresh.status_code == 400 and "https" in refresh.get_json()["error_description"]
    password = oauth.client.post("/oauth/token", base_url="http://localhost", data={
        "grant_type": "password", "username": "alice", "password": "x",
        "client_id": app_client.client_id})
    assert password.status_code == 400 and "https" in password.get_json()["error_description"]
    for path in PATHS:
        assert _post(oauth, path, auth, base_url=HTTPS).status_code == 200, path


@pytest.mark.parametrize("settings_overrides", [{**PRODUCTION, "trusted_proxies": 1}])
def test_behind_a_trusted_proxy_its_forwarded_proto_decides(oauth, monkeypatch):
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    auth = _machine(oauth)
    for path in PATHS:
        proxied = _post(oauth, path, {**auth, "X-Forwarded-Proto": "https",
                                      "X-Forwarded-For": "203.0.113.9"},
                        base_url="http://auth.example.com")
        assert proxied.status_code == 200, (path, proxied.get_data(True))
        plain = _post(oauth, path, {**auth, "X-Forwarded-Proto": "http",
                                    "X-Forwarded-For": "203.0.113.9"},
                      base_url="http://auth.example.com")
        assert plain.status_code == 400, path
    # The proxy says where it got the request; plain http there is refused whatever Host.
    response = _post(oauth, "/oauth/token", {**auth, "X-Forwarded-For": "203.0.113.9",
                                             "Host": "localhost"},
                     base_url="http://localhost")
    assert response.status_code == 400


@pytest.mark.parametrize("settings_overrides", [{"env": "production"}])  # issuer: loopback
def test_a_loopback_issuer_allows_plain_http_from_loopback_only(oauth, monkeypatch):
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT", raising=False)
    auth = _machine(oauth)
    for path in PATHS:
        local = _post(oauth, path, auth, base_url="http://127.0.0.1:8000")
        assert local.status_code == 200, (path, local.get_data(True))
        remote = _post(oauth, path, auth, base_url="http://127.0.0.1:8000",
                       environ_base={"REMOTE_ADDR": "192.0.2.7"})
        assert remote.status_code == 400, path


def test_the_sign_out_confirmation_may_return_to_the_client(oauth, spa):
    from tests.support.authorize import LOGOUT_RETURN

    page = oauth.client.get("/logout", query_string={
        "client_id": spa.client_id, "post_logout_redirect_uri": LOGOUT_RETURN})
    assert page.status_code == 200 and b"Sign out" in page.data
    assert_page_headers(page, "form-action 'self' https://app.example.com")
