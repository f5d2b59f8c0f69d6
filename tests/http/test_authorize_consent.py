"""Consent and re-authentication at ``/oauth/authorize``: remembered consent, ``prompt``
(none, login, consent) and ``max_age`` (OIDC Core §3.1.2.1, §3.1.2.3-3.1.2.4)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from sqlalchemy import select

from authserver.extensions import db
from authserver.storage.models import AuditEvent, Consent
from tests.support.authorize import ISSUER, REDIRECT, exchange, sign_in_and_consent, start
from tests.support.oauth import form_fields, redirect_params


def is_login_redirect(response) -> bool:
    return response.status_code == 303 and response.headers["Location"].startswith("/login?")


def is_consent_page(response) -> bool:
    return response.status_code == 200 and b'id="allow"' in response.data


def test_the_consent_page_names_the_client_and_each_scope_in_plain_words(person, spa):
    params, _ = start(spa, scope="openid email offline_access read")
    person.login()
    page = person.authorize(**params)
    assert is_consent_page(page)
    html = page.get_data(as_text=True)
    assert "Allow Budget Planner to access your account?" in html
    for text in ("Confirm who you are when you sign in", "See your email address",
                 "Stay signed in", "Use the \u201cread\u201d permission"):
        assert text in html
    assert "app.example.com" in html  # where the user will be sent back
    assert "use another account" in html
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_consent_is_remembered_per_user_client_and_scope_set(person, spa, app):
    params, _ = start(spa, scope="openid profile")
    sign_in_and_consent(person, params)
    assert "code" in redirect_params(person.authorize(**params))
    narrower = person.authorize(**{**params, "scope": "openid"})
    assert "code" in redirect_params(narrower)
    assert is_consent_page(person.authorize(**{**params, "scope": "openid profile read"}))
    assert is_consent_page(person.authorize(**{**params, "prompt": "consent"}))
    with app.app_context():
        rows = db.session.scalars(select(Consent)).all()
        assert [(row.client_id, row.scope) for row in rows] == [(spa.client_id,
                                                                 "openid profile")]
        events = db.session.scalars(select(AuditEvent.event)).all()
        assert "consent_granted" in events


def test_consent_for_one_client_is_not_consent_for_another(person, spa, oauth):
    params, _ = start(spa, scope="openid")
    sign_in_and_consent(person, params)
    other, _ = oauth.create_client(name="Other", public=True, redirect_uris=[REDIRECT],
                                   scope="openid")
    other_params, _ = start(other, scope="openid")
    assert is_consent_page(person.authorize(**other_params))


def test_denied_consent_redirects_access_denied_and_remembers_nothing(person, spa, app):
    params, _ = start(spa)
    person.login()
    denied = redirect_params(person.decide(person.authorize(**params), "deny"))
    assert denied == {"error": "access_denied", "error_description": "the user denied the request",
                      "state": "xyz-123", "iss": ISSUER}
    assert is_consent_page(person.authorize(**params))
    with app.app_context():
        assert db.session.scalars(select(Consent)).all() == []


def test_the_consent_form_needs_csrf_and_a_signed_in_user(person, spa, app):
    params, _ = start(spa)
    person.login()
    fields = form_fields(person.authorize(**params).get_data(as_text=True))
    forged = person.client.post("/oauth/authorize", data={**fields, "csrf_token": "x",
                                                          "decision": "allow"})
    assert forged.status_code == 400 and "Location" not in forged.headers
    stranger = app.test_client()
    stranger.get("/login")  # a session with its own CSRF token, not signed in
    with stranger.session_transaction() as cookie_session:
        token = cookie_session["csrf"]
    not_signed_in = stranger.post("/oauth/authorize", data={**fields, "csrf_token": token,
                                                            "decision": "allow"})
    assert is_login_redirect(not_signed_in)


def test_a_tampered_consent_form_is_validated_again(person, spa):
    params, _ = start(spa)
    person.login()
    fields = form_fields(person.authorize(**params).get_data(as_text=True))
    wider = person.client.post("/oauth/authorize", data={**fields, "scope": "openid admin",
                                                         "decision": "allow"})
    assert redirect_params(wider)["error"] == "invalid_scope"
    elsewhere = person.client.post("/oauth/authorize", data={
        **fields, "redirect_uri": "https://evil.example/cb", "decision": "allow"})
    assert elsewhere.status_code == 400 and "Location" not in elsewhere.headers


def test_first_party_clients_skip_consent_unless_prompt_consent(oauth, person):
    oauth.create_user()
    bank, _ = oauth.create_client(name="Bank web", public=True, first_party=True,
                                  redirect_uris=[REDIRECT], scope="read")
    params, verifier = start(bank, scope="read", nonce=None)
    first = person.authorize(**params)
    signed_in = person.login(next_url=redirect_params(first)["next"])
    code = redirect_params(person.client.get(signed_in.headers["Location"]))["code"]
    body = exchange(oauth, bank, code, verifier).get_json()
    assert "refresh_token" in body and "id_token" not in body
    assert is_consent_page(person.authorize(**{**params, "prompt": "consent"}))


def test_prompt_none_never_shows_a_page(person, spa):
    params, _ = start(spa, prompt="none")
    assert redirect_params(person.authorize(**params))["error"] == "login_required"
    person.login()
    answer = redirect_params(person.authorize(**params))
    assert answer["error"] == "consent_required" and answer["state"] == "xyz-123"
    person.decide(person.authorize(**{**params, "prompt": "consent"}))
    assert "code" in redirect_params(person.authorize(**params))


def test_prompt_login_asks_for_a_fresh_sign_in_once(person, spa, clock):
    params, _ = start(spa, prompt="login")
    sign_in_and_consent(person, start(spa)[0])
    clock.advance(600)
    forced = person.authorize(**params)
    assert is_login_redirect(forced)
    back = person.login(next_url=redirect_params(forced)["next"])
    answer = person.client.get(back.headers["Location"])
    assert answer.status_code == 302 and "code" in redirect_params(answer)
    # The fresh sign-in counts once; the next prompt=login asks again.
    assert is_login_redirect(person.authorize(**params))


def test_a_sign_in_long_ago_does_not_satisfy_prompt_login(person, spa, clock):
    person.login()  # signed in directly, never used for an authorization request
    clock.advance(3600)
    params, _ = start(spa, prompt="login")
    assert is_login_redirect(person.authorize(**params))


@pytest.mark.parametrize("ask", [{"prompt": "login"}, {"max_age": "0"}, {"max_age": "1"}],
                         ids=["prompt-login", "max_age-0", "max_age-1"])
def test_a_sign_in_made_for_something_else_is_not_fresh(person, spa, clock, ask):
    """Only the request that sent the person to the sign-in page counts it as fresh."""
    person.login()  # directly, seconds ago
    clock.advance(3)
    params, _ = start(spa, **ask)
    assert is_login_redirect(person.authorize(**params))
    # Neither does a sign-in made for another authorization request.
    other, _ = start(spa, **ask, state="other")
    person.login(next_url="/oauth/authorize?" + urlencode(other))
    clock.advance(3)
    assert is_login_redirect(person.authorize(**params))
    # The request that sent the person to sign in does.
    person.login(next_url="/oauth/authorize?" + urlencode(params))
    assert not is_login_redirect(person.authorize(**params))


def test_max_age(person, spa, clock):
    params, _ = start(spa)
    sign_in_and_consent(person, params)
    clock.advance(120)
    assert is_login_redirect(person.authorize(**{**params, "max_age": "60"}))
    assert "code" in redirect_params(person.authorize(**{**params, "max_age": "600"}))
    assert is_login_redirect(person.authorize(**{**params, "max_age": "0"}))
    expired = redirect_params(person.authorize(**{**params, "max_age": "60", "prompt": "none"}))
    assert expired["error"] == "login_required"


def test_login_hint_fills_in_the_username(person, spa):
    params, _ = start(spa, login_hint="alice")
    first = person.authorize(**params)
    page = person.client.get(first.headers["Location"])
    assert b'value="alice"' in page.data
