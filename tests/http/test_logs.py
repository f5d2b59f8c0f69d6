"""Logs in process (docs/operators.md, "Logs"): the request id on every answer and in the
lines written for it, the security events as lines at their levels, the JSON form (every
line parses, no credential in any), and a database outage as one line a failed request."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from authserver.app import create_app
from authserver.domain import audit, events
from authserver.ops import logs
from tests.support.databases import app_settings
from tests.support.oauth import PASSWORD

# One database: what is logged does not depend on it.
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

GENERATED = re.compile(r"[0-9a-f]{16}")


@pytest.fixture
def lines():
    """What our formatter writes (text, or JSON when ``lines.json = True``), from every
    logger, at DEBUG, for the test's length."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)

    class Lines:
        def use_json(self) -> None:
            handler.setFormatter(logs.JsonFormatter())

        def text(self) -> str:
            return stream.getvalue()

        def objects(self) -> list[dict]:
            return [json.loads(line) for line in stream.getvalue().splitlines()]

    yield Lines()
    root.removeHandler(handler)
    root.setLevel(level)


# -- the request id ----------------------------------------------------------------------
@SQLITE
@pytest.mark.parametrize("path", ["/.well-known/jwks.json", "/login", "/no-such-page",
                                  "/oauth/userinfo"])
def test_every_answer_carries_a_fresh_request_id(client, path):
    first, second = client.get(path), client.get(path)
    assert GENERATED.fullmatch(first.headers["X-Request-Id"])
    assert first.headers["X-Request-Id"] != second.headers["X-Request-Id"]


@SQLITE
def test_the_token_fast_path_answer_carries_one_too(oauth):
    app_client = oauth.first_party_app()
    oauth.create_user()
    pair = oauth.login_pair(app_client)
    refreshed = oauth.refresh(app_client, pair["refresh_token"])
    assert refreshed.status_code == 200
    assert GENERATED.fullmatch(refreshed.headers["X-Request-Id"])


@SQLITE
def test_a_spoofed_request_id_is_replaced_without_trusted_proxies(client):
    response = client.get("/login", headers={"X-Request-Id": "attacker-chosen"})
    assert GENERATED.fullmatch(response.headers["X-Request-Id"])


@SQLITE
@pytest.mark.parametrize("settings_overrides", [{"trusted_proxies": 1}])
@pytest.mark.parametrize(("offered", "kept"), [
    ("edge-7f3a.42:abc_1", True),
    ("a" * 128, True),
    ("a" * 129, False),
    ("two words", False),
    ("semi;colon", False),
    ('quote"', False),
])
def test_behind_trusted_proxies_a_well_formed_id_is_kept(client, offered, kept):
    answered = client.get("/login", headers={"X-Request-Id": offered}).headers["X-Request-Id"]
    assert (answered == offered) is kept
    if not kept:
        assert GENERATED.fullmatch(answered)


# -- security events as lines ------------------------------------------------------------
def test_each_event_at_its_level():
    assert logs.event_level(audit.REUSE_DETECTED, {}) == logging.WARNING
    assert logs.event_level(audit.BINDING_MISMATCH, {}) == logging.WARNING
    assert logs.event_level(events.RATE_LIMITED, {}) == logging.WARNING
    assert logs.event_level(events.KEYS_UNAVAILABLE, {}) == logging.WARNING
    assert logs.event_level(audit.BACKCHANNEL_LOGOUT_GIVEN_UP, {}) == logging.WARNING
    assert logs.event_level(audit.FAMILY_REVOKED, {"cause": "reuse_detected"}) == logging.WARNING
    assert logs.event_level(audit.FAMILY_REVOKED, {"cause": "signed_out"}) == logging.INFO
    for event in (audit.SIGN_IN_FAILED, audit.CLIENT_CREATED, audit.USER_CREATED,
                  audit.ADMIN_GRANTED, audit.PASSWORD_RESET, events.DPOP_FAILED,
                  events.KEY_ACTIVATED, events.KEY_RETIRED):
        assert logs.event_level(event, {}) == logging.INFO, event
    for event in (events.TOKEN_REQUEST, events.REFRESH_ROTATED):
        assert logs.event_level(event, {}) == logging.DEBUG, event
    assert logs.event_level(events.DATABASE_ERROR, {}) == 0  # the handler's own line


@SQLITE
def test_reuse_detection_is_a_warning_and_a_normal_refresh_is_debug_only(oauth, lines):
    app_client = oauth.first_party_app(reuse_grace=0)
    oauth.create_user()
    pair = oauth.login_pair(app_client)
    events_log = logging.getLogger(logs.EVENTS_LOGGER)
    events_log.setLevel(logging.INFO)
    try:
        seen = len(lines.text())
        rotated = oauth.refresh(app_client, pair["refresh_token"]).get_json()
        at_info = lines.text()[seen:]
        assert "refresh_rotated" not in at_info and "token_request" not in at_info
        events_log.setLevel(logging.DEBUG)
        oauth.refresh(app_client, rotated["refresh_token"])
        assert "DEBUG authserver.events: refresh_rotated" in lines.text()
        events_log.setLevel(logging.INFO)
        assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 400  # reuse
    finally:
        events_log.setLevel(logging.NOTSET)
    text = lines.text()
    assert re.search(r"WARNING authserver\.events: refresh_token_reuse .*"
                     rf"client_id={re.escape(app_client.client_id)}", text), text
    assert re.search(r"WARNING authserver\.events: family_revoked .*cause=reuse_detected", text)
    for token in (pair["refresh_token"], pair["access_token"], rotated["refresh_token"]):
        assert token not in text


@SQLITE
def test_a_wrong_password_is_an_info_line_without_the_password(oauth, lines):
    app_client = oauth.first_party_app()
    oauth.create_user()
    response = oauth.password_login(app_client, password="Wrong-Guess-123")
    assert response.status_code == 400
    text = lines.text()
    rid = response.headers["X-Request-Id"]
    assert re.search(rf"INFO authserver\.events: sign_in_failed .*cause=.* request_id={rid}",
                     text), text
    assert "Wrong-Guess-123" not in text and PASSWORD not in text


def test_the_listener_costs_the_hot_path_little_at_info():
    logger = logging.getLogger(logs.EVENTS_LOGGER)
    logger.setLevel(logging.INFO)
    try:
        import timeit
        cost = min(timeit.repeat(
            lambda: logs.on_event(events.REFRESH_ROTATED, {"client_id": "c", "family_id": "f"}),
            number=5000, repeat=3)) / 5000
    finally:
        logger.setLevel(logging.NOTSET)
    assert cost < 20e-6, cost  # about 0.5 us on an idle core


# -- the JSON form and the scrubbing -------------------------------------------------------
@SQLITE
@pytest.mark.parametrize("settings_overrides", [{"log_format": "json"}])
def test_json_lines_parse_and_carry_their_fields(oauth, lines):
    lines.use_json()
    app_client = oauth.first_party_app(reuse_grace=0)
    oauth.create_user()
    pair = oauth.login_pair(app_client)
    oauth.refresh(app_client, pair["refresh_token"])
    reused = oauth.refresh(app_client, pair["refresh_token"])
    objects = lines.objects()
    assert objects
    for line in objects:
        assert {"time", "level", "logger", "message", "request_id"} <= line.keys(), line
    [reuse] = [line for line in objects if line.get("event") == audit.REUSE_DETECTED]
    assert reuse["level"] == "WARNING" and reuse["client_id"] == app_client.client_id
    assert reuse["request_id"] == reused.headers["X-Request-Id"]
    assert pair["refresh_token"] not in lines.text()


@pytest.mark.parametrize("secret", [
    "rt_" + "A1b2C3d4" * 5,
    "reg_" + "A1b2C3d4" * 5,
    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
    "Zk3kQ9-x_Pq7LmN2vB8cR4tY6wE1uI0oAsDfGhJkL12",  # a code or client secret's shape
    "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",  # a PKCE verifier (RFC 7636)
])
def test_credential_shaped_strings_are_redacted_in_both_forms(secret):
    record = logging.makeLogRecord({"name": "x", "levelno": logging.ERROR,
                                    "levelname": "ERROR", "msg": "oops %s",
                                    "args": (secret,)})
    record.event, record.event_fields = "some_event", {"detail": f"with {secret}"}
    text, line = logs.TextFormatter().format(record), logs.JsonFormatter().format(record)
    assert secret not in text and secret not in line and "[redacted]" in text
    assert json.loads(line)["detail"] == "with [redacted]"


def test_ordinary_words_ids_and_hashes_are_left_alone():
    for text in ("cl_g5N3QyPwS_pJA30J", "a" * 64, "0123456789abcdef" * 4,
                 "test_the_access_log_has_each_request_but_no_token_code"):
        assert logs.scrub(text) == text


def test_a_forged_line_break_in_a_message_stays_one_line():
    record = logging.makeLogRecord({"name": "x", "levelname": "WARNING",
                                    "msg": "path /a\n2026-01-01 CRITICAL forged"})
    assert "\n" not in logs.TextFormatter().format(record)


@SQLITE
def test_setup_is_idempotent_and_keeps_a_host_s_handlers(database_url, keys_dir):
    root = logging.getLogger()
    before = list(root.handlers)
    for _ in range(2):
        create_app(app_settings(database_url, keys_dir, log_format="json"))
    assert root.handlers == before  # the test runner's handlers, no second one
    assert events._listeners.count(logs.on_event) == 1


# -- a database outage: one line a failed request ------------------------------------------
@pytest.fixture
def outage(keys_dir):
    app = create_app(app_settings("postgresql+psycopg://nobody@127.0.0.1:1/none", keys_dir))
    return app.test_client()


@pytest.mark.parametrize(("method", "path", "data", "status"), [
    ("post", "/oauth/token", {"grant_type": "refresh_token", "refresh_token": "rt_" + "x" * 43,
                              "client_id": "cl_x"}, 503),  # the fast path
    ("post", "/oauth/token", {"grant_type": "password", "username": "a", "password": "b",
                              "client_id": "cl_x"}, 503),
    ("post", "/oauth/revoke", {"token": "x", "client_id": "cl_x"}, 503),
    ("get", "/oauth/authorize?client_id=cl_x&response_type=code", None, 503),
    ("get", "/oauth/status/1", None, 503),
])
def test_a_database_outage_is_one_short_line_a_failed_request(outage, lines, method, path,
                                                              data, status):
    seen: list[tuple[str, dict]] = []
    events.subscribe(listener := lambda name, fields: seen.append((name, dict(fields))))
    try:
        response = getattr(outage, method)(path, data=data)
    finally:
        events.unsubscribe(listener)
    assert response.status_code == status
    assert response.headers["Retry-After"] == "1"
    errors = [line for line in lines.text().splitlines() if " ERROR " in line]
    assert len(errors) == 1, lines.text()
    assert "database unavailable: OperationalError: " in errors[0]
    assert f"request_id={response.headers['X-Request-Id']}" in errors[0]
    assert len(errors[0]) < 600 and "Traceback" not in lines.text()
    assert (events.DATABASE_ERROR, {"error": "OperationalError"}) in seen
