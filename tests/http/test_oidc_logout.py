"""OpenID Connect RP-Initiated Logout 1.0 at ``/logout`` (the ``end_session_endpoint``)."""

from __future__ import annotations

import pytest

from authserver.extensions import db
from authserver.storage.models import LoginSession, TokenFamily
from tests.support.authorize import LOGOUT_RETURN, exchange, get_code
from tests.support.oauth import BrowserActions, assert_oauth_error, form_fields


@pytest.fixture
def signed_in(oauth, person, spa):
    """alice signed in to the SPA through this browser: the token response."""
    code, verifier = get_code(person, spa)
    return exchange(oauth, spa, code, verifier).get_json()


def sid_of(oauth, tokens) -> str:
    return oauth.verify_access_token(tokens["access_token"])["sid"]


def test_logout_with_id_token_hint_ends_the_sign_in_and_returns(oauth, person, spa,
                                                                signed_in, app):
    response = person.client.get("/logout", query_string={
        "id_token_hint": signed_in["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN,
        "state": "a b&c"})
    assert response.status_code == 303
    assert response.headers["Location"] == LOGOUT_RETURN + "?state=a+b%26c"
    with app.app_context():
        family = db.session.get(TokenFamily, sid_of(oauth, signed_in))
        assert family.revoke_reason == "logout"
        assert all(row.ended_at is not None for row in db.session.query(LoginSession))
    assert_oauth_error(oauth.refresh(spa, signed_in["refresh_token"]), "invalid_grant")
    info = oauth.client.get("/oauth/userinfo",
                            headers={"Authorization": f"Bearer {signed_in['access_token']}"})
    assert info.status_code == 401
    assert b"Sign in" in person.client.get("/").data  # the browser is signed out


def test_logout_by_post_with_the_hint(oauth, person, signed_in):
    response = person.client.post("/logout", data={
        "id_token_hint": signed_in["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN,
        "csrf_token": form_fields(person.client.get("/logout").get_data(as_text=True))[
            "csrf_token"]})
    assert response.status_code == 303 and response.headers["Location"] == LOGOUT_RETURN


def test_a_hint_for_another_user_asks_before_signing_out(oauth, person, spa, signed_in, app):
    """§2: the OP MUST ask when the ID token does not belong to the signed-in user."""
    oauth.create_user("bob")
    other = BrowserActions(app.test_client())
    other.login("bob")
    query = {"id_token_hint": signed_in["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN,
             "state": "s1"}
    page = other.client.get("/logout", query_string=query)
    assert page.status_code == 200 and b"Sign out?" in page.data
    assert b"Budget Planner" in page.data
    with app.app_context():
        assert db.session.get(TokenFamily, sid_of(oauth, signed_in)).revoked_at is None
    # Confirming carries the hint through: bob's browser and alice's app session end.
    fields = form_fields(page.get_data(as_text=True))
    assert fields["id_token_hint"] == signed_in["id_token"]
    done = other.client.post("/logout", data=fields)
    assert done.status_code == 303 and done.headers["Location"] == LOGOUT_RETURN + "?state=s1"
    with app.app_context():
        assert db.session.get(TokenFamily, sid_of(oauth, signed_in)).revoke_reason == "logout"


def test_a_hint_without_a_browser_session_asks_first(oauth, signed_in, app):
    """§2: the hint belongs to no sign-in of this browser, so the OP MUST ask. A leaked ID
    token in a link or an <img> therefore ends nothing; a click on "Sign out" does."""
    stranger = BrowserActions(app.test_client())
    query = {"id_token_hint": signed_in["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN}
    page = stranger.client.get("/logout", query_string=query)
    assert page.status_code == 200 and b"Sign out?" in page.data
    with app.app_context():
        assert db.session.get(TokenFamily, sid_of(oauth, signed_in)).revoked_at is None
    done = stranger.client.post("/logout", data=form_fields(page.get_data(as_text=True)))
    assert done.status_code == 303 and done.headers["Location"] == LOGOUT_RETURN
    with app.app_context():
        assert db.session.get(TokenFamily, sid_of(oauth, signed_in)).revoke_reason == "logout"


def test_a_hint_from_another_browser_of_the_same_user_asks_first(oauth, signed_in, spa, app):
    """Signed in as the same person, but the ID token names a sign-in made elsewhere."""
    laptop = BrowserActions(app.test_client())
    laptop.login()
    page = laptop.client.get("/logout", query_string={
        "id_token_hint": signed_in["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN})
    assert page.status_code == 200 and b"Sign out?" in page.data
    with app.app_context():
        assert db.session.get(TokenFamily, sid_of(oauth, signed_in)).revoked_at is None
    assert b"Hello" in laptop.client.get("/").data  # still signed in


def test_a_re_authentication_in_this_browser_still_counts_as_this_browser(oauth, person,
                                                                         signed_in, app):
    """prompt=login makes a new browser sign-in; the app sign-in made before it is still
    one of this browser's, so the RP's logout goes through without asking."""
    person.login()  # the same person signs in again in this browser
    response = person.client.get("/logout", query_string={
        "id_token_hint": signed_in["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN})
    assert response.status_code == 303, response.get_data(True)[:300]
    with app.app_context():
        assert db.session.get(TokenFamily, sid_of(oauth, signed_in)).revoke_reason == "logout"


def test_an_expired_hint_is_still_accepted(oauth, person, signed_in, clock):
    clock.advance(7200)
    response = person.client.get("/logout", query_string={
        "id_token_hint": signed_in["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN})
    assert response.status_code == 303


def test_bad_logout_requests_show_an_error_page_and_change_nothing(oauth, person, spa,
                                                                   signed_in, app, subtests):
    id_token = signed_in["id_token"]
    head, payload, signature = id_token.split(".")
    other, _ = oauth.create_client(name="Other", public=True,
                                   redirect_uris=["https://other.example/cb"],
                                   post_logout_redirect_uris=["https://other.example/bye"])
    cases = {
        "garbage-hint": {"id_token_hint": "not-a-jwt"},
        "tampered-hint": {"id_token_hint": f"{head}.{payload}.{signature[::-1]}"},
        "access-token-as-hint": {"id_token_hint": signed_in["access_token"]},
        "unregistered-return": {"id_token_hint": id_token,
                                "post_logout_redirect_uri": "https://evil.example/"},
        "another-clients-return": {"id_token_hint": id_token,
                                   "post_logout_redirect_uri": "https://other.example/bye"},
        "return-prefix": {"id_token_hint": id_token,
                          "post_logout_redirect_uri": LOGOUT_RETURN + "/x"},
        "return-without-client": {"post_logout_redirect_uri": LOGOUT_RETURN},
        "two-clients": {"id_token_hint": id_token, "client_id": other.client_id},
        "unknown-client": {"client_id": "cl_nobody", "post_logout_redirect_uri": LOGOUT_RETURN},
    }
    for case, query in cases.items():
        with subtests.test(case):
            response = person.client.get("/logout", query_string=query)
            assert response.status_code == 400 and "Location" not in response.headers
            assert b"Sign-out request not valid" in response.data
    with app.app_context():
        assert db.session.get(TokenFamily, sid_of(oauth, signed_in)).revoked_at is None
    assert b"Sign out" in person.client.get("/").data  # still signed in


def test_logout_with_client_id_only_asks_then_returns(oauth, person, spa, signed_in):
    page = person.client.get("/logout", query_string={
        "client_id": spa.client_id, "post_logout_redirect_uri": LOGOUT_RETURN, "state": "s"})
    assert page.status_code == 200 and b"Sign out?" in page.data
    done = person.client.post("/logout", data=form_fields(page.get_data(as_text=True)))
    assert done.status_code == 303 and done.headers["Location"] == LOGOUT_RETURN + "?state=s"


def test_plain_logout_asks_and_needs_csrf(oauth, person, signed_in, app):
    page = person.client.get("/logout")
    assert page.status_code == 200 and b"Sign out?" in page.data
    assert person.client.post("/logout", data={}).status_code == 400
    assert b"Sign out" in person.client.get("/").data  # not signed out by a forged form
    done = person.client.post("/logout", data=form_fields(page.get_data(as_text=True)))
    assert done.status_code == 200 and b"You are signed out" in done.data
    with app.app_context():
        # Signing the browser out does not end the app's own session (its refresh family).
        assert db.session.get(TokenFamily, sid_of(oauth, signed_in)).revoked_at is None
