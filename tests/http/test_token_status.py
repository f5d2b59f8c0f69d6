"""Token Status List entries (docs/design.md, "Revocation that reaches APIs"): every access
token carries its family's (or, for client_credentials, its client's) entry; every way a
family ends sets exactly that entry INVALID; entries are random, never shared, and freed
only when no token carrying them can still be valid."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import event, select, update

from authserver.domain import passwords, token_status
from authserver.domain.client_metadata import ACCESS_TTL_BOUNDS
from authserver.extensions import db
from authserver.storage.models import Client, StatusList, TokenFamily, TokenStatus
from tests.conftest import PRODUCTION_PASSWORD_HASHER
from tests.support.admin import machine_token, page_fields, signed_in_admin
from tests.support.authorize import LOGOUT_RETURN, REDIRECT, exchange, get_code, start
from tests.support.oauth import (
    PASSWORD,
    BrowserActions,
    assert_oauth_error,
    basic,
    redirect_params,
)
from tests.support.sessions import (
    ANDROID_APP,
    IPHONE_APP,
    bearer,
    code_flow_pair,
    device_login,
    device_refresh,
    post_form,
)
from tests.support.token_race import refresh_in_own_process

Entry = tuple[int, int]  # (list id, idx)
NEW_PASSWORD = "another correct horse battery"


@pytest.fixture
def bank(oauth):
    oauth.create_user()
    return oauth.first_party_app(name="BankApp", scope="openid read account", reuse_grace=0)


def another_sign_in(oauth, app, spa) -> dict[str, Any]:
    """alice signs in to ``spa`` again from another browser (consent already given)."""
    browser = BrowserActions(app.test_client())
    assert browser.login().status_code == 303
    params, verifier = start(spa)
    answer = browser.authorize(**params)
    if answer.status_code == 200:
        answer = browser.decide(answer)
    return exchange(oauth, spa, redirect_params(answer)["code"], verifier).get_json()


def entry_of(oauth, access_token: str) -> Entry:
    """The ``status.status_list`` claim of a verified access token, as (list id, idx)."""
    claims = oauth.verify_access_token(access_token)
    status = claims["status"]["status_list"]
    assert set(status) == {"idx", "uri"}
    issuer = oauth.app.extensions["authserver"].settings.issuer
    prefix = f"{issuer}/oauth/status/"
    assert status["uri"].startswith(prefix), status
    list_id = status["uri"][len(prefix):]
    assert list_id.isdigit() and isinstance(status["idx"], int)
    return int(list_id), status["idx"]


def invalid_entries(app) -> set[Entry]:
    """Every entry the lists serve as INVALID (the serving side's own read)."""
    with app.app_context(), db.engine.connect() as connection:
        found = set()
        for list_id in token_status.list_ids(connection):
            snapshot = token_status.list_snapshot(connection, list_id)
            assert snapshot is not None
            found |= {(list_id, idx) for idx, status in snapshot[2]
                      if status == token_status.INVALID}
        return found


def versions(app) -> dict[int, int]:
    with app.app_context(), db.engine.connect() as connection:
        return {i: token_status.list_version(connection, i) or 0
                for i in token_status.list_ids(connection)}


def rows(app) -> list[TokenStatus]:
    with app.app_context():
        found = db.session.scalars(select(TokenStatus)).all()
        db.session.expunge_all()
        return list(found)


def assert_flipped_only(app, target: Entry, bystanders: list[Entry], before: dict[int, int]
                        ) -> None:
    """``target`` and nothing else is INVALID, and its list's version moved."""
    assert invalid_entries(app) == {target}
    assert target not in bystanders
    assert versions(app)[target[0]] > before.get(target[0], 0)


# -- the claim ----------------------------------------------------------------------------


def test_every_access_token_of_a_family_carries_its_entry(oauth, bank, app):
    first = oauth.login_pair(bank)
    entry = entry_of(oauth, first["access_token"])
    refreshed = oauth.refresh(bank, first["refresh_token"])
    assert refreshed.status_code == 200
    assert entry_of(oauth, refreshed.get_json()["access_token"]) == entry
    other = oauth.login_pair(bank)
    assert entry_of(oauth, other["access_token"]) != entry
    stored = {(r.list_id, r.idx): r for r in rows(app)}
    assert set(stored) == {entry, entry_of(oauth, other["access_token"])}
    assert stored[entry].owner_kind == "family" and stored[entry].status == 0
    sid = oauth.verify_access_token(first["access_token"])["sid"]
    assert stored[entry].owner_id == sid
    with app.app_context():
        assert db.session.get(StatusList, entry[0]).allocated == 2


def test_the_grace_retry_answers_the_stored_body_with_its_claim(oauth, app):
    oauth.create_user()
    graceful = oauth.first_party_app(name="Graceful", scope="read", reuse_grace=30)
    pair = oauth.login_pair(graceful)
    first = oauth.refresh(graceful, pair["refresh_token"]).get_json()
    again = oauth.refresh(graceful, pair["refresh_token"]).get_json()
    assert again == first
    assert entry_of(oauth, again["access_token"]) == entry_of(oauth, pair["access_token"])


def test_the_code_flow_token_carries_the_entry(oauth, person, spa):
    code, verifier = get_code(person, spa)
    body = exchange(oauth, spa, code, verifier).get_json()
    entry = entry_of(oauth, body["access_token"])
    assert entry_of(oauth, oauth.refresh(spa, body["refresh_token"]).get_json()[
        "access_token"]) == entry


def test_a_family_from_before_status_lists_gets_no_claim(oauth, bank, app):
    pair = oauth.login_pair(bank)
    sid = oauth.verify_access_token(pair["access_token"])["sid"]
    with app.app_context():  # as migration 0008 leaves a family that existed before it
        db.session.execute(update(TokenFamily).where(TokenFamily.id == sid)
                           .values(status_list=None, status_idx=None))
        db.session.commit()
    refreshed = oauth.refresh(bank, pair["refresh_token"]).get_json()
    assert "status" not in oauth.verify_access_token(refreshed["access_token"])
    # and its end changes no entry
    response = bank_revoke(oauth, bank, refreshed["refresh_token"])
    assert response.status_code == 200
    assert invalid_entries(app) == set()


def test_the_refresh_gains_no_statement(oauth, bank, app, backend):
    """docs/design.md, "Performance budget": the lookup also reads the entry, so the refresh
    stays at its three statements, as SQLite's own trace shows (PostgreSQL's two round
    trips: tests/http/test_concurrency.py, which counts both backends)."""
    if backend != "sqlite":
        pytest.skip("SQLite's statement trace; PostgreSQL is counted by its libpq trace "
                    "in test_concurrency")
    app.extensions["authserver"].clients.ttl = 60
    token = oauth.login_pair(bank)["refresh_token"]
    with app.app_context():
        engine = db.engine
    engine.dispose()
    statements: list[str] = []

    def traced(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    event.listen(engine, "connect", traced)
    try:
        token = oauth.refresh(bank, token).get_json()["refresh_token"]  # warm
        statements.clear()
        response = oauth.refresh(bank, token)
    finally:
        event.remove(engine, "connect", traced)
        engine.dispose()
    assert response.status_code == 200
    assert entry_of(oauth, response.get_json()["access_token"])
    assert [s.split()[0].upper() for s in statements] == [
        "SELECT", "BEGIN", "UPDATE", "INSERT", "COMMIT"], statements
    assert "status_idx" in statements[0]
    assert not any("token_statuses" in s or "status_lists" in s for s in statements)


def test_indices_are_random_not_sequential(oauth, bank, app):
    entries = [entry_of(oauth, oauth.login_pair(bank)["access_token"]) for _ in range(12)]
    assert len(set(entries)) == 12
    assert {list_id for list_id, _ in entries} == {1}
    issued = [idx for _, idx in entries]
    assert issued != sorted(issued), issued  # not handed out in order (a chance of 1/12!)
    assert max(issued) - min(issued) > 1000, issued  # spread over the list (2^17 entries)


@pytest.mark.parametrize("settings_overrides", [{"status_list_size": 1024}])
def test_a_list_half_full_opens_the_next_one(oauth, app):
    oauth.create_user()
    machine, _ = oauth.create_client(name="Batch", grant_types=["client_credentials"],
                                     scope="read")
    with app.app_context():  # list 1 as if 511 entries were handed out already
        db.session.execute(update(StatusList).where(StatusList.id == 1)
                           .values(allocated=511))
        db.session.commit()
    bank = oauth.first_party_app(name="BankApp", scope="read")
    first = entry_of(oauth, oauth.login_pair(bank)["access_token"])
    second = entry_of(oauth, oauth.login_pair(bank)["access_token"])
    assert first[0] == 1 and second[0] == 2
    with app.app_context():
        sizes = dict(db.session.execute(select(StatusList.id, StatusList.size)).all())
    assert sizes == {1: 1024, 2: 1024}
    assert machine.status is not None and machine.status.list_id == 1


# -- every cause flips exactly its family's entry ---------------------------------------


def bank_revoke(oauth, bank, refresh_token: str):
    return oauth.client.post("/oauth/revoke", data={"token": refresh_token,
                                                    "client_id": bank.client_id})


def _two_devices(oauth, bank) -> tuple[dict[str, Any], dict[str, Any]]:
    return (device_login(oauth, bank, IPHONE_APP, device_id="iphone-0001"),
            device_login(oauth, bank, ANDROID_APP, device_id="pixel-0002"))


def test_rfc7009_revocation(oauth, bank, app):
    target, bystander = _two_devices(oauth, bank)
    before = versions(app)
    assert bank_revoke(oauth, bank, target["refresh_token"]).status_code == 200
    assert_flipped_only(app, entry_of(oauth, target["access_token"]),
                        [entry_of(oauth, bystander["access_token"])], before)


def test_reuse_detection(oauth, bank, app):
    target, bystander = _two_devices(oauth, bank)
    before = versions(app)
    assert device_refresh(oauth, bank, target["refresh_token"], IPHONE_APP,
                          "iphone-0001").status_code == 200
    reused = device_refresh(oauth, bank, target["refresh_token"], IPHONE_APP, "iphone-0001")
    assert_oauth_error(reused, "invalid_grant")
    assert_flipped_only(app, entry_of(oauth, target["access_token"]),
                        [entry_of(oauth, bystander["access_token"])], before)


def test_binding_mismatch_with_revoke(oauth, bank, app):
    target, bystander = _two_devices(oauth, bank)
    before = versions(app)
    stolen = device_refresh(oauth, bank, target["refresh_token"], IPHONE_APP, "another-003")
    assert_oauth_error(stolen, "invalid_grant")
    assert_flipped_only(app, entry_of(oauth, target["access_token"]),
                        [entry_of(oauth, bystander["access_token"])], before)


def test_a_new_sign_in_on_the_device_replaces_its_family(oauth, bank, app):
    target, bystander = _two_devices(oauth, bank)
    before = versions(app)
    again = device_login(oauth, bank, IPHONE_APP, device_id="iphone-0001")
    assert_flipped_only(app, entry_of(oauth, target["access_token"]),
                        [entry_of(oauth, bystander["access_token"]),
                         entry_of(oauth, again["access_token"])], before)


def test_logout_with_id_token_hint(oauth, person, spa, app):
    code, verifier = get_code(person, spa)
    target = exchange(oauth, spa, code, verifier).get_json()
    bystander = another_sign_in(oauth, app, spa)
    before = versions(app)
    response = person.client.get("/logout", query_string={
        "id_token_hint": target["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN})
    assert response.status_code == 303
    assert_flipped_only(app, entry_of(oauth, target["access_token"]),
                        [entry_of(oauth, bystander["access_token"])], before)


def test_sign_out_one_device(oauth, bank, app):
    target, bystander = _two_devices(oauth, bank)
    listed = oauth.client.get("/account/api/sessions",
                              headers=bearer(bystander["access_token"])).get_json()["sessions"]
    phone = next(s["id"] for s in listed if s["device"] == "BankApp on iOS")
    before = versions(app)
    done = oauth.client.delete(f"/account/api/sessions/{phone}",
                               headers=bearer(bystander["access_token"]))
    assert done.status_code == 204
    assert_flipped_only(app, entry_of(oauth, target["access_token"]),
                        [entry_of(oauth, bystander["access_token"])], before)


def test_sign_out_everywhere_flips_every_family_of_the_user_only(oauth, bank, app):
    mine = _two_devices(oauth, bank)
    oauth.create_user("bob")
    bobs = device_login(oauth, bank, IPHONE_APP, username="bob")
    before = versions(app)
    done = oauth.client.delete("/account/api/sessions", headers=bearer(mine[0]["access_token"]))
    assert done.get_json() == {"signed_out": 2}
    assert invalid_entries(app) == {entry_of(oauth, p["access_token"]) for p in mine}
    assert entry_of(oauth, bobs["access_token"]) not in invalid_entries(app)
    assert versions(app)[1] >= before[1] + 2


def test_password_change_flips_the_other_devices(oauth, bank, app):
    web, _ = oauth.create_client(name="Web banking", public=True, redirect_uris=[REDIRECT],
                                 scope="read account")
    phone = device_login(oauth, bank, IPHONE_APP, scope="read")
    browser = BrowserActions(app.test_client())
    browser.login()
    this_device = code_flow_pair(oauth, browser, web)
    before = versions(app)
    done = post_form(browser, "/account/password", "/account/password",
                     current_password=PASSWORD, new_password=NEW_PASSWORD,
                     confirm_password=NEW_PASSWORD)
    assert done.status_code == 200
    assert_flipped_only(app, entry_of(oauth, phone["access_token"]),
                        [entry_of(oauth, this_device["access_token"])], before)


def test_deactivation(oauth, bank, app, run):
    mine = _two_devices(oauth, bank)
    oauth.create_user("bob")
    bobs = device_login(oauth, bank, IPHONE_APP, username="bob")
    assert run("users", "deactivate", "alice").exit_code == 0
    assert invalid_entries(app) == {entry_of(oauth, p["access_token"]) for p in mine}
    assert entry_of(oauth, bobs["access_token"]) not in invalid_entries(app)


def test_admin_revocation(oauth, bank, app):
    target, bystander = _two_devices(oauth, bank)
    sid = oauth.verify_access_token(target["access_token"])["sid"]
    admin = signed_in_admin(app, oauth)
    fields = page_fields(admin.client.get(f"/admin/clients/{bank.client_id}")
                         .get_data(as_text=True))
    before = versions(app)
    revoked = admin.client.post(f"/admin/clients/{bank.client_id}/sessions/{sid}/revoke",
                                data=fields)
    assert revoked.status_code == 303
    assert_flipped_only(app, entry_of(oauth, target["access_token"]),
                        [entry_of(oauth, bystander["access_token"])], before)


def test_code_replay(oauth, person, spa, app):
    code, verifier = get_code(person, spa)
    target = exchange(oauth, spa, code, verifier).get_json()
    bystander = another_sign_in(oauth, app, spa)
    before = versions(app)
    assert_oauth_error(exchange(oauth, spa, code, verifier), "invalid_grant")
    assert_flipped_only(app, entry_of(oauth, target["access_token"]),
                        [entry_of(oauth, bystander["access_token"])], before)


def test_free_after_is_the_longest_any_token_can_live_plus_leeway(oauth, app):
    """Not the client's lifetime of today: an admin may have lowered it since its tokens were
    issued, and an entry freed early would make a revoked token valid again."""
    oauth.create_user()
    short = oauth.first_party_app(name="Short", scope="read", access_token_ttl=120)
    default = oauth.first_party_app(name="Default", scope="read")
    for client in (short, default):
        pair = oauth.login_pair(client)
        assert bank_revoke(oauth, client, pair["refresh_token"]).status_code == 200
    longest = ACCESS_TTL_BOUNDS[1]
    for row in rows(app):
        assert row.status == 1 and row.changed_at is not None
        assert row.free_after == row.changed_at + dt.timedelta(seconds=longest + 60)


# -- client_credentials: the client's own entry -------------------------------------------


def _machine(oauth, name: str = "Reports") -> tuple[Any, str]:
    record, secret = oauth.create_client(name=name, grant_types=["client_credentials"],
                                         scope="read")
    assert secret is not None
    return record, secret


def test_a_machine_token_carries_its_clients_entry(oauth, app):
    machine, secret = _machine(oauth)
    assert machine.status is not None
    entries = {entry_of(oauth, machine_token(oauth, machine.client_id, secret))
               for _ in range(2)}
    assert entries == {(machine.status.list_id, machine.status.idx)}
    (row,) = rows(app)
    assert (row.owner_kind, row.owner_id) == ("client", machine.client_id)


def test_disabling_a_client_flips_its_entry_and_enabling_gives_a_new_one(oauth, app, run):
    machine, secret = _machine(oauth)
    other, other_secret = _machine(oauth, "Other")
    old = entry_of(oauth, machine_token(oauth, machine.client_id, secret))
    bystander = entry_of(oauth, machine_token(oauth, other.client_id, other_secret))
    before = versions(app)
    assert run("clients", "disable", machine.client_id).exit_code == 0
    assert_flipped_only(app, old, [bystander], before)
    refused = oauth.token({"grant_type": "client_credentials"},
                          {"Authorization": basic(machine.client_id, secret)})
    assert_oauth_error(refused, "invalid_client", 401)
    assert run("clients", "enable", machine.client_id).exit_code == 0
    new = entry_of(oauth, machine_token(oauth, machine.client_id, secret))
    assert new != old and new not in invalid_entries(app)
    assert invalid_entries(app) == {old}  # the old one stays INVALID until freed


def test_disabling_a_client_flips_its_families_too(oauth, bank, app, run):
    oauth.create_user("bob")
    other = oauth.first_party_app(name="Other", scope="read")
    mine = [oauth.login_pair(bank), oauth.login_pair(bank, username="bob")]
    theirs = oauth.login_pair(other)
    assert run("clients", "disable", bank.client_id).exit_code == 0
    assert invalid_entries(app) == {entry_of(oauth, p["access_token"]) for p in mine}
    assert entry_of(oauth, theirs["access_token"]) not in invalid_entries(app)


def test_deleting_a_client_flips_its_entries(oauth, app, run):
    machine, secret = _machine(oauth)
    entry = entry_of(oauth, machine_token(oauth, machine.client_id, secret))
    assert run("clients", "delete", machine.client_id, "--yes").exit_code == 0
    assert invalid_entries(app) == {entry}


def test_a_legacy_client_gets_its_entry_at_its_first_grant(oauth, app):
    machine, secret = _machine(oauth)
    with app.app_context():  # as migration 0008 leaves a client registered before it
        db.session.execute(update(Client).where(Client.client_id == machine.client_id)
                           .values(status_list=None, status_idx=None))
        db.session.execute(TokenStatus.__table__.delete())
        db.session.commit()
    app.extensions["authserver"].clients.forget()
    first = entry_of(oauth, machine_token(oauth, machine.client_id, secret))
    second = entry_of(oauth, machine_token(oauth, machine.client_id, secret))
    assert first == second
    with app.app_context():
        stored = db.session.execute(select(Client.status_list, Client.status_idx)
                                    .where(Client.client_id == machine.client_id)).one()
    assert tuple(stored) == first
    assert [(r.list_id, r.idx) for r in rows(app)] == [first]


def test_a_client_given_client_credentials_later_gets_its_entry(oauth, app, run):
    web, _ = oauth.create_client(name="Partner", grant_types=["authorization_code"],
                                 redirect_uris=[REDIRECT], scope="read")
    assert web.status is None and rows(app) == []
    result = run("clients", "update", web.client_id, "--grant-type", "authorization_code",
                 "--grant-type", "client_credentials")
    assert result.exit_code == 0, result.output
    (row,) = rows(app)
    assert (row.owner_kind, row.owner_id) == ("client", web.client_id)


# -- purge ----------------------------------------------------------------------------------


def test_purge_frees_only_what_no_token_can_still_carry(oauth, bank, app, run):
    live = oauth.login_pair(bank)
    revoked = oauth.login_pair(bank)
    kept = oauth.login_pair(bank)  # revoked too, but its family row is kept (retention)
    machine, secret = _machine(oauth)
    machine_entry = entry_of(oauth, machine_token(oauth, machine.client_id, secret))
    for pair in (revoked, kept):
        assert bank_revoke(oauth, bank, pair["refresh_token"]).status_code == 200
    sid_kept = oauth.verify_access_token(kept["access_token"])["sid"]
    with app.app_context():
        db.session.execute(update(TokenFamily).where(TokenFamily.id == sid_kept)
                           .values(revoked_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=9)))
        db.session.commit()
    # The revoked family's row goes at once (retention 0); its entry waits for free_after.
    first = run("db", "purge", "--retention-days", "0")
    assert first.exit_code == 0 and "status_entries=0" in first.output, first.output
    assert len(rows(app)) == 4
    assert run("clients", "disable", machine.client_id).exit_code == 0
    assert run("clients", "enable", machine.client_id).exit_code == 0  # a new entry
    with app.app_context():  # as if every free_after had passed
        db.session.execute(update(TokenStatus).where(TokenStatus.free_after.is_not(None))
                           .values(free_after=dt.datetime.now(dt.UTC)
                                   - dt.timedelta(seconds=1)))
        db.session.commit()
        allocated = db.session.scalar(select(StatusList.allocated))
    assert allocated == 5
    before = versions(app)
    result = run("db", "purge", "--retention-days", "0", "--batch-size", "1")  # page by page
    assert result.exit_code == 0 and "status_entries=2" in result.output, result.output
    left = {(r.list_id, r.idx) for r in rows(app)}
    assert entry_of(oauth, revoked["access_token"]) not in left  # family gone, past free_after
    assert machine_entry not in left  # the client holds a new entry now
    assert entry_of(oauth, live["access_token"]) in left
    assert entry_of(oauth, kept["access_token"]) in left  # its family row still exists
    assert len(left) == 3
    with app.app_context():
        assert db.session.scalar(select(StatusList.allocated)) == 3
    assert versions(app)[1] > before[1]


def test_purge_gives_an_orphan_entry_a_free_after_first(oauth, bank, app):
    pair = oauth.login_pair(bank)
    entry = entry_of(oauth, pair["access_token"])
    sid = oauth.verify_access_token(pair["access_token"])["sid"]
    with app.app_context():  # the family vanished without ending (a cascade)
        db.session.execute(TokenFamily.__table__.delete().where(TokenFamily.id == sid))
        db.session.commit()
        from authserver.domain import housekeeping

        counts = housekeeping.purge(db.session, retention_days=0)
    assert counts["status_entries"] == 0
    (row,) = rows(app)
    assert (row.list_id, row.idx) == entry and row.free_after is not None
    assert row.free_after > dt.datetime.now(dt.UTC) + dt.timedelta(hours=23)


# -- concurrency ----------------------------------------------------------------------------

THREADS = 12


@pytest.mark.parametrize("settings_overrides", [{"db_pool_size": THREADS + 2,
                                                 "db_lock_timeout_ms": 10_000,
                                                 "status_list_size": 1024}])
def concurrent_sign_in_entries(oauth, app, bank) -> list[Entry]:
    """THREADS password sign-ins released at one moment; each succeeds; their entries."""
    barrier = threading.Barrier(THREADS, timeout=60)

    def one(_: int) -> tuple[int, Any]:
        client = app.test_client()
        barrier.wait()
        response = client.post("/oauth/token", data={
            "grant_type": "password", "username": "alice", "password": PASSWORD,
            "client_id": bank.client_id})
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(one, range(THREADS)))
    assert all(status == 200 for status, _ in results), results
    return [entry_of(oauth, body["access_token"]) for _, body in results]


def test_concurrent_sign_ins_get_distinct_entries_and_open_one_list(oauth, app):
    """Sign-ins at one moment, the first of them opening list 1 (none exists yet): every
    one succeeds, no two share an entry, exactly one list is created."""
    oauth.create_user()
    bank = oauth.first_party_app(name="BankApp", scope="read")
    entries = concurrent_sign_in_entries(oauth, app, bank)
    assert len(set(entries)) == THREADS
    with app.app_context():
        lists = db.session.execute(select(StatusList.id, StatusList.allocated)).all()
    assert [tuple(r) for r in lists] == [(1, THREADS)]
    assert len(rows(app)) == THREADS


@pytest.mark.parametrize("settings_overrides", [{"db_pool_size": THREADS + 2,
                                                 "db_lock_timeout_ms": 10_000,
                                                 "status_list_size": 1024}])
def test_two_sign_ins_opening_the_next_list_at_once_both_succeed(oauth, app):
    oauth.create_user()
    bank = oauth.first_party_app(name="BankApp", scope="read")
    oauth.login_pair(bank)
    with app.app_context():  # list 1 is half full: the next sign-ins open list 2
        db.session.execute(update(StatusList).values(allocated=512))
        db.session.commit()
    entries = concurrent_sign_in_entries(oauth, app, bank)
    assert len(set(entries)) == THREADS and {e[0] for e in entries} == {2}
    with app.app_context():
        assert db.session.scalar(select(StatusList.allocated).where(StatusList.id == 2)) \
            == THREADS


def test_an_index_drawn_twice_is_drawn_again(oauth, bank, app, monkeypatch):
    """The entry's primary key decides (INSERT ... ON CONFLICT DO NOTHING): a draw that hits
    a taken index draws again, and the sign-in never fails for it."""
    draws = iter([77, 77, 77, 1234])
    monkeypatch.setattr(token_status.secrets, "randbelow", lambda _n: next(draws))
    first = entry_of(oauth, oauth.login_pair(bank)["access_token"])
    second = entry_of(oauth, oauth.login_pair(bank)["access_token"])
    assert (first[1], second[1]) == (77, 1234)
    with app.app_context():
        assert db.session.scalar(select(StatusList.allocated)) == 2


PROCESSES = 4


@pytest.mark.parametrize("settings_overrides", [{"status_list_size": 1024,
                                                 "db_lock_timeout_ms": 10_000}])
def test_separate_processes_open_the_next_list_at_once(oauth, app, monkeypatch):
    """Server processes (own app, engine and pool each) signing in at one moment, list 1
    half full: each opens "the next list" itself; all succeed, on one new list, with
    distinct entries."""
    # The password hashed as the server processes hash it (they would rehash a cheap one).
    monkeypatch.setattr(passwords, "_hasher", PRODUCTION_PASSWORD_HASHER)
    monkeypatch.setattr(passwords, "_dummy", None)
    oauth.create_user()
    bank = oauth.first_party_app(name="BankApp", scope="read")
    oauth.login_pair(bank)
    with app.app_context():
        db.session.execute(update(StatusList).values(allocated=512))
        db.session.commit()
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD,
            "client_id": bank.client_id}
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [ctx.Process(target=refresh_in_own_process,
                             args=(app.extensions["authserver"].settings, [form], start,
                                   results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    try:
        reports = [results.get(timeout=240) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    assert len({pid for pid, _ in reports}) == PROCESSES
    outcomes = [outcome for _, per_process in reports for outcome in per_process]
    assert [status for status, _ in outcomes] == [200] * PROCESSES, outcomes
    entries = {entry_of(oauth, json.loads(body)["access_token"]) for _, body in outcomes}
    assert len(entries) == PROCESSES and {list_id for list_id, _ in entries} == {2}
    with app.app_context():
        lists = dict(db.session.execute(select(StatusList.id, StatusList.allocated)).all())
    assert lists == {1: 512, 2: PROCESSES}
