"""CLI parity for client administration: ``clients show|update|rotate-secret|disable|enable|
delete`` (each with ``--json``) and the admin role commands of ``users``.

The parity tests drive the click command in-process (both databases); the error tests run
the installed ``authserver`` executable, as an operator does, and read its stderr.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.admin import REDIRECT, audit_events, client_rows
from tests.support.oauth import PASSWORD, assert_oauth_error, basic

AUTHSERVER = str(Path(sys.executable).with_name("authserver"))


@pytest.fixture
def run(run):
    """conftest.py's ``run``, asserting exit code 0 unless ``ok=False``."""

    def invoke(*args: str, input: str | None = None, ok: bool = True):
        result = run(*args, input=input)
        if ok:
            assert result.exit_code == 0, result.output
        return result

    return invoke


def as_json(result) -> dict:
    return json.loads(result.output)


def test_every_client_command_with_json(run, oauth, app, clock):
    created = as_json(run("clients", "create", "--name", "Shop", "--redirect-uri", REDIRECT,
                          "--scope", "openid", "--json"))
    cid, secret = created["client_id"], created["client_secret"]
    assert created["grant_types"] == ["authorization_code", "refresh_token"]

    shown = as_json(run("clients", "show", cid, "--json"))
    assert shown["client_id"] == cid and shown["redirect_uris"] == [REDIRECT]
    assert "client_secret" not in shown and secret not in json.dumps(shown)

    updated = as_json(run("clients", "update", cid, "--redirect-uri", REDIRECT,
                          "--redirect-uri", REDIRECT + "/v2", "--reuse-grace", "0",
                          "--json"))
    assert updated["redirect_uris"] == [REDIRECT, REDIRECT + "/v2"]
    assert updated["reuse_grace"] == 0 and updated["scope"] == "openid"  # others unchanged

    rotated = as_json(run("clients", "rotate-secret", cid, "--overlap", "60", "--json"))
    assert rotated["client_id"] == cid and rotated["client_secret"] != secret
    assert rotated["previous_secret_valid_for"] == 60

    def authenticates(value):  # client auth passes; the grant is not this client's
        response = oauth.token({"grant_type": "client_credentials"},
                               {"Authorization": basic(cid, value)})
        return response.get_json()["error"] == "unauthorized_client"

    assert authenticates(secret) and authenticates(rotated["client_secret"])
    clock.advance(61)
    assert not authenticates(secret) and authenticates(rotated["client_secret"])

    disabled = as_json(run("clients", "disable", cid, "--json"))
    assert disabled == {"client_id": cid, "active": False, "sessions_revoked": 0}
    assert as_json(run("clients", "show", cid, "--json"))["active"] is False
    enabled = as_json(run("clients", "enable", cid, "--json"))
    assert enabled["active"] is True

    listed = json.loads(run("clients", "list", "--json").output)
    assert [c["client_id"] for c in listed] == [cid]
    deleted = as_json(run("clients", "delete", cid, "--yes", "--json"))
    assert deleted == {"client_id": cid, "deleted": True, "sessions_revoked": 0}
    assert json.loads(run("clients", "list", "--json").output) == []
    actors = {e.detail.get("actor") for e in audit_events(app, "client_updated")}
    assert actors == {"cli"}


def test_text_output_is_readable(run):
    created = run("clients", "create", "--name", "Batch", "--grant-type", "client_credentials")
    assert "client_secret:" in created.output and "shown only once" in created.output
    cid = created.output.split()[1]
    shown = run("clients", "show", cid).output
    assert "Batch" in shown and "client_secret:" not in shown
    assert "previous secret stays valid for 0" not in run(
        "clients", "rotate-secret", cid, "--overlap", "0").output
    assert f"{cid} disabled; revoked 0 session(s)" in run("clients", "disable", cid).output


def test_disable_and_delete_revoke_sessions(run, oauth):
    oauth.create_user()
    mobile = oauth.first_party_app()
    pairs = [oauth.login_pair(mobile) for _ in range(2)]
    assert as_json(run("clients", "disable", mobile.client_id, "--json")
                   )["sessions_revoked"] == 2
    assert_oauth_error(oauth.refresh(mobile, pairs[0]["refresh_token"]), "invalid_client", 401)
    run("clients", "enable", mobile.client_id)
    fresh = oauth.login_pair(mobile)
    assert as_json(run("clients", "delete", mobile.client_id, "--yes", "--json")
                   )["sessions_revoked"] == 1
    assert_oauth_error(oauth.refresh(mobile, fresh["refresh_token"]), "invalid_client", 401)


def test_delete_asks_first(run, app, oauth):
    machine, _ = oauth.create_client(name="m", grant_types=["client_credentials"])
    refused = run("clients", "delete", machine.client_id, input="n\n", ok=False)
    assert refused.exit_code != 0 and len(client_rows(app)) == 1
    run("clients", "delete", machine.client_id, input="y\n")
    assert client_rows(app) == []


def test_users_admin_role_commands(run, app):
    result = run("users", "create", "root", "--admin", "--password-stdin",
                 input=PASSWORD + "\n")
    assert "as an admin" in result.output
    run("users", "create", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert "alice is now an admin" in run("users", "grant-admin", "alice").output
    listed = {u["username"]: u["admin"] for u in json.loads(run("users", "list", "--json")
                                                            .output)}
    assert listed == {"root": True, "alice": True}
    assert "no longer an admin" in run("users", "revoke-admin", "alice").output
    assert json.loads(run("users", "list", "--json").output)[1]["admin"] is False
    granted = audit_events(app, "admin_granted")
    assert len(granted) == 2 and len(audit_events(app, "admin_revoked")) == 1
    missing = run("users", "grant-admin", "nobody", ok=False)
    assert missing.exit_code != 0 and "no user 'nobody'" in missing.output


BAD_INPUT = [
    (["update", "{id}", "--redirect-uri", "http://evil.example/cb"],
     "--redirect-uri: redirect URI 'http://evil.example/cb' must use https"),
    (["update", "{id}", "--redirect-uri", REDIRECT + "#x"], "--redirect-uri:"),
    (["update", "{id}", "--post-logout-redirect-uri", "javascript:x"],
     "--post-logout-redirect-uri:"),
    (["update", "{id}", "--access-ttl", "5"], "--access-ttl: access_token_ttl must be"),
    (["update", "{id}", "--reuse-grace", "301"], "--reuse-grace:"),
    (["update", "{id}", "--grant-type", "refresh_token"], "--grant-type: refresh_token needs"),
    (["update", "{id}", "--grant-type", "password"], "--grant-type: the password grant"),
    (["update", "{id}", "--scope", 'a"b'], "--scope: invalid scope"),
    (["update", "{id}", "--name", " "], "--name: name must be 1 to 255"),
    (["update", "{id}"], "nothing to change"),
    (["update", "cl_missing", "--name", "x"], "no client 'cl_missing'"),
    (["show", "cl_missing"], "no client 'cl_missing'"),
    (["rotate-secret", "cl_missing"], "no client 'cl_missing'"),
    (["rotate-secret", "{id}", "--overlap", "-1"], "--overlap: overlap must be"),
    (["disable", "cl_missing"], "no client 'cl_missing'"),
    (["enable", "cl_missing"], "no client 'cl_missing'"),
    (["delete", "cl_missing", "--yes"], "no client 'cl_missing'"),
]


@pytest.mark.parametrize(("args", "expected"), BAD_INPUT,
                         ids=["-".join(a[2:] or a[:1])[:40] for a, _ in BAD_INPUT])
def test_bad_input_is_one_line_naming_the_field(run, app, oauth, args, expected):
    shop, _ = oauth.create_client(name="Shop", redirect_uris=[REDIRECT])
    before = client_rows(app)
    result = run("clients", *[a.replace("{id}", shop.client_id) for a in args], ok=False)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith("authserver: error") and expected in lines[0], lines[0]
    assert client_rows(app) == before


# -- the real executable: one line on stderr, non-zero, nothing changed ------------------------
@pytest.fixture(scope="module")
def operator(tmp_path_factory):
    """The installed command against a migrated SQLite database, as docs/operators.md says."""
    workdir = tmp_path_factory.mktemp("cli")
    database = workdir / "a.sqlite3"
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": f"sqlite:///{database}",
           "AUTHSERVER_KEYS_DIR": str(workdir / "keys"), "AUTHSERVER_LOG_LEVEL": "WARNING"}

    def authserver(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([AUTHSERVER, *args], env=env, input=input, capture_output=True,
                              text=True, timeout=120)

    assert authserver("db", "upgrade").returncode == 0
    authserver.database = database  # type: ignore[attr-defined]
    return authserver


def stored_clients(operator) -> list[tuple]:
    with sqlite3.connect(operator.database) as conn:
        return conn.execute("select * from clients order by id").fetchall()


@pytest.fixture(scope="module")
def shop(operator):
    result = operator("clients", "create", "--name", "Shop", "--redirect-uri", REDIRECT,
                      "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize(("args", "expected"), [
    (["update", "{id}", "--redirect-uri", "http://evil.example/cb"],
     "--redirect-uri: redirect URI 'http://evil.example/cb' must use https"),
    (["update", "{id}", "--access-ttl", "soon"], "'soon' is not a valid integer"),
    (["delete", "cl_missing"], "no client 'cl_missing'"),
], ids=["invalid-redirect-uri", "usage-error", "unknown-client"])
def test_the_executable_prints_one_line_on_stderr(operator, shop, args, expected):
    before = stored_clients(operator)
    result = operator("clients", *[a.replace("{id}", shop["client_id"]) for a in args])
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("authserver: error") and expected in lines[0], lines[0]
    assert stored_clients(operator) == before


def test_a_public_client_has_no_secret_to_rotate(operator):
    app = json.loads(operator("clients", "create", "--name", "Phone", "--public",
                              "--first-party", "--json").stdout)
    result = operator("clients", "rotate-secret", app["client_id"])
    assert result.returncode != 0
    assert result.stderr.strip() == ("authserver: error: CLIENT_ID: a public client has no "
                                     "secret to rotate")


def test_the_executable_prints_json_on_stdout(operator, shop):
    result = operator("clients", "rotate-secret", shop["client_id"], "--overlap", "0", "--json")
    assert result.returncode == 0 and result.stderr == ""
    assert json.loads(result.stdout)["previous_secret_valid_until"] is None
    admin = operator("users", "create", "ops", "--admin", "--password-stdin",
                     input=PASSWORD + "\n")
    assert admin.returncode == 0 and "ops as an admin" in admin.stdout


@pytest.mark.parametrize("command", [["users", "list"], ["audit", "list"], ["db", "purge"],
                                     ["clients", "list"]])
def test_an_unmigrated_database_is_one_line_naming_the_fix(tmp_path, command):
    env = {**os.environ, "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'new.sqlite3'}",
           "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys")}
    result = subprocess.run([AUTHSERVER, *command], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == ("authserver: error: the database is not migrated; run "
                                     "'authserver db upgrade'")


def test_a_since_too_far_back_is_one_line(operator):
    result = operator("audit", "list", "--since", "99999999999d")
    assert result.returncode != 0
    assert result.stderr.strip() == ("authserver: error: --since: '99999999999d' reaches back "
                                     "before year 1")
