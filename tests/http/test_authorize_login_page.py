"""The sign-in page the authorization endpoint sends people to (``/login``)."""

from __future__ import annotations

from sqlalchemy import select

from authserver.extensions import db
from authserver.storage.models import AuditEvent, LoginSession
from tests.support.authorize import start
from tests.support.oauth import PASSWORD, form_fields, redirect_params


def test_the_page_is_a_labelled_csrf_protected_form(person):
    page = person.client.get("/login")
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert '<label for="username">' in html and '<label for="password">' in html
    assert 'autocomplete="current-password"' in html and 'lang="en"' in html
    assert form_fields(html)["csrf_token"]
    assert "/static/style.css" in html
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cache-Control"] == "no-store"
    css = person.client.get("/static/style.css")
    assert css.status_code == 200 and "no-store" not in css.headers.get("Cache-Control", "")


def test_a_form_without_the_csrf_token_is_refused(oauth, person, app):
    oauth.create_user()
    person.client.get("/login")
    response = person.client.post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400 and "Set-Cookie" not in response.headers
    assert b"This form has expired" in response.data and b"style.css" in response.data
    with app.app_context():
        assert db.session.scalars(select(LoginSession)).all() == []


def test_a_wrong_password_stays_on_the_page(oauth, person, spa, app):
    params, _ = start(spa)
    next_url = redirect_params(person.authorize(**params))["next"]
    response = person.login(password="not the password", next_url=next_url)
    assert response.status_code == 401 and "Location" not in response.headers
    html = response.get_data(as_text=True)
    assert 'role="alert"' in html and "don&#39;t match" in html
    assert form_fields(html)["next"] == next_url  # the way back is kept
    assert 'value="alice"' in html
    with app.app_context():
        failure = db.session.scalars(select(AuditEvent)
                                     .where(AuditEvent.event == "sign_in_failed")).one()
        assert "not the password" not in str(failure.detail)
    assert person.authorize(**params).headers["Location"].startswith("/login?")


def test_next_only_goes_to_local_paths(oauth, person):
    oauth.create_user()
    for evil in ("https://evil.example/", "//evil.example/x", "/\\evil.example",
                 "/\t/evil.example", "javascript:alert(1)", "http:/evil.example"):
        done = person.login(next_url=evil)
        assert done.status_code == 303 and done.headers["Location"] == "/", evil
    done = person.login(next_url="/oauth/authorize?client_id=x")
    assert done.headers["Location"] == "/oauth/authorize?client_id=x"


def test_session_cookie_flags_and_a_new_session_at_sign_in(oauth, person):
    oauth.create_user()
    person.client.get("/login")
    before = person.client.get_cookie("authserver_session").value
    response = person.login()
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # development; production sets Secure (test_config)
    assert person.client.get_cookie("authserver_session").value != before


def test_production_cookies_are_secure(database_url, keys_dir):
    from authserver.app import create_app
    from tests.support.databases import app_settings

    app = create_app(app_settings(database_url, keys_dir, env="production",
                                issuer="https://auth.example.com"))
    try:
        response = app.test_client().get("/login", base_url="https://auth.example.com")
        cookie = response.headers["Set-Cookie"]
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    finally:
        with app.app_context():
            db.engine.dispose()
