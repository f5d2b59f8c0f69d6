"""Browser sign-ins that ended by their lifetime (idle, or absolute since the sign-in) are
dead like signed-out ones: ``db purge`` deletes them once the retention has passed (and
``--dry-run`` counts them), and the admin's view of a user (page and ``users show``) no
longer lists them as signed in (docs/design.md, "Hardening")."""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets

import pytest
from flask import Flask
from sqlalchemy import select, update

from authserver.domain import housekeeping
from authserver.domain.clock import utcnow
from authserver.domain.sessions import BrowserLifetime
from authserver.extensions import db
from authserver.storage.models import LoginSession, User
from tests.support.admin import signed_in_admin
from tests.support.oauth import BrowserActions

# The rules are the server's, not the database's: one backend.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
DAY = dt.timedelta(days=1)
# The default settings: idle 1 day, at most 14 days.
LIFETIME = BrowserLifetime(86_400, 1_209_600)


def add_sign_ins(app: Flask, now: dt.datetime) -> dict[str, str]:
    """alice's browser sign-ins, never signed out, each ended (or not) by its lifetime."""
    shapes = {  # name: (created, last seen) before now
        "idle_long_ago": (60 * DAY, 60 * DAY),  # idle since 59 days
        "idle_recently": (10 * DAY, 10 * DAY),  # idle since 9 days
        "too_old": (40 * DAY, dt.timedelta(minutes=1)),  # used, but ended 26 days ago
        "live": (dt.timedelta(hours=1), dt.timedelta(minutes=1)),
    }
    ids = {}
    with app.app_context():
        alice = db.session.scalar(select(User.id).where(User.username == "alice"))
        for name, (created, seen) in shapes.items():
            ids[name] = secrets.token_urlsafe(32)
            db.session.add(LoginSession(id=ids[name], user_id=alice, auth_time=now - created,
                                        created_at=now - created, last_seen_at=now - seen))
        db.session.commit()
        db.session.remove()
    return ids


def remaining(app: Flask) -> set[str]:
    with app.app_context():
        found = set(db.session.scalars(select(LoginSession.id)))
        db.session.remove()
        return found


@SQLITE
def test_purge_deletes_sign_ins_ended_by_their_lifetime_past_the_retention(oauth, app):
    oauth.create_user()
    now = utcnow()
    ids = add_sign_ins(app, now)
    with app.app_context():
        # Without the lifetime (as before): only signed-out rows count.
        assert housekeeping.count_purgeable(db.session, now=now)["login_sessions"] == 0
        by_retention = {days: housekeeping.count_purgeable(
            db.session, retention_days=days, now=now, browser_lifetime=LIFETIME
        )["login_sessions"] for days in (30, 20, 0)}
        assert by_retention == {30: 1, 20: 2, 0: 3}
        counts = housekeeping.purge(db.session, retention_days=30, now=now,
                                    browser_lifetime=LIFETIME)
        assert counts["login_sessions"] == 1
        db.session.remove()
    assert remaining(app) == {ids["idle_recently"], ids["too_old"], ids["live"]}


@SQLITE
def test_db_purge_and_its_dry_run_count_expired_sign_ins(oauth, app, run):
    oauth.create_user()
    ids = add_sign_ins(app, utcnow())

    def login_sessions(output: str) -> int:
        found = re.search(r"\blogin_sessions=(\d+)", output)
        assert found, output
        return int(found.group(1))

    dry = run("db", "purge", "--retention-days", "0", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert login_sessions(dry.output) == 3 and len(remaining(app)) == 4
    real = run("db", "purge", "--retention-days", "0")
    assert real.exit_code == 0, real.output
    assert login_sessions(real.output) == 3
    assert remaining(app) == {ids["live"]}


@SQLITE
def test_the_admin_view_of_a_user_leaves_out_expired_browser_sign_ins(app, oauth, run):
    admin = signed_in_admin(app, oauth)
    oauth.create_user()
    assert BrowserActions(app.test_client()).login().status_code == 303

    def shown() -> tuple[int, list[str]]:
        page = admin.client.get("/admin/users/alice")
        assert page.status_code == 200
        listed = run("users", "show", "alice", "--json")
        assert listed.exit_code == 0, listed.output
        kinds = [d["type"] for d in json.loads(listed.output)["sessions"]]
        return page.get_data(as_text=True).count("data-session-id="), kinds

    assert shown() == (1, ["browser"])
    with app.app_context():  # alice's browser idle for two days (the admin's is not)
        alice = db.session.scalar(select(User.id).where(User.username == "alice"))
        two_days_ago = utcnow() - 2 * DAY
        db.session.execute(update(LoginSession).where(LoginSession.user_id == alice).values(
            last_seen_at=two_days_ago, created_at=two_days_ago))
        db.session.commit()
        db.session.remove()
    assert shown() == (0, [])
