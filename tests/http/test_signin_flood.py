"""A flood of wrong passwords must not slow down refreshes.

Each sign-in attempt costs an argon2id verification (~0.2 s of CPU). Sign-in used to
verify it inside the request's transaction, which on SQLite holds the database's write
lock: with twelve parallel wrong passwords a refresh waited 10 s for a 503. Now the lookup
reads with no transaction open, argon2 runs with none open and the attempt's writes are
one short transaction (``users.check_sign_in``); hashing runs on one low-priority thread
per process, and sign-in checks beyond what a process admits are shed with a 503
(``passwords``).

These tests, in process, check where argon2 runs and what a busy process answers; the flood
against a real server is tests/live/test_wrong_password_flood.py.
"""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from authserver.domain import passwords
from authserver.extensions import db
from authserver.storage import engine as storage_engine
from authserver.storage.models import AuditEvent, User
from tests.support.oauth import PASSWORD, BrowserActions

# -- in process: where argon2 runs, and what a busy process answers ----------------------


@pytest.fixture
def spy(monkeypatch):
    """Records, at each argon2 computation, whether the request held a transaction (on
    SQLite: the database's write lock)."""
    seen: list[tuple[str, bool, bool]] = []
    verify, hash_password = passwords.verify_password, passwords.hash_password

    def look(what: str) -> None:
        lock = storage_engine._writer_locks.get(db.engine)
        seen.append((what, db.session().in_transaction(),
                     lock is not None and lock._thread_lock.locked()))

    def spying_verify(*args, **kwargs):
        look("verify")
        return verify(*args, **kwargs)

    def spying_hash(*args, **kwargs):
        look("hash")
        return hash_password(*args, **kwargs)

    monkeypatch.setattr(passwords, "verify_password", spying_verify)
    monkeypatch.setattr(passwords, "hash_password", spying_hash)
    return seen


def _events(app, name: str) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.event == name)
                                  .order_by(AuditEvent.id)).all()
        db.session.expunge_all()
    return list(rows)


def test_the_password_grant_hashes_with_no_transaction_open(oauth, app, spy):
    oauth.create_user()
    bank = oauth.first_party_app()
    spy.clear()
    assert oauth.password_login(bank, password="not the password").status_code == 400
    assert oauth.password_login(bank, username="mallory").status_code == 400
    assert oauth.password_login(bank).status_code == 200
    assert spy == [("verify", False, False)] * 3
    failed = _events(app, "sign_in_failed")
    assert [e.detail["cause"] for e in failed] == ["wrong_password", "unknown_user"]
    assert len(_events(app, "sign_in_succeeded")) == 1


def test_the_login_page_hashes_with_no_transaction_open(oauth, app, spy):
    oauth.create_user()
    spy.clear()
    person = BrowserActions(app.test_client())
    assert person.login(password="not the password").status_code == 401
    assert person.login(username="mallory").status_code == 401
    assert person.login().status_code == 303
    assert person.client.get("/account/sessions").status_code == 200  # signed in
    assert spy == [("verify", False, False)] * 3
    failed = _events(app, "sign_in_failed")
    assert [e.detail["cause"] for e in failed] == ["wrong_password", "unknown_user"]
    assert [e.detail["via"] for e in failed] == ["login_page"] * 2
    assert len(_events(app, "sign_in_succeeded")) == 1


def test_a_busy_process_answers_503_and_records_nothing(oauth, app, monkeypatch):
    oauth.create_user()
    bank = oauth.first_party_app()
    # One check in flight, and hashes take seconds: another would wait too long.
    monkeypatch.setattr(passwords, "_sign_in_checks", 1)
    monkeypatch.setattr(passwords, "_hash_seconds", 5.0)
    response = oauth.password_login(bank)
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["error"] == "temporarily_unavailable"
    page = BrowserActions(app.test_client()).login()
    assert page.status_code == 503 and page.headers["Retry-After"] == "1"
    assert b"Try again in a moment" in page.data and "Location" not in page.headers
    assert _events(app, "sign_in_failed") == [] and _events(app, "sign_in_succeeded") == []
    monkeypatch.setattr(passwords, "_sign_in_checks", 0)
    assert oauth.password_login(bank).status_code == 200


@pytest.mark.parametrize("meanwhile", ["password_changed", "deactivated"])
def test_a_change_while_the_password_is_checked_wins(oauth, app, monkeypatch, meanwhile):
    """The password is checked outside any transaction; the sign-in's transaction reads
    the account again and refuses if it changed in between."""
    oauth.create_user()
    bank = oauth.first_party_app()
    verify = passwords.verify_password

    def verify_then_change(*args, **kwargs):
        ok = verify(*args, **kwargs)
        values = {"password_hash": passwords.hash_password("another password entirely")} \
            if meanwhile == "password_changed" else {"active": False}
        with db.engine.begin() as connection:
            connection.execute(update(User).where(User.username == "alice").values(**values))
        return ok

    monkeypatch.setattr(passwords, "verify_password", verify_then_change)
    response = oauth.password_login(bank)
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    (failed,) = _events(app, "sign_in_failed")
    expected = "wrong_password" if meanwhile == "password_changed" else "deactivated"
    assert failed.detail["cause"] == expected
    assert _events(app, "sign_in_succeeded") == []


def test_a_hash_with_old_parameters_is_replaced_at_sign_in(oauth, app, spy):
    oauth.create_user()
    bank = oauth.first_party_app()
    old = PasswordHasher(time_cost=2, memory_cost=128, parallelism=1).hash(PASSWORD)
    with app.app_context():
        db.session.execute(update(User).where(User.username == "alice")
                           .values(password_hash=old))
        db.session.commit()
    spy.clear()
    assert oauth.password_login(bank).status_code == 200
    assert spy == [("verify", False, False), ("hash", False, False)]
    with app.app_context():
        stored = db.session.scalar(select(User.password_hash).where(User.username == "alice"))
    assert stored != old and not passwords.needs_rehash(stored)
    assert oauth.password_login(bank).status_code == 200  # the new hash works
    assert len(spy) == 3  # and is not replaced again
