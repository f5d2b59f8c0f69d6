"""OpenID Connect Back-Channel Logout (issue 13 item 4) with the app in process and a real
receiving HTTP server on loopback (tests/support/logout_receiver.py).

A session ends over HTTP (revocation, sign-out, a disabled client); the outbox row is
written by that request's transaction and nothing is sent on it; a worker
(``authserver.backchannel.worker``) then delivers, and the receiver checks the logout
token with PyJWT against the app's JWKS: signature, ``typ``, ``iss``, ``aud``, the event,
``sid`` equal to the ID token's, no ``nonce``. The failure paths: a receiver that fails
twice, one that hangs, a redirect, a private address in production; and two workers that
race for the same messages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask
from sqlalchemy import select

from authserver.backchannel import sender
from authserver.backchannel.worker import LogoutWorker
from authserver.domain import audit, logout_outbox
from authserver.domain import clients as domain_clients
from authserver.extensions import db
from authserver.storage.models import LogoutMessage
from tests.support import logout_receiver
from tests.support.admin import page_fields, signed_in_admin
from tests.support.authorize import LOGOUT_RETURN, OIDC_SCOPE, REDIRECT, exchange, get_code
from tests.support.oauth import OAuthActions, basic, form_fields
from tests.support.rows import events
from tests.support.sessions import revoke

MakeWorker = Callable[..., LogoutWorker]


@pytest.fixture
def receiver() -> Iterator[logout_receiver.Receiver]:
    with logout_receiver.running(hang_seconds=10) as running:
        yield running


@pytest.fixture
def make_worker(app: Flask, clock: Any) -> MakeWorker:
    """A worker over the app's database, keys and (fake) clock; ``settings`` replaces
    some of the app's settings for this worker only."""
    svc = app.extensions["authserver"]

    def make(settings: dict[str, Any] | None = None, **options: Any) -> LogoutWorker:
        with app.app_context():
            engine = db.engine
        return LogoutWorker(engine, dataclasses.replace(svc.settings, **(settings or {})),
                            svc.keys, clock=clock, **options)

    return make


def outbox(app: Flask) -> list[LogoutMessage]:
    with app.app_context():
        rows = db.session.scalars(select(LogoutMessage).order_by(LogoutMessage.id)).all()
        db.session.expunge_all()
        return list(rows)


def signed_in(oauth: OAuthActions, uri: str | None, **spec: Any) -> tuple[Any, dict[str, Any]]:
    """Alice signed in to a first-party app whose back-channel logout URI is ``uri``:
    the client and the token response (with an ID token)."""
    app_client = oauth.first_party_app(scope="openid read", backchannel_logout_uri=uri,
                                       **spec)
    tokens = oauth.login_pair(app_client, scope="openid read")
    assert "id_token" in tokens
    return app_client, tokens


@pytest.fixture(autouse=True)
def alice(oauth: OAuthActions) -> None:
    oauth.create_user()


def id_token_sid(oauth: OAuthActions, tokens: dict[str, Any]) -> str:
    return jwt.decode(tokens["id_token"], options={"verify_signature": False})["sid"]


def settings_of(app: Flask) -> Any:
    return app.extensions["authserver"].settings


# -- discovery and registration ----------------------------------------------------------
def test_discovery_says_back_channel_logout_is_supported(client):
    metadata = client.get("/.well-known/openid-configuration").get_json()
    assert metadata["backchannel_logout_supported"] is True
    assert metadata["backchannel_logout_session_supported"] is True


@pytest.mark.parametrize(("uri", "why"), [
    ("http://rp.example.com/logout", "https"),
    ("https://rp.example.com/logout#frag", "fragment"),
    ("/logout", "absolute"),
    ("https://user:pw@rp.example.com/logout", "user name"),
    ("ftp://rp.example.com/logout", "https"),
])
def test_the_cli_refuses_a_bad_back_channel_logout_uri(run, uri, why):
    result = run("clients", "create", "--name", "RP", "--redirect-uri",
                 "https://rp.example.com/cb", "--backchannel-logout-uri", uri)
    assert result.exit_code != 0
    assert "--backchannel-logout-uri" in result.output and why in result.output


def test_the_cli_sets_changes_and_removes_the_uri(run):
    created = run("clients", "create", "--name", "RP", "--redirect-uri",
                  "https://rp.example.com/cb", "--backchannel-logout-uri",
                  "https://rp.example.com/bcl?tenant=1", "--backchannel-logout-session-required",
                  "--json")
    assert created.exit_code == 0, created.output
    data = json.loads(created.output)
    assert data["backchannel_logout_uri"] == "https://rp.example.com/bcl?tenant=1"
    assert data["backchannel_logout_session_required"] is True
    loopback = run("clients", "update", data["client_id"], "--backchannel-logout-uri",
                   "http://127.0.0.1:9000/bcl", "--no-backchannel-logout-session-required",
                   "--json")
    assert json.loads(loopback.output)["backchannel_logout_uri"] == "http://127.0.0.1:9000/bcl"
    assert json.loads(loopback.output)["backchannel_logout_session_required"] is False
    removed = run("clients", "update", data["client_id"], "--backchannel-logout-uri", "",
                  "--json")
    assert json.loads(removed.output)["backchannel_logout_uri"] is None


def test_the_registration_api_takes_the_rfc_members(app, client, run):
    admin = json.loads(run("clients", "create", "--name", "admin", "--grant-type",
                           "client_credentials", "--scope", "admin:clients", "--json").output)
    token = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                        headers={"Authorization": _basic(admin)}).get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    body = {"client_name": "RP", "redirect_uris": ["https://rp.example.com/cb"],
            "backchannel_logout_uri": "https://rp.example.com/bcl",
            "backchannel_logout_session_required": True}
    created = client.post("/oauth/register", json=body, headers=headers)
    assert created.status_code == 201, created.get_data(True)
    assert created.get_json()["backchannel_logout_uri"] == "https://rp.example.com/bcl"
    assert created.get_json()["backchannel_logout_session_required"] is True
    refused = client.post("/oauth/register", headers=headers, json={
        **body, "backchannel_logout_uri": "http://rp.example.com/bcl"})
    assert refused.status_code == 400
    assert refused.get_json()["error"] == "invalid_client_metadata"
    assert refused.get_json()["error_description"].startswith("backchannel_logout_uri: ")


def _basic(client: dict[str, Any]) -> str:
    return basic(client["client_id"], client["client_secret"])


# -- the happy path -----------------------------------------------------------------------
def test_revocation_writes_the_message_and_the_worker_delivers_a_valid_logout_token(
        app, oauth, client, receiver, make_worker):
    app_client, tokens = signed_in(oauth, receiver.url("/ok"))
    assert outbox(app) == []
    assert revoke(client, app_client, tokens["refresh_token"]).status_code == 200

    # Written by the revocation, sent by nobody yet: delivery is never on the request.
    (row,) = outbox(app)
    assert (row.client_id, row.uri, row.sid) == (app_client.client_id, receiver.url("/ok"),
                                                id_token_sid(oauth, tokens))
    assert row.delivered_at is None and row.attempts == 0
    assert receiver.tokens() == []

    assert make_worker().run_once()["delivered"] == 1
    (delivery,) = receiver.deliveries
    assert delivery.content_type == "application/x-www-form-urlencoded"
    claims = logout_receiver.verify(delivery.token, oauth.jwks(),
                                    issuer=settings_of(app).issuer,
                                    client_id=app_client.client_id)
    id_claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert claims["sid"] == id_claims["sid"]
    assert claims["sub"] == id_claims["sub"]
    (row,) = outbox(app)
    assert row.delivered_at is not None and row.attempts == 1
    (event,) = events(app, audit.BACKCHANNEL_LOGOUT_DELIVERED)
    assert event.client_id == app_client.client_id and event.family_id == claims["sid"]
    assert event.detail["status"] == 200
    # Nothing is due any more: a second pass sends nothing.
    assert sum(make_worker().run_once().values()) == 0
    assert len(receiver.deliveries) == 1


def test_a_browser_sign_out_sends_a_token_with_the_id_tokens_sid_and_no_nonce(
        app, oauth, person, receiver, make_worker):
    spa, _ = oauth.create_client(
        name="Budget Planner", public=True, redirect_uris=[REDIRECT],
        post_logout_redirect_uris=[LOGOUT_RETURN], scope=OIDC_SCOPE,
        backchannel_logout_uri=receiver.url("/ok"))
    code, verifier = get_code(person, spa)
    tokens = exchange(oauth, spa, code, verifier).get_json()
    id_claims = jwt.decode(tokens["id_token"], options={"verify_signature": False})
    assert id_claims["nonce"] == "n-0S6"
    signed_out = person.client.get("/logout", query_string={
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": LOGOUT_RETURN})
    assert signed_out.status_code == 303
    assert receiver.tokens() == []
    assert make_worker().run_once()["delivered"] == 1
    claims = logout_receiver.verify(receiver.tokens("/ok")[0], oauth.jwks(),
                                    issuer=settings_of(app).issuer, client_id=spa.client_id)
    assert claims["sid"] == id_claims["sid"] and claims["sub"] == id_claims["sub"]
    assert "nonce" not in claims


def test_204_is_success_too_and_clients_without_a_uri_get_no_message(
        app, oauth, client, receiver, make_worker):
    with_uri, tokens = signed_in(oauth, receiver.url("/empty"),
                                 backchannel_logout_session_required=True)
    without, other = signed_in(oauth, None, name="No BCL")
    revoke(client, with_uri, tokens["refresh_token"])
    revoke(client, without, other["refresh_token"])
    assert [row.client_id for row in outbox(app)] == [with_uri.client_id]
    assert make_worker().run_once()["delivered"] == 1
    claims = logout_receiver.verify(receiver.tokens("/empty")[0], oauth.jwks(),
                                    issuer=settings_of(app).issuer,
                                    client_id=with_uri.client_id)
    assert claims["sid"] == id_token_sid(oauth, tokens)


def test_disabling_a_client_sends_one_logout_token_per_session(
        app, oauth, client, run, receiver, make_worker, clock):
    app_client, first = signed_in(oauth, receiver.url("/ok"))
    second = oauth.login_pair(app_client, scope="openid read")
    assert run("clients", "disable", app_client.client_id).exit_code == 0
    clock.advance(2)  # the CLI's clock is the real one
    assert make_worker().run_once()["delivered"] == 2
    sids = {logout_receiver.verify(t, oauth.jwks(), issuer=settings_of(app).issuer,
                                   client_id=app_client.client_id)["sid"]
            for t in receiver.tokens("/ok")}
    assert sids == {id_token_sid(oauth, first), id_token_sid(oauth, second)}


def test_a_deleted_client_still_hears_that_its_sessions_ended(
        app, oauth, client, run, receiver, make_worker, clock):
    app_client, tokens = signed_in(oauth, receiver.url("/ok"))
    assert run("clients", "delete", app_client.client_id, "--yes").exit_code == 0
    clock.advance(2)  # the CLI's clock is the real one
    # The message outlives the client row (it holds a snapshot of the URI).
    assert make_worker().run_once()["delivered"] == 1
    claims = logout_receiver.verify(receiver.tokens("/ok")[0], oauth.jwks(),
                                    issuer=settings_of(app).issuer,
                                    client_id=app_client.client_id)
    assert claims["sid"] == id_token_sid(oauth, tokens)


def test_a_revocation_rolled_back_leaves_no_message(app, oauth, client, receiver,
                                                    monkeypatch):
    app_client, tokens = signed_in(oauth, receiver.url("/ok"))
    enqueue = logout_outbox.enqueue

    def then_fail(*args: Any, **kwargs: Any) -> bool:
        assert enqueue(*args, **kwargs)
        raise RuntimeError("the database went away before the commit")

    monkeypatch.setattr(logout_outbox, "enqueue", then_fail)
    failed = revoke(client, app_client, tokens["refresh_token"])
    assert failed.status_code >= 500
    assert outbox(app) == []
    # The revocation itself was rolled back with the message: the session still refreshes.
    monkeypatch.setattr(logout_outbox, "enqueue", enqueue)
    again = oauth.refresh(app_client, tokens["refresh_token"])
    assert again.status_code == 200, again.get_data(True)
    assert revoke(client, app_client, again.get_json()["refresh_token"]).status_code == 200
    assert len(outbox(app)) == 1


# -- failures -----------------------------------------------------------------------------
def test_a_receiver_that_fails_twice_gets_it_on_the_third_attempt(
        app, oauth, client, receiver, make_worker, clock):
    app_client, tokens = signed_in(oauth, receiver.url("/flaky"))
    revoke(client, app_client, tokens["refresh_token"])
    worker = make_worker()
    assert worker.run_once() == {"retry": 1}
    (row,) = outbox(app)
    assert row.attempts == 1 and row.last_error == "HTTP 500"
    assert 1.5 <= (row.next_attempt_at - clock.now).total_seconds() <= 2.0  # 2^1 s, jitter
    assert sum(worker.run_once().values()) == 0  # not due yet
    clock.advance(2)
    assert worker.run_once() == {"retry": 1}
    (row,) = outbox(app)
    assert 3.0 <= (row.next_attempt_at - clock.now).total_seconds() <= 4.0  # 2^2 s
    clock.advance(4)
    assert worker.run_once() == {"delivered": 1}
    (row,) = outbox(app)
    assert row.attempts == 3 and row.delivered_at is not None
    tokens_seen = receiver.tokens("/flaky")
    assert len(tokens_seen) == 3
    jtis = {logout_receiver.verify(t, oauth.jwks(), issuer=settings_of(app).issuer,
                                   client_id=app_client.client_id)["jti"] for t in tokens_seen}
    assert len(jtis) == 1, "every attempt carries the message's one jti"
    assert [e.detail["attempts"] for e in events(app, audit.BACKCHANNEL_LOGOUT_FAILED)] == [1, 2]
    (delivered,) = events(app, audit.BACKCHANNEL_LOGOUT_DELIVERED)
    assert delivered.detail["attempts"] == 3


def test_after_the_retry_limit_the_message_is_given_up_and_audited(
        app, oauth, client, receiver, make_worker, clock):
    app_client, tokens = signed_in(oauth, receiver.url("/fail"))
    revoke(client, app_client, tokens["refresh_token"])
    worker = make_worker({"backchannel_max_attempts": 2})
    assert worker.run_once() == {"retry": 1}
    clock.advance(3)
    assert worker.run_once() == {"given_up": 1}
    clock.advance(3600)
    assert sum(worker.run_once().values()) == 0
    (row,) = outbox(app)
    assert row.failed_at is not None and row.attempts == 2
    assert receiver.hits["/fail"] == 2
    (given_up,) = events(app, audit.BACKCHANNEL_LOGOUT_GIVEN_UP)
    assert given_up.detail["attempts"] == 2 and given_up.detail["error"] == "HTTP 500"
    # The audit trail never holds the token.
    for event in [*events(app, audit.BACKCHANNEL_LOGOUT_FAILED), given_up]:
        assert "eyJ" not in str(event.detail)


def test_a_receiver_that_hangs_times_out_and_does_not_hold_up_the_others(
        app, oauth, client, receiver, make_worker):
    hanging, slow_tokens = signed_in(oauth, receiver.url("/hang"), name="Hangs")
    healthy, ok_tokens = signed_in(oauth, receiver.url("/ok"), name="Healthy")
    revoke(client, hanging, slow_tokens["refresh_token"])
    revoke(client, healthy, ok_tokens["refresh_token"])
    worker = make_worker({"backchannel_timeout_seconds": 1})
    started = time.monotonic()
    assert worker.run_once() == {"retry": 1, "delivered": 1}
    assert time.monotonic() - started < 3
    rows = {row.client_id: row for row in outbox(app)}
    assert rows[healthy.client_id].delivered_at is not None
    stuck = rows[hanging.client_id]
    assert stuck.delivered_at is None and stuck.attempts == 1
    assert "timed out" in stuck.last_error
    assert stuck.locked_until is None  # released for the next attempt


def test_the_background_worker_keeps_delivering_while_a_receiver_hangs(
        app, oauth, client, receiver, make_worker):
    hanging, slow_tokens = signed_in(oauth, receiver.url("/hang"), name="Hangs")
    healthy, ok_tokens = signed_in(oauth, receiver.url("/ok"), name="Healthy")
    worker = make_worker({"backchannel_timeout_seconds": 5}, poll=0.2)
    worker.start()
    try:
        revoke(client, hanging, slow_tokens["refresh_token"])
        receiver.wait_for("/hang", timeout=5)
        revoke(client, healthy, ok_tokens["refresh_token"])
        started = time.monotonic()
        receiver.wait_for("/ok", timeout=3)  # while the other one still hangs
        assert time.monotonic() - started < 3
        assert receiver.hits["/hang"] == 1
    finally:
        receiver.release.set()
        worker.stop(timeout=10)


def test_a_commit_that_enqueued_wakes_the_worker_of_its_process(
        app, oauth, client, receiver, make_worker):
    app_client, tokens = signed_in(oauth, receiver.url("/ok"))
    worker = make_worker(poll=30)  # it would not look again on its own for 30 s
    worker.start()
    try:
        time.sleep(0.2)  # asleep now
        started = time.monotonic()
        revoke(client, app_client, tokens["refresh_token"])
        receiver.wait_for("/ok", timeout=5)
        assert time.monotonic() - started < 2
    finally:
        worker.stop(timeout=10)


def test_redirects_are_not_followed(app, oauth, client, receiver, make_worker):
    app_client, tokens = signed_in(oauth, receiver.url("/redirect"))
    revoke(client, app_client, tokens["refresh_token"])
    assert make_worker().run_once() == {"retry": 1}
    assert receiver.hits["/redirect"] == 1 and receiver.hits["/ok"] == 0
    (row,) = outbox(app)
    assert row.last_error == "HTTP 302: redirects are not followed"


def test_in_production_private_addresses_and_http_are_refused(
        app, oauth, client, receiver, make_worker):
    port = receiver.base.rsplit(":", 1)[1]
    https_loopback, first = signed_in(oauth, f"https://127.0.0.1:{port}/ok", name="TLS")
    plain, second = signed_in(oauth, receiver.url("/ok"), name="Plain")
    revoke(client, https_loopback, first["refresh_token"])
    revoke(client, plain, second["refresh_token"])
    production = make_worker({"env": "production", "issuer": "https://auth.example.com"})
    assert production.run_once() == {"retry": 2}
    assert receiver.hits == {}, "no request reached the private address"
    rows = {row.client_id: row for row in outbox(app)}
    assert "127.0.0.1, a private, loopback or reserved address" in \
        rows[https_loopback.client_id].last_error
    assert rows[plain.client_id].last_error == "refused: only https receivers in production"


def test_the_private_address_check_covers_every_resolved_address(monkeypatch):
    answers = [(2, 1, 6, "", ("93.184.215.14", 443)), (2, 1, 6, "", ("10.0.0.7", 443))]
    monkeypatch.setattr(sender.socket, "getaddrinfo", lambda *a, **k: answers)
    outcome = sender.send("https://rebinding.example/bcl", "token",
                          sender.Policy(timeout=1, https_only=True, allow_private=False))
    assert not outcome.ok and "10.0.0.7" in outcome.error
    for address in ("169.254.169.254", "100.64.0.1", "::1", "fe80::1", "::ffff:127.0.0.1",
                    "0.0.0.0", "224.0.0.1"):  # noqa: S104 - an address checked, not bound
        assert not sender._public(address), address
    assert sender._public("93.184.215.14") and sender._public("2606:2800:220:1::1")


# -- several workers ----------------------------------------------------------------------
def test_two_workers_never_send_the_same_message_at_once(
        app, oauth, client, run, receiver, make_worker, clock):
    receiver.slow_seconds = 0.3
    app_client, _ = signed_in(oauth, receiver.url("/slow"))
    for _ in range(11):
        oauth.login_pair(app_client, scope="openid read")
    assert run("clients", "disable", app_client.client_id).exit_code == 0
    assert len(outbox(app)) == 12
    clock.advance(2)  # the CLI's clock is the real one
    workers = [make_worker(name=f"worker-{n}", concurrency=3) for n in (1, 2)]
    tallies: list[Any] = []
    barrier = threading.Barrier(len(workers))

    def drain(worker: LogoutWorker) -> None:
        barrier.wait()
        tallies.append(worker.run_once())

    threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sum(t["delivered"] for t in tallies) == 12
    assert all(t["delivered"] > 0 for t in tallies), f"both workers took part: {tallies}"
    jtis = [d.jti for d in receiver.deliveries]
    assert len(jtis) == len(set(jtis)) == 12, "each message was sent exactly once"
    assert set(receiver.max_overlap.values()) == {1}
    rows = outbox(app)
    assert {row.locked_by for row in rows} == {"worker-1", "worker-2"}
    assert all(row.delivered_at is not None and row.attempts == 1 for row in rows)
    assert len(events(app, audit.BACKCHANNEL_LOGOUT_DELIVERED)) == 12


def test_a_claim_is_taken_by_one_worker_only(app, oauth, client, receiver, clock):
    app_client, tokens = signed_in(oauth, receiver.url("/ok"))
    revoke(client, app_client, tokens["refresh_token"])
    with app.app_context():
        engine = db.engine
    first = logout_outbox.claim(engine, "a", now=clock.now, lease=30)
    assert len(first) == 1
    assert logout_outbox.claim(engine, "b", now=clock.now, lease=30) == []
    clock.advance(31)  # the lease ran out (a worker died mid-delivery): taken again
    assert [m.id for m in logout_outbox.claim(engine, "b", now=clock.now, lease=30)] == \
        [first[0].id]
    # The worker that lost its claim cannot record a failure over the new holder's.
    assert logout_outbox.failed(engine, first[0], "a", now=clock.now, error="x",
                                max_attempts=5) is None


def test_the_worker_command_delivers_what_is_due(app, oauth, client, run, receiver):
    app_client, tokens = signed_in(oauth, receiver.url("/ok"))
    revoke(client, app_client, tokens["refresh_token"])
    result = run("worker", "--once")
    assert result.exit_code == 0, result.output
    assert "delivered 1" in result.output and "pending now 0" in result.output
    logout_receiver.verify(receiver.tokens("/ok")[0], oauth.jwks(),
                           issuer=settings_of(app).issuer, client_id=app_client.client_id)


def test_the_admin_form_sets_shows_refuses_and_clears_the_uri(app, oauth):
    admin = signed_in_admin(app, oauth)
    form = {"name": "Shop", "client_type": "confidential",
            "redirect_uris": "https://shop.example.com/cb", "scope": "openid",
            "refresh_idle_ttl": "3600", "refresh_absolute_ttl": "0", "reuse_grace": "10",
            "access_token_ttl": "", "bind_ip": "off", "on_binding_mismatch": "revoke",
            "backchannel_logout_uri": "https://shop.example.com/bcl",
            "backchannel_logout_session_required": "on"}
    page = admin.client.get("/admin/clients/new").get_data(as_text=True)
    assert 'name="backchannel_logout_uri"' in page
    created = admin.client.post("/admin/clients/new", data={**page_fields(page), **form})
    assert created.status_code == 200, created.get_data(True)
    client_id = re.search(r'id="client-id">([^<]+)<', created.get_data(True)).group(1)
    edit = admin.client.get(f"/admin/clients/{client_id}").get_data(as_text=True)
    assert 'value="https://shop.example.com/bcl"' in edit
    assert re.search(r'name="backchannel_logout_session_required" checked', edit)

    bad = admin.client.post(f"/admin/clients/{client_id}", data={
        **form_fields(edit), **form, "backchannel_logout_uri": "http://shop.example.com/bcl"})
    assert bad.status_code == 400
    text = bad.get_data(as_text=True)
    assert 'id="backchannel_logout_uri-error"' in text and "https" in text
    assert 'value="http://shop.example.com/bcl"' in text  # kept for correcting

    cleared = admin.client.post(f"/admin/clients/{client_id}", data={
        **form_fields(edit), **{k: v for k, v in form.items()
                                if k != "backchannel_logout_session_required"},
        "backchannel_logout_uri": ""})
    assert cleared.status_code == 303, cleared.get_data(True)
    with app.app_context():
        record = domain_clients.get_client(db.session, client_id)
    assert record.backchannel_logout_uri is None
    assert record.backchannel_logout_session_required is False


def test_an_https_receiver_must_have_a_certificate_we_trust(tmp_path):
    """TLS is verified against the system's trust store and the URI's host name: a
    self-signed receiver is refused before any request is sent."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    requests_seen: list[bytes] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                requests_seen.append(tls.recv(4096))
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    outcome = sender.send(f"https://127.0.0.1:{port}/bcl", "token",
                          sender.Policy(timeout=3, https_only=True, allow_private=True))
    thread.join(5)
    listener.close()
    assert not outcome.ok
    assert "CERTIFICATE_VERIFY_FAILED" in outcome.error, outcome.error
    assert requests_seen == []
