"""Refresh tokens in an HttpOnly cookie for browser apps (issue 12; docs/design.md,
"Browser apps"), through the Flask test client on both databases.

A browser app (a public client with a web origin and ``refresh_token_delivery: cookie``)
never sees its refresh token: the token endpoint answers without it and sets
``__Host-refresh-<client_id>``. Every request of such a client must carry ``Origin`` (one of
its web origins) and ``X-CSRF: 1`` (the static header that forces a CORS preflight, the
browser-apps BCP's CSRF defence). The tables below send what a browser must not get away
with and check that the answer is the error, that no cookie is set, that nothing in the
database moved, and that the genuine cookie still refreshes afterwards.

The person's browser is a Flask test client (its cookie jar ignores ``Secure``, as a browser
does on a secure origin); probes that forge or drop cookies use a fresh client each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from authserver.domain.client_metadata import DEFAULT_REFRESH_IDLE_TTL, ClientSpec, validate_spec
from authserver.domain.errors import ValidationError
from authserver.extensions import db
from authserver.storage.models import RefreshToken, TokenFamily
from tests.support.admin import admin_token, client_rows
from tests.support.admin import bearer as admin_bearer
from tests.support.authorize import LOGOUT_RETURN, REDIRECT, start
from tests.support.dpop import ProofKey
from tests.support.oauth import (
    PASSWORD,
    BrowserActions,
    OAuthActions,
    assert_oauth_error,
    basic,
    redirect_params,
)
from tests.support.refresh_cookies import (
    NEVER_EXPIRES_MAX_AGE,
    SetCookie,
    assert_expired,
    assert_refresh_cookie,
    cookie_name,
    refresh_cookies,
)
from tests.support.rows import events, families
from tests.support.sessions import IPHONE_APP, device_login, page_devices, post_form

ORIGIN = "https://planner.example.com"  # the browser app's origin
ORIGIN_B = "https://ledger.example.com"  # another browser app's origin
FOREIGN = "https://evil.example"
SCOPE = "openid profile email offline_access read"
NEW_PASSWORD = "a new and longer passphrase 42"
DEFAULT_MAX_AGE = DEFAULT_REFRESH_IDLE_TTL  # 14 days: shorter than the 90-day cap
FIREFOX_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:120.0) Gecko/20100101 "
               "Firefox/120.0")
FIREFOX_MAC_NEXT = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14.2; rv:121.0) Gecko/20100101 "
                    "Firefox/121.0")
CHROME_MAC = ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
              "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36")


def cases(table: dict[str, Any]) -> list[Any]:
    """A table's rows as parameters, each named by its key."""
    return [pytest.param(case, id=case) for case in table]


# -- helpers ---------------------------------------------------------------------------
def from_app(origin: str | None = ORIGIN, csrf: str | None = "1",
             **headers: str) -> dict[str, str]:
    """The headers of a ``fetch`` from the app's page: its ``Origin`` and ``X-CSRF``."""
    result = dict(headers)
    if origin is not None:
        result["Origin"] = origin
    if csrf is not None:
        result["X-CSRF"] = csrf
    return result


def set_cookie_headers(response: TestResponse) -> list[str]:
    return response.headers.getlist("Set-Cookie")


def our_cookie(response: TestResponse, client: Any) -> SetCookie:
    cookies = refresh_cookies(set_cookie_headers(response))
    assert cookie_name(client.client_id) in cookies, set_cookie_headers(response)
    return cookies[cookie_name(client.client_id)]


def authorization_code(person: BrowserActions, client: Any) -> tuple[str, str]:
    """A code and its verifier through our pages (signing in first if need be)."""
    params, verifier = start(client)
    page = person.authorize(**params)
    if page.status_code == 303 and page.headers["Location"].startswith("/login?"):
        signed_in = person.login(next_url=redirect_params(page)["next"])
        assert signed_in.status_code == 303, signed_in.get_data(True)
        page = person.client.get(signed_in.headers["Location"])
    if page.status_code == 200:  # the consent page
        page = person.decide(page)
    return redirect_params(page)["code"], verifier


def exchange(browser: FlaskClient, client: Any, code: str, verifier: str,
             headers: dict[str, str]) -> TestResponse:
    return browser.post("/oauth/token", headers=headers, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": client.client_id})


def sign_in(person: BrowserActions, client: Any, origin: str = ORIGIN,
            **headers: str) -> tuple[dict[str, Any], SetCookie]:
    """The app signs in through the code flow; its JSON and the cookie it got."""
    code, verifier = authorization_code(person, client)
    response = exchange(person.client, client, code, verifier, from_app(origin, **headers))
    assert response.status_code == 200, response.get_data(True)
    return response.get_json(), our_cookie(response, client)


def naming(client: Any, headers: dict[str, str] | None, data: dict[str, str],
           in_basic: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The request's headers and form, naming the public client by ``client_id`` in the
    form, or (``in_basic``) by ``Basic base64("<client_id>:")``, which the server also
    takes as method ``none`` (authserver/protocol/client_auth.py)."""
    headers = dict(from_app() if headers is None else headers)
    if in_basic:
        return {**headers, "Authorization": basic(client.client_id, "")}, data
    return headers, {**data, "client_id": client.client_id}


def refresh(browser: FlaskClient, client: Any, headers: dict[str, str] | None = None,
            in_basic: bool = False, **data: str) -> TestResponse:
    """``grant_type=refresh_token`` with the client id and no token: the cookie has it."""
    headers, form = naming(client, headers, {"grant_type": "refresh_token", **data}, in_basic)
    return browser.post("/oauth/token", headers=headers, data=form)


def revoke(browser: FlaskClient, client: Any, headers: dict[str, str] | None = None,
           in_basic: bool = False, **data: str) -> TestResponse:
    if in_basic:  # a form that names no client still needs a field
        data = {"token_type_hint": "refresh_token", **data}
    headers, form = naming(client, headers, data, in_basic)
    return browser.post("/oauth/revoke", headers=headers, data=form)


def probe_client(app: Flask, cookies: dict[str, str]) -> FlaskClient:
    """A browser holding exactly ``cookies`` (name -> value) for this server."""
    probe = app.test_client()
    for name, value in cookies.items():
        probe.set_cookie(name, value)
    return probe


def token_rows(app: Flask) -> list[tuple[Any, ...]]:
    """Every family and refresh token, every column: to show that nothing moved."""
    with app.app_context():
        rows = [*db.session.scalars(select(TokenFamily).order_by(TokenFamily.id)),
                *db.session.scalars(select(RefreshToken).order_by(RefreshToken.id))]
        return [tuple(getattr(row, c.key) for c in row.__table__.columns) for row in rows]


def family_of(app: Flask, client: Any) -> TokenFamily:
    (family,) = [f for f in families(app) if f.client_id == client.client_id]
    return family


def assert_unchanged_refused(response: TestResponse, error: str, app: Flask,
                             before: list[tuple[Any, ...]], status: int = 400) -> None:
    """The refusal: the OAuth error, no cookie set or cleared, not a row changed."""
    assert_oauth_error(response, error, status)
    assert set_cookie_headers(response) == [], set_cookie_headers(response)
    assert token_rows(app) == before


def assert_refreshes(browser: FlaskClient, client: Any, origin: str = ORIGIN) -> SetCookie:
    """The browser's cookie still works: a refresh answers 200 and rotates it."""
    response = refresh(browser, client, from_app(origin))
    assert response.status_code == 200, response.get_data(True)
    assert "refresh_token" not in response.get_json()
    return our_cookie(response, client)


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture
def make_app(oauth: OAuthActions):
    """A browser app registered for cookie delivery (more registration fields as keywords)."""

    def make(name: str = "Budget Planner", origin: str = ORIGIN, **spec: Any) -> Any:
        fields: dict[str, Any] = {
            "public": True, "redirect_uris": [REDIRECT], "scope": SCOPE,
            "post_logout_redirect_uris": [LOGOUT_RETURN], "web_origins": [origin],
            "refresh_token_delivery": "cookie", **spec}
        record, _ = oauth.create_client(name=name, **fields)
        return record

    return make


@pytest.fixture
def planner(oauth: OAuthActions, make_app):
    oauth.create_user()
    return make_app()


@pytest.fixture
def ledger(planner, make_app):
    """A second browser app on this server, on its own origin."""
    return make_app(name="Ledger", origin=ORIGIN_B)


@pytest.fixture
def two_apps(person, planner, ledger):
    """One browser signed in to both apps: each app's cookie, by client."""
    return {"planner": sign_in(person, planner)[1],
            "ledger": sign_in(person, ledger, origin=ORIGIN_B)[1]}


# -- the token endpoint: what must be refused ------------------------------------------
@dataclass(frozen=True)
class Probe:
    """One token request: the client it names, its headers and the cookies it carries
    (each as (the cookie of client X, holding the token of client Y or a value))."""

    client: str = "planner"
    origin: str | None = ORIGIN
    csrf: str | None = "1"
    cookies: tuple[tuple[str, str], ...] = (("planner", "planner"),)
    body_token: bool = False
    in_basic: bool = False  # the client named in a Basic header, not the form


REFRESH_PROBES = {
    "no-origin": (Probe(origin=None), "invalid_request"),
    "foreign-origin": (Probe(origin=FOREIGN), "invalid_request"),
    "origin-of-another-cookie-client": (Probe(origin=ORIGIN_B), "invalid_request"),
    "origin-null": (Probe(origin="null"), "invalid_request"),
    "origin-http-not-https": (Probe(origin="http://planner.example.com"), "invalid_request"),
    "origin-other-port": (Probe(origin=ORIGIN + ":8443"), "invalid_request"),
    "origin-suffix": (Probe(origin=ORIGIN + ".evil.example"), "invalid_request"),
    "origin-the-authorization-server": (Probe(origin="http://127.0.0.1:8000"),
                                        "invalid_request"),
    "no-x-csrf": (Probe(csrf=None), "invalid_request"),
    "x-csrf-empty": (Probe(csrf=""), "invalid_request"),
    "x-csrf-0": (Probe(csrf="0"), "invalid_request"),
    "x-csrf-true": (Probe(csrf="true"), "invalid_request"),
    "x-csrf-11": (Probe(csrf="11"), "invalid_request"),
    "neither-origin-nor-x-csrf": (Probe(origin=None, csrf=None), "invalid_request"),
    "refresh-token-in-the-body": (Probe(body_token=True), "invalid_request"),
    "refresh-token-in-the-body-no-cookie": (Probe(body_token=True, cookies=()),
                                            "invalid_request"),
    "no-cookie": (Probe(cookies=()), "invalid_request"),
    "only-the-other-apps-cookie": (Probe(cookies=(("ledger", "ledger"),)), "invalid_request"),
    "cookie-of-a-sent-for-b": (Probe(client="ledger", origin=ORIGIN_B,
                                     cookies=(("planner", "planner"),)), "invalid_request"),
    "cookie-of-a-renamed-to-b": (Probe(client="ledger", origin=ORIGIN_B,
                                       cookies=(("ledger", "planner"),)), "invalid_grant"),
    "b-with-the-origin-of-a": (Probe(client="ledger", origin=ORIGIN,
                                     cookies=(("ledger", "ledger"),)), "invalid_request"),
    "garbage-in-the-cookie": (Probe(cookies=(("planner", "rt_not-a-token"),)),
                              "invalid_grant"),
    "client-in-basic-header-no-origin-no-x-csrf": (Probe(origin=None, csrf=None,
                                                         in_basic=True), "invalid_request"),
    "client-in-basic-header-foreign-origin": (Probe(origin=FOREIGN, in_basic=True),
                                              "invalid_request"),
}


@pytest.mark.parametrize("case", cases(REFRESH_PROBES))
def test_refresh_probes_are_refused_and_change_nothing(app, person, planner, ledger,
                                                       two_apps, case):
    probe, error = REFRESH_PROBES[case]
    clients = {"planner": planner, "ledger": ledger}
    cookies = {cookie_name(clients[named].client_id):
               two_apps[token].value if token in two_apps else token
               for named, token in probe.cookies}
    data = {"refresh_token": two_apps["planner"].value} if probe.body_token else {}
    before = token_rows(app)

    response = refresh(probe_client(app, cookies), clients[probe.client],
                       from_app(probe.origin, probe.csrf), probe.in_basic, **data)

    assert_unchanged_refused(response, error, app, before)
    assert_refreshes(person.client, planner)
    assert_refreshes(person.client, ledger, ORIGIN_B)


CSRF_PROBES = {case: REFRESH_PROBES[case][0] for case in (
    "no-origin", "foreign-origin", "origin-of-another-cookie-client", "no-x-csrf", "x-csrf-0")}


@pytest.mark.parametrize("case", list(CSRF_PROBES), ids=list(CSRF_PROBES))
def test_a_code_exchange_without_the_csrf_headers_changes_nothing(app, person, planner, ledger,
                                                                  case):
    probe = CSRF_PROBES[case]
    code, verifier = authorization_code(person, planner)
    before = token_rows(app)
    refused = exchange(person.client, planner, code, verifier,
                       from_app(probe.origin, probe.csrf))
    assert_unchanged_refused(refused, "invalid_request", app, before)
    assert person.client.get_cookie(cookie_name(planner.client_id)) is None
    # The code was not spent: the app's proper request still gets its tokens.
    done = exchange(person.client, planner, code, verifier, from_app())
    assert done.status_code == 200, done.get_data(True)
    assert_refresh_cookie(our_cookie(done, planner), DEFAULT_MAX_AGE)


@pytest.mark.parametrize("case", list(CSRF_PROBES), ids=list(CSRF_PROBES))
def test_a_password_sign_in_without_the_csrf_headers_changes_nothing(app, oauth, make_app,
                                                                     case):
    probe = CSRF_PROBES[case]
    oauth.create_user()
    make_app(name="Ledger", origin=ORIGIN_B)
    first_party = make_app(name="Bank web", first_party=True, redirect_uris=[],
                           post_logout_redirect_uris=[], scope="read")
    data = {"grant_type": "password", "username": "alice", "password": PASSWORD,
            "client_id": first_party.client_id}
    refused = oauth.client.post("/oauth/token", data=data,
                                headers=from_app(probe.origin, probe.csrf))
    assert_unchanged_refused(refused, "invalid_request", app, [])
    done = oauth.client.post("/oauth/token", data=data, headers=from_app())
    assert done.status_code == 200, done.get_data(True)
    assert "refresh_token" not in done.get_json()


# -- the token endpoint: what must work ------------------------------------------------
def test_the_code_exchange_answers_without_the_refresh_token_and_sets_the_cookie(
        app, person, planner):
    code, verifier = authorization_code(person, planner)
    response = exchange(person.client, planner, code, verifier, from_app())
    assert response.status_code == 200, response.get_data(True)
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "id_token"}
    cookie = our_cookie(response, planner)
    assert_refresh_cookie(cookie, DEFAULT_MAX_AGE)
    assert cookie.value not in response.get_data(as_text=True)
    # One cookie per client, the prefix the browser enforces.
    assert cookie.name == f"__Host-refresh-{planner.client_id}"
    assert len(refresh_cookies(set_cookie_headers(response))) == 1
    kept = person.client.get_cookie(cookie.name)
    assert kept is not None and kept.http_only and kept.secure and kept.same_site == "Strict"
    assert family_of(app, planner).revoked_at is None


def test_a_new_sign_in_in_the_same_browser_replaces_the_earlier_session(app, person, planner):
    _, first = sign_in(person, planner)
    _, second = sign_in(person, planner)  # the cookie of the first is overwritten
    earlier, later = [f for f in families(app) if f.client_id == planner.client_id]
    assert earlier.revoke_reason == "replaced_by_new_sign_in" and later.revoked_at is None
    assert_oauth_error(refresh(probe_client(app, {first.name: first.value}), planner),
                       "invalid_grant")
    assert person.client.get_cookie(second.name).value == second.value
    assert_refreshes(person.client, planner)


def test_a_sign_in_never_ends_another_apps_session_whatever_its_cookie_holds(
        app, person, planner, ledger, two_apps):
    """The ledger's cookie holding the planner's token (renamed) is not the ledger's
    earlier session: signing in to the ledger leaves the planner's family alone."""
    code, verifier = authorization_code(person, ledger)
    renamed = probe_client(app, {cookie_name(ledger.client_id): two_apps["planner"].value})
    response = exchange(renamed, ledger, code, verifier, from_app(ORIGIN_B))
    assert response.status_code == 200, response.get_data(True)
    assert [f.revoked_at for f in families(app) if f.client_id == planner.client_id] == [None]
    assert_refreshes(person.client, planner)


# (idle ttl, absolute ttl, Max-Age at sign-in, seconds later, Max-Age after that refresh)
MAX_AGE_TABLE = {
    "idle-shorter": (3600, 86_400, 3600, 600, 3600),
    "absolute-shorter": (86_400, 5000, 5000, 600, 4400),
    "absolute-caps-the-sliding-idle-window": (3000, 5000, 3000, 2500, 2500),
    "no-idle-limit": (0, 7200, 7200, 600, 6600),
    "never-expires-absolutely": (3600, 0, 3600, 600, 3600),
    "never-expires": (0, 0, NEVER_EXPIRES_MAX_AGE, 600, NEVER_EXPIRES_MAX_AGE),
}


@pytest.mark.parametrize("case", list(MAX_AGE_TABLE), ids=list(MAX_AGE_TABLE))
def test_max_age_follows_the_refresh_tokens_expiry(person, oauth, make_app, clock, case):
    idle, absolute, at_sign_in, later, after_refresh = MAX_AGE_TABLE[case]
    oauth.create_user()
    client = make_app(refresh_idle_ttl=idle, refresh_absolute_ttl=absolute)
    _, cookie = sign_in(person, client)
    assert_refresh_cookie(cookie, at_sign_in)
    clock.advance(later)
    assert_refresh_cookie(assert_refreshes(person.client, client), after_refresh)


def test_refresh_rotates_the_cookie(app, person, planner):
    body, first = sign_in(person, planner)
    response = refresh(person.client, planner)
    assert response.status_code == 200, response.get_data(True)
    assert response.headers["Cache-Control"] == "no-store"
    rotated = response.get_json()
    assert "refresh_token" not in rotated and rotated["access_token"] != body["access_token"]
    second = our_cookie(response, planner)
    assert_refresh_cookie(second, DEFAULT_MAX_AGE)
    assert second.value != first.value
    assert person.client.get_cookie(second.name).value == second.value
    third = assert_refreshes(person.client, planner)
    assert third.value not in (first.value, second.value)
    with app.app_context():
        assert len(db.session.scalars(select(RefreshToken)).all()) == 3


def test_a_retry_inside_the_grace_window_gets_the_same_answer_and_cookie(app, person, make_app,
                                                                          oauth, clock):
    oauth.create_user()
    client = make_app(reuse_grace=10)
    _, old = sign_in(person, client)
    first = refresh(person.client, client)
    assert first.status_code == 200, first.get_data(True)
    clock.advance(10)  # the last second of the window; the response was lost
    retry = refresh(probe_client(app, {old.name: old.value}), client)
    assert retry.status_code == 200, retry.get_data(True)
    assert retry.get_data() == first.get_data()  # byte for byte
    assert our_cookie(retry, client).value == our_cookie(first, client).value
    # The first answer's cookie, replayed or recomputed ten seconds later.
    assert_refresh_cookie(our_cookie(retry, client), DEFAULT_MAX_AGE - 5, tolerance=5)
    assert [e.event for e in events(app, "rotation_retry")] == ["rotation_retry"]
    assert_refreshes(person.client, client)  # the family is intact


def test_reuse_after_the_grace_window_revokes_the_family(app, person, make_app, oauth, clock):
    oauth.create_user()
    client = make_app(reuse_grace=10)
    _, old = sign_in(person, client)
    assert_refreshes(person.client, client)
    clock.advance(11)
    stolen = refresh(probe_client(app, {old.name: old.value}), client)
    assert_oauth_error(stolen, "invalid_grant")
    (reuse,) = events(app, "refresh_token_reuse")
    family = family_of(app, client)
    assert reuse.family_id == family.id and family.revoke_reason == "reuse_detected"
    assert old.value not in str(reuse.detail)
    # The rightful browser's newer cookie is dead too.
    assert_oauth_error(refresh(person.client, client), "invalid_grant")


def test_revoking_with_the_cookie_signs_the_app_out_and_expires_it(app, person, planner):
    body, cookie = sign_in(person, planner)
    response = revoke(person.client, planner)
    assert response.status_code == 200, response.get_data(True)
    assert_expired(our_cookie(response, planner))
    assert person.client.get_cookie(cookie.name) is None
    assert family_of(app, planner).revoked_at is not None
    again = refresh(probe_client(app, {cookie.name: cookie.value}), planner)
    assert_oauth_error(again, "invalid_grant")
    info = person.client.get("/oauth/userinfo",
                             headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.status_code == 401


REVOKE_PROBES = {case: REFRESH_PROBES[case][0] for case in (
    "no-origin", "foreign-origin", "origin-of-another-cookie-client", "origin-null",
    "no-x-csrf", "x-csrf-0", "no-cookie", "cookie-of-a-sent-for-b",
    "refresh-token-in-the-body", "refresh-token-in-the-body-no-cookie",
    "client-in-basic-header-no-origin-no-x-csrf", "client-in-basic-header-foreign-origin")}


@pytest.mark.parametrize("case", cases(REVOKE_PROBES))
def test_revocation_probes_are_refused_and_change_nothing(app, person, planner, ledger,
                                                          two_apps, case):
    probe = REVOKE_PROBES[case]
    clients = {"planner": planner, "ledger": ledger}
    cookies = {cookie_name(clients[named].client_id): two_apps[token].value
               for named, token in probe.cookies}
    data = {"token": two_apps["planner"].value} if probe.body_token else {}
    before = token_rows(app)
    response = revoke(probe_client(app, cookies), clients[probe.client],
                      from_app(probe.origin, probe.csrf), probe.in_basic, **data)
    assert_unchanged_refused(response, "invalid_request", app, before)
    assert_refreshes(person.client, planner)
    assert_refreshes(person.client, ledger, ORIGIN_B)


def test_revoking_with_another_apps_cookie_renamed_ends_nothing(app, person, planner, ledger,
                                                                two_apps):
    """RFC 7009 §2.1: another client's token answers 200 and changes nothing."""
    before = token_rows(app)
    renamed = {cookie_name(ledger.client_id): two_apps["planner"].value}
    response = revoke(probe_client(app, renamed), ledger, from_app(ORIGIN_B))
    assert response.status_code == 200, response.get_data(True)
    assert token_rows(app) == before
    assert_refreshes(person.client, planner)


@pytest.mark.parametrize("grant", ["authorization_code", "refresh_token"])
def test_naming_the_client_in_a_basic_header_never_puts_the_token_in_json(app, person, planner,
                                                                          grant):
    """A script on the app's own origin (an XSS) that names the client by Basic instead of
    ``client_id`` still gets no refresh token into JavaScript: the answer is an error, or
    the usual JSON without it (the token in the cookie)."""
    if grant == "authorization_code":
        code, verifier = authorization_code(person, planner)
        response = person.client.post("/oauth/token", headers={
            **from_app(), "Authorization": basic(planner.client_id, "")}, data={
            "grant_type": grant, "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier})
    else:
        sign_in(person, planner)
        response = refresh(person.client, planner, from_app(), in_basic=True)
    body = response.get_json()
    assert "refresh_token" not in body, body
    if response.status_code == 200:
        assert_refresh_cookie(our_cookie(response, planner), DEFAULT_MAX_AGE)


def test_a_first_party_browser_app_signs_in_with_the_password_grant(app, oauth, make_app):
    oauth.create_user()
    client = make_app(name="Bank web", first_party=True, redirect_uris=[],
                      post_logout_redirect_uris=[], scope="read")
    browser = app.test_client()
    response = browser.post("/oauth/token", headers=from_app(), data={
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "client_id": client.client_id})
    assert response.status_code == 200, response.get_data(True)
    assert set(response.get_json()) == {"access_token", "token_type", "expires_in", "scope"}
    assert_refresh_cookie(our_cookie(response, client), DEFAULT_MAX_AGE)
    assert_refreshes(browser, client)


@pytest.mark.parametrize("origins", [[], [ORIGIN]], ids=["no-web-origin", "web-origin"])
@pytest.mark.parametrize("headers", [{}, from_app()], ids=["plain", "with-origin-and-x-csrf"])
def test_body_delivery_clients_are_unchanged(app, oauth, person, origins, headers):
    oauth.create_user()
    client, _ = oauth.create_client(name="Body SPA", public=True, redirect_uris=[REDIRECT],
                                    web_origins=origins, scope=SCOPE)
    code, verifier = authorization_code(person, client)
    response = exchange(person.client, client, code, verifier, headers)
    assert response.status_code == 200, response.get_data(True)
    token = response.get_json()["refresh_token"]
    assert token.startswith("rt_") and refresh_cookies(set_cookie_headers(response)) == {}
    rotated = oauth.refresh(client, token)  # no Origin, no X-CSRF, the token in the body
    assert rotated.status_code == 200, rotated.get_data(True)
    assert rotated.get_json()["refresh_token"].startswith("rt_")
    assert refresh_cookies(set_cookie_headers(rotated)) == {}


# (binding policy, User-Agent at refresh, refresh passes?, cookie still refreshes after?)
BINDING_TABLE = {
    "browser-update": ({}, FIREFOX_MAC_NEXT, True, True),
    "other-browser-revokes": ({}, CHROME_MAC, False, False),
    "other-browser-rejected": ({"on_binding_mismatch": "reject"}, CHROME_MAC, False, True),
    "not-bound": ({"bind_user_agent": False}, CHROME_MAC, True, True),
}


@pytest.mark.parametrize("case", list(BINDING_TABLE), ids=list(BINDING_TABLE))
def test_device_binding_holds_for_cookie_families(app, oauth, person, make_app, case):
    policy, user_agent, passes, survives = BINDING_TABLE[case]
    oauth.create_user()
    client = make_app(**policy)
    person.client.environ_base["HTTP_USER_AGENT"] = FIREFOX_MAC
    sign_in(person, client)

    response = refresh(person.client, client, from_app(**{"User-Agent": user_agent}))

    if passes:
        assert response.status_code == 200, response.get_data(True)
        assert events(app, "binding_mismatch") == []
    else:
        assert_oauth_error(response, "invalid_grant")
        (mismatch,) = events(app, "binding_mismatch")
        assert mismatch.detail["mismatched"], mismatch.detail
    back_home = refresh(person.client, client)  # from Firefox again, with its cookie
    if survives:
        assert back_home.status_code == 200, back_home.get_data(True)
    else:
        assert family_of(app, client).revoke_reason == "binding_mismatch"
        assert_oauth_error(back_home, "invalid_grant")


def dpop_signed_in(app: Flask, person: BrowserActions, client: Any, key: ProofKey) -> None:
    """The app signs in with a proof (a browser's non-extractable WebCrypto key, say)."""
    code, verifier = authorization_code(person, client)
    signed_in = exchange(person.client, client, code, verifier, from_app(DPoP=key.proof()))
    assert signed_in.status_code == 200, signed_in.get_data(True)
    assert signed_in.get_json()["token_type"] == "DPoP"
    assert "refresh_token" not in signed_in.get_json()
    assert family_of(app, client).dpop_jkt == key.jkt
    assert_refresh_cookie(our_cookie(signed_in, client), DEFAULT_MAX_AGE)


def refresh_with(person: BrowserActions, client: Any, key: ProofKey | None) -> TestResponse:
    return refresh(person.client, client, from_app(**({"DPoP": key.proof()} if key else {})))


def test_a_dpop_bound_cookie_family_refreshes_with_its_proof_only(app, person, planner):
    key = ProofKey("ES256")
    dpop_signed_in(app, person, planner, key)
    with_proof = refresh_with(person, planner, key)
    assert with_proof.status_code == 200, with_proof.get_data(True)
    assert with_proof.get_json()["token_type"] == "DPoP"
    assert "refresh_token" not in with_proof.get_json()
    assert_refresh_cookie(our_cookie(with_proof, planner), DEFAULT_MAX_AGE)
    # The cookie alone is not enough: refused, and (the default policy) the session ends.
    assert_oauth_error(refresh_with(person, planner, None), "invalid_grant")
    assert family_of(app, planner).revoked_at is not None
    assert_oauth_error(refresh_with(person, planner, key), "invalid_grant")


@pytest.mark.parametrize("thief", [None, "another-key"], ids=["no-proof", "another-key"])
def test_a_dpop_bound_cookie_family_refuses_without_its_key(app, person, make_app, oauth,
                                                            thief):
    """With ``on_binding_mismatch: reject`` the refusal keeps the session: the proof with
    the right key still refreshes afterwards."""
    oauth.create_user()
    client = make_app(on_binding_mismatch="reject")
    key = ProofKey("ES256")
    dpop_signed_in(app, person, client, key)
    before = token_rows(app)
    refused = refresh_with(person, client, ProofKey("ES256") if thief else None)
    assert_unchanged_refused(refused, "invalid_grant", app, before)
    done = refresh_with(person, client, key)
    assert done.status_code == 200 and done.get_json()["token_type"] == "DPoP"


# -- sign-out elsewhere expires the cookie ---------------------------------------------
def test_rp_initiated_logout_expires_the_cookie(app, person, planner):
    body, cookie = sign_in(person, planner)
    response = person.client.get("/logout", query_string={
        "id_token_hint": body["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN})
    assert response.status_code == 303, response.get_data(True)
    assert_expired(our_cookie(response, planner))
    assert person.client.get_cookie(cookie.name) is None
    assert family_of(app, planner).revoke_reason == "logout"
    assert_oauth_error(refresh(probe_client(app, {cookie.name: cookie.value}), planner),
                       "invalid_grant")


def test_logout_expires_only_the_cookies_whose_tokens_ended(app, person, planner, ledger):
    """Whatever else RP-initiated logout ends, a cookie is expired exactly when its token
    no longer works, and kept when it does."""
    hint = sign_in(person, planner)[0]["id_token"]
    sign_in(person, ledger, origin=ORIGIN_B)
    response = person.client.get("/logout", query_string={
        "id_token_hint": hint, "post_logout_redirect_uri": LOGOUT_RETURN})
    assert response.status_code == 303, response.get_data(True)
    sent = refresh_cookies(set_cookie_headers(response))
    assert_expired(sent[cookie_name(planner.client_id)])
    if family_of(app, ledger).revoked_at is None:
        assert cookie_name(ledger.client_id) not in sent, sent
        assert_refreshes(person.client, ledger, ORIGIN_B)
    else:
        assert_expired(sent[cookie_name(ledger.client_id)])


def this_device(browser: BrowserActions) -> str:
    page = browser.client.get("/account/sessions")
    assert page.status_code == 200, page.get_data(True)
    (device,) = [i for i, text in page_devices(page.get_data(as_text=True)).items()
                 if "This device" in text]
    return device


@pytest.mark.parametrize("action", ["this-device", "sign-out-everywhere"])
def test_signing_this_browser_out_on_the_device_list_expires_the_cookie(app, person, planner,
                                                                        action):
    _, cookie = sign_in(person, planner)
    path = (f"/account/sessions/{this_device(person)}/sign-out" if action == "this-device"
            else "/account/sessions/sign-out-everywhere")
    response = post_form(person, "/account/sessions", path)
    assert response.status_code == 200 and b"You are signed out" in response.data
    assert_expired(our_cookie(response, planner))
    assert person.client.get_cookie(cookie.name) is None
    assert family_of(app, planner).revoked_at is not None


@pytest.mark.parametrize("action", ["other-device", "sign-out-others"])
def test_signing_other_devices_out_leaves_this_browsers_cookie(app, oauth, person, planner,
                                                               action):
    _, cookie = sign_in(person, planner)
    bank = oauth.first_party_app(name="BankApp", scope="read")
    phone = device_login(oauth, bank, IPHONE_APP)
    phone_family = oauth.verify_access_token(phone["access_token"])["sid"]
    path = (f"/account/sessions/{phone_family}/sign-out" if action == "other-device"
            else "/account/sessions/sign-out-others")
    response = post_form(person, "/account/sessions", path)
    assert response.status_code == 303, response.get_data(True)
    assert refresh_cookies(set_cookie_headers(response)) == {}
    assert person.client.get_cookie(cookie.name).value == cookie.value
    assert_refreshes(person.client, planner)


def test_a_password_change_ends_the_other_browsers_cookie_session_only(app, person, planner):
    other = BrowserActions(app.test_client())
    sign_in(other, planner)
    sign_in(person, planner)
    done = post_form(person, "/account/password", "/account/password",
                     current_password=PASSWORD, new_password=NEW_PASSWORD,
                     confirm_password=NEW_PASSWORD)
    assert done.status_code == 200 and b"was changed" in done.data
    assert_oauth_error(refresh(other.client, planner), "invalid_grant")
    assert_refreshes(person.client, planner)


def test_deactivation_ends_the_cookie_session(app, person, planner, run):
    sign_in(person, planner)
    result = run("users", "deactivate", "alice")
    assert result.exit_code == 0, result.output
    assert_oauth_error(refresh(person.client, planner), "invalid_grant")
    assert family_of(app, planner).revoked_at is not None


# -- registration: what a cookie client may not be -------------------------------------
BAD_WEB_ORIGINS = {
    "path": "https://planner.example.com/app",
    "path-slashes": "https://planner.example.com//",
    "query": "https://planner.example.com?tenant=a",
    "empty-query": "https://planner.example.com?",
    "fragment": "https://planner.example.com#top",
    "empty-fragment": "https://planner.example.com#",
    "userinfo": "https://user@planner.example.com",
    "userinfo-password": "https://user:pw@planner.example.com",
    "http-not-loopback": "http://planner.example.com",
    "http-localhost-lookalike": "http://localhost.evil.example",
    "no-host": "https://",
    "port-no-host": "https://:443",
    "no-scheme": "planner.example.com",
    "scheme-relative": "//planner.example.com",
    "star": "*",
    "wildcard-host": "https://*.example.com",
    "null": "null",
    "other-scheme": "ftp://planner.example.com",
    "file": "file:///etc/passwd",
    "empty": "",
    "trailing-port-garbage": "https://planner.example.com:443junk",
    "port-out-of-range": "https://planner.example.com:99999",
    "trailing-word": "https://planner.example.com extra",
    "trailing-newline": "https://planner.example.com\n",
    "trailing-semicolon": "https://planner.example.com;",
    "comma-list": "https://planner.example.com,https://evil.example",
    "comma-host": "https://planner.example.com,evil.example",
    "trailing-percent": "https://planner.example.com%00",
    "trailing-angle": "https://planner.example.com>",
    "trailing-backslash": "https://planner.example.com\\",
}
GOOD_WEB_ORIGINS = {
    "https": ("https://planner.example.com", "https://planner.example.com"),
    "case-and-default-port": ("HTTPS://Planner.Example.COM:443", "https://planner.example.com"),
    "trailing-slash": ("https://planner.example.com/", "https://planner.example.com"),
    "other-port": ("https://planner.example.com:8443", "https://planner.example.com:8443"),
    "loopback-v4": ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
    "loopback-v6": ("http://[::1]:8080", "http://[::1]:8080"),
    "localhost": ("http://LOCALHOST:3000", "http://localhost:3000"),
    "http-default-port": ("http://127.0.0.1:80", "http://127.0.0.1"),
}


def browser_app_spec(**changes: Any) -> ClientSpec:
    fields: dict[str, Any] = {"name": "Planner", "public": True, "redirect_uris": [REDIRECT],
                              "web_origins": [ORIGIN], "refresh_token_delivery": "cookie"}
    fields.update(changes)
    return ClientSpec(**fields)


# (the spec's changes, the field the error names)
REFUSED_SPECS = {
    "confidential": ({"public": False}, "refresh_token_delivery"),
    "confidential-first-party": ({"public": False, "first_party": True},
                                 "refresh_token_delivery"),
    "public-without-web-origin": ({"web_origins": []}, "refresh_token_delivery"),
    "unknown-delivery": ({"refresh_token_delivery": "header"}, "refresh_token_delivery"),
    "delivery-case": ({"refresh_token_delivery": "Cookie"}, "refresh_token_delivery"),
    **{f"origin-{case}": ({"web_origins": [origin]}, "web_origins")
       for case, origin in BAD_WEB_ORIGINS.items()},
    "one-bad-origin-among-good": ({"web_origins": [ORIGIN, BAD_WEB_ORIGINS["path"]]},
                                  "web_origins"),
}


@pytest.mark.parametrize("case", cases(REFUSED_SPECS))
def test_the_domain_refuses(case):
    changes, field = REFUSED_SPECS[case]
    with pytest.raises(ValidationError) as caught:
        validate_spec(browser_app_spec(**changes))
    assert caught.value.field == field, caught.value


@pytest.mark.parametrize("case", list(GOOD_WEB_ORIGINS), ids=list(GOOD_WEB_ORIGINS))
def test_web_origins_are_kept_in_the_origin_header_form(case):
    given, kept = GOOD_WEB_ORIGINS[case]
    assert validate_spec(browser_app_spec(web_origins=[given])).web_origins == [kept]


SPA_BODY = {"client_name": "Planner", "token_endpoint_auth_method": "none",
            "redirect_uris": [REDIRECT], "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], "scope": "openid offline_access",
            "web_origins": [ORIGIN], "refresh_token_delivery": "cookie"}
CONFIDENTIAL = {k: v for k, v in SPA_BODY.items() if k != "token_endpoint_auth_method"}
API_REFUSALS = {
    "confidential": (CONFIDENTIAL, "refresh_token_delivery"),
    "confidential-post": ({**SPA_BODY, "token_endpoint_auth_method": "client_secret_post"},
                          "refresh_token_delivery"),
    "public-without-web-origins": ({k: v for k, v in SPA_BODY.items() if k != "web_origins"},
                                   "refresh_token_delivery"),
    "public-empty-web-origins": ({**SPA_BODY, "web_origins": []}, "refresh_token_delivery"),
    "unknown-delivery": ({**SPA_BODY, "refresh_token_delivery": "header"},
                         "refresh_token_delivery"),
    "delivery-not-a-string": ({**SPA_BODY, "refresh_token_delivery": True},
                              "refresh_token_delivery"),
    "web-origins-not-a-list": ({**SPA_BODY, "web_origins": ORIGIN}, "web_origins"),
    "web-origin-not-a-string": ({**SPA_BODY, "web_origins": [443]}, "web_origins"),
    **{f"origin-{case}": ({**SPA_BODY, "web_origins": [origin]}, "web_origins")
       for case, origin in BAD_WEB_ORIGINS.items()},
}


@pytest.mark.parametrize("case", cases(API_REFUSALS))
def test_the_registration_api_refuses(app, oauth, case):
    body, field = API_REFUSALS[case]
    token = admin_token(oauth)
    before = client_rows(app)
    response = oauth.client.post("/oauth/register", json=body, headers=admin_bearer(token))
    error = assert_oauth_error(response, "invalid_client_metadata")
    assert error["error_description"].startswith(f"{field}: "), error
    assert client_rows(app) == before


def test_the_registration_api_refuses_updates_that_break_a_cookie_client(app, oauth):
    token = admin_token(oauth)
    created = oauth.client.post("/oauth/register", json=SPA_BODY, headers=admin_bearer(token))
    assert created.status_code == 201, created.get_data(True)
    body = created.get_json()
    assert body["web_origins"] == [ORIGIN]
    before = client_rows(app)
    for change, field in [({"web_origins": []}, "refresh_token_delivery"),
                          ({"token_endpoint_auth_method": "client_secret_basic"},
                           "token_endpoint_auth_method"),
                          ({"web_origins": ["*"]}, "web_origins")]:
        update = {**SPA_BODY, "client_id": body["client_id"], **change}
        response = oauth.client.put(f"/oauth/register/{body['client_id']}", json=update,
                                    headers=admin_bearer(token))
        error = assert_oauth_error(response, "invalid_client_metadata")
        assert error["error_description"].startswith(f"{field}: "), (change, error)
    assert client_rows(app) == before


CLI_SPA = ("--name", "Planner", "--public", "--redirect-uri", REDIRECT)
CLI_REFUSALS = {
    "confidential": (("--name", "Planner", "--redirect-uri", REDIRECT, "--web-origin", ORIGIN,
                      "--refresh-token-delivery", "cookie"), "--refresh-token-delivery"),
    "public-without-web-origin": ((*CLI_SPA, "--refresh-token-delivery", "cookie"),
                                  "--refresh-token-delivery"),
    **{f"origin-{case}": ((*CLI_SPA, "--web-origin", origin, "--refresh-token-delivery",
                           "cookie"), "--web-origin")
       for case, origin in BAD_WEB_ORIGINS.items()},
}


@pytest.mark.parametrize("case", cases(CLI_REFUSALS))
def test_the_cli_refuses_in_one_line(app, run, case):
    args, option = CLI_REFUSALS[case]
    result = run("clients", "create", *args)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"authserver: error: {option}"), lines[0]
    assert client_rows(app) == []


def test_the_cli_refuses_updates_that_break_a_cookie_client(app, run, oauth, make_app):
    client = make_app()
    web, _ = oauth.create_client(name="Portal", redirect_uris=[REDIRECT])  # confidential
    before = client_rows(app)
    for target, args, option in [
            (web, ("--web-origin", ORIGIN, "--refresh-token-delivery", "cookie"),
             "--refresh-token-delivery"),
            (client, ("--web-origin", "http://planner.example.com"), "--web-origin"),
            (client, ("--web-origin", "https://planner.example.com/app"), "--web-origin")]:
        result = run("clients", "update", target.client_id, *args)
        assert result.exit_code != 0, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"authserver: error: {option}"), lines[0]
    assert client_rows(app) == before
