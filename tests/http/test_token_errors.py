"""The token endpoint's negative table: every bad request gets its exact RFC 6749 §5.2
error and status, is never cached, and changes nothing.

"Changes nothing" is checked twice: the families and refresh tokens in the database are
byte-for-byte what they were, and the live refresh tokens still rotate afterwards.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask
from werkzeug.datastructures import Headers
from werkzeug.test import EnvironBuilder, run_wsgi_app

from authserver.domain import passwords, refresh_families, scopes
from authserver.domain.binding import DeviceContext
from authserver.domain.clients import ClientRecord
from authserver.extensions import db
from authserver.storage.models import User
from tests.support.oauth import PASSWORD, assert_oauth_error, basic

FORM = "application/x-www-form-urlencoded"
ERROR_DESCRIPTION_CHARS = {chr(c) for c in [0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)]}
UNKNOWN_TOKEN = "rt_" + "A" * 43
UNICODE = "\u00e9t\u00e9 \u2603 \U0001f600 \ufffd"  # no control characters
CONTROL = "a\x00b\x01c\x1fd\x7f"  # NUL and friends: PostgreSQL refuses NUL in text
# The Flask test client's user agent: the families below are bound to it (binding policy).
TEST_CLIENT = DeviceContext(user_agent=f"Werkzeug/{importlib.metadata.version('werkzeug')}",
                            ip="127.0.0.1")


@dataclass
class World:
    """Clients and live refresh tokens that each negative case runs against."""

    app: Flask
    clock: Any
    mobile: ClientRecord  # public, first-party: password + refresh_token
    other_mobile: ClientRecord  # another public first-party app
    web: ClientRecord  # confidential, first-party: password + refresh_token
    web_secret: str
    partner: ClientRecord  # confidential, third-party: authorization_code + refresh_token
    partner_secret: str
    machine: ClientRecord  # confidential: client_credentials only
    machine_secret: str
    token: str  # mobile's live refresh token
    web_token: str  # web's live refresh token
    access_token: str
    revoked: str = ""
    idle_expiring: str = ""  # mobile-like client, 60 s idle lifetime
    family_expiring: str = ""  # 3600 s idle, but the family ends after 100 s
    survivors: list[tuple[ClientRecord, str, str | None]] = field(default_factory=list)


def _sign_in(app: Flask, client: ClientRecord, user_id: int, scope: str = "read write"
             ) -> dict[str, Any]:
    """A family made by the domain directly (fast: no argon2 verification per case)."""
    with app.app_context():
        svc = app.extensions["authserver"]
        body = refresh_families.start_family(
            db.session, client=client, user=db.session.get(User, user_id),
            scope=scopes.parse(scope), grant_type="password", issue=svc.tokens.for_grant,
            context=TEST_CLIENT, clock=svc.clock)
    return body


@pytest.fixture(scope="module")
def password_hash() -> str:
    return passwords.hash_password(PASSWORD)


@pytest.fixture
def world(oauth, clock, password_hash, monkeypatch) -> World:
    # One argon2 hash for the module: hashing costs a third of a second here.
    monkeypatch.setattr(passwords, "hash_password", lambda _: password_hash)
    user_id = oauth.create_user()
    mobile = oauth.first_party_app(name="mobile")
    other_mobile = oauth.first_party_app(name="other mobile")
    web, web_secret = oauth.create_client(name="web", first_party=True, scope="read write")
    partner, partner_secret = oauth.create_client(
        name="partner", scope="read write", grant_types=["authorization_code", "refresh_token"],
        redirect_uris=["https://partner.example/cb"])
    machine, machine_secret = oauth.create_client(name="machine", scope="reports",
                                                  grant_types=["client_credentials"])
    idle = oauth.first_party_app(name="idle", refresh_idle_ttl=60, refresh_absolute_ttl=0)
    capped = oauth.first_party_app(name="capped", refresh_idle_ttl=3600,
                                   refresh_absolute_ttl=100)
    app = oauth.app
    first = _sign_in(app, mobile, user_id)
    w = World(app=app, clock=clock, mobile=mobile, other_mobile=other_mobile, web=web,
              web_secret=web_secret, partner=partner, partner_secret=partner_secret,
              machine=machine, machine_secret=machine_secret,
              token=first["refresh_token"],
              web_token=_sign_in(app, web, user_id)["refresh_token"],
              access_token=first["access_token"])
    revoked = _sign_in(app, mobile, user_id)
    with app.app_context():
        sid = oauth.verify_access_token(revoked["access_token"])["sid"]
        refresh_families.revoke_family(db.session, sid, reason="test")
        db.session.commit()
    w.revoked = revoked["refresh_token"]
    w.idle_expiring = _sign_in(app, idle, user_id)["refresh_token"]
    w.family_expiring = _sign_in(app, capped, user_id)["refresh_token"]
    w.survivors = [(mobile, w.token, None), (web, w.web_token, web_secret)]
    return w


@dataclass(frozen=True)
class Req:
    """A raw token request: the body exactly as sent."""

    body: bytes | list[tuple[str, str]]
    headers: dict[str, str] = field(default_factory=dict)
    query: str = ""
    content_type: str | None = FORM

    def send(self, app: Flask):
        body = self.body if isinstance(self.body, bytes) else urlencode(self.body).encode()
        path = "/oauth/token" + (f"?{self.query}" if self.query else "")
        headers = dict(self.headers)
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        return app.test_client().post(path, data=body, headers=headers)


def refresh(w: World, token: str | None = None, client: ClientRecord | None = None,
            **extra: str) -> list[tuple[str, str]]:
    form = [("grant_type", "refresh_token"), ("refresh_token", token or w.token),
            ("client_id", (client or w.mobile).client_id)]
    return form + list(extra.items())


def password(w: World, client: ClientRecord | None = None, **extra: str
             ) -> list[tuple[str, str]]:
    form = [("grant_type", "password"), ("username", "alice"),
            ("password", "correct horse battery staple"),
            ("client_id", (client or w.mobile).client_id)]
    return [(k, v) for k, v in form if k not in extra] + list(extra.items())


def without(form: list[tuple[str, str]], *names: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in form if k not in names]


def replaced(form: list[tuple[str, str]], **values: str) -> list[tuple[str, str]]:
    return [(k, values.get(k, v)) for k, v in form]


def raw_basic(credentials: bytes) -> str:
    return "Basic " + base64.b64encode(credentials).decode()


def expire(w: World, seconds: int) -> World:
    w.clock.advance(seconds)
    return w


Build = Callable[[World], Req]

# (id, request, status, error)
CASES: list[tuple[str, Build, int, str]] = [
    # -- the refresh token itself: invalid_grant (RFC 6749 §5.2) ---------------------------
    ("refresh/unknown-token", lambda w: Req(refresh(w, UNKNOWN_TOKEN)), 400, "invalid_grant"),
    ("refresh/revoked-token", lambda w: Req(refresh(w, w.revoked)), 400, "invalid_grant"),
    ("refresh/idle-expired", lambda w: Req(refresh(expire(w, 61), w.idle_expiring)),
     400, "invalid_grant"),
    ("refresh/family-expired", lambda w: Req(refresh(expire(w, 101), w.family_expiring)),
     400, "invalid_grant"),
    ("refresh/another-public-clients-token",
     lambda w: Req(refresh(w, client=w.other_mobile)), 400, "invalid_grant"),
    ("refresh/another-confidential-clients-token",
     lambda w: Req(without(refresh(w, w.web_token), "client_id"),
                   {"Authorization": basic(w.partner.client_id, w.partner_secret)}),
     400, "invalid_grant"),
    ("refresh/access-token-presented", lambda w: Req(refresh(w, w.access_token)),
     400, "invalid_grant"),
    # -- client authentication: 401 invalid_client + WWW-Authenticate (§5.2) ----------------
    ("auth/public-client-sends-secret-in-body",
     lambda w: Req(refresh(w, client_secret="guess")), 401, "invalid_client"),
    ("auth/public-client-sends-secret-in-basic",
     lambda w: Req(without(refresh(w), "client_id"),
                   {"Authorization": basic(w.mobile.client_id, "guess")}),
     401, "invalid_client"),
    ("auth/confidential-wrong-secret-basic",
     lambda w: Req(without(refresh(w, w.web_token), "client_id"),
                   {"Authorization": basic(w.web.client_id, w.web_secret + "x")}),
     401, "invalid_client"),
    ("auth/confidential-wrong-secret-post",
     lambda w: Req(refresh(w, w.web_token, w.web, client_secret=w.web_secret[:-1])),
     401, "invalid_client"),
    ("auth/confidential-no-secret", lambda w: Req(refresh(w, w.web_token, w.web)),
     401, "invalid_client"),
    ("auth/confidential-empty-secret-in-body",
     lambda w: Req(refresh(w, w.web_token, w.web, client_secret="")), 401, "invalid_client"),
    ("auth/confidential-empty-secret-in-basic",
     lambda w: Req(without(refresh(w, w.web_token), "client_id"),
                   {"Authorization": basic(w.web.client_id, "")}),
     401, "invalid_client"),
    ("auth/another-clients-secret",
     lambda w: Req(without(refresh(w, w.web_token), "client_id"),
                   {"Authorization": basic(w.web.client_id, w.partner_secret)}),
     401, "invalid_client"),
    ("auth/unknown-client-id", lambda w: Req(replaced(refresh(w), client_id="cl_nobody")),
     401, "invalid_client"),
    # A bare refresh names its client through the token, for public clients only (§6).
    ("auth/no-client-at-all-confidential-token",
     lambda w: Req(without(refresh(w, w.web_token), "client_id")), 401, "invalid_client"),
    ("auth/no-client-at-all-unknown-token",
     lambda w: Req(without(refresh(w, UNKNOWN_TOKEN), "client_id")), 401, "invalid_client"),
    ("auth/no-client-at-all-access-token",
     lambda w: Req(without(refresh(w, w.access_token), "client_id")), 401, "invalid_client"),
    ("auth/empty-client-id-confidential-token",
     lambda w: Req(replaced(refresh(w, w.web_token), client_id="")), 401, "invalid_client"),
    ("auth/client-id-too-long", lambda w: Req(replaced(refresh(w), client_id="c" * 65)),
     401, "invalid_client"),
    ("auth/client-id-at-parameter-limit",
     lambda w: Req(replaced(refresh(w), client_id="c" * 4096)), 401, "invalid_client"),
    ("basic/not-base64",
     lambda w: Req(without(refresh(w), "client_id"), {"Authorization": "Basic !!not*base64"}),
     401, "invalid_client"),
    ("basic/bad-padding",
     lambda w: Req(without(refresh(w), "client_id"), {"Authorization": "Basic YWJj="}),
     401, "invalid_client"),
    ("basic/no-colon",
     lambda w: Req(without(refresh(w), "client_id"),
                   {"Authorization": raw_basic(w.web.client_id.encode())}),
     401, "invalid_client"),
    ("basic/empty-client-id",
     lambda w: Req(without(refresh(w), "client_id"),
                   {"Authorization": raw_basic(b":" + w.web_secret.encode())}),
     401, "invalid_client"),
    ("basic/not-utf-8",
     lambda w: Req(without(refresh(w), "client_id"),
                   {"Authorization": raw_basic(b"\xff\xfe:\xc3\x28")}), 401, "invalid_client"),
    ("basic/scheme-only",
     lambda w: Req(without(refresh(w), "client_id"), {"Authorization": "Basic"}),
     401, "invalid_client"),
    ("basic/bearer-scheme",
     lambda w: Req(without(refresh(w), "client_id"), {"Authorization": "Bearer abc.def.ghi"}),
     401, "invalid_client"),
    ("basic/dpop-scheme",
     lambda w: Req(without(refresh(w), "client_id"), {"Authorization": "DPoP abc"}),
     401, "invalid_client"),
    ("basic/non-ascii-in-header",
     lambda w: Req(without(refresh(w), "client_id"), {"Authorization": "Basic \u00e9\u00e9=="}),
     401, "invalid_client"),
    ("basic/percent-encoded-nul-client-id",
     lambda w: Req(without(refresh(w), "client_id"), {"Authorization": basic("\x00", "x")}),
     401, "invalid_client"),
    ("basic/non-ascii-client-id",
     lambda w: Req(without(refresh(w), "client_id"), {"Authorization": basic(UNICODE, "x")}),
     401, "invalid_client"),
    # -- malformed requests: invalid_request --------------------------------------------------
    ("auth/basic-and-body-client-ids-differ",
     lambda w: Req(refresh(w, w.web_token),
                   {"Authorization": basic(w.web.client_id, w.web_secret)}),
     400, "invalid_request"),
    ("auth/basic-and-body-secret",
     lambda w: Req([*without(refresh(w, w.web_token), "client_id"),
                    ("client_secret", w.web_secret)],
                   {"Authorization": basic(w.web.client_id, w.web_secret)}),
     400, "invalid_request"),
    ("form/missing-grant-type", lambda w: Req(without(refresh(w), "grant_type")),
     400, "invalid_request"),
    ("form/empty-grant-type", lambda w: Req(replaced(refresh(w), grant_type="")),
     400, "invalid_request"),
    ("form/missing-refresh-token", lambda w: Req(without(refresh(w), "refresh_token")),
     400, "invalid_request"),
    ("form/empty-refresh-token", lambda w: Req(replaced(refresh(w), refresh_token="")),
     400, "invalid_request"),
    ("form/missing-username", lambda w: Req(without(password(w), "username")),
     400, "invalid_request"),
    ("form/missing-password", lambda w: Req(without(password(w), "password")),
     400, "invalid_request"),
    ("form/repeated-grant-type",
     lambda w: Req([*refresh(w), ("grant_type", "refresh_token")]), 400, "invalid_request"),
    ("form/repeated-refresh-token",
     lambda w: Req([*refresh(w), ("refresh_token", w.token)]), 400, "invalid_request"),
    ("form/repeated-client-id",
     lambda w: Req([*refresh(w), ("client_id", w.mobile.client_id)]), 400, "invalid_request"),
    ("form/repeated-scope-differently",
     lambda w: Req([*refresh(w), ("scope", "read"), ("scope", "write")]),
     400, "invalid_request"),
    ("form/all-parameters-in-query-string",
     lambda w: Req(b"", query=urlencode(refresh(w))), 400, "invalid_request"),
    ("form/one-parameter-in-query-string",
     lambda w: Req(refresh(w), query="scope=read"), 400, "invalid_request"),
    ("content-type/json",
     lambda w: Req(json.dumps(dict(refresh(w))).encode(), content_type="application/json"),
     400, "invalid_request"),
    ("content-type/multipart",
     lambda w: Req(b"--x\r\nContent-Disposition: form-data; name=\"grant_type\"\r\n\r\n"
                   b"refresh_token\r\n--x--\r\n",
                   content_type="multipart/form-data; boundary=x"),
     400, "invalid_request"),
    ("content-type/text-plain",
     lambda w: Req(urlencode(refresh(w)).encode(), content_type="text/plain"),
     400, "invalid_request"),
    ("content-type/missing",
     lambda w: Req(urlencode(refresh(w)).encode(), content_type=None), 400, "invalid_request"),
    ("size/value-over-4096-characters",
     lambda w: Req(replaced(refresh(w), refresh_token="rt_" + "A" * 4094)),
     400, "invalid_request"),
    ("size/parameter-name-over-128-characters",
     lambda w: Req([*refresh(w), ("x" * 129, "1")]), 400, "invalid_request"),
    ("device/invalid-device-id", lambda w: Req(refresh(w, device_id="short")),
     400, "invalid_request"),
    ("device/form-and-header-disagree",
     lambda w: Req(refresh(w, device_id="device-0001"), {"X-Device-Id": "device-0002"}),
     400, "invalid_request"),
    # -- grant types -----------------------------------------------------------------------------
    ("grant/implicit-is-not-a-token-grant", lambda w: Req(replaced(refresh(w),
                                                                   grant_type="implicit")),
     400, "unsupported_grant_type"),
    ("grant/device-code-not-supported",
     lambda w: Req(replaced(refresh(w),
                            grant_type="urn:ietf:params:oauth:grant-type:device_code")),
     400, "unsupported_grant_type"),
    ("grant/quotes-and-backslashes",
     lambda w: Req(replaced(refresh(w), grant_type='"refresh_token\\"')),
     400, "unsupported_grant_type"),
    ("grant/case-differs", lambda w: Req(replaced(refresh(w), grant_type="Refresh_Token")),
     400, "unsupported_grant_type"),
    ("grant/client-credentials-by-public-client",
     lambda w: Req([("grant_type", "client_credentials"), ("client_id", w.mobile.client_id)]),
     400, "unauthorized_client"),
    ("grant/password-by-third-party-client",
     lambda w: Req(without(password(w), "client_id"),
                   {"Authorization": basic(w.partner.client_id, w.partner_secret)}),
     400, "unauthorized_client"),
    ("grant/refresh-by-client-credentials-client",
     lambda w: Req(without(refresh(w, w.web_token), "client_id"),
                   {"Authorization": basic(w.machine.client_id, w.machine_secret)}),
     400, "unauthorized_client"),
    ("grant/password-by-machine-client",
     lambda w: Req(password(w, w.machine, client_secret=w.machine_secret)),
     400, "unauthorized_client"),
    # -- scope ---------------------------------------------------------------------------------
    ("scope/widening-on-refresh", lambda w: Req(refresh(w, scope="read write admin")),
     400, "invalid_scope"),
    ("scope/outside-client-registration",
     lambda w: Req(password(w, scope="admin")), 400, "invalid_scope"),
    ("scope/malformed-token", lambda w: Req(refresh(w, scope='read "write"')),
     400, "invalid_scope"),
    # -- resource owner credentials ----------------------------------------------------------
    ("password/wrong-password", lambda w: Req(password(w, password="wrong horse battery")),
     400, "invalid_grant"),
    ("password/unknown-user", lambda w: Req(password(w, username="mallory")),
     400, "invalid_grant"),
    ("password/username-with-line-break", lambda w: Req(password(w, username="alice\r\n")),
     400, "invalid_request"),
]

# Non-ASCII (and control characters) in every field: (id, field, value, status, error).
# A field not in the grant's form is added to it.
FIELD_CASES: list[tuple[str, str, str, str, int, str]] = []
for label, value in (("unicode", UNICODE), ("control", CONTROL)):
    FIELD_CASES += [
        (f"{label}/grant_type", "refresh", "grant_type", value, 400, "unsupported_grant_type"),
        (f"{label}/refresh_token", "refresh", "refresh_token", value, 400, "invalid_grant"),
        (f"{label}/client_id", "refresh", "client_id", value, 401, "invalid_client"),
        (f"{label}/client_secret", "web", "client_secret", value, 401, "invalid_client"),
        (f"{label}/scope", "refresh", "scope", value, 400, "invalid_scope"),
        (f"{label}/device_id", "refresh", "device_id", value, 400, "invalid_request"),
        (f"{label}/username", "password", "username", value, 400,
         "invalid_grant" if label == "unicode" else "invalid_request"),
        (f"{label}/password", "password", "password", value, 400,
         "invalid_grant" if label == "unicode" else "invalid_request"),
        (f"{label}/unknown-parameter", "refresh-wrong", "x-extra", value, 400, "invalid_grant"),
    ]


def _field_request(w: World, grant: str, name: str, value: str) -> Req:
    form = {
        "refresh": refresh(w),
        "refresh-wrong": refresh(w, UNKNOWN_TOKEN),
        "web": refresh(w, w.web_token, w.web),
        "password": password(w),
    }[grant]
    if any(k == name for k, _ in form):
        return Req(replaced(form, **{name: value}))
    return Req([*form, (name, value)])


def _state(app: Flask) -> list[list[tuple[Any, ...]]]:
    """Every family and refresh-token row, every column."""
    with app.app_context():
        conn = db.session.connection()
        state = [[tuple(row) for row in conn.exec_driver_sql(
            f"SELECT * FROM {table} ORDER BY id").fetchall()]
            for table in ("token_families", "refresh_tokens")]
        db.session.rollback()
    return state


def assert_token_error(response, status: int, error: str) -> dict[str, Any]:
    """§5.2 error body and status, never cached, description in the §5.2 character set."""
    body = assert_oauth_error(response, error, status)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    assert set(body.get("error_description", "")) <= ERROR_DESCRIPTION_CHARS, body
    if status == 401:
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith('Basic realm="authserver", error="invalid_client"')
        assert len(response.headers.getlist("WWW-Authenticate")) == 1  # RFC 7617 §2: realm
    return body


def assert_survivors_rotate(app: Flask, w: World) -> None:
    """The live refresh tokens were untouched: each still rotates, once."""
    client = app.test_client()
    for record, token, secret in w.survivors:
        form = {"grant_type": "refresh_token", "refresh_token": token}
        headers = {}
        if secret is None:
            form["client_id"] = record.client_id
        else:
            headers["Authorization"] = basic(record.client_id, secret)
        response = client.post("/oauth/token", data=form, headers=headers)
        assert response.status_code == 200, (record.name, response.get_data(True))


@pytest.mark.parametrize(("build", "status", "error"),
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_token_request_is_refused_and_changes_nothing(world, build, status, error):
    request = build(world)
    before = _state(world.app)

    response = request.send(world.app)

    assert_token_error(response, status, error)
    assert _state(world.app) == before
    assert_survivors_rotate(world.app, world)


@pytest.mark.parametrize(("grant", "name", "value", "status", "error"),
                         [pytest.param(*case[1:], id=case[0]) for case in FIELD_CASES])
def test_odd_characters_in_every_field(world, grant, name, value, status, error):
    before = _state(world.app)
    response = _field_request(world, grant, name, value).send(world.app)
    assert_token_error(response, status, error)
    assert _state(world.app) == before
    assert_survivors_rotate(world.app, world)


@pytest.mark.parametrize("header", [
    pytest.param({"User-Agent": "BankApp/1.0\x00\x01 (iPhone; iOS 17)"}, id="user-agent"),
    pytest.param({"X-Device-Id": "dev\x00ice-0001"}, id="x-device-id"),
    pytest.param({"X-Device-Id": "d\u00e9vice-\u2603-0001"}, id="x-device-id-unicode"),
    pytest.param({"Authorization": basic("\u00e9\x00", UNICODE)}, id="basic-credentials"),
])
def test_odd_characters_in_headers_never_break_a_sign_in(world, header):
    """Headers go into the family's device record (PostgreSQL refuses NUL in text)."""
    form = without(password(world), "client_id") if "Authorization" in header else password(world)
    response = Req(form, header).send(world.app)
    if "Authorization" in header:
        assert_token_error(response, 401, "invalid_client")
    elif "X-Device-Id" in header:
        assert_token_error(response, 400, "invalid_request")
    else:
        assert response.status_code == 200, response.get_data(True)


def test_oversized_body_is_a_json_413(world):
    limit = world.app.config["MAX_CONTENT_LENGTH"]
    body = urlencode([*refresh(world), ("padding", "x" * limit)]).encode()
    before = _state(world.app)
    response = Req(body).send(world.app)
    assert_token_error(response, 413, "invalid_request")
    assert _state(world.app) == before
    assert_survivors_rotate(world.app, world)


def test_body_just_under_the_limit_is_read(world):
    """The limit is on the body, not on what is in it: unknown parameters are ignored."""
    limit = world.app.config["MAX_CONTENT_LENGTH"]
    form = refresh(world)
    fillers = [(f"p{i}", "x" * 4000) for i in range((limit - 2000) // 4010)]
    body = urlencode(form + fillers).encode()
    assert len(body) < limit
    response = Req(body).send(world.app)
    assert response.status_code == 200, response.get_data(True)


def test_public_client_may_send_its_id_in_basic_with_an_empty_password(world):
    """What requests-oauthlib sends by default for a public client: no secret, so ``none``."""
    response = Req(without(refresh(world), "client_id"),
                   {"Authorization": basic(world.mobile.client_id, "")}).send(world.app)
    assert response.status_code == 200, response.get_data(True)


def test_empty_parameters_count_as_omitted(world):
    """RFC 6749 §3.2: a parameter sent without a value is treated as omitted."""
    form = refresh(world, client_secret="", device_id="", scope="")
    response = Req(form, {"X-Device-Id": ""}).send(world.app)
    assert response.status_code == 200, response.get_data(True)
    assert response.get_json()["scope"] == "read write"


def test_wrong_method_is_a_json_405(client):
    response = client.get("/oauth/token")
    assert_oauth_error(response, "invalid_request", 405)
    assert "POST" in response.headers["Allow"]
    assert response.headers["Cache-Control"] == "no-store"


def test_bad_requests_record_nothing_secret_in_the_database(world):
    """A wrong password or secret leaves an audit trace, never the value itself."""
    Req(password(world, password="hunter2-wrong-password")).send(world.app)
    Req(refresh(world, world.web_token, world.web, client_secret="not-the-secret-123")
        ).send(world.app)
    with world.app.app_context():
        dump = "\n".join(str(tuple(row)) for row in db.session.connection().exec_driver_sql(
            "SELECT * FROM audit_events").fetchall())
    assert "sign_in_failed" in dump  # the failure is recorded...
    assert "hunter2-wrong-password" not in dump and "not-the-secret-123" not in dump  # ...not it


@pytest.mark.parametrize("host", ["xn--a", "xn--", "a..b"])
def test_an_undecodable_host_header_is_a_400(world, host):
    """Werkzeug decodes the Host as IDNA when the request URL is built (Authlib builds it
    for every token request). Sent raw, past the test client, which would trip on it too."""
    environ = EnvironBuilder(path="/oauth/token", method="POST", data=dict(refresh(world))
                             ).get_environ()
    environ["HTTP_HOST"] = host
    body, status, headers = run_wsgi_app(world.app, environ, buffered=True)
    assert status.startswith("400 ")
    assert json.loads(b"".join(body))["error"] == "invalid_request"
    assert Headers(headers)["Cache-Control"] == "no-store"
    assert_survivors_rotate(world.app, world)


def test_plain_http_in_production_is_refused_not_a_500(world, monkeypatch):
    """Without AUTHLIB_INSECURE_TRANSPORT (set only in development), Authlib refuses http
    before its own error handling: a clear 400, e.g. behind a TLS proxy that is not
    configured in trusted_proxies."""
    monkeypatch.delenv("AUTHLIB_INSECURE_TRANSPORT")
    response = world.app.test_client().post("/oauth/token", data=dict(refresh(world)),
                                            base_url="http://auth.example.com/")
    body = assert_token_error(response, 400, "invalid_request")
    assert "https" in body["error_description"]
    monkeypatch.undo()
    assert_survivors_rotate(world.app, world)
