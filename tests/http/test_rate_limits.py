"""Brute-force limits (docs/design.md, "Operations", "Brute-force limits"), in process.

Per account: a progressive delay on wrong passwords (the app's clock, stepped by the fake
clock: no sleeping); per source address and for the whole server: failed password and
client-secret checks; open registrations per address. Storage in memory here, and in one
Redis shared by two apps (two instances) at the end.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from authserver.app import create_app
from authserver.domain import audit, events, passwords
from authserver.extensions import db
from authserver.protocol import rate_limits
from authserver.storage.models import AuditEvent
from tests.conftest import FakeClock
from tests.support import instances
from tests.support.databases import app_settings
from tests.support.oauth import PASSWORD, BrowserActions, OAuthActions, assert_oauth_error, basic

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
SHORT = {"ratelimit_account_free": 2, "ratelimit_account_max_delay": 4}


@pytest.fixture
def settings_overrides(request) -> dict[str, object]:
    return getattr(request, "param", {})


def _from(app: Flask, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def _login(app: Flask, username: str = "alice", password: str = PASSWORD,
           address: str = "198.51.100.7"):
    return BrowserActions(_from(app, address)).login(username=username, password=password)


def _grant(oauth: OAuthActions, bank, username: str = "alice", password: str = PASSWORD,
           address: str = "198.51.100.7"):
    return oauth.token({"grant_type": "password", "username": username, "password": password,
                        "client_id": bank.client_id}, client=_from(oauth.app, address))


@pytest.fixture
def verified(monkeypatch) -> list[str]:
    """Every argon2 verification (so a refusal is seen to come before it)."""
    seen: list[str] = []
    verify = passwords.verify_password

    def counting(*args, **kwargs):
        seen.append("verify")
        return verify(*args, **kwargs)

    monkeypatch.setattr(passwords, "verify_password", counting)
    return seen


@pytest.fixture
def published() -> list[tuple[str, dict]]:
    seen: list[tuple[str, dict]] = []

    def listen(name, fields):
        if name == events.RATE_LIMITED:
            seen.append((name, dict(fields)))

    events.subscribe(listen)
    yield seen
    events.unsubscribe(listen)


def _audited(app: Flask) -> list[AuditEvent]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditEvent).where(
            AuditEvent.event == audit.RATE_LIMITED).order_by(AuditEvent.id)))
        db.session.expunge_all()
    return rows


def _assert_429_json(response, seconds: int) -> None:
    body = assert_oauth_error(response, "temporarily_unavailable", status=429)
    assert body["error_description"] == f"too many attempts; retry in {seconds} s"
    assert response.headers["Retry-After"] == str(seconds)
    assert response.headers["Cache-Control"] == "no-store"


# -- per account: the defaults -----------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["login_page", "password_grant"])
def test_the_defaults_stop_a_guessing_run_and_the_user_gets_in_after_retry_after(
        oauth, app, clock, verified, endpoint):
    """20 wrong passwords in a row: the first 5 are checked, the other 15 refused before
    argon2 runs (the right password too); once Retry-After has passed it signs in."""
    oauth.create_user()
    bank = oauth.first_party_app()

    def attempt(password: str, address: str = "198.51.100.7"):
        if endpoint == "login_page":
            return _login(app, password=password, address=address)
        return _grant(oauth, bank, password=password, address=address)

    wrong = 401 if endpoint == "login_page" else 400
    statuses = [attempt(f"guess {n}", address=f"203.0.113.{n}").status_code
                for n in range(20)]  # from twenty addresses: the account counts them all
    assert statuses == [wrong] * 5 + [429] * 15
    assert len(verified) == 5

    refused = attempt(PASSWORD)  # the right password inside the delay: refused unchecked
    assert refused.status_code == 429 and len(verified) == 5
    assert refused.headers["Retry-After"] == "1"
    if endpoint == "login_page":
        page = refused.get_data(as_text=True)
        assert "Too many wrong passwords for this username" in page
        assert "wait 1 second before" in page
        assert refused.headers["Cache-Control"] == "no-store" and "Location" not in refused.headers
    else:
        _assert_429_json(refused, 1)

    clock.advance(int(refused.headers["Retry-After"]))
    signed_in = attempt(PASSWORD)
    assert signed_in.status_code == (303 if endpoint == "login_page" else 200)
    # The right password cleared the count: five wrong ones are free again.
    assert [attempt("wrong again").status_code for _ in range(5)] == [wrong] * 5
    assert attempt("wrong again").status_code == 429


def test_an_unknown_user_name_gets_the_same_answers(oauth, app, clock):
    oauth.create_user()

    def run(username: str) -> list[tuple[int, str | None, str]]:
        answers = []
        for n in range(7):
            response = _login(app, username=username, password=f"guess {n}")
            error = re.search(r'id="login-error">([^<]*)<', response.get_data(as_text=True))
            answers.append((response.status_code, response.headers.get("Retry-After"),
                            error.group(1) if error else ""))
        return answers

    assert run("alice") == run("mallory")


@pytest.mark.parametrize("settings_overrides", [SHORT], indirect=True)
def test_the_delay_doubles_up_to_the_maximum_and_counts_every_address(oauth, app, clock):
    oauth.create_user()
    bank = oauth.first_party_app()
    waits = []
    for n in range(2 + 5):
        response = _grant(oauth, bank, password="wrong", address=f"192.0.2.{n}")
        if response.status_code == 400:
            continue
        waits.append(int(response.headers["Retry-After"]))
        clock.advance(waits[-1] - 0.5)
        assert _grant(oauth, bank).status_code == 429  # still inside the delay
        clock.advance(0.5)
        assert _grant(oauth, bank, password="wrong").status_code == 400  # admitted, wrong
    assert waits == [1, 2, 4, 4, 4]


# -- audit and events ----------------------------------------------------------------------
@pytest.mark.parametrize("settings_overrides", [SHORT], indirect=True)
def test_refusals_are_events_and_audited_once_per_key_and_delay(oauth, app, clock,
                                                                published):
    user_id = oauth.create_user()
    for _ in range(2):
        assert _login(app, password="wrong").status_code == 401
    for _ in range(3):
        assert _login(app, password="wrong").status_code == 429
    assert published == [(events.RATE_LIMITED, {"scope": "account",
                                                 "endpoint": "login_page"})] * 3
    (row,) = _audited(app)
    assert row.user_id == user_id
    assert row.detail["scope"] == "account" and row.detail["endpoint"] == "login_page"
    assert row.detail["retry_after"] == 1 and row.detail["ip"] == "198.51.100.7"
    assert "alice" not in str(row.detail)

    clock.advance(1)
    assert _login(app, password="wrong").status_code == 401  # admitted: the next period
    assert _login(app, password="wrong").status_code == 429
    assert len(_audited(app)) == 2
    # A name that is no account: audited without naming anyone.
    for _ in range(3):
        _login(app, username="correct-horse-typed-into-the-name", password="x")
    rows = _audited(app)
    assert len(rows) == 3 and rows[-1].user_id is None
    assert "correct-horse" not in str(rows[-1].detail)


# -- per address and global ----------------------------------------------------------------
@pytest.mark.parametrize("settings_overrides", [{"ratelimit_per_address": "3/minute",
                                                 "ratelimit_account_free": 50}], indirect=True)
def test_failed_passwords_per_address(oauth, app, verified, published):
    oauth.create_user()
    bank = oauth.first_party_app()
    attacker = "203.0.113.9"
    assert [_login(app, username=f"user{n}", password="x", address=attacker).status_code
            for n in range(3)] == [401] * 3
    refused = _login(app, password=PASSWORD, address=attacker)  # unchecked
    assert refused.status_code == 429 and len(verified) == 3
    assert "from your network" in refused.get_data(as_text=True)
    assert 55 <= int(refused.headers["Retry-After"]) <= 60
    _assert_429_json(_grant(oauth, bank, address=attacker),
                     int(refused.headers["Retry-After"]))
    assert published[-1][1] == {"scope": "address", "endpoint": "password_grant"}
    assert _login(app, address="198.51.100.20").status_code == 303  # elsewhere: fine
    # An IPv6 address counts by its /64.
    for n in range(3):
        _login(app, username="bob", password="x", address=f"2001:db8:1:2::{n + 1}")
    assert _login(app, address="2001:db8:1:2:ffff::1").status_code == 429
    assert _login(app, address="2001:db8:1:3::1").status_code == 303


@pytest.mark.parametrize("settings_overrides", [{"ratelimit_global": "4/minute",
                                                 "ratelimit_account_free": 50}], indirect=True)
def test_failed_passwords_on_the_whole_server(oauth, app):
    oauth.create_user()
    for n in range(4):
        assert _login(app, password="x", address=f"192.0.2.{n}").status_code == 401
    refused = _login(app, address="198.51.100.99")
    assert refused.status_code == 429
    assert "Too many failed sign-ins right now" in refused.get_data(as_text=True)


@pytest.mark.parametrize("settings_overrides", [{"ratelimit_per_address": "3/minute"}],
                         indirect=True)
def test_wrong_client_secrets_per_address_and_a_right_one_never_slowed(
        oauth, app, monkeypatch, published):
    machine, secret = oauth.create_client(grant_types=["client_credentials"], scope="read")
    oauth.create_user()
    attacker = _from(app, "203.0.113.50")

    def client_credentials(with_secret: str, address_client: FlaskClient = attacker):
        return oauth.token({"grant_type": "client_credentials"},
                           {"Authorization": basic(machine.client_id, with_secret)},
                           client=address_client)

    for _ in range(3):
        assert_oauth_error(client_credentials("wrong"), "invalid_client", status=401)
    over = client_credentials("wrong")
    _assert_429_json(over, int(over.headers.get("Retry-After", "0")))
    assert published[-1][1] == {"scope": "address", "endpoint": "/oauth/token"}
    # The same address at revocation: counted as the same failed-secret limit.
    revoked = attacker.post("/oauth/revoke", data={"token": "x"},
                            headers={"Authorization": basic(machine.client_id, "wrong")})
    assert revoked.status_code == 429

    # A right secret from the over address: served, and the limits are not even asked.
    asked = []
    monkeypatch.setattr(rate_limits.Limits, "_check",
                        lambda self, *a, **k: asked.append(a) or None)
    assert client_credentials(secret).status_code == 200
    assert asked == []
    monkeypatch.undo()
    # Failed client secrets and failed passwords are counted apart.
    assert BrowserActions(attacker).login().status_code == 303
    (row,) = _audited(app)
    assert row.detail["counted"] == "client_secret" and row.detail["scope"] == "address"


def test_a_public_clients_refresh_asks_no_limit(oauth, app, monkeypatch):
    oauth.create_user()
    bank = oauth.first_party_app()
    token = oauth.login_pair(bank)["refresh_token"]
    asked = []
    for name in ("_check", "guard", "secret_failed"):
        monkeypatch.setattr(rate_limits.Limits, name,
                            lambda self, *a, _n=name, **k: asked.append(_n))
    response = oauth.refresh(bank, token)
    assert response.status_code == 200 and asked == []


# -- open registration -----------------------------------------------------------------
@pytest.mark.parametrize("settings_overrides", [{"open_registration": True,
                                                 "ratelimit_registration": "2/hour"}],
                         indirect=True)
def test_open_registrations_per_address(app):
    metadata = {"client_name": "Some app", "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "none"}
    someone = _from(app, "203.0.113.70")
    assert someone.post("/oauth/register", json={"redirect_uris": "not a list"}
                        ).status_code == 400  # refused registrations are not counted
    assert [someone.post("/oauth/register", json=metadata).status_code
            for _ in range(2)] == [201, 201]
    refused = someone.post("/oauth/register", json=metadata)
    assert refused.status_code == 429
    assert refused.get_json()["error"] == "temporarily_unavailable"
    assert refused.headers["Cache-Control"] == "no-store"
    assert 3500 < int(refused.headers["Retry-After"]) <= 3600
    assert _from(app, "198.51.100.70").post("/oauth/register", json=metadata
                                            ).status_code == 201
    (row,) = _audited(app)
    assert row.detail["scope"] == "registration"


# -- switched off, and Redis ---------------------------------------------------------------
@pytest.mark.parametrize("settings_overrides", [{"ratelimit_enabled": False}], indirect=True)
def test_switched_off(oauth, app):
    oauth.create_user()
    assert {_login(app, password="wrong").status_code for _ in range(8)} == {401}
    assert _login(app).status_code == 303


@pytest.mark.parametrize("settings_overrides", [{"redis_url": "redis://127.0.0.1:1/0"}],
                         indirect=True)
def test_redis_down_fails_closed_for_accounts_and_open_for_addresses(oauth, app, caplog):
    oauth.create_user()
    bank = oauth.first_party_app()
    machine, secret = oauth.create_client(grant_types=["client_credentials"], scope="read")
    page = _login(app)
    assert page.status_code == 503 and page.headers["Retry-After"] == "5"
    assert "Signing in is unavailable for a moment" in page.get_data(as_text=True)
    body = assert_oauth_error(_grant(oauth, bank), "temporarily_unavailable", status=503)
    assert body["error_description"] == "sign-in limits unavailable; try again shortly"
    # Client secrets: checked as always; a failure is counted nowhere and stays a 401.
    wrong = oauth.token({"grant_type": "client_credentials"},
                        {"Authorization": basic(machine.client_id, "wrong")})
    assert_oauth_error(wrong, "invalid_client", status=401)
    right = oauth.token({"grant_type": "client_credentials"},
                        {"Authorization": basic(machine.client_id, secret)})
    assert right.status_code == 200
    assert "Redis unavailable" in caplog.text


@pytest.fixture
def redis_url() -> Iterator[str]:
    """An empty Redis database index claimed for this test (the limits' keys have a fixed
    prefix); skipped without Redis."""
    with instances.redis_database() as url:
        yield url


def test_two_instances_on_one_redis_add_up(database_url, keys_dir, redis_url):
    settings = app_settings(database_url, keys_dir, redis_url=redis_url,
                            ratelimit_account_free=3, ratelimit_per_address="4/minute")
    first, second = create_app(settings), create_app(settings)
    clock = FakeClock()
    for app in (first, second):
        app.config["TESTING"] = True
        app.extensions["authserver"].clock = clock
    oauth = OAuthActions(first, first.test_client())
    name = f"user-{uuid.uuid4().hex[:8]}"
    oauth.create_user(name)
    machine, _ = oauth.create_client(grant_types=["client_credentials"], scope="read")
    try:
        # The account: 2 wrong at one instance and 1 at the other use the 3 free ones.
        assert _login(first, name, "x").status_code == 401
        assert _login(second, name, "x").status_code == 401
        assert _login(first, name, "x").status_code == 401
        assert _login(second, name).status_code == 429
        clock.advance(1)
        assert _login(first, name).status_code == 303  # and clears it for both
        assert _login(second, name, "x").status_code == 401

        # The address: 2 wrong secrets at each instance, then both refuse.
        def wrong_secret(app: Flask):
            return OAuthActions(app, _from(app, "203.0.113.80")).token(
                {"grant_type": "client_credentials"},
                {"Authorization": basic(machine.client_id, "wrong")},
                client=_from(app, "203.0.113.80"))

        assert [wrong_secret(app).status_code
                for app in (first, second, first, second)] == [401] * 4
        assert wrong_secret(first).status_code == 429
        assert wrong_secret(second).status_code == 429

        import redis
        connection = redis.Redis.from_url(redis_url)
        names = [key.decode() for key in connection.scan_iter("*")
                 if key != instances.CLAIM.encode()]
        assert names and all(key.startswith("authserver:limits:") for key in names)
        assert not any(name in key for key in names)  # no user names in Redis
        connection.close()
    finally:
        for app in (first, second):
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
