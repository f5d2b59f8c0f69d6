"""Refresh tokens in an HttpOnly cookie (issue 12) against a real ``authserver serve``,
driven by ``requests`` with cookie jars: the negative tables of what a browser app's
requests must carry (``Origin`` one of its web origins, ``X-CSRF: 1``, the token only in
its own cookie), the code flow through our pages, and the registrations refused at the
command line and the registration API.

The clients here have no grace window (``--reuse-grace 0``): a refused request that had
rotated the token anyway would make the genuine cookie's next refresh a reuse, so "the old
cookie still refreshes afterwards" proves that nothing moved.
"""

from __future__ import annotations

import html
import re
import secrets
import subprocess
from http.cookiejar import Cookie, DefaultCookiePolicy
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit
from urllib.request import Request

import pytest
import requests

from authserver.domain import pkce
from authserver.domain.client_metadata import DEFAULT_REFRESH_IDLE_TTL
from tests.support import live_server
from tests.support.oauth import PASSWORD
from tests.support.refresh_cookies import (
    SetCookie,
    assert_expired,
    assert_refresh_cookie,
    cookie_name,
    refresh_cookies,
)

pytestmark = pytest.mark.xdist_group("cookie-delivery")

ORIGIN_A = "http://127.0.0.1:5173"  # an SPA on another port of this host: same site
ORIGIN_B = "http://localhost:5174"  # another app, on another site
FOREIGN = "https://evil.example"
CALLBACK = ORIGIN_A + "/callback"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class LoopbackIsSecure(DefaultCookiePolicy):
    """Browsers count ``http://127.0.0.1`` and ``http://localhost`` as secure contexts:
    they keep and send ``Secure`` cookies there; ``http.cookiejar`` sends them over https
    only. Of the two ways around that, these tests take this jar policy (loopback is
    secure) rather than copying ``Set-Cookie`` into a hand-made ``Cookie`` header, so that
    the jar still replaces the cookie on rotation and drops it on ``Max-Age=0``, as a
    browser does."""

    def return_ok_secure(self, cookie: Cookie, request: Request) -> bool:
        if urlsplit(request.get_full_url()).hostname in LOOPBACK_HOSTS:
            return True
        return super().return_ok_secure(cookie, request)


class Browser(requests.Session):
    """A session whose own jar (with :class:`LoopbackIsSecure`) picks the cookies to send:
    ``requests`` merges the jar into a fresh one with the default policy per request,
    which would drop our ``Secure`` cookie over http again."""

    def __init__(self) -> None:
        super().__init__()
        self.cookies.set_policy(LoopbackIsSecure())

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        prepared = super().prepare_request(request)
        prepared.headers.pop("Cookie", None)
        header = requests.cookies.get_cookie_header(self.cookies, prepared)
        if header:
            prepared.headers["Cookie"] = header
        return prepared


def browser(cookies: dict[str, str] | None = None) -> Browser:
    """A browser's cookie store for the server (holding ``cookies``, name -> value)."""
    session = Browser()
    for name, value in (cookies or {}).items():
        session.cookies.set(name, value, domain="127.0.0.1", path="/", secure=True,
                            rest={"HttpOnly": None})
    return session


def from_app(origin: str | None = ORIGIN_A, csrf: str | None = "1") -> dict[str, str]:
    headers = {}
    if origin is not None:
        headers["Origin"] = origin
    if csrf is not None:
        headers["X-CSRF"] = csrf
    return headers


def set_cookies(response: requests.Response) -> list[str]:
    return response.raw.headers.getlist("Set-Cookie")


def our_cookie(response: requests.Response, client: dict[str, Any]) -> SetCookie:
    cookies = refresh_cookies(set_cookies(response))
    assert cookie_name(client["client_id"]) in cookies, set_cookies(response)
    return cookies[cookie_name(client["client_id"])]


def jar_value(session: requests.Session, client: dict[str, Any]) -> str | None:
    return session.cookies.get(cookie_name(client["client_id"]))


def assert_error(response: requests.Response, error: str, status: int = 400) -> None:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.json()["error"] == error, response.json()


# -- the server and its apps -----------------------------------------------------------
@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    yield from live_server.alice_on_backend(request, tmp_path_factory, "cookie-live")


def browser_app(server: live_server.LiveServer, name: str, origin: str,
                *extra: str) -> dict[str, Any]:
    """A public first-party browser app with cookie delivery, registered at the CLI."""
    return server.create_client(
        "--name", name, "--public", "--first-party", "--web-origin", origin,
        "--refresh-token-delivery", "cookie", "--redirect-uri", CALLBACK,
        "--grant-type", "authorization_code", "--grant-type", "password",
        "--grant-type", "refresh_token", "--scope", "openid offline_access read",
        "--reuse-grace", "0", *extra)


@pytest.fixture(scope="module")
def planner(server):
    return browser_app(server, "Planner", ORIGIN_A)


@pytest.fixture(scope="module")
def ledger(server):
    return browser_app(server, "Ledger", ORIGIN_B)


def token(server, session: requests.Session, data: dict[str, str],
          headers: dict[str, str]) -> requests.Response:
    return session.post(f"{server.url}/oauth/token", data=data, headers=headers, timeout=10)


def password_sign_in(server, session: requests.Session, client: dict[str, Any],
                     origin: str) -> requests.Response:
    return token(server, session, {"grant_type": "password", "username": "alice",
                                   "password": PASSWORD, "client_id": client["client_id"]},
                 from_app(origin))


def refresh(server, session: requests.Session, client: dict[str, Any],
            headers: dict[str, str], **data: str) -> requests.Response:
    return token(server, session, {"grant_type": "refresh_token",
                                   "client_id": client["client_id"], **data}, headers)


def assert_refreshes(server, session: requests.Session, client: dict[str, Any],
                     origin: str) -> None:
    """The browser's own cookie still works, and the jar takes the rotated one."""
    before = jar_value(session, client)
    response = refresh(server, session, client, from_app(origin))
    assert response.status_code == 200, response.text
    assert "refresh_token" not in response.json()
    assert our_cookie(response, client).value == jar_value(session, client) != before


@pytest.fixture
def signed_in(server, planner, ledger):
    """One browser signed in to both apps with the password grant."""
    session = browser()
    for client, origin in ((planner, ORIGIN_A), (ledger, ORIGIN_B)):
        response = password_sign_in(server, session, client, origin)
        assert response.status_code == 200, response.text
        assert "refresh_token" not in response.json()
        assert_refresh_cookie(our_cookie(response, client), DEFAULT_REFRESH_IDLE_TTL)
        assert jar_value(session, client) == our_cookie(response, client).value
    return session


# -- the negative tables ---------------------------------------------------------------
# (client named in the form, Origin, X-CSRF, cookies as (cookie of, token of), body token?)
A, B = "planner", "ledger"
REFRESH_PROBES = {
    "no-origin": ((A, None, "1", ((A, A),), False), "invalid_request"),
    "foreign-origin": ((A, FOREIGN, "1", ((A, A),), False), "invalid_request"),
    "origin-of-another-client": ((A, ORIGIN_B, "1", ((A, A),), False), "invalid_request"),
    "origin-of-the-server-itself": ((A, "SERVER", "1", ((A, A),), False), "invalid_request"),
    "no-x-csrf": ((A, ORIGIN_A, None, ((A, A),), False), "invalid_request"),
    "x-csrf-not-1": ((A, ORIGIN_A, "yes", ((A, A),), False), "invalid_request"),
    "refresh-token-in-the-body": ((A, ORIGIN_A, "1", ((A, A),), True), "invalid_request"),
    "no-cookie": ((A, ORIGIN_A, "1", (), False), "invalid_request"),
    "cookie-of-a-sent-for-b": ((B, ORIGIN_B, "1", ((A, A),), False), "invalid_request"),
    "cookie-of-a-renamed-to-b": ((B, ORIGIN_B, "1", ((B, A),), False), "invalid_grant"),
}


@pytest.mark.parametrize("case", list(REFRESH_PROBES), ids=list(REFRESH_PROBES))
def test_refresh_probes_are_refused_and_the_cookie_still_works(server, planner, ledger,
                                                               signed_in, case):
    (named, origin, csrf, cookies, body_token), error = REFRESH_PROBES[case]
    clients = {A: planner, B: ledger}
    tokens = {A: jar_value(signed_in, planner), B: jar_value(signed_in, ledger)}
    probe = browser({cookie_name(clients[of]["client_id"]): tokens[holding]
                     for of, holding in cookies})
    data = {"refresh_token": tokens[A]} if body_token else {}
    origin = server.url if origin == "SERVER" else origin

    response = refresh(server, probe, clients[named], from_app(origin, csrf), **data)

    assert_error(response, error)
    assert set_cookies(response) == []
    assert_refreshes(server, signed_in, planner, ORIGIN_A)
    assert_refreshes(server, signed_in, ledger, ORIGIN_B)


CSRF_PROBES = {"no-origin": (None, "1"), "foreign-origin": (FOREIGN, "1"),
               "origin-of-another-client": (ORIGIN_B, "1"), "no-x-csrf": (ORIGIN_A, None)}


@pytest.mark.parametrize("case", list(CSRF_PROBES), ids=list(CSRF_PROBES))
def test_revocation_probes_are_refused_and_the_cookie_still_works(server, planner, ledger,
                                                                  signed_in, case):
    origin, csrf = CSRF_PROBES[case]
    response = signed_in.post(f"{server.url}/oauth/revoke", headers=from_app(origin, csrf),
                              data={"client_id": planner["client_id"]}, timeout=10)
    assert_error(response, "invalid_request")
    assert set_cookies(response) == [] and jar_value(signed_in, planner)
    assert_refreshes(server, signed_in, planner, ORIGIN_A)


@pytest.mark.parametrize("case", list(CSRF_PROBES), ids=list(CSRF_PROBES))
def test_a_password_sign_in_without_the_csrf_headers_is_refused(server, planner, ledger, case):
    origin, csrf = CSRF_PROBES[case]
    session = browser()
    response = token(server, session, {
        "grant_type": "password", "username": "alice", "password": PASSWORD,
        "client_id": planner["client_id"]}, from_app(origin, csrf))
    assert_error(response, "invalid_request")
    assert set_cookies(response) == [] and not session.cookies


# -- the code flow through our pages ---------------------------------------------------
def _form(page: requests.Response) -> tuple[str, dict[str, str]]:
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action, page.text
    fields = {html.unescape(k): html.unescape(v) for k, v in re.findall(
        r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text)}
    return html.unescape(action.group(1)), fields


def authorization_code(server, session: requests.Session, client: dict[str, Any]
                       ) -> tuple[str, str]:
    """Authorize -> sign in -> (consent) -> the code at the app's callback."""
    verifier = secrets.token_urlsafe(48)
    query = urlencode({"response_type": "code", "client_id": client["client_id"],
                       "redirect_uri": CALLBACK, "scope": "openid offline_access read",
                       "state": "s1", "nonce": "n1", "code_challenge": pkce.s256(verifier),
                       "code_challenge_method": "S256"})
    response = session.get(f"{server.url}/oauth/authorize?{query}", allow_redirects=False,
                           timeout=10)
    for _ in range(6):
        location = response.headers.get("Location", "")
        if response.status_code in (302, 303) and location.startswith(CALLBACK):
            params = dict(parse_qsl(urlsplit(location).query))
            assert params["state"] == "s1", params
            return params["code"], verifier
        if response.status_code in (302, 303):
            response = session.get(urljoin(server.url, location), allow_redirects=False,
                                   timeout=10)
            continue
        assert response.status_code == 200, response.text
        action, fields = _form(response)
        if "password" in response.text and 'name="username"' in response.text:
            fields.update(username="alice", password=PASSWORD)
        else:
            fields["decision"] = "allow"
        response = session.post(urljoin(server.url, action), data=fields,
                                allow_redirects=False, timeout=10)
    raise AssertionError(f"no code: {response.status_code} {response.text[:300]}")


def test_the_code_flow_keeps_the_refresh_token_in_the_cookie(server, planner):
    session = browser()
    code, verifier = authorization_code(server, session, planner)
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK,
                "code_verifier": verifier, "client_id": planner["client_id"]}
    refused = token(server, session, exchange, from_app(ORIGIN_A, None))  # no X-CSRF
    assert_error(refused, "invalid_request")
    assert refresh_cookies(set_cookies(refused)) == {}

    response = token(server, session, exchange, from_app())
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "id_token"}
    cookie = our_cookie(response, planner)
    assert_refresh_cookie(cookie, DEFAULT_REFRESH_IDLE_TTL)
    assert cookie.value not in response.text
    (kept,) = [c for c in session.cookies if c.name == cookie.name]
    assert kept.secure and kept.has_nonstandard_attr("HttpOnly") and kept.path == "/"
    assert not kept.domain_specified  # no Domain: this host only

    info = requests.get(f"{server.url}/oauth/userinfo", timeout=10,
                        headers={"Authorization": f"Bearer {body['access_token']}",
                                 "Origin": ORIGIN_A})
    assert info.status_code == 200, info.text
    assert_refreshes(server, session, planner, ORIGIN_A)

    # Sign-out: revoke with the cookie and no token; the jar drops it (Max-Age=0).
    last = jar_value(session, planner)
    signed_out = session.post(f"{server.url}/oauth/revoke", headers=from_app(), timeout=10,
                              data={"client_id": planner["client_id"]})
    assert signed_out.status_code == 200, signed_out.text
    assert_expired(our_cookie(signed_out, planner))
    assert jar_value(session, planner) is None
    assert_error(refresh(server, session, planner, from_app()), "invalid_request")
    replayed = refresh(server, browser({cookie.name: last or ""}), planner, from_app())
    assert_error(replayed, "invalid_grant")


def test_a_retry_gets_the_same_cookie_and_a_reuse_ends_the_session(server):
    retrying = browser_app(server, "Retrying", ORIGIN_A, "--reuse-grace", "60")
    session = browser()
    assert password_sign_in(server, session, retrying, ORIGIN_A).status_code == 200
    lost = jar_value(session, retrying) or ""
    first = refresh(server, session, retrying, from_app())
    assert first.status_code == 200, first.text
    retry = refresh(server, browser({cookie_name(retrying["client_id"]): lost}), retrying,
                    from_app())
    assert retry.status_code == 200 and retry.content == first.content
    assert our_cookie(retry, retrying).value == our_cookie(first, retrying).value

    once = browser_app(server, "No grace", ORIGIN_A)  # --reuse-grace 0
    session = browser()
    assert password_sign_in(server, session, once, ORIGIN_A).status_code == 200
    stolen = jar_value(session, once) or ""
    assert_refreshes(server, session, once, ORIGIN_A)
    replayed = refresh(server, browser({cookie_name(once["client_id"]): stolen}), once,
                       from_app())
    assert_error(replayed, "invalid_grant")
    assert_error(refresh(server, session, once, from_app()), "invalid_grant")


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-origin-no-x-csrf"),
    pytest.param(from_app(FOREIGN), id="foreign-origin")])
def test_naming_the_client_in_a_basic_header_changes_no_rule(server, planner, signed_in,
                                                             headers):
    """requests-oauthlib's way of naming a public client, ``Basic base64("<id>:")``, is
    still that client's request: the CSRF rule holds and no token reaches the JSON."""
    response = signed_in.post(f"{server.url}/oauth/token", headers=headers,
                              data={"grant_type": "refresh_token"},
                              auth=(planner["client_id"], ""), timeout=10)
    assert "refresh_token" not in response.json(), response.json()
    assert_error(response, "invalid_request")
    assert set_cookies(response) == []
    assert_refreshes(server, signed_in, planner, ORIGIN_A)


def test_a_body_delivery_app_still_gets_its_refresh_token_in_json(server):
    app = server.create_client("--name", "Mobile", "--public", "--first-party",
                               "--scope", "read")
    session = browser()
    response = token(server, session, {"grant_type": "password", "username": "alice",
                                       "password": PASSWORD, "client_id": app["client_id"]},
                     {})
    assert response.status_code == 200, response.text
    assert response.json()["refresh_token"].startswith("rt_")
    assert refresh_cookies(set_cookies(response)) == {} and not session.cookies


# -- registrations refused -------------------------------------------------------------
# A few rows through the real command and API; the full tables run in process
# (tests/http/test_cookie_delivery.py), where a row costs no process start.
BAD_REGISTRATIONS = {
    "confidential": (("--redirect-uri", CALLBACK, "--web-origin", ORIGIN_A),
                     "--refresh-token-delivery"),
    "public-without-web-origin": (("--public", "--redirect-uri", CALLBACK),
                                  "--refresh-token-delivery"),
    "origin-with-path": (("--public", "--redirect-uri", CALLBACK, "--web-origin",
                          ORIGIN_A + "/app"), "--web-origin"),
}


@pytest.mark.parametrize("case", list(BAD_REGISTRATIONS), ids=list(BAD_REGISTRATIONS))
def test_the_command_refuses_in_one_line(server, case):
    args, option = BAD_REGISTRATIONS[case]
    before = server.cli("clients", "list")
    result = subprocess.run(
        [live_server.AUTHSERVER, "clients", "create", "--name", "Bad app", *args,
         "--refresh-token-delivery", "cookie"],
        env=server.env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"authserver: error: {option}"), (
        result.stderr)
    assert result.stdout == "" and server.cli("clients", "list") == before


@pytest.fixture(scope="module")
def admin_token(server):
    admin = server.create_client("--name", "Provisioner", "--grant-type", "client_credentials",
                                 "--scope", "admin:clients")
    response = requests.post(f"{server.url}/oauth/token", timeout=10,
                             data={"grant_type": "client_credentials"},
                             auth=(admin["client_id"], admin["client_secret"]))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


SPA = {"client_name": "Bad app", "token_endpoint_auth_method": "none",
       "redirect_uris": [CALLBACK], "grant_types": ["authorization_code", "refresh_token"],
       "response_types": ["code"], "web_origins": [ORIGIN_A], "refresh_token_delivery": "cookie"}
API_REFUSALS = {
    "confidential": ({k: v for k, v in SPA.items() if k != "token_endpoint_auth_method"},
                     "refresh_token_delivery"),
    "public-without-web-origin": ({k: v for k, v in SPA.items() if k != "web_origins"},
                                  "refresh_token_delivery"),
    "origin-with-query": ({**SPA, "web_origins": [ORIGIN_A + "?a=1"]}, "web_origins"),
}


@pytest.mark.parametrize("case", list(API_REFUSALS), ids=list(API_REFUSALS))
def test_the_registration_api_refuses(server, admin_token, case):
    body, field = API_REFUSALS[case]
    before = server.cli("clients", "list")
    response = requests.post(f"{server.url}/oauth/register", json=body, timeout=10,
                             headers={"Authorization": f"Bearer {admin_token}"})
    assert_error(response, "invalid_client_metadata")
    assert response.json()["error_description"].startswith(f"{field}: "), response.json()
    assert server.cli("clients", "list") == before
