"""The ``authserver`` command's conveniences: ``--version``, ``-h``, ``clients list`` with a
header and a state column, ``db purge --dry-run`` (counts, deletes nothing) and ``config
check`` (the effective settings with their source, secrets masked, and every problem, even
when the settings are invalid). The CLI in process, through click's runner."""

from __future__ import annotations

import importlib.metadata
import os
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from authserver.cli import cli
from authserver.extensions import db
from authserver.storage.models import RefreshToken, TokenFamily

SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

SECRET_KEY = "k" * 40
METRICS_TOKEN = "m" * 40


def check(monkeypatch: pytest.MonkeyPatch, **env: str):
    """``authserver config check`` with these AUTHSERVER_* variables (and no others)."""
    for key in [k for k in os.environ if k.startswith("AUTHSERVER_")]:
        if not key.startswith("AUTHSERVER_TEST_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv("AUTHSERVER_" + key, value)
    return CliRunner().invoke(cli, ["config", "check"])


@SQLITE
def test_version_and_short_help(run):
    version = run("--version")
    assert version.exit_code == 0
    assert version.output == f"authserver {importlib.metadata.version('authserver')}\n"
    for args in (["-h"], ["users", "-h"], ["users", "list", "-h"], ["db", "purge", "-h"],
                 ["config", "check", "-h"]):
        result = run(*args)
        assert result.exit_code == 0 and result.output.startswith("Usage: "), args
        assert result.output == run(*args[:-1], "--help").output


@SQLITE
def test_clients_list_has_a_header_and_a_state(run, oauth):
    assert run("clients", "list").output == "no clients yet\n"
    kept, _ = oauth.create_client(name="Kept", grant_types=["client_credentials"])
    off, _ = oauth.create_client(name="Off", grant_types=["client_credentials"])
    assert run("clients", "disable", off.client_id).exit_code == 0
    lines = run("clients", "list").output.splitlines()
    assert lines[0].split() == ["CLIENT_ID", "TYPE", "STATE", "GRANT", "TYPES", "NAME"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows[kept.client_id][1:3] == ["confidential", "active"]
    assert rows[off.client_id][1:3] == ["confidential", "disabled"]


def counts(output: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", output)}


@SQLITE
def test_purge_dry_run_counts_what_purge_deletes_and_deletes_nothing(run, app, oauth):
    phone = oauth.first_party_app()
    oauth.create_user()
    for _ in range(2):  # two sessions: one rotated, then both ended
        pair = oauth.login_pair(phone)
        assert oauth.refresh(phone, pair["refresh_token"]).status_code == 200
    assert run("users", "sign-out", "alice").exit_code == 0

    def rows() -> tuple[int, int]:
        with app.app_context():
            families = db.session.scalar(select(func.count()).select_from(TokenFamily))
            tokens = db.session.scalar(select(func.count()).select_from(RefreshToken))
            db.session.remove()
            return families, tokens

    before = rows()
    dry = run("db", "purge", "--retention-days", "0", "--dry-run")
    assert dry.exit_code == 0 and dry.output.startswith("would purge ")
    assert rows() == before == (2, 4)
    real = run("db", "purge", "--retention-days", "0")
    assert real.exit_code == 0, real.output
    assert counts(dry.output) == counts(real.output)
    assert counts(real.output)["token_families"] == 2
    assert counts(real.output)["refresh_tokens"] == 4
    assert rows() == (0, 0)
    assert counts(run("db", "purge", "--dry-run").output) == dict.fromkeys(counts(dry.output), 0)


@SQLITE
def test_config_check_prints_the_settings_masked_and_passes(monkeypatch, database_url,
                                                            keys_dir):
    result = check(monkeypatch, DATABASE_URL=database_url, KEYS_DIR=str(keys_dir),
                   SECRET_KEY=SECRET_KEY, METRICS_TOKEN=METRICS_TOKEN)
    assert result.exit_code == 0, result.output
    out = result.output
    assert SECRET_KEY not in out and METRICS_TOKEN not in out
    assert "AUTHSERVER_SECRET_KEY = *** (source: env)\n" in out
    assert "AUTHSERVER_METRICS_TOKEN = *** (source: env)\n" in out
    assert re.search(r"^AUTHSERVER_ISSUER = http\S+ \(source: (default|file)\)$", out, re.M)
    assert f"AUTHSERVER_KEYS_DIR = {keys_dir} (source: env)\n" in out
    assert re.search(r"^ok: keys: active key \S+", out, re.M)
    assert re.search(r"^ok: database: .* migrated to ", out, re.M)
    assert "problem:" not in out and out.rstrip().splitlines()[-1].startswith("no problems")


def test_config_check_lists_every_problem_without_a_traceback(monkeypatch, tmp_path: Path):
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()  # a database nobody migrated
    result = check(monkeypatch, ENV="prod", ACCESS_TOKEN_TTL="abc", SIGNING_ALG="HS256",
                   KEYS_DIR=str(tmp_path / "no-keys"), DATABASE_URL=f"sqlite:///{empty}",
                   REDIS_URL="redis://:hunter2-secret@127.0.0.1:1/0", SECRET_KEY="short",
                   TYPO_SETTING="1")
    assert result.exit_code == 1
    out = result.output
    assert "Traceback" not in out and "hunter2-secret" not in out and "short" not in out
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    for expected in ("AUTHSERVER_ENV: must be", "AUTHSERVER_ACCESS_TOKEN_TTL: expected an "
                     "integer", "AUTHSERVER_SIGNING_ALG: must be one of",
                     "AUTHSERVER_SECRET_KEY: must be at least 32", "keys: ",
                     "is at no revision", "redis: redis://:***@127.0.0.1:1/0 unreachable"):
        assert any(expected in line for line in problems), (expected, out)
    assert "AUTHSERVER_REDIS_URL = redis://:***@127.0.0.1:1/0 (source: env)" in out
    assert "warning: AUTHSERVER_TYPO_SETTING is not a setting" in out
    assert out.rstrip().endswith(f"{len(problems)} problem(s)")


def test_config_check_on_a_missing_database_file_creates_nothing(monkeypatch, tmp_path,
                                                                 keys_dir):
    missing = tmp_path / "sub" / "db.sqlite3"
    result = check(monkeypatch, DATABASE_URL=f"sqlite:///{missing}", KEYS_DIR=str(keys_dir),
                   SECRET_KEY=SECRET_KEY)
    assert result.exit_code == 1
    assert f"problem: database: {missing} does not exist" in result.output
    assert not missing.parent.exists()
