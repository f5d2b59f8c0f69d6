"""The ``authserver`` command: each command works, each failure is one line and non-zero."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from authserver.extensions import db
from authserver.storage.models import Client, TokenFamily, User
from tests.support.oauth import PASSWORD


def test_users_create_and_list(run, app):
    result = run("users", "create", "alice", "--password-stdin", "--email", "a@example.com",
                 input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    assert "created user alice" in result.output
    listed = json.loads(run("users", "list", "--json").output)
    assert listed[0]["username"] == "alice" and listed[0]["email"] == "a@example.com"
    with app.app_context():
        user = db.session.scalar(select(User))
        assert user.password_hash.startswith("$argon2id$")
        assert PASSWORD not in user.password_hash


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        pytest.param(["users", "create", "bob", "--password-stdin"], "short\n",
                     "at least 8", id="short-password"),
        pytest.param(["users", "create", "bad name", "--password-stdin"], PASSWORD + "\n",
                     "username", id="bad-username"),
        pytest.param(["users", "create", "bob", "--password-stdin"], "", "no password",
                     id="empty-stdin"),
        pytest.param(["users", "deactivate", "nobody"], None, "no user 'nobody'",
                     id="unknown-user"),
        pytest.param(["clients", "create", "--name", "x", "--public", "--grant-type",
                      "client_credentials"], None, "public client", id="public-cc"),
        pytest.param(["clients", "create", "--name", "x", "--grant-type", "password"], None,
                     "first-party", id="password-third-party"),
        pytest.param(["clients", "create", "--name", "x", "--access-ttl", "5"], None,
                     "access_token_ttl", id="ttl-bounds"),
        pytest.param(["clients", "create", "--name", "x", "--scope", 'a"b'], None,
                     "invalid scope", id="bad-scope"),
        pytest.param(["clients", "create", "--name", "x", "--first-party",
                      "--redirect-uri", "http://evil.example/cb"], None, "https",
                     id="http-redirect"),
    ],
)
def test_bad_input_is_one_clear_line(run, app, args, stdin, message):
    result = run(*args, input=stdin)
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert message in lines[0]
    with app.app_context():  # and nothing changed
        assert db.session.scalar(select(Client)) is None
        assert db.session.scalars(select(User).where(User.username == "bob")).first() is None


def test_clients_create_json_prints_the_secret_once(run, app):
    result = run("clients", "create", "--name", "Billing", "--scope", "read write",
                 "--grant-type", "client_credentials", "--access-ttl", "300", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["client_id"] and len(data["client_secret"]) >= 43
    assert data["grant_types"] == ["client_credentials"] and data["access_token_ttl"] == 300
    listed = run("clients", "list", "--json").output
    assert data["client_secret"] not in listed
    with app.app_context():
        stored = db.session.scalar(select(Client))
        assert stored.secret_digest != data["client_secret"]
        assert data["client_secret"] not in repr(stored.__dict__)


def test_public_first_party_client(run):
    result = run("clients", "create", "--name", "Bank app", "--public", "--first-party",
                 "--json")
    data = json.loads(result.output)
    assert data["client_secret"] is None and data["token_endpoint_auth_method"] == "none"
    assert data["grant_types"] == ["password", "refresh_token"]


def test_deactivate_revokes_every_family(run, app, oauth):
    oauth.create_user()
    app_client = oauth.first_party_app()
    pairs = [oauth.login_pair(app_client) for _ in range(2)]
    result = run("users", "deactivate", "alice")
    assert result.exit_code == 0 and "revoked 2" in result.output
    for pair in pairs:
        assert oauth.refresh(app_client, pair["refresh_token"]).status_code == 400
    assert oauth.password_login(app_client).status_code == 400
    with app.app_context():
        reasons = db.session.scalars(select(TokenFamily.revoke_reason)).all()
    assert reasons == ["user_deactivated", "user_deactivated"]


def test_keys_ensure_and_list(run, app, tmp_path):
    result = run("keys", "ensure")
    assert result.exit_code == 0 and "found active RS256 key" in result.output
    listed = json.loads(run("keys", "list", "--json").output)
    assert [k["state"] for k in listed].count("active") == 1


def _authserver(*args: str, env: dict[str, str], input: str | None = None):
    exe = Path(sys.executable).with_name("authserver")
    return subprocess.run([str(exe), *args], env=env, input=input, capture_output=True,
                          text=True, timeout=60)


def test_keys_ensure_creates_a_private_key_with_mode_0600(tmp_path):
    env = {**os.environ, "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
           "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    first = _authserver("keys", "ensure", env=env)
    assert first.returncode == 0, first.stderr
    assert "created active RS256 key" in first.stdout
    pems = list((tmp_path / "keys").glob("*.pem"))
    assert len(pems) == 1 and (pems[0].stat().st_mode & 0o777) == 0o600
    second = _authserver("keys", "ensure", env=env)
    assert "found active" in second.stdout
    assert len(list((tmp_path / "keys").glob("*.pem"))) == 1


def test_configuration_errors_are_one_line_each_with_exit_2(tmp_path):
    env = {**os.environ, "AUTHSERVER_ENV": "production",
           "AUTHSERVER_ISSUER": "http://auth.example.com"}
    env.pop("AUTHSERVER_SECRET_KEY", None)
    result = _authserver("keys", "list", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("authserver: configuration error: AUTHSERVER_")
                                   for line in lines)
    assert "Traceback" not in result.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path):
    env = {**os.environ, "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
           "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    assert _authserver("keys", "ensure", env=env).returncode == 0
    result = _authserver("serve", "--port", "1", env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "authserver: error: the database is not migrated; run 'authserver db upgrade'"
    )


def test_serve_refuses_without_a_key(tmp_path):
    env = {**os.environ, "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
           "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    result = _authserver("serve", env=env)
    assert result.returncode == 1
    # A missing directory may be a shared mount that dropped: no advice to create a key.
    assert result.stderr == (f"authserver: error: key directory {tmp_path / 'keys'} does not "
                             "exist; check that it is mounted and that AUTHSERVER_KEYS_DIR "
                             "names it\n")
    (tmp_path / "keys").mkdir()
    result = _authserver("serve", env=env)
    assert result.returncode == 1
    assert "no active signing key" in result.stderr and "Traceback" not in result.stderr
