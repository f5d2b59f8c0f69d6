"""The audit trail has a row per security event; purge deletes only what is dead."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from click.testing import CliRunner
from flask.cli import ScriptInfo
from sqlalchemy import func, select

from authserver.cli import cli
from authserver.domain import housekeeping
from authserver.extensions import db
from authserver.storage.models import AuditEvent, RefreshToken, TokenFamily

from .helpers import PASSWORD


@pytest.fixture
def run(app):
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(cli, list(args), input=input,
                             obj=ScriptInfo(create_app=lambda: app))

    return invoke


def events(app, name):
    with app.app_context():
        return db.session.scalars(select(AuditEvent).where(AuditEvent.event == name)).all()


def test_each_security_event_writes_one_row(oauth, app, clock, run):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=5)
    oauth.password_login(app_client, password="not the password at all")
    assert len(events(app, "sign_in_failed")) == 1
    pair = oauth.login_pair(app_client)
    assert len(events(app, "sign_in_succeeded")) == 1
    assert len(events(app, "family_created")) == 1
    second = oauth.refresh(app_client, pair["refresh_token"]).get_json()
    oauth.refresh(app_client, pair["refresh_token"])  # retry inside grace
    assert len(events(app, "rotation_retry")) == 1
    clock.advance(6)
    oauth.refresh(app_client, pair["refresh_token"])  # reuse
    reuse = events(app, "refresh_token_reuse")
    assert len(reuse) == 1 and reuse[0].family_id
    revoked = events(app, "family_revoked")
    assert [e.detail["cause"] for e in revoked] == ["reuse_detected"]
    run("users", "deactivate", "alice")
    assert len(events(app, "user_deactivated")) == 1
    with app.app_context():
        text = " ".join(json.dumps(e.detail) for e in db.session.scalars(select(AuditEvent)))
    for secret in (pair["refresh_token"], second["refresh_token"], pair["access_token"],
                   PASSWORD):
        assert secret not in text


def test_audit_list_filters(oauth, run, app):
    oauth.create_user()
    app_client = oauth.first_party_app()
    oauth.login_pair(app_client)
    oauth.password_login(app_client, password="wrong password here")
    rows = [json.loads(line) for line in run("audit", "list", "--json").output.splitlines()]
    assert {"sign_in_succeeded", "family_created", "sign_in_failed", "user_created"} <= {
        r["event"] for r in rows}
    only = run("audit", "list", "--event", "sign_in_failed", "--json").output.splitlines()
    assert len(only) == 1 and json.loads(only[0])["client_id"] == app_client.client_id
    mine = run("audit", "list", "--user", "alice", "--since", "1h", "--json").output
    assert all(json.loads(line)["user"] == "alice" for line in mine.splitlines())
    assert run("audit", "list", "--since", "2999-01-01T00:00:00").output == ""
    bad = run("audit", "list", "--since", "last tuesday")
    assert bad.exit_code != 0 and "--since" in bad.output
    assert run("audit", "list", "--user", "nobody").exit_code != 0


def test_reset_password_revokes_everything(oauth, run, app):
    oauth.create_user()
    app_client = oauth.first_party_app()
    pair = oauth.login_pair(app_client)
    result = run("users", "reset-password", "alice", "--password-stdin",
                 input="another good password\n")
    assert result.exit_code == 0 and "revoked 1" in result.output
    assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 400
    assert oauth.password_login(app_client).status_code == 400
    assert oauth.password_login(app_client, password="another good password").status_code == 200
    assert len(events(app, "password_reset")) == 1


def test_purge_deletes_dead_sessions_only(oauth, app, clock, run):
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=0)
    dead = oauth.login_pair(app_client)
    live = oauth.login_pair(app_client)
    oauth.refresh(app_client, dead["refresh_token"])
    oauth.refresh(app_client, dead["refresh_token"])  # reuse: the family dies
    with app.app_context():
        counts = housekeeping.purge(db.session, retention_days=30, now=clock.now)
        assert counts["token_families"] == 0  # revoked only now: kept for 30 days
        later = clock.now + dt.timedelta(days=31)  # the live family (90 days) is not dead
        counts = housekeeping.purge(db.session, retention_days=30, batch_size=1, now=later)
        assert counts["token_families"] == 1 and counts["refresh_tokens"] == 2
        remaining = db.session.scalar(select(func.count()).select_from(TokenFamily))
        assert remaining == 1
        assert db.session.scalar(select(func.count()).select_from(RefreshToken)) == 1
    assert oauth.refresh(app_client, live["refresh_token"]).status_code == 200
    out = run("db", "purge")
    assert out.exit_code == 0 and "token_families=" in out.output
