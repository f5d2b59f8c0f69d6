"""Rotation and reuse detection (docs/design.md, "Rotation")."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select

from authserver.extensions import db
from authserver.storage.models import AuditEvent, RefreshToken, TokenFamily
from tests.support.oauth import assert_oauth_error


def _family_state(app, family_id):
    with app.app_context():
        family = db.session.get(TokenFamily, family_id)
        tokens = db.session.scalars(
            select(RefreshToken).where(RefreshToken.family_id == family_id)
            .order_by(RefreshToken.id)
        ).all()
        return family, tokens


def _values(rows):
    """ORM rows as comparable tuples of every column."""
    return [tuple(getattr(row, c.key) for c in row.__table__.columns) for row in rows]


def _sid(oauth, token):
    return oauth.verify_access_token(token)["sid"]


def test_refresh_rotates_and_old_token_is_single_use(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=0)
    first = oauth.login_pair(app_client)

    second = oauth.refresh(app_client, first["refresh_token"])
    assert second.status_code == 200
    body = second.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["refresh_token"] != first["refresh_token"]
    assert body["refresh_token"].startswith("rt_")
    assert _sid(oauth, body["access_token"]) == _sid(oauth, first["access_token"])

    # The new token works; the old one is now reuse and kills the family.
    reuse = oauth.refresh(app_client, first["refresh_token"])
    assert_oauth_error(reuse, "invalid_grant")
    assert_oauth_error(oauth.refresh(app_client, body["refresh_token"]), "invalid_grant")


def test_retry_inside_grace_gets_the_identical_response(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    first = oauth.login_pair(app_client)

    first_response = oauth.refresh(app_client, first["refresh_token"])
    original = first_response.get_json()
    clock.advance(10)  # the last second of the window
    retry = oauth.refresh(app_client, first["refresh_token"])
    assert retry.status_code == 200
    assert retry.get_data() == first_response.get_data()  # byte for byte
    assert retry.headers["Cache-Control"] == "no-store"

    # The family is intact: the new token rotates normally.
    assert oauth.refresh(app_client, original["refresh_token"]).status_code == 200
    with oauth.app.app_context():
        events = db.session.scalars(select(AuditEvent.event)).all()
    assert "rotation_retry" in events


def test_reuse_after_the_window_revokes_every_descendant(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    tokens = [oauth.login_pair(app_client)]
    for _ in range(3):
        clock.advance(1)
        tokens.append(oauth.refresh(app_client, tokens[-1]["refresh_token"]).get_json())
    family_id = _sid(oauth, tokens[0]["access_token"])

    clock.advance(11)  # the first token's window is over
    assert_oauth_error(oauth.refresh(app_client, tokens[0]["refresh_token"]), "invalid_grant")

    family, rows = _family_state(oauth.app, family_id)
    assert family.revoked_at is not None and family.revoke_reason == "reuse_detected"
    assert len(rows) == 4 and all(row.revoked_at is not None for row in rows)
    assert {row.revoke_reason for row in rows} == {"reuse_detected"}
    assert all(row.retry_response is None for row in rows)
    # Every token of the chain is dead, the newest (never used) included, and stays dead.
    for pair in tokens:
        assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]), "invalid_grant")
    assert _values(_family_state(oauth.app, family_id)[1]) == _values(rows)  # no change
    with oauth.app.app_context():
        reuse = db.session.scalars(
            select(AuditEvent).where(AuditEvent.event == "refresh_token_reuse")
        ).all()
    assert len(reuse) == 1 and reuse[0].family_id == family_id
    assert tokens[0]["refresh_token"] not in str(reuse[0].detail)


def test_reused_token_from_grace_window_of_a_rotated_child_is_reuse(oauth, clock):
    """Grace covers a lost response, not a token whose child was already used."""
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=0)
    first = oauth.login_pair(app_client)
    second = oauth.refresh(app_client, first["refresh_token"]).get_json()
    assert oauth.refresh(app_client, second["refresh_token"]).status_code == 200
    assert_oauth_error(oauth.refresh(app_client, first["refresh_token"]), "invalid_grant")


def test_new_refresh_token_keeps_the_family_scope(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read write")
    first = oauth.login_pair(app_client, scope="read write")

    narrowed = oauth.refresh(app_client, first["refresh_token"], scope="read").get_json()
    assert narrowed["scope"] == "read"
    assert oauth.verify_access_token(narrowed["access_token"])["scope"] == "read"

    # RFC 6749 §6: the next refresh may ask for the original scope again.
    clock.advance(1)
    full = oauth.refresh(app_client, narrowed["refresh_token"]).get_json()
    assert full["scope"] == "read write"
    widened = oauth.refresh(app_client, full["refresh_token"], scope="read write admin")
    assert_oauth_error(widened, "invalid_scope")


def test_invalid_scope_changes_nothing(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read")
    first = oauth.login_pair(app_client)
    assert_oauth_error(oauth.refresh(app_client, first["refresh_token"], scope="admin"),
                       "invalid_scope")
    assert oauth.refresh(app_client, first["refresh_token"]).status_code == 200


def test_idle_expiry(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(refresh_idle_ttl=3600, refresh_absolute_ttl=0)
    first = oauth.login_pair(app_client)
    clock.advance(3000)
    second = oauth.refresh(app_client, first["refresh_token"]).get_json()  # slides the window
    clock.advance(3000)
    third = oauth.refresh(app_client, second["refresh_token"]).get_json()
    clock.advance(3601)
    assert_oauth_error(oauth.refresh(app_client, third["refresh_token"]), "invalid_grant")


def test_absolute_expiry_caps_the_idle_window(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(refresh_idle_ttl=3600, refresh_absolute_ttl=5000)
    token = oauth.login_pair(app_client)["refresh_token"]
    clock.advance(3000)
    token = oauth.refresh(app_client, token).get_json()["refresh_token"]
    clock.advance(2001)  # inside the idle window, past the family's absolute expiry
    assert_oauth_error(oauth.refresh(app_client, token), "invalid_grant")


def test_never_expiring_family(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(refresh_idle_ttl=0, refresh_absolute_ttl=0)
    token = oauth.login_pair(app_client)["refresh_token"]
    clock.advance(10 * 365 * 86_400)
    assert oauth.refresh(app_client, token).status_code == 200


def test_expired_token_changes_nothing(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(refresh_idle_ttl=60)
    first = oauth.login_pair(app_client)
    clock.advance(61)
    assert_oauth_error(oauth.refresh(app_client, first["refresh_token"]), "invalid_grant")
    family, rows = _family_state(oauth.app, _sid(oauth, first["access_token"]))
    assert family.revoked_at is None and rows[0].rotated_at is None


def test_another_clients_token_changes_nothing(oauth):
    oauth.create_user()
    mine = oauth.first_party_app(name="mine")
    theirs = oauth.first_party_app(name="theirs")
    pair = oauth.login_pair(mine)
    assert_oauth_error(oauth.refresh(theirs, pair["refresh_token"]), "invalid_grant")
    assert oauth.refresh(mine, pair["refresh_token"]).status_code == 200


def test_only_digests_are_stored(oauth):
    oauth.create_user()
    app_client = oauth.first_party_app()
    pair = oauth.login_pair(app_client)
    rotated = oauth.refresh(app_client, pair["refresh_token"]).get_json()
    with oauth.app.app_context():
        conn = db.session.connection()
        dump = "\n".join(str(tuple(r)) for r in conn.exec_driver_sql(
            "SELECT * FROM refresh_tokens").fetchall())
        assert db.session.scalar(select(func.count()).select_from(RefreshToken)) == 2
    for secret in (pair["refresh_token"], rotated["refresh_token"], rotated["access_token"]):
        assert secret not in dump
        assert secret.encode() not in dump.encode()


def test_sealed_responses_are_deleted_after_the_window(oauth, clock, app):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=10)
    first = oauth.login_pair(app_client)
    second = oauth.refresh(app_client, first["refresh_token"]).get_json()
    family_id = _sid(oauth, first["access_token"])
    _, rows = _family_state(app, family_id)
    assert rows[0].retry_response is not None  # kept during the window...

    # The window is the grace (10 s) plus, on PostgreSQL, the bound on a lock wait (0.5 s).
    clock.advance(11)
    with app.app_context():
        swept = app.extensions["authserver"].sweeper.sweep(db.engine, clock())
    assert swept == 1
    assert oauth.refresh(app_client, second["refresh_token"]).status_code == 200
    _, rows = _family_state(app, family_id)
    assert rows[0].retry_response is None and rows[0].retry_until is None  # ...not after
    # A rotated token's box is ciphertext: it does not contain the tokens it protects.
    assert second["refresh_token"].encode() not in (rows[1].retry_response or b"")


def test_no_token_secret_or_password_reaches_the_log(oauth, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    oauth.create_user()
    app_client = oauth.first_party_app()
    machine, secret = oauth.create_client(grant_types=["client_credentials"])
    pair = oauth.login_pair(app_client)
    rotated = oauth.refresh(app_client, pair["refresh_token"]).get_json()
    oauth.refresh(app_client, pair["refresh_token"])
    oauth.token({"grant_type": "client_credentials", "client_id": machine.client_id,
                 "client_secret": secret})
    oauth.password_login(app_client, password="wrong password!")
    text = caplog.text
    for value in (pair["refresh_token"], pair["access_token"], rotated["refresh_token"],
                  secret, "correct horse battery staple", "wrong password!"):
        assert value not in text


def test_retry_inside_grace_from_another_client_is_refused_and_changes_nothing(oauth, clock):
    oauth.create_user()
    mine = oauth.first_party_app(name="mine", reuse_grace=10)
    theirs = oauth.first_party_app(name="theirs", reuse_grace=10)
    first = oauth.login_pair(mine)
    original = oauth.refresh(mine, first["refresh_token"])
    family_id = _sid(oauth, first["access_token"])
    before = _family_state(oauth.app, family_id)

    clock.advance(1)
    assert_oauth_error(oauth.refresh(theirs, first["refresh_token"]), "invalid_grant")

    after = _family_state(oauth.app, family_id)
    assert after[0].revoked_at is None and _values(after[1]) == _values(before[1])
    # The rightful client's retry still gets its identical response.
    assert oauth.refresh(mine, first["refresh_token"]).get_data() == original.get_data()


def test_widening_scope_changes_nothing(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read write admin")
    first = oauth.login_pair(app_client, scope="read write")
    family_id = _sid(oauth, first["access_token"])
    narrowed = oauth.refresh(app_client, first["refresh_token"], scope="read").get_json()
    before = _family_state(oauth.app, family_id)

    # Within the client's registration, but beyond what this sign-in was granted.
    for wider in ("read write admin", "admin", "read admin"):
        assert_oauth_error(oauth.refresh(app_client, narrowed["refresh_token"], scope=wider),
                           "invalid_scope")

    after = _family_state(oauth.app, family_id)
    assert _values(after[1]) == _values(before[1]) and after[0].scope == "read write"
    assert oauth.refresh(app_client, narrowed["refresh_token"]).get_json()["scope"] == (
        "read write")


def test_idle_window_slides_and_the_family_cap_bounds_every_child(oauth, clock, app):
    oauth.create_user()
    app_client = oauth.first_party_app(refresh_idle_ttl=1000, refresh_absolute_ttl=2500)
    token = oauth.login_pair(app_client)
    family_id = _sid(oauth, token["access_token"])
    start = clock.now
    for _ in range(3):
        clock.advance(900)  # each step is inside the idle window of the previous token
        response = oauth.refresh(app_client, token["refresh_token"])
        if response.status_code != 200:
            break
        token = response.get_json()
    family, rows = _family_state(app, family_id)
    cap = start + dt.timedelta(seconds=2500)
    assert _naive(family.expires_at) == _naive(cap)
    # Sliding: each child's idle expiry is its own birth + 1000 s, but never past the cap.
    assert [_naive(row.expires_at) for row in rows] == [
        _naive(min(start + dt.timedelta(seconds=900 * i + 1000), cap)) for i in range(3)]
    assert len(rows) == 3  # the third refresh (at 2700 s) is past the family's end
    assert_oauth_error(response, "invalid_grant")


def test_never_expiring_family_rotates_for_years(oauth, clock):
    oauth.create_user()
    app_client = oauth.first_party_app(refresh_idle_ttl=0, refresh_absolute_ttl=0)
    pair = oauth.login_pair(app_client)
    family_id = _sid(oauth, pair["access_token"])
    for _ in range(3):
        clock.advance(5 * 365 * 86_400)
        response = oauth.refresh(app_client, pair["refresh_token"])
        assert response.status_code == 200, response.get_data(True)
        pair = response.get_json()
    family, rows = _family_state(oauth.app, family_id)
    assert len(rows) == 4 and family.expires_at is None
    assert all(row.expires_at is None for row in rows)


def _naive(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive UTC, PostgreSQL aware: compare both as naive UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.replace(microsecond=0)


def test_a_public_clients_bare_refresh_names_its_client_through_the_token(oauth):
    """RFC 6749 §6 asks only confidential clients to authenticate on refresh, and
    requests-oauthlib's refresh_token() sends a public client's refresh without client_id."""
    oauth.create_user()
    mobile = oauth.first_party_app()
    pair = oauth.login_pair(mobile)
    bare = oauth.client.post("/oauth/token", data={"grant_type": "refresh_token",
                                                   "refresh_token": pair["refresh_token"]})
    assert bare.status_code == 200, bare.get_json()
    claims = oauth.verify_access_token(bare.get_json()["access_token"])
    assert claims["client_id"] == mobile.client_id
    # It is still single use: the old token again (grace retry) gives the identical body.
    again = oauth.client.post("/oauth/token", data={"grant_type": "refresh_token",
                                                    "refresh_token": pair["refresh_token"]})
    assert again.get_json() == bare.get_json()
