"""Browser sign-ins end on the server: an idle lifetime from their last use and an absolute
one from the sign-in (AUTHSERVER_BROWSER_SESSION_IDLE_TTL, _MAX_TTL), decided from the
session row whatever the cookie says; a use is recorded at most about once a minute; the
devices page says since when and until when (docs/design.md, "Operations")."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.support.authorize import sign_in_and_consent, start
from tests.support.oauth import BrowserActions, redirect_params
from tests.support.statements import recorded_statements

# The rules are the server's, not the database's: one backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

IDLE, ABSOLUTE = 600, 3_600


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"browser_session_idle_ttl": IDLE, "browser_session_max_ttl": ABSOLUTE}


def _signed_in(person: BrowserActions) -> bool:
    page = person.client.get("/account/sessions")
    assert page.status_code in (200, 303), page.status_code
    return page.status_code == 200


def test_an_idle_sign_in_ends_and_authorize_asks_for_the_password(person, spa, clock):
    params, _ = start(spa)
    sign_in_and_consent(person, params)
    silent = {**params, "prompt": "none"}
    assert "code" in redirect_params(person.authorize(**silent))
    clock.advance(IDLE + 1)
    assert redirect_params(person.authorize(**silent))["error"] == "login_required"
    again = person.authorize(**params)
    assert again.status_code == 303 and again.headers["Location"].startswith("/login?")
    assert not _signed_in(person)
    # Signing in again starts a new sign-in, with its own lifetime.
    person.login(next_url=redirect_params(again)["next"])
    assert "code" in redirect_params(person.authorize(**silent))


def test_use_keeps_a_sign_in_alive_until_its_absolute_end(person, oauth, clock):
    oauth.create_user()
    person.login()
    for _ in range(ABSOLUTE // (IDLE // 2) - 1):  # a page every 5 minutes, for 55 minutes
        clock.advance(IDLE // 2)
        assert _signed_in(person)
    clock.advance(IDLE // 2 + 1)  # an hour after signing in, however busy
    assert not _signed_in(person)


def test_the_cookie_alone_does_not_keep_it(app, person, oauth, clock):
    """Another browser holding the same cookie is refused too: the row decides."""
    oauth.create_user()
    person.login()
    copy = BrowserActions(app.test_client())
    cookie = person.client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    copy.client.set_cookie(cookie.key, cookie.value)
    assert _signed_in(copy)
    clock.advance(IDLE + 1)
    assert not _signed_in(copy) and not _signed_in(person)


def test_a_use_is_recorded_at_most_once_a_minute(app, person, oauth, clock):
    oauth.create_user()
    person.login()
    with recorded_statements(app) as recorded:
        for _ in range(10):  # ten pages in 50 seconds
            clock.advance(5)
            assert _signed_in(person)
        clock.advance(15)  # 65 s after signing in: now it is recorded, once
        assert _signed_in(person)
        assert _signed_in(person)
    writes = [s for s, _ in recorded if s.lstrip().upper().startswith("UPDATE LOGIN_SESSIONS")]
    assert len(writes) == 1, writes


def test_the_devices_page_says_since_when_and_until_when(app, person, oauth, clock):
    oauth.create_user()
    clock.now = clock.now.replace(microsecond=0)
    signed_in_at = clock.now
    person.login()
    clock.advance(120)
    page = person.client.get("/account/sessions").get_data(as_text=True)
    ends = signed_in_at + dt.timedelta(seconds=120 + IDLE)  # the use just now counts
    assert f"Signed in since <time datetime=\"{signed_in_at.isoformat()}\">" in page
    assert f"{signed_in_at.strftime('%d %b %Y %H:%M')} UTC" in page
    assert f"Ends at <time datetime=\"{ends.isoformat()}\">" in page
    assert "sooner if not used for 10 minutes" in page


def test_the_account_api_gives_the_end_and_hides_ended_browsers(app, oauth, person, clock):
    oauth.create_user()
    bank = oauth.first_party_app(scope="account")
    clock.now = clock.now.replace(microsecond=0)
    person.login()
    token = oauth.login_pair(bank, scope="account")["access_token"]

    def listed() -> list[dict]:
        response = oauth.client.get("/account/api/sessions",
                                    headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 200, response.get_data(True)
        return response.get_json()["sessions"]

    browser = next(s for s in listed() if s["type"] == "browser")
    expected = clock.now + dt.timedelta(seconds=IDLE)
    assert dt.datetime.fromisoformat(browser["expires_at"]) == expected
    app_entry = next(s for s in listed() if s["type"] == "app")
    assert app_entry["expires_at"] is None
    clock.advance(IDLE + 1)
    assert [s["type"] for s in listed()] == ["app"]
