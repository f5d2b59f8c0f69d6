"""The audit trail has one row per security event, and never a secret; purge deletes only
what is dead, in batches that never lock the token endpoint out."""

from __future__ import annotations

import datetime as dt
import json
import logging
import secrets
import threading

from sqlalchemy import func, insert, select

from authserver.domain import credentials as creds
from authserver.domain import housekeeping, pkce
from authserver.extensions import db
from authserver.storage.models import (
    AuditEvent,
    AuthorizationCode,
    DPoPProofJti,
    LoginSession,
    LogoutMessage,
    RefreshToken,
    TokenFamily,
    User,
)
from tests.support.oauth import PASSWORD, BrowserActions, basic, redirect_params
from tests.support.sessions import (
    FIREFOX_MAC,
    IPHONE_APP,
    REDIRECT,
    device_login,
    device_refresh,
    introspect,
    post_form,
    revoke,
)

NEW_PASSWORD = "a brand new passphrase"
RESET_PASSWORD = "an operator's reset passphrase"


class Trail:
    """Reads the audit events written since the last look."""

    def __init__(self, app) -> None:
        self.app = app
        self.seen = 0

    def new(self) -> list[AuditEvent]:
        with self.app.app_context():
            rows = db.session.scalars(select(AuditEvent).where(AuditEvent.id > self.seen)
                                      .order_by(AuditEvent.id)).all()
            db.session.expunge_all()
        if rows:
            self.seen = rows[-1].id
        return list(rows)

    def expect(self, *names: str) -> list[AuditEvent]:
        rows = self.new()
        assert [r.event for r in rows] == list(names), [(r.event, r.detail) for r in rows]
        for row in rows:
            assert row.created_at is not None
        return rows


def user_id(app, name="alice") -> int:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.username == name))


def test_each_security_event_is_one_row_with_its_context(oauth, app, clock, run):
    trail = Trail(app)
    oauth.create_user()
    alice = user_id(app)
    (created,) = trail.expect("user_created")
    assert created.user_id == alice
    bank = oauth.first_party_app(name="BankApp", scope="read account", reuse_grace=5)
    trail.expect("client_created")

    # sign-in failures: a known user with a wrong password, an unknown user, the login page
    oauth.token({"grant_type": "password", "username": "alice", "password": "wrong password!",
                 "client_id": bank.client_id}, {"User-Agent": IPHONE_APP})
    (failed,) = trail.expect("sign_in_failed")
    assert failed.user_id == alice and failed.client_id == bank.client_id
    assert failed.detail["cause"] == "wrong_password"
    assert failed.detail["device"]["user_agent_family"] == "BankApp on iOS"
    oauth.password_login(bank, username="mallory")
    (unknown,) = trail.expect("sign_in_failed")
    assert unknown.user_id is None and unknown.detail["cause"] == "unknown_user"
    assert "mallory" not in json.dumps(unknown.detail)  # typed names are never recorded
    BrowserActions(app.test_client()).login(password="wrong password!")
    (page_failed,) = trail.expect("sign_in_failed")
    assert page_failed.user_id == alice and page_failed.detail["via"] == "login_page"
    assert page_failed.detail["ip"] == "127.0.0.1"

    # a sign-in: one success and one new family, each with the device
    phone = device_login(oauth, bank, IPHONE_APP, device_id="iphone-0001")
    signed_in, family = trail.expect("sign_in_succeeded", "family_created")
    sid = oauth.verify_access_token(phone["access_token"])["sid"]
    assert signed_in.user_id == alice and signed_in.client_id == bank.client_id
    assert family.family_id == sid and family.user_id == alice
    assert family.detail["device"] == {"device_id": "iphone-0001", "ip": "127.0.0.1",
                                       "user_agent_family": "BankApp on iOS", "dpop_jkt": None}

    # rotation is not an event; a retry inside grace is; reuse after it revokes
    second = device_refresh(oauth, bank, phone["refresh_token"], IPHONE_APP, "iphone-0001")
    assert second.status_code == 200
    trail.expect()
    device_refresh(oauth, bank, phone["refresh_token"], IPHONE_APP, "iphone-0001")
    (retry,) = trail.expect("rotation_retry")
    assert retry.family_id == sid and retry.detail["presented"]["device_id"] == "iphone-0001"
    clock.advance(6)
    device_refresh(oauth, bank, phone["refresh_token"], IPHONE_APP, "iphone-0001")
    revoked, reuse = trail.expect("family_revoked", "refresh_token_reuse")
    assert reuse.family_id == sid and reuse.detail["bound"]["device_id"] == "iphone-0001"
    assert revoked.family_id == sid and revoked.detail["cause"] == "reuse_detected"
    assert revoked.detail["device"]["user_agent_family"] == "BankApp on iOS"

    # a refresh from another device: binding mismatch, and (default policy) revocation
    tablet = device_login(oauth, bank, IPHONE_APP, device_id="ipad-00000001")
    trail.expect("sign_in_succeeded", "family_created")
    device_refresh(oauth, bank, tablet["refresh_token"], FIREFOX_MAC, "ipad-00000001")
    mismatch, mismatch_revoked = trail.expect("binding_mismatch", "family_revoked")
    assert mismatch.detail["mismatched"] == ["user_agent"]
    assert mismatch.detail["presented"]["user_agent_family"] == "Firefox on macOS"
    assert mismatch_revoked.detail["cause"] == "binding_mismatch"

    # revocation by the client (RFC 7009), with who asked
    laptop = oauth.login_pair(bank)
    trail.new()
    revoke(oauth.client, bank, laptop["refresh_token"])
    (by_client,) = trail.expect("family_revoked")
    assert by_client.detail["cause"] == "revoked_by_client"
    assert by_client.detail["by"]["via"] == "revocation_endpoint"

    # the account page: sign-in, password change (ends the other browser), sign-out
    other = BrowserActions(app.test_client())
    other.login()
    (page_sign_in,) = trail.expect("sign_in_succeeded")
    assert page_sign_in.detail["login_session"].startswith("web-")
    me = BrowserActions(app.test_client())
    me.login()
    trail.expect("sign_in_succeeded")
    post_form(me, "/account/password", "/account/password", current_password=PASSWORD,
              new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    ended, changed = trail.expect("browser_signed_out", "password_changed")
    assert ended.detail["cause"] == "password_changed" and changed.user_id == alice
    assert changed.detail["devices_signed_out"] == 1
    post_form(me, "/account/sessions", "/account/sessions/sign-out-everywhere")
    (everywhere,) = trail.expect("browser_signed_out")
    assert everywhere.detail["cause"] == "signed_out_everywhere"
    assert everywhere.detail["by"]["via"] == "account_page"

    # operators: reset password, deactivate
    device_login(oauth, bank, IPHONE_APP, password=NEW_PASSWORD)
    trail.new()
    run("users", "reset-password", "alice", "--password-stdin", input=RESET_PASSWORD + "\n")
    reset_revoked, reset = trail.expect("family_revoked", "password_reset")
    assert reset_revoked.detail["cause"] == "password_reset"
    assert reset.detail == {"devices_signed_out": 1, "by": {"via": "cli"}}
    device_login(oauth, bank, IPHONE_APP, password=RESET_PASSWORD)
    trail.new()
    run("users", "deactivate", "alice")
    deactivated_revoked, deactivated = trail.expect("family_revoked", "user_deactivated")
    assert deactivated_revoked.detail["cause"] == "user_deactivated"
    assert deactivated.user_id == alice and deactivated.detail["devices_signed_out"] == 1


def test_no_secret_ever_reaches_the_audit_trail_or_the_logs(oauth, app, run, caplog):
    """A whole life: clients, sign-ins, rotation, reuse, DPoP, code flow, revocation,
    introspection, password change and reset, deactivation. Every credential produced is
    then searched for in every audit row and in everything logged (SQL included)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")  # SQL and its parameters
    secrets_seen: list[str] = [PASSWORD, NEW_PASSWORD, RESET_PASSWORD, "wrong password!"]
    oauth.create_user()
    bank = oauth.first_party_app(name="BankApp", scope="read account", reuse_grace=0)
    resource, resource_secret = oauth.create_client(
        name="Orders API", grant_types=["client_credentials"], allow_introspection=True)
    web, web_secret = oauth.create_client(name="Web banking", redirect_uris=[REDIRECT],
                                          scope="read account")
    secrets_seen += [resource_secret, web_secret]

    oauth.password_login(bank, password="wrong password!")
    oauth.password_login(bank, username=PASSWORD, password=PASSWORD)  # password as name
    phone = device_login(oauth, bank, IPHONE_APP)
    rotated = device_refresh(oauth, bank, phone["refresh_token"], IPHONE_APP).get_json()
    device_refresh(oauth, bank, phone["refresh_token"], IPHONE_APP)  # reuse
    secrets_seen += [phone["refresh_token"], phone["access_token"], rotated["refresh_token"],
                     rotated["access_token"]]

    from tests.support.dpop import ProofKey

    proof = ProofKey().proof()
    bound = oauth.token({"grant_type": "password", "username": "alice", "password": PASSWORD,
                         "client_id": bank.client_id}, {"DPoP": proof}).get_json()
    secrets_seen += [proof, bound["access_token"], bound["refresh_token"]]

    me = BrowserActions(app.test_client())
    me.login(password="wrong password!")
    me.login()
    verifier = secrets.token_urlsafe(48)
    consent = me.authorize(response_type="code", client_id=web.client_id, redirect_uri=REDIRECT,
                           scope="read", state="s", code_challenge=pkce.s256(verifier),
                           code_challenge_method="S256")
    code = redirect_params(me.decide(consent))["code"]
    through_web = oauth.token({"grant_type": "authorization_code", "code": code,
                               "redirect_uri": REDIRECT, "code_verifier": verifier},
                              {"Authorization": basic(web.client_id, web_secret)}).get_json()
    assert "refresh_token" in through_web, through_web
    secrets_seen += [code, verifier, through_web["access_token"], through_web["refresh_token"]]
    machine = oauth.token({"grant_type": "client_credentials"}, {
        "Authorization": basic(resource.client_id, resource_secret)}).get_json()
    secrets_seen.append(machine["access_token"])
    for token in (bound["access_token"], bound["refresh_token"], machine["access_token"]):
        introspect(oauth.client, resource.client_id, resource_secret, token)
    revoke(oauth.client, bank, bound["access_token"])
    post_form(me, "/account/password", "/account/password", current_password=PASSWORD,
              new_password=NEW_PASSWORD, confirm_password=NEW_PASSWORD)
    post_form(me, "/account/sessions", "/account/sessions/sign-out-everywhere")
    run("users", "reset-password", "alice", "--password-stdin", input=RESET_PASSWORD + "\n")
    run("users", "deactivate", "alice")
    listed = run("audit", "list", "--json", "--limit", "1000").output

    with app.app_context():
        rows = db.session.scalars(select(AuditEvent)).all()
        trail = "\n".join(json.dumps({"event": r.event, "user": r.user_id, "client": r.client_id,
                                      "family": r.family_id, "detail": r.detail})
                          for r in rows)
        session_ids = db.session.scalars(select(LoginSession.id)).all()
    assert len(rows) > 20 and "SELECT" in caplog.text  # every statement was logged
    secrets_seen += session_ids  # the browser sign-in ids the cookies carry
    for secret in secrets_seen:
        assert secret not in trail, f"secret in audit trail: {secret[:12]}..."
        assert secret not in listed, f"secret in `audit list`: {secret[:12]}..."
        assert secret not in caplog.text, f"secret in logs: {secret[:12]}..."


def test_audit_list_filters(oauth, run, app):
    oauth.create_user()
    oauth.create_user("bob")
    app_client = oauth.first_party_app()
    oauth.login_pair(app_client)
    oauth.password_login(app_client, password="wrong password here")
    oauth.login_pair(app_client, username="bob")
    rows = [json.loads(line) for line in run("audit", "list", "--json").output.splitlines()]
    assert {"sign_in_succeeded", "family_created", "sign_in_failed", "user_created"} <= {
        r["event"] for r in rows}
    assert set(rows[0]) == {"time", "event", "user", "client_id", "session", "detail"}
    only = run("audit", "list", "--event", "sign_in_failed", "--json").output.splitlines()
    assert len(only) == 1 and json.loads(only[0])["client_id"] == app_client.client_id
    mine = run("audit", "list", "--user", "alice", "--since", "1h", "--json").output
    assert mine and all(json.loads(line)["user"] == "alice" for line in mine.splitlines())
    assert {json.loads(line)["user"] for line in run(
        "audit", "list", "--json").output.splitlines()} == {"alice", "bob", None}
    assert run("audit", "list", "--since", "2999-01-01T00:00:00").output == ""
    text = run("audit", "list", "--event", "family_created", "--user", "bob").output
    assert text.count("\n") == 1 and "family_created" in text and "user=bob" in text
    for args, message in ((["--since", "last tuesday"], "--since"),
                          (["--user", "nobody"], "no user 'nobody'"),
                          (["--event", "sign_in_fialed"], "unknown event type")):
        bad = run("audit", "list", *args)
        assert bad.exit_code != 0 and message in bad.output


# -- Housekeeping ----------------------------------------------------------------------
def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


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
    assert count(app, TokenFamily) == 1 and count(app, RefreshToken) == 1
    assert oauth.refresh(app_client, live["refresh_token"]).status_code == 200
    out = run("db", "purge")
    assert out.exit_code == 0 and out.output.startswith("purged ") and "token_families=0" in (
        out.output)
    bad = run("db", "purge", "--batch-size", "0")
    assert bad.exit_code != 0


def test_purge_deletes_idle_sessions_and_old_rotated_tokens(oauth, app, clock):
    oauth.create_user()
    short = oauth.first_party_app(name="Kiosk", refresh_idle_ttl=3600, reuse_grace=0)
    idle = oauth.login_pair(short)
    busy = oauth.login_pair(short)
    for _ in range(3):
        busy = oauth.refresh(short, busy["refresh_token"]).get_json()
    assert count(app, RefreshToken) == 5
    with app.app_context():
        soon = housekeeping.purge(db.session, retention_days=1,
                                  now=clock.now + dt.timedelta(hours=2))
    assert soon["token_families"] == 0 and soon["refresh_tokens"] == 0  # expired just now
    clock.advance(86_400 * 3)
    busy = oauth.refresh(short, busy["refresh_token"])
    assert busy.status_code == 400  # expired while idle: the whole family is dead
    fresh = oauth.login_pair(short)
    fresh = oauth.refresh(short, fresh["refresh_token"]).get_json()
    with app.app_context():
        counts = housekeeping.purge(db.session, retention_days=1, now=clock.now)
    assert counts["token_families"] == 2 and counts["refresh_tokens"] == 5
    assert count(app, TokenFamily) == 1 and count(app, RefreshToken) == 2
    assert oauth.refresh(short, fresh["refresh_token"]).status_code == 200
    assert oauth.refresh(short, idle["refresh_token"]).status_code == 400


def test_purge_keeps_rotated_tokens_of_live_sessions_for_the_retention(oauth, app, clock):
    oauth.create_user()
    forever = oauth.first_party_app(name="TV", refresh_idle_ttl=0, refresh_absolute_ttl=0,
                                    reuse_grace=0)
    pair = oauth.login_pair(forever)
    first = pair["refresh_token"]
    for _ in range(3):
        pair = oauth.refresh(forever, pair["refresh_token"]).get_json()
    with app.app_context():
        assert housekeeping.purge(db.session, retention_days=30, now=clock.now)[
            "refresh_tokens"] == 0
    clock.advance(86_400 * 31)
    with app.app_context():
        counts = housekeeping.purge(db.session, retention_days=30, now=clock.now)
    assert counts["token_families"] == 0 and counts["refresh_tokens"] == 3
    pair = oauth.refresh(forever, pair["refresh_token"])  # still signed in
    assert pair.status_code == 200
    assert oauth.refresh(forever, first).status_code == 400  # purged: now simply unknown...
    # ... and not reuse, which would have revoked the session
    assert oauth.refresh(forever, pair.get_json()["refresh_token"]).status_code == 200


def test_purge_never_takes_a_token_inside_its_grace_window(oauth, app, clock):
    """Even with no retention, a retry inside the window still gets the identical body."""
    oauth.create_user()
    mobile = oauth.first_party_app(reuse_grace=10)
    first = oauth.login_pair(mobile)
    second = oauth.refresh(mobile, first["refresh_token"]).get_json()
    clock.advance(1)
    with app.app_context():
        assert housekeeping.purge(db.session, retention_days=0, now=clock.now)[
            "refresh_tokens"] == 0
    assert oauth.refresh(mobile, first["refresh_token"]).get_json() == second
    clock.advance(10)
    with app.app_context():
        assert housekeeping.purge(db.session, retention_days=0, now=clock.now)[
            "refresh_tokens"] == 1


def test_purge_deletes_old_codes_sign_ins_replay_rows_and_retry_responses(oauth, app, clock):
    oauth.create_user()
    web, _ = oauth.create_client(name="Web banking", redirect_uris=[REDIRECT], scope="read")
    graceful = oauth.first_party_app(reuse_grace=10)
    me = BrowserActions(app.test_client())
    me.login()
    post_form(me, "/account/sessions", "/account/sessions/sign-out-everywhere")
    pair = oauth.login_pair(graceful)
    oauth.refresh(graceful, pair["refresh_token"])  # leaves a sealed retry response
    now = clock.now
    with app.app_context():
        db.session.execute(insert(AuthorizationCode).values(
            code_digest=creds.digest("old-code"), client_id=web.client_id,
            user_id=user_id(app), redirect_uri=REDIRECT, scope="read", auth_time=now,
            created_at=now - dt.timedelta(days=3), expires_at=now - dt.timedelta(days=3)))
        db.session.execute(insert(DPoPProofJti), [
            {"jti_digest": creds.digest("old"), "expires_at": now - dt.timedelta(minutes=1)},
            {"jti_digest": creds.digest("new"), "expires_at": now + dt.timedelta(minutes=5)}])
        db.session.commit()
        counts = housekeeping.purge(db.session, retention_days=30, now=now)
        assert counts["authorization_codes"] == 1 and counts["dpop_proof_jtis"] == 1
        assert counts["login_sessions"] == 0 and counts["retry_responses"] == 0
        after_grace = housekeeping.purge(db.session, now=now + dt.timedelta(seconds=11))
        assert after_grace["retry_responses"] == 1 and after_grace["login_sessions"] == 0
        later = housekeeping.purge(db.session, now=now + dt.timedelta(days=31))
        assert later["login_sessions"] == 1 and later["audit_events"] == 0
    assert count(app, DPoPProofJti) == 0 and count(app, AuthorizationCode) == 0
    events = count(app, AuditEvent)
    assert events > 0
    with app.app_context():
        counts = housekeeping.purge(db.session, audit_retention_days=1,
                                    now=now + dt.timedelta(days=2))
    assert counts["audit_events"] == events and count(app, AuditEvent) == 0


def _many_dead_sessions(app, client_id: str, families: int, now: dt.datetime) -> None:
    """``families`` sessions revoked a year ago, three tokens each (bulk insert)."""
    long_ago = now - dt.timedelta(days=365)
    with app.app_context():
        alice = db.session.scalar(select(User.id).where(User.username == "alice"))
        ids = [secrets.token_urlsafe(16) for _ in range(families)]
        db.session.execute(insert(TokenFamily), [
            {"id": fid, "user_id": alice, "client_id": client_id, "scope": "read",
             "grant_type": "password", "auth_time": long_ago, "created_at": long_ago,
             "expires_at": None, "revoked_at": long_ago, "revoke_reason": "test"}
            for fid in ids])
        db.session.execute(insert(RefreshToken), [
            {"family_id": fid, "token_digest": secrets.token_hex(32), "created_at": long_ago,
             "expires_at": None, "revoked_at": long_ago}
            for fid in ids for _ in range(3)])
        db.session.commit()


def test_purge_never_locks_the_token_endpoint_out(oauth, app, clock):
    """While a purge of many rows runs in another thread (own connection, own
    transactions), refreshes succeed: at chosen pauses between two batches, where the
    purge holds no lock at all, and all along while it runs freely."""
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=0)
    pair = oauth.login_pair(app_client)
    _many_dead_sessions(app, app_client.client_id, 3000, clock.now)
    paused, resume = threading.Event(), threading.Event()
    batches: list[tuple[str, int]] = []
    result: dict[str, object] = {}

    def after_batch(kind: str, deleted: int) -> None:
        batches.append((kind, deleted))
        if len(batches) == 3:
            paused.set()
            resume.wait(60)

    def purge() -> None:
        try:
            with app.app_context():
                result["counts"] = housekeeping.purge(db.session, batch_size=100, now=clock.now,
                                                      after_batch=after_batch)
        except Exception as exc:  # reported by the main thread
            result["error"] = exc

    worker = threading.Thread(target=purge)
    worker.start()
    try:
        assert paused.wait(60), result
        assert worker.is_alive() and count(app, TokenFamily) == 3001 - 300
        response = oauth.refresh(app_client, pair["refresh_token"])
        assert response.status_code == 200, response.get_data(True)
        pair = response.get_json()
    finally:
        resume.set()
    while worker.is_alive():
        response = oauth.refresh(app_client, pair["refresh_token"])
        assert response.status_code == 200, response.get_data(True)
        pair = response.get_json()
    worker.join()
    assert "error" not in result, result
    counts = result["counts"]
    assert counts["token_families"] == 3000 and counts["refresh_tokens"] == 9000
    assert len([b for b in batches if b[0] == "token_families"]) == 30
    assert count(app, TokenFamily) == 1
    assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 200


def test_purge_deletes_logout_messages_delivered_or_given_up_past_the_retention(app, clock):
    """Pending messages stay whatever their age (the worker still owes them); finished ones
    go after the retention."""
    now = clock.now
    old, recent = now - dt.timedelta(days=31), now - dt.timedelta(days=1)

    def message(name: str, **state: dt.datetime) -> dict[str, object]:
        return {"client_id": name, "uri": "https://rp.example/logout", "sid": None,
                "subject": None, "created_at": old, "attempts": 1, "next_attempt_at": old,
                "locked_until": None, "locked_by": None, "delivered_at": None,
                "failed_at": None, "last_error": None, **state}

    with app.app_context():
        db.session.execute(insert(LogoutMessage), [
            message("delivered-old", delivered_at=old), message("failed-old", failed_at=old),
            message("delivered-recent", delivered_at=recent), message("pending-old")])
        db.session.commit()
        counts = housekeeping.purge(db.session, retention_days=30, now=now)
        left = set(db.session.scalars(select(LogoutMessage.client_id)))
    assert counts["logout_messages"] == 2
    assert left == {"delivered-recent", "pending-old"}
