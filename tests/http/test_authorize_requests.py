"""``/oauth/authorize`` request validation, parameter by parameter (RFC 6749 §4.1.1-§4.1.2.1).

Until the client and its redirect URI are known to be genuine, an error is shown on our
page and the browser is never redirected; after that every error goes back to the client
with ``error``, the request's ``state`` and ``iss`` (RFC 9207), and never a code.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

import pytest

from authserver.domain import pkce
from tests.support.authorize import ISSUER, REDIRECT, exchange, sign_in_and_consent, start
from tests.support.oauth import redirect_params

CHALLENGE = pkce.s256("x" * 43)


def authorize_query(person, params: dict[str, str] | list[tuple[str, str]]):
    """GET /oauth/authorize with the exact query (lists keep repeated parameters)."""
    items = params.items() if isinstance(params, dict) else params
    return person.client.get("/oauth/authorize?" + urlencode(list(items)))


def assert_error_page(response, text: str | None = None) -> None:
    """RFC 6749 §4.1.2.1: "MUST NOT automatically redirect the user-agent"."""
    assert response.status_code == 400, response.headers
    assert "Location" not in response.headers
    assert response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    assert "This sign-in link is not valid" in body
    if text:
        assert text in body, body


def assert_redirect_error(response, error: str, state: str | None = "xyz-123",
                          to: str = REDIRECT) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.get_data(True))
    location = response.headers["Location"]
    assert location.startswith(to + "?"), location
    params = dict(parse_qsl(urlsplit(location).query, keep_blank_values=True))
    assert params["error"] == error, params
    assert params["iss"] == ISSUER
    assert params.get("state") == state
    assert "code" not in params
    assert set(params) <= {"error", "error_description", "state", "iss"}
    assert response.headers["Cache-Control"] == "no-store"
    return params


def _repeat(params: dict[str, str], name: str, value: str | None = None) -> list[tuple[str, str]]:
    items = list(params.items())
    return [*items, (name, value if value is not None else params[name])]


# -- Errors shown on our page: the client or the redirect URI cannot be trusted ----------

FATAL_CASES = {
    "client_id-missing": ({"client_id": None}, "client_id is missing"),
    "client_id-unknown": ({"client_id": "cl_nobody"}, "not registered"),
    "client_id-too-long": ({"client_id": "c" * 65}, "not registered"),
    "client_id-control-char": ({"client_id": "cl_\x00x"}, "not registered"),
    "redirect_uri-unregistered": ({"redirect_uri": "https://evil.example/callback"},
                                  "not registered for this client"),
    "redirect_uri-prefix": ({"redirect_uri": REDIRECT + "/more"}, None),
    "redirect_uri-prefix-of-registered": ({"redirect_uri": REDIRECT[:-2]}, None),
    "redirect_uri-extra-query": ({"redirect_uri": REDIRECT + "?next=https://evil.example"},
                                 None),
    "redirect_uri-fragment": ({"redirect_uri": REDIRECT + "#x"}, None),
    "redirect_uri-empty-fragment": ({"redirect_uri": REDIRECT + "#"}, None),
    "redirect_uri-other-case": ({"redirect_uri": REDIRECT.replace("app", "APP")}, None),
    "redirect_uri-http-downgrade": ({"redirect_uri": REDIRECT.replace("https", "http")}, None),
    "redirect_uri-userinfo": ({"redirect_uri": "https://app.example.com@evil.example/callback"},
                              None),
    "redirect_uri-missing-for-openid": ({"redirect_uri": None}, "required for OpenID Connect"),
}


def test_untrusted_client_or_redirect_uri_shows_an_error_page(person, spa, subtests):
    for case, (changes, text) in FATAL_CASES.items():
        with subtests.test(case):
            params, _ = start(spa, **changes)
            assert_error_page(person.authorize(**params), text)
    for name in ("client_id", "redirect_uri"):
        with subtests.test(f"{name}-repeated"):
            params, _ = start(spa)
            assert_error_page(authorize_query(person, _repeat(params, name)),
                              f"{name} is repeated")


def test_a_disabled_client_shows_an_error_page(person, spa, app):
    from authserver.domain import client_admin
    from authserver.extensions import db

    with app.app_context():
        client_admin.set_active(db.session, spa.client_id, False)
        db.session.commit()
    params, _ = start(spa)
    assert_error_page(person.authorize(**params), "not registered")


def test_missing_redirect_uri_with_several_registered_shows_an_error_page(person, oauth):
    oauth.create_user()
    two, _ = oauth.create_client(name="Two", public=True, scope="read",
                                 redirect_uris=[REDIRECT, "https://app.example.com/other"])
    params, _ = start(two, redirect_uri=None, scope="read", nonce=None)
    assert_error_page(person.authorize(**params), "redirect_uri is missing")


def test_error_page_escapes_and_never_links_to_the_redirect_uri(person, spa):
    evil = "https://evil.example/<script>alert(1)</script>"
    params, _ = start(spa, redirect_uri=evil)
    response = person.authorize(**params)
    assert_error_page(response)
    body = response.get_data(as_text=True)
    assert "evil.example" not in body and "<script>" not in body


# -- Errors sent back to the client (RFC 6749 §4.1.2.1 codes) ----------------------------

REDIRECT_CASES = {
    "response_type-missing": ({"response_type": None}, "invalid_request"),
    "response_type-token": ({"response_type": "token"}, "unsupported_response_type"),
    "response_type-hybrid": ({"response_type": "code id_token"}, "unsupported_response_type"),
    "response_type-empty": ({"response_type": ""}, "invalid_request"),
    "scope-unknown": ({"scope": "openid admin:clients"}, "invalid_scope"),
    "scope-bad-characters": ({"scope": 'openid "read"'}, "invalid_scope"),
    "scope-backslash": ({"scope": "openid re\\ad"}, "invalid_scope"),
    "code_challenge-missing-public-client": ({"code_challenge": None,
                                             "code_challenge_method": None},
                                            "invalid_request"),
    "code_challenge-without-method": ({"code_challenge_method": None}, "invalid_request"),
    "code_challenge_method-without-challenge": ({"code_challenge": None}, "invalid_request"),
    "code_challenge_method-plain": ({"code_challenge_method": "plain",
                                     "code_challenge": "x" * 43}, "invalid_request"),
    "code_challenge_method-unknown": ({"code_challenge_method": "S512"}, "invalid_request"),
    "code_challenge-too-short": ({"code_challenge": CHALLENGE[:42]}, "invalid_request"),
    "code_challenge-bad-alphabet": ({"code_challenge": CHALLENGE[:42] + "="},
                                    "invalid_request"),
    "nonce-missing-for-openid": ({"nonce": None}, "invalid_request"),
    "nonce-too-long": ({"nonce": "n" * 513}, "invalid_request"),
    "nonce-control-char": ({"nonce": "n\x00"}, "invalid_request"),
    "prompt-unknown": ({"prompt": "select_account"}, "invalid_request"),
    "prompt-none-combined": ({"prompt": "none login"}, "invalid_request"),
    "max_age-negative": ({"max_age": "-1"}, "invalid_request"),
    "max_age-not-a-number": ({"max_age": "ten"}, "invalid_request"),
    "max_age-unicode-digits": ({"max_age": "\u00b2"}, "invalid_request"),
    "response_mode-fragment": ({"response_mode": "fragment"}, "invalid_request"),
    "response_mode-form_post": ({"response_mode": "form_post"}, "invalid_request"),
    "request-object": ({"request": "eyJhbGciOiJub25lIn0.e30."}, "request_not_supported"),
    "request_uri": ({"request_uri": "https://app.example.com/r"}, "request_uri_not_supported"),
    "registration": ({"registration": "{}"}, "registration_not_supported"),
}


def test_invalid_parameters_redirect_with_the_rfc_error(person, spa, subtests):
    for case, (changes, error) in REDIRECT_CASES.items():
        with subtests.test(case):
            params, _ = start(spa, **changes)
            body = assert_redirect_error(person.authorize(**params), error)
            assert body["error_description"]


def test_repeated_parameters_redirect_invalid_request(person, spa, subtests):
    for name in ("response_type", "scope", "code_challenge", "code_challenge_method", "nonce",
                 "prompt", "max_age", "login_hint"):
        with subtests.test(name):
            params, _ = start(spa, prompt="login", max_age="60", login_hint="alice")
            body = assert_redirect_error(authorize_query(person, _repeat(params, name)),
                                         "invalid_request")
            assert body["error_description"] == f"{name} is repeated"


def test_a_repeated_state_is_not_echoed(person, spa):
    params, _ = start(spa)
    response = authorize_query(person, _repeat(params, "state", "other"))
    assert_redirect_error(response, "invalid_request", state=None)


def test_an_oversized_state_is_refused_and_not_echoed(person, spa):
    params, _ = start(spa, state="s" * 1025)
    body = assert_redirect_error(person.authorize(**params), "invalid_request", state=None)
    assert "state" in body["error_description"]


def test_a_state_of_the_maximum_size_is_returned_untouched(person, spa):
    state = "a&b=c d/é+%25?#" * 60 + "x" * 124
    assert len(state) == 1024
    params, _ = start(spa, state=state)
    assert redirect_params(sign_in_and_consent(person, params))["state"] == state


def test_a_client_without_the_code_grant_is_refused(person, oauth):
    oauth.create_user()
    machine, _ = oauth.create_client(name="Machine", grant_types=["client_credentials"],
                                     redirect_uris=[REDIRECT], scope="read")
    params, _ = start(machine, scope="read", nonce=None)
    assert_redirect_error(person.authorize(**params), "unauthorized_client")


def test_errors_keep_the_registered_query_of_the_redirect_uri(person, oauth):
    oauth.create_user()
    with_query = REDIRECT + "?tenant=7"
    client, _ = oauth.create_client(name="Tenant app", public=True, scope="read",
                                    redirect_uris=[with_query])
    params, _ = start(client, redirect_uri=with_query, scope="read", nonce=None,
                      response_type="token")
    response = person.authorize(**params)
    location = response.headers["Location"]
    assert location.startswith(with_query + "&")
    assert dict(parse_qsl(urlsplit(location).query))["tenant"] == "7"


# -- Accepted requests --------------------------------------------------------------------

def test_an_absent_scope_gets_the_registered_non_openid_scopes(person, oauth, spa):
    params, verifier = start(spa, scope=None, nonce=None)
    response = sign_in_and_consent(person, params)
    body = exchange(oauth, spa, redirect_params(response)["code"], verifier).get_json()
    assert body["scope"] == "read" and "id_token" not in body


def test_the_only_registered_redirect_uri_is_the_default_outside_openid(person, oauth, spa):
    params, verifier = start(spa, redirect_uri=None, scope="read", nonce=None)
    done = sign_in_and_consent(person, params)
    assert done.headers["Location"].startswith(REDIRECT + "?")
    code = redirect_params(done)["code"]
    data = {"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
            "client_id": spa.client_id}
    assert oauth.token(data).status_code == 200  # RFC 6749 §4.1.3: not sent, not required


@pytest.mark.parametrize("registered, requested", [
    ("http://127.0.0.1/callback", "http://127.0.0.1:51004/callback"),
    ("http://127.0.0.1:8080/callback", "http://127.0.0.1:1/callback"),
    ("http://[::1]/cb", "http://[::1]:65535/cb"),
])
def test_loopback_redirect_uris_accept_any_port(person, oauth, registered, requested):
    oauth.create_user()
    native, _ = oauth.create_client(name="CLI tool", public=True, scope="read",
                                    redirect_uris=[registered])
    params, verifier = start(native, redirect_uri=requested, scope="read", nonce=None)
    done = sign_in_and_consent(person, params)
    assert done.headers["Location"].startswith(requested + "?")
    code = redirect_params(done)["code"]
    assert exchange(oauth, native, code, verifier, redirect_uri=requested).status_code == 200
    # The token request must name the very URI used, port included (RFC 6749 §4.1.3).
    params, verifier = start(native, redirect_uri=requested, scope="read", nonce=None)
    again = person.authorize(**params)  # an app on the device: confirmed each time
    code = redirect_params(person.decide(again))["code"]
    other_port = requested.replace(":" + requested.split(":")[-1].split("/")[0], ":2")
    assert exchange(oauth, native, code, verifier, redirect_uri=other_port).status_code == 400


LOOPBACK_MISMATCHES = [
    "http://localhost:5000/callback",          # localhost is not a loopback IP literal
    "http://127.0.0.1:0/callback",
    "http://127.0.0.1:65536/callback",
    "http://127.0.0.1:80x/callback",
    "http://127.0.0.1:5000/callback/",
    "http://127.0.0.1:5000/Callback",
    "http://127.0.0.1:5000/callback?x=1",
    "http://127.0.0.1.evil.example:5000/callback",
    "https://127.0.0.1:5000/callback",
    "http://user@127.0.0.1:5000/callback",
    "http://127.0.0.1:5000/callback#",
    "http://[::1]:5000/callback",               # another loopback address than registered
]


def test_loopback_port_freedom_changes_nothing_else(person, oauth, subtests):
    oauth.create_user()
    native, _ = oauth.create_client(name="CLI tool", public=True, scope="read",
                                    redirect_uris=["http://127.0.0.1/callback",
                                                   "http://localhost/callback"])
    for requested in LOOPBACK_MISMATCHES:
        with subtests.test(requested):
            params, _ = start(native, redirect_uri=requested, scope="read", nonce=None)
            assert_error_page(person.authorize(**params))


def test_a_confidential_client_may_skip_pkce(person, oauth):
    oauth.create_user()
    web, secret = oauth.create_client(name="Partner portal", redirect_uris=[REDIRECT],
                                      scope="openid profile")
    params, _ = start(web, scope="openid profile", code_challenge=None,
                      code_challenge_method=None)
    code = redirect_params(sign_in_and_consent(person, params))["code"]
    from tests.support.oauth import basic

    response = oauth.token({"grant_type": "authorization_code", "code": code,
                            "redirect_uri": REDIRECT},
                           headers={"Authorization": basic(web.client_id, secret)})
    assert response.status_code == 200, response.get_json()
    assert "refresh_token" not in response.get_json()  # openid without offline_access


def test_post_authorization_requests_work_like_get(person, spa):
    params, _ = start(spa)
    first = person.client.post("/oauth/authorize", data=params)
    assert first.status_code == 303 and first.headers["Location"].startswith("/login?")
    person.login()
    page = person.client.post("/oauth/authorize", data=params)
    assert page.status_code == 200 and b"Allow" in page.data
    error = person.client.post("/oauth/authorize", data={**params, "response_type": "token"})
    assert error.status_code == 303
    assert redirect_params(error)["error"] == "unsupported_response_type"


def test_nothing_is_issued_for_a_bad_request_even_when_signed_in(person, spa, app):
    from sqlalchemy import func, select

    from authserver.extensions import db
    from authserver.storage.models import AuthorizationCode

    person.login()
    params, _ = start(spa, code_challenge_method="plain")
    assert_redirect_error(person.authorize(**params), "invalid_request")
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(AuthorizationCode)) == 0


def test_hostile_values_never_cause_a_server_error(oauth, person, spa, subtests):
    """NUL bytes (PostgreSQL refuses them in text), control characters, huge and non-ASCII
    values, in every parameter of every page of the flow."""
    person.login()
    nasty = ["\x00", "a\x00b", "\u202e\ufeff", "%00", "x" * 5000, "\ud800".encode(
        "utf-8", "surrogatepass").decode("latin-1")]
    params, _ = start(spa)
    for name in [*params, "login_hint", "id_token_hint", "ui_locales", "claims"]:
        for value in nasty:
            with subtests.test(f"authorize {name}={value[:8]!r}"):
                response = person.authorize(**{**params, name: value})
                assert response.status_code < 500, response.get_data(as_text=True)
    for value in nasty:
        with subtests.test(f"pages {value[:8]!r}"):
            for path, query in [("/login", {"next": value, "login_hint": value}),
                                ("/logout", {"client_id": value,
                                             "post_logout_redirect_uri": value}),
                                ("/logout", {"id_token_hint": value, "state": value})]:
                assert person.client.get(path, query_string=query).status_code < 500
            page = person.client.get("/login").get_data(as_text=True)
            from tests.support.oauth import form_fields

            fields = {**form_fields(page), "username": value, "password": value}
            assert person.client.post("/login", data=fields).status_code < 500
            token = oauth.token({"grant_type": "authorization_code", "code": value,
                                 "client_id": spa.client_id, "redirect_uri": value,
                                 "code_verifier": value})
            assert token.status_code < 500
