"""CORS for browser apps over HTTP: which origins may read the answers of the token,
revocation, UserInfo and introspection endpoints (the web origins of the client concerned;
for a preflight, of any active client), and the public documents that every origin may read.
"""

from __future__ import annotations

import base64
import json

import pytest
from sqlalchemy.exc import OperationalError

from authserver.domain import client_admin
from authserver.extensions import db
from authserver.protocol import cors
from tests.support.oauth import PASSWORD, assert_oauth_error, basic

APP_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "http://127.0.0.1:5173"  # another client's
UNKNOWN_ORIGIN = "https://evil.example.net"
CREDENTIALED = ["/oauth/token", "/oauth/revoke", "/oauth/userinfo", "/oauth/introspect"]
DOCUMENTS = ["/.well-known/jwks.json", "/.well-known/openid-configuration",
             "/.well-known/oauth-authorization-server"]
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Credentials",
                "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Max-Age", "Access-Control-Expose-Headers")


@pytest.fixture
def spa(oauth):
    """Alice and a public first-party browser app on APP_ORIGIN (password and refresh)."""
    oauth.create_user()
    return oauth.first_party_app(name="Budget SPA", scope="openid profile read",
                                 web_origins=[APP_ORIGIN])


@pytest.fixture
def other(oauth):
    """Another public browser app, on OTHER_ORIGIN."""
    return oauth.first_party_app(name="Other SPA", web_origins=[OTHER_ORIGIN])


def preflight(client, path, origin, method="POST"):
    return client.options(path, headers={
        "Origin": origin, "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type, x-csrf"})


def vary(response):
    return {value.strip().lower() for value in response.headers.get("Vary", "").split(",")}


def assert_credentialed_cors(response, origin):
    assert response.headers["Access-Control-Allow-Origin"] == origin
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "origin" in vary(response)


def assert_no_cors(response):
    present = [name for name in CORS_HEADERS if name in response.headers]
    assert not present, present


def login(oauth, app_client, origin=None, scope="read"):
    data = {"grant_type": "password", "username": "alice", "password": PASSWORD,
            "client_id": app_client.client_id, "scope": scope}
    return oauth.token(data, {"Origin": origin} if origin else {})


def refresh(oauth, app_client, refresh_token, origin=None):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token,
            "client_id": app_client.client_id}
    return oauth.token(data, {"Origin": origin} if origin else {})


# -- preflights ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", CREDENTIALED)
def test_a_preflight_from_a_registered_origin_is_allowed(oauth, spa, path):
    method = "GET" if path == "/oauth/userinfo" else "POST"
    response = preflight(oauth.client, path, APP_ORIGIN, method)
    assert response.status_code == 200  # Flask's automatic OPTIONS, never a 405
    assert_credentialed_cors(response, APP_ORIGIN)
    allowed = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert method in allowed
    assert response.headers["Access-Control-Allow-Headers"] == (
        "Content-Type, Authorization, DPoP, X-CSRF, X-Device-Id")
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Expose-Headers" not in response.headers


@pytest.mark.parametrize("path", CREDENTIALED)
def test_a_preflight_from_an_unknown_origin_gets_no_cors_headers(oauth, spa, path):
    response = preflight(oauth.client, path, UNKNOWN_ORIGIN)
    assert response.status_code == 200
    assert_no_cors(response)
    assert "origin" in vary(response)


def test_a_preflight_is_allowed_for_any_active_clients_origin(oauth, spa, other):
    """A preflight names no client: each registered origin may send to every endpoint."""
    assert_credentialed_cors(preflight(oauth.client, "/oauth/token", OTHER_ORIGIN),
                             OTHER_ORIGIN)
    # A disabled client's origins are not.
    with oauth.app.app_context():
        client_admin.set_active(db.session, other.client_id, False)
    assert_no_cors(preflight(oauth.client, "/oauth/token", OTHER_ORIGIN))


def test_an_origin_is_compared_exactly(oauth, spa):
    for almost in ("https://app.example.com/", "https://APP.example.com",
                   "https://app.example.com:8443", "http://app.example.com", "null"):
        assert_no_cors(preflight(oauth.client, "/oauth/token", almost))


def test_an_origin_registered_in_this_process_is_preflighted_at_once(
        oauth, spa, monkeypatch, app):
    """With the origin set cached (client_cache_seconds), a newly registered origin is
    allowed at the next preflight a second on; a withdrawn one at most ttl seconds on."""
    now = [1000.0]
    monkeypatch.setattr(cors, "monotonic", lambda: now[0])
    monkeypatch.setattr(app.extensions[cors.EXTENSION], "ttl", 30)
    assert_no_cors(preflight(oauth.client, "/oauth/token", OTHER_ORIGIN))  # set read now
    other = oauth.first_party_app(name="New SPA", web_origins=[OTHER_ORIGIN])
    now[0] += 0.5
    assert_no_cors(preflight(oauth.client, "/oauth/token", OTHER_ORIGIN))  # at most 1/s
    now[0] += 0.6
    assert_credentialed_cors(preflight(oauth.client, "/oauth/token", OTHER_ORIGIN),
                             OTHER_ORIGIN)
    with oauth.app.app_context():
        client_admin.set_active(db.session, other.client_id, False)
    now[0] += 10
    # Still preflighted (the set is 10 s old), but the actual answer is not readable.
    assert_credentialed_cors(preflight(oauth.client, "/oauth/token", OTHER_ORIGIN),
                             OTHER_ORIGIN)
    assert_no_cors(login(oauth, other, OTHER_ORIGIN))
    now[0] += 30
    assert_no_cors(preflight(oauth.client, "/oauth/token", OTHER_ORIGIN))


# -- the token endpoint -------------------------------------------------------------------
def test_the_token_endpoint_answers_cors_for_the_clients_own_origin(oauth, spa, other):
    response = login(oauth, spa, APP_ORIGIN)
    assert response.status_code == 200, response.get_data(True)
    assert_credentialed_cors(response, APP_ORIGIN)
    assert response.headers["Access-Control-Expose-Headers"] == "DPoP-Nonce, WWW-Authenticate"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert "Access-Control-Max-Age" not in response.headers
    for origin in (OTHER_ORIGIN, UNKNOWN_ORIGIN):  # another client's origin, or nobody's
        refused = login(oauth, spa, origin)
        assert refused.status_code == 200  # the request is served; the browser won't show it
        assert_no_cors(refused)
        assert "origin" in vary(refused)
        assert refused.headers["Cache-Control"] == "no-store"


def test_a_refresh_with_origin_is_answered_with_cors(oauth, spa):
    """The fast path leaves a browser's refresh to the view, whose answer gets CORS."""
    pair = login(oauth, spa).get_json()
    response = refresh(oauth, spa, pair["refresh_token"], APP_ORIGIN)
    assert response.status_code == 200, response.get_data(True)
    assert_credentialed_cors(response, APP_ORIGIN)
    assert response.headers["Cache-Control"] == "no-store"
    newer = refresh(oauth, spa, response.get_json()["refresh_token"])  # no Origin: fast path
    assert newer.status_code == 200
    assert_no_cors(newer)


def test_errors_are_readable_by_the_clients_origin(oauth, spa):
    """A browser app must be able to read why it was refused (and WWW-Authenticate)."""
    response = refresh(oauth, spa, "rt_not-a-token", APP_ORIGIN)
    assert_oauth_error(response, "invalid_grant")
    assert_credentialed_cors(response, APP_ORIGIN)
    unknown = oauth.token({"grant_type": "refresh_token", "refresh_token": "rt_x",
                           "client_id": "no-such-client"}, {"Origin": APP_ORIGIN})
    assert_oauth_error(unknown, "invalid_client", 401)
    assert_no_cors(unknown)


def test_basic_authentication_names_the_client(oauth, spa):
    """The user name of HTTP Basic (RFC 6749 §2.3.1) is the client concerned."""
    web, secret = oauth.create_client(name="Portal", first_party=True,
                                      grant_types=["password", "refresh_token"],
                                      scope="read", web_origins=[OTHER_ORIGIN])
    data = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    ok = oauth.token(data, {"Origin": OTHER_ORIGIN,
                            "Authorization": basic(web.client_id, secret)})
    assert ok.status_code == 200, ok.get_data(True)
    assert_credentialed_cors(ok, OTHER_ORIGIN)
    wrong = oauth.token(data, {"Origin": OTHER_ORIGIN,
                               "Authorization": basic(web.client_id, "wrong")})
    assert_oauth_error(wrong, "invalid_client", 401)
    assert_credentialed_cors(wrong, OTHER_ORIGIN)  # the page may read its own error
    assert_no_cors(oauth.token(data, {"Origin": APP_ORIGIN,
                                      "Authorization": basic(web.client_id, secret)}))


@pytest.mark.parametrize("authorization", [
    "Basic !!!not-base64", "Basic " + base64.b64encode(b"\xff\xfe:secret").decode(),
    "Basic " + base64.b64encode(b"no-colon").decode(), "Basic", "Bearer x.y.z", "\x7f",
])
def test_a_malformed_authorization_header_gets_no_cors_and_no_500(oauth, spa, authorization):
    response = oauth.token({"grant_type": "refresh_token", "refresh_token": "rt_x"},
                           {"Origin": APP_ORIGIN, "Authorization": authorization})
    assert response.status_code in (400, 401), response.get_data(True)
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_body_too_large_or_a_database_failure_means_no_cors_and_no_500(
        oauth, spa, app, monkeypatch):
    big = oauth.token({"client_id": spa.client_id, "x": "y" * 70_000}, {"Origin": APP_ORIGIN})
    assert_oauth_error(big, "invalid_request", 413)
    assert_no_cors(big)

    def unavailable():
        raise OperationalError("SELECT", {}, Exception("database down"))

    monkeypatch.setattr(app.extensions[cors.EXTENSION], "_load", unavailable)
    response = preflight(oauth.client, "/oauth/token", APP_ORIGIN)
    assert response.status_code == 200
    assert_no_cors(response)


# -- revocation ---------------------------------------------------------------------------
def test_revocation_answers_cors_for_the_clients_own_origin(oauth, spa, other):
    pair = login(oauth, spa).get_json()
    foreign = oauth.client.post("/oauth/revoke", headers={"Origin": OTHER_ORIGIN}, data={
        "token": pair["refresh_token"], "client_id": spa.client_id})
    assert foreign.status_code == 200
    assert_no_cors(foreign)
    response = oauth.client.post("/oauth/revoke", headers={"Origin": APP_ORIGIN}, data={
        "token": pair["refresh_token"], "client_id": spa.client_id})
    assert response.status_code == 200 and response.data == b""
    assert_credentialed_cors(response, APP_ORIGIN)
    assert response.headers["Cache-Control"] == "no-store"
    assert_oauth_error(refresh(oauth, spa, pair["refresh_token"]), "invalid_grant")


# -- UserInfo -----------------------------------------------------------------------------
def test_userinfo_answers_cors_for_the_tokens_clients_origin(oauth, spa, other):
    token = login(oauth, spa, scope="openid profile").get_json()["access_token"]
    for method in ("get", "post"):
        response = getattr(oauth.client, method)(
            "/oauth/userinfo", headers={"Origin": APP_ORIGIN, "Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.get_data(True)
        assert response.get_json()["preferred_username"] == "alice"
        assert_credentialed_cors(response, APP_ORIGIN)
        assert response.headers["Cache-Control"] == "no-store"
    in_form = oauth.client.post("/oauth/userinfo", data={"access_token": token},
                                headers={"Origin": APP_ORIGIN})
    assert in_form.status_code == 200
    assert_credentialed_cors(in_form, APP_ORIGIN)
    for origin in (OTHER_ORIGIN, UNKNOWN_ORIGIN):
        refused = oauth.client.get("/oauth/userinfo", headers={
            "Origin": origin, "Authorization": f"Bearer {token}"})
        assert refused.status_code == 200
        assert_no_cors(refused)


def test_a_userinfo_error_is_readable_with_its_challenge(oauth, spa):
    token = login(oauth, spa, scope="read").get_json()["access_token"]  # no openid scope
    response = oauth.client.get("/oauth/userinfo", headers={
        "Origin": APP_ORIGIN, "Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert_credentialed_cors(response, APP_ORIGIN)
    assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]


def _fake_jwt(claims: object) -> str:
    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    return ".".join((part(b'{"alg":"RS256","typ":"at+jwt"}'),
                     part(json.dumps(claims).encode()), part(b"sig")))


@pytest.mark.parametrize("authorization", [
    "Bearer garbage", "Bearer a.b.c", "Bearer a.%%%.c", "DPoP " + "x" * 9000,
    "Bearer " + _fake_jwt(["not", "a", "dict"]), "Bearer " + _fake_jwt({"client_id": 7}),
    "Basic " + base64.b64encode(b"\xff:x").decode(), "Bearer", "",
])
def test_a_garbage_userinfo_token_gets_no_cors_and_no_500(oauth, spa, authorization):
    response = oauth.client.get("/oauth/userinfo", headers={
        "Origin": APP_ORIGIN, "Authorization": authorization})
    assert response.status_code in (400, 401), response.get_data(True)
    assert_no_cors(response)


def test_a_forged_token_naming_the_client_reads_only_its_refusal(oauth, spa):
    """The claim is read unverified: a forged token naming the app lets the app's origin
    read the 401, never any user's claims."""
    forged = _fake_jwt({"client_id": spa.client_id, "sub": "1", "scope": "openid"})
    response = oauth.client.get("/oauth/userinfo", headers={
        "Origin": APP_ORIGIN, "Authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert_credentialed_cors(response, APP_ORIGIN)


# -- introspection ------------------------------------------------------------------------
def test_introspection_answers_cors_only_for_public_clients(oauth, spa):
    pair = login(oauth, spa).get_json()
    public = oauth.client.post("/oauth/introspect", headers={"Origin": APP_ORIGIN}, data={
        "token": pair["access_token"], "client_id": spa.client_id})
    assert_oauth_error(public, "invalid_client", 401)  # public clients may not introspect
    assert_credentialed_cors(public, APP_ORIGIN)  # ... and the app may read that
    resource, secret = oauth.create_client(name="Orders API", grant_types=["client_credentials"],
                                           allow_introspection=True, web_origins=[APP_ORIGIN])
    confidential = oauth.client.post("/oauth/introspect", data={"token": pair["access_token"]},
                                     headers={"Origin": APP_ORIGIN,
                                              "Authorization": basic(resource.client_id, secret)})
    assert confidential.status_code == 200
    assert confidential.get_json()["active"] is True
    assert_no_cors(confidential)
    assert "origin" in vary(confidential)


# -- the public documents -----------------------------------------------------------------
@pytest.mark.parametrize("path", DOCUMENTS)
def test_the_public_documents_may_be_read_by_any_origin(oauth, path):
    response = oauth.client.get(path, headers={"Origin": UNKNOWN_ORIGIN})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response.headers
    etag = response.headers["ETag"]
    cached = oauth.client.get(path, headers={"Origin": APP_ORIGIN, "If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.headers["Access-Control-Allow-Origin"] == "*"
    head = oauth.client.head(path)
    assert head.headers["Access-Control-Allow-Origin"] == "*"
    options = preflight(oauth.client, path, UNKNOWN_ORIGIN, "GET")
    assert options.status_code == 200
    assert options.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in options.headers["Access-Control-Allow-Methods"]
    assert options.headers["Access-Control-Max-Age"] == "600"
    assert "Access-Control-Allow-Credentials" not in options.headers


def test_discovery_is_unchanged_by_cors(oauth):
    metadata = oauth.client.get("/.well-known/openid-configuration").get_json()
    assert metadata["token_endpoint"] == metadata["issuer"] + "/oauth/token"
    assert metadata["jwks_uri"] == metadata["issuer"] + "/.well-known/jwks.json"


def test_pages_get_no_cors_headers(oauth, spa):
    response = oauth.client.get("/login", headers={"Origin": APP_ORIGIN})
    assert response.status_code == 200
    assert_no_cors(response)
