"""User administration, through the ``users`` commands (click's runner) and the admin pages
(the Flask client with an admin's browser session): list and search, show a user's sessions,
consents and audit, update, deactivate and reactivate, revoke a session, sign out
everywhere, revoke a consent (which ends that client's sessions), delete (which ends
everything and keeps the audit trail). Bad input is one line, or a readable page, and
changes nothing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from authserver.extensions import db
from authserver.storage.models import AuditEvent, Consent, LoginSession, TokenFamily, User
from tests.support.admin import audit_events, page_fields, signed_in_admin
from tests.support.authorize import exchange, get_code, start
from tests.support.oauth import PASSWORD, BrowserActions, assert_oauth_error, redirect_params


def everywhere(oauth, spa, person) -> dict[str, Any]:
    """alice signed in everywhere: a browser that consented to the SPA (whose refresh
    family hangs under that browser sign-in), the first-party phone app (a device of its
    own), and an authorization code not yet exchanged."""
    code, verifier = get_code(person, spa)
    spa_tokens = exchange(oauth, spa, code, verifier).get_json()
    phone = oauth.first_party_app(name="Phone")
    phone_tokens = oauth.login_pair(phone)
    params, _ = start(spa)
    unused = redirect_params(person.authorize(**params))["code"]  # consent remembered
    return {"spa_rt": spa_tokens["refresh_token"], "phone": phone,
            "phone_rt": phone_tokens["refresh_token"], "unused_code": unused}


def snapshot(app: Flask) -> dict[str, Any]:
    """What a refused command must leave as it was."""
    with app.app_context():
        session = db.session
        state = {
            "users": [(u.username, u.email, u.name, u.active)
                      for u in session.scalars(select(User).order_by(User.id))],
            "live_families": session.scalar(select(func.count()).select_from(TokenFamily)
                                            .where(TokenFamily.revoked_at.is_(None))),
            "sign_ins": session.scalar(select(func.count()).select_from(LoginSession)
                                       .where(LoginSession.ended_at.is_(None))),
            "consents": session.scalar(select(func.count()).select_from(Consent)),
            "audit": session.scalar(select(func.count()).select_from(AuditEvent)),
        }
        session.remove()
        return state


def family_of(app: Flask, client_id: str) -> str:
    with app.app_context():
        family = db.session.scalar(select(TokenFamily.id).where(
            TokenFamily.client_id == client_id, TokenFamily.revoked_at.is_(None)))
        db.session.remove()
        return family


# The database matters for the deletion (foreign keys, cascades): that test runs on both.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output


# -- the CLI ----------------------------------------------------------------------------
@SQLITE
def test_list_search_and_show(run, app, oauth, spa, person):
    got = everywhere(oauth, spa, person)
    oauth.create_user("bob")
    run("users", "update", "bob", "--email", "bob@example.org", "--name", "Bob Builder")

    lines = ok(run("users", "list")).splitlines()
    assert lines[0].split() == ["USERNAME", "EMAIL", "NAME", "STATE", "ADMIN", "CREATED",
                                "LAST", "SIGN-IN"]
    alice = next(line for line in lines if line.startswith("alice "))
    assert " active " in alice and alice.split()[-1] != "-"  # signed in: a time
    assert [u["username"] for u in json.loads(ok(run("users", "list", "--search", "BUILD",
                                                     "--json")))] == ["bob"]
    assert ok(run("users", "list", "--search", "nobody-like-this")) == "no users match\n"

    shown = json.loads(ok(run("users", "show", "alice", "--json")))
    browser = next(d for d in shown["sessions"] if d["type"] == "browser")
    assert [a["client_id"] for a in browser["applications"]] == [spa.client_id]
    phone = next(d for d in shown["sessions"] if d["type"] == "app")
    assert phone["applications"][0]["client_id"] == got["phone"].client_id
    assert phone["id"] == phone["applications"][0]["session_id"]
    assert {"created_at", "last_used_at"} <= set(phone["applications"][0])
    assert [c["client_id"] for c in shown["consents"]] == [spa.client_id]
    events = {e["event"] for e in shown["recent_events"]}
    assert {"sign_in_succeeded", "consent_granted", "family_created"} <= events
    assert shown["last_sign_in_at"] is not None and shown["state"] == "active"

    text = ok(run("users", "show", "alice"))
    assert "sessions (2):" in text and phone["id"] in text and "consents (1):" in text
    assert "app in browser" in text and spa.client_id in text


def test_revoke_a_session_a_consent_sign_out_and_delete(run, app, oauth, spa, person):
    got = everywhere(oauth, spa, person)
    phone_family = family_of(app, got["phone"].client_id)

    assert "revoked session" in ok(run("users", "revoke-session", "alice", phone_family))
    assert_oauth_error(oauth.refresh(got["phone"], got["phone_rt"]), "invalid_grant")
    rotated = oauth.refresh(spa, got["spa_rt"])  # the other session is untouched
    assert rotated.status_code == 200, rotated.get_data(True)

    out = ok(run("users", "revoke-consent", "alice", spa.client_id))
    assert "ended 1 session(s)" in out
    assert_oauth_error(oauth.refresh(spa, rotated.get_json()["refresh_token"]),
                       "invalid_grant")
    assert_oauth_error(exchange(oauth, spa, got["unused_code"], None), "invalid_grant")
    params, _ = start(spa)
    again = person.authorize(**params)  # signed in still, but asked for consent again
    assert again.status_code == 200 and b"Allow" in again.data
    (revoked,) = audit_events(app, "consent_revoked")
    assert revoked.client_id == spa.client_id and revoked.detail["by"] == {"via": "cli"}
    assert revoked.detail["sessions_revoked"] == 1

    assert person.client.get("/account/sessions").status_code == 200
    assert "signed alice out of 1 device(s)" in ok(run("users", "sign-out", "alice"))
    assert person.client.get("/account/sessions").status_code in (302, 303)  # signed out

    pair = oauth.login_pair(got["phone"])  # the user may sign in again, then is deleted
    out = ok(run("users", "delete", "alice", "--yes"))
    assert out.startswith("deleted alice; signed out 1 device(s)")
    assert_oauth_error(oauth.refresh(got["phone"], pair["refresh_token"]), "invalid_grant")
    assert_oauth_error(oauth.password_login(got["phone"]), "invalid_grant")
    assert "alice" not in ok(run("users", "list"))
    (deleted,) = audit_events(app, "user_deleted")
    assert deleted.detail["deleted_user"]["username"] == "alice"
    assert deleted.user_id is None  # the id may be handed out again (SQLite)
    causes = [e.detail["cause"] for e in audit_events(app, "family_revoked")]
    assert causes.count("user_deleted") == 1 and "revoked_by_admin" in causes
    assert "consent_revoked" in causes
    signed_out = [e.detail["cause"] for e in audit_events(app, "browser_signed_out")]
    assert signed_out == ["signed_out_by_admin"]
    assert len(audit_events(app, "sign_in_succeeded")) >= 3  # the trail stays

    # A new alice is someone else: none of the old events, sessions or consents are hers.
    ok(run("users", "create", "alice", "--password-stdin", input=PASSWORD + "\n"))
    fresh = json.loads(ok(run("users", "show", "alice", "--json")))
    assert [e["event"] for e in fresh["recent_events"]] == ["user_created"]
    assert fresh["sessions"] == [] and fresh["consents"] == []


@SQLITE
def test_update_deactivate_and_reactivate(run, app, oauth):
    oauth.create_user()
    phone = oauth.first_party_app()
    out = ok(run("users", "update", "alice", "--email", "alice@example.com", "--name", "A"))
    assert out == "updated alice: email, name\n"
    assert "unchanged" in ok(run("users", "update", "alice", "--name", "A"))
    (updated,) = audit_events(app, "user_updated")
    assert updated.detail == {"fields": ["email", "name"], "by": {"via": "cli"}}
    ok(run("users", "update", "alice", "--email", ""))  # removed
    assert json.loads(ok(run("users", "show", "alice", "--json")))["email"] is None

    ok(run("users", "deactivate", "alice"))
    assert_oauth_error(oauth.password_login(phone), "invalid_grant")
    assert ok(run("users", "reactivate", "alice")) == "reactivated alice\n"
    assert oauth.password_login(phone).status_code == 200
    assert "already active" in ok(run("users", "reactivate", "alice"))
    assert len(audit_events(app, "user_reactivated")) == 1
    assert run("users", "delete", "alice", input="n\n").exit_code != 0  # asks first
    assert [u for u, *_ in snapshot(app)["users"]] == ["alice"]


@SQLITE
def test_bad_input_is_one_line_and_changes_nothing(run, app, oauth, spa, person):
    everywhere(oauth, spa, person)
    other, _ = oauth.create_client(name="Never consented", grant_types=["client_credentials"])
    before = snapshot(app)
    for args, message in [
        (["users", "show", "nobody"], "no user 'nobody'"),
        (["users", "update", "nobody", "--name", "x"], "no user 'nobody'"),
        (["users", "update", "alice", "--email", "not-an-address"], "--email: email must"),
        (["users", "update", "alice", "--name", "tab\there"], "--name: name must"),
        (["users", "update", "alice"], "nothing to change"),
        (["users", "reactivate", "nobody"], "no user 'nobody'"),
        (["users", "delete", "nobody", "--yes"], "no user 'nobody'"),
        (["users", "sign-out", "nobody"], "no user 'nobody'"),
        (["users", "revoke-session", "alice", "no-such-family"], "no live session"),
        (["users", "revoke-session", "alice", "web-0000"], "no live session"),
        (["users", "revoke-session", "nobody", "x"], "no user 'nobody'"),
        (["users", "revoke-consent", "alice", "no-such-client"], "no client 'no-such-client'"),
        (["users", "revoke-consent", "alice", other.client_id], "has no consent"),
        (["users", "create", "carol", "--password-stdin", "--email", "a b@c"], "--email"),
    ]:
        result = run(*args, input=PASSWORD + "\n")
        assert result.exit_code != 0, args
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], (args, result.output)
        assert "Traceback" not in result.output
    assert snapshot(app) == before


# -- the admin pages ----------------------------------------------------------------------
@pytest.fixture
def admin(app, oauth):
    return signed_in_admin(app, oauth)


def post(admin: BrowserActions, path: str, **data: str):
    """A POST with the admin's CSRF token (read from their own user page's form)."""
    page = admin.client.get("/admin/users/root").get_data(as_text=True)
    token = page_fields(page)["csrf_token"]
    return admin.client.post(path, data={"csrf_token": token, **data})


@SQLITE
def test_pages_show_update_revoke_deactivate_sign_out_and_delete(app, oauth, spa, person,
                                                                  admin):
    got = everywhere(oauth, spa, person)
    listing = admin.client.get("/admin/users").get_data(as_text=True)
    assert 'data-username="alice"' in listing and 'data-username="root"' in listing
    found = admin.client.get("/admin/users?q=ALI").get_data(as_text=True)
    assert 'data-username="alice"' in found and 'data-username="root"' not in found

    page = admin.client.get("/admin/users/alice")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and page.headers["Cache-Control"] == "no-store"
    assert "Budget Planner" in text and "Phone" in text  # sessions and the consent
    assert text.count("data-session-id=") == 2 and f'data-client-id="{spa.client_id}"' in text
    assert "consent_granted" in text  # recent events

    before = snapshot(app)
    bad = post(admin, "/admin/users/alice", email="nope", name="Alice")
    assert bad.status_code == 400 and b'id="email-error"' in bad.data
    assert b'value="nope"' in bad.data  # shown again as typed
    assert snapshot(app) == before
    saved = post(admin, "/admin/users/alice", email="alice@example.com", name="Alice")
    assert saved.status_code == 303 and saved.headers["Location"].endswith("done=saved")
    (updated,) = audit_events(app, "user_updated")
    assert updated.detail["by"]["admin"] == "root" and updated.detail["by"]["via"] == "admin_page"
    assert b"alice@example.com" in admin.client.get("/admin/users/alice").data

    phone_family = family_of(app, got["phone"].client_id)
    revoked = post(admin, f"/admin/users/alice/sessions/{phone_family}/revoke")
    assert revoked.status_code == 303
    assert_oauth_error(oauth.refresh(got["phone"], got["phone_rt"]), "invalid_grant")
    assert post(admin, f"/admin/users/alice/sessions/{phone_family}/revoke").status_code == 404

    gone = post(admin, f"/admin/users/alice/consents/{spa.client_id}/revoke")
    assert gone.status_code == 303 and "consent-revoked" in gone.headers["Location"]
    assert_oauth_error(oauth.refresh(spa, got["spa_rt"]), "invalid_grant")
    assert post(admin, f"/admin/users/alice/consents/{spa.client_id}/revoke").status_code == 404

    for action in ("deactivate", "sign-out", "delete"):  # each asks first
        confirm = admin.client.get(f"/admin/users/alice/{action}")
        assert confirm.status_code == 200 and f'id="confirm-{action}"'.encode() in confirm.data

    assert post(admin, "/admin/users/alice/sign-out").status_code == 303
    assert person.client.get("/account/sessions").status_code in (302, 303)
    assert post(admin, "/admin/users/alice/deactivate").status_code == 303
    assert_oauth_error(oauth.password_login(got["phone"]), "invalid_grant")
    assert b'id="reactivate-user"' in admin.client.get("/admin/users/alice").data
    assert post(admin, "/admin/users/alice/reactivate").status_code == 303
    assert oauth.password_login(got["phone"]).status_code == 200

    deleted = post(admin, "/admin/users/alice/delete")
    assert deleted.status_code == 303 and deleted.headers["Location"] == "/admin/users?done=deleted"
    assert_oauth_error(oauth.password_login(got["phone"]), "invalid_grant")
    assert admin.client.get("/admin/users/alice").status_code == 404
    assert audit_events(app, "user_deleted")[0].detail["by"]["admin"] == "root"


@SQLITE
def test_pages_refuse_forged_posts_unknown_users_and_self_deletion(app, oauth, admin):
    oauth.create_user()
    before = snapshot(app)
    for path in ("/admin/users/alice", "/admin/users/alice/deactivate",
                 "/admin/users/alice/sign-out", "/admin/users/alice/delete",
                 "/admin/users/alice/reactivate"):
        forged = admin.client.post(path, data={"email": "x@example.com"})
        assert forged.status_code == 400 and b"The form has expired" in forged.data, path
    for path in ("/admin/users/nobody", "/admin/users/nobody/delete"):
        assert admin.client.get(path).status_code == 404
        assert post(admin, path).status_code == 404
    mine = post(admin, "/admin/users/root/delete")
    assert mine.status_code == 400 and b"Not your own account" in mine.data
    assert snapshot(app) == before

    outsider = BrowserActions(app.test_client())
    outsider.login()
    assert outsider.client.get("/admin/users").status_code == 403
    assert outsider.client.get("/admin/users/root").status_code == 403
