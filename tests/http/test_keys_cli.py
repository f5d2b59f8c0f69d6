"""``authserver keys ...`` as an operator runs it: one line per failure.

The command runs in-process through ``authserver.cli.main`` (the console script's entry
point, reading the environment); start-up failures of ``serve`` run as real processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from authserver.cli import main

AUTHSERVER = str(Path(sys.executable).with_name("authserver"))


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTHSERVER_")}
    return {**base, "AUTHSERVER_KEYS_DIR": str(tmp_path / "keys"),
            "AUTHSERVER_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
            "AUTHSERVER_JWKS_MAX_AGE": "60", "AUTHSERVER_LOG_LEVEL": "WARNING"}


@pytest.fixture
def run(monkeypatch, capsys):
    """``authserver ARGS`` in this process, with exactly ``env`` as its environment."""

    def invoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
        with monkeypatch.context() as patch:
            for name in [k for k in os.environ if k.startswith("AUTHSERVER_")]:
                patch.delenv(name)
            for name, value in env.items():
                if name.startswith("AUTHSERVER_"):
                    patch.setenv(name, value)
            capsys.readouterr()
            try:
                main(list(args))
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return invoke


def process(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AUTHSERVER, *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def ok(run):
    def invoke(env: dict[str, str], *args: str) -> str:
        result = run(env, *args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return invoke


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("authserver: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def listed(ok):
    return lambda env: json.loads(ok(env, "keys", "list", "--json"))


def test_rotate_list_activate_prune_remove(env, run, ok, listed):
    assert "created active ES256 key" in ok(env, "keys", "ensure", "--alg", "ES256")
    first = listed(env)[0]
    out = ok(env, "keys", "rotate", "--alg", "EdDSA")
    assert out.startswith("created next EdDSA key ") and "becomes active at" in out
    assert "longer than the JWKS cache lifetime 60 s" in out

    keys = {k["state"]: k for k in listed(env)}
    assert set(keys) == {"active", "next"}
    nxt = keys["next"]
    assert set(nxt) == {"kid", "alg", "state", "created_at", "state_changed_at",
                        "activates_at", "removable_at", "encrypted"}
    assert nxt["alg"] == "EdDSA" and nxt["activates_at"] > nxt["created_at"]
    table = ok(env, "keys", "list")
    assert table.splitlines()[0].split()[:5] == ["STATE", "KID", "ALG", "CREATED", "CHANGED"]
    assert f"next     {nxt['kid']}" in table and "active at" in table

    again = one_line_error(run(env, "keys", "rotate"))
    assert "already waiting" in again and "--force" in again

    early = one_line_error(run(env, "keys", "activate", nxt["kid"]))
    assert "published for only" in early and "--force" in early
    # Refused: nothing changed. (By kid: keys created in one second have no set order.)
    assert {k["kid"]: k["state"] for k in listed(env)}[nxt["kid"]] == "next"

    out = ok(env, "keys", "activate", nxt["kid"][:12], "--force")
    assert out.startswith(f"activated EdDSA key {nxt['kid']}; retired {first['kid']}")
    keys = {k["kid"]: k for k in listed(env)}
    assert keys[nxt["kid"]]["state"] == "active"
    assert keys[first["kid"]]["state"] == "retired" and keys[first["kid"]]["removable_at"]

    assert ok(env, "keys", "prune").startswith("nothing to prune; 1 retired key(s) still needed")
    assert "--force" in one_line_error(run(env, "keys", "remove", first["kid"]))
    assert "active key" in one_line_error(run(env, "keys", "remove", nxt["kid"]))
    assert ok(env, "keys", "remove", first["kid"], "--force").startswith("removed retired")
    assert [k["kid"] for k in listed(env)] == [nxt["kid"]]


def test_signing_alg_setting_is_the_default_and_is_validated(env, run, ok):
    assert "created active EdDSA key" in ok({**env, "AUTHSERVER_SIGNING_ALG": "EdDSA"},
                                            "keys", "ensure")
    line = one_line_error(run({**env, "AUTHSERVER_SIGNING_ALG": "HS256"}, "keys", "list"), 2)
    assert line.startswith("authserver: configuration error: AUTHSERVER_SIGNING_ALG")
    assert "RS256, ES256, EdDSA" in line


def test_unknown_kid_and_bad_alg_are_one_line(env, run, ok):
    ok(env, "keys", "ensure")
    assert "is not a key" in one_line_error(run(env, "keys", "activate", "nosuchkey"))
    # One kid in 64 starts with "-" (base64url): it is a kid, not an unknown option.
    for command in ("activate", "remove"):
        assert "is not a key" in one_line_error(run(env, "keys", command, "-tHzf4iVpcj5Oc"))
    assert "HS256" in one_line_error(run(env, "keys", "rotate", "--alg", "HS256"), 2)


def test_passphrase_encrypts_keys_and_a_wrong_one_stops_start_up(env, tmp_path, run, ok,
                                                                 listed):
    secret = {**env, "AUTHSERVER_KEY_PASSPHRASE": "correct horse battery"}
    ok(secret, "keys", "ensure")
    pem = next((tmp_path / "keys").glob("*.pem"))
    assert pem.stat().st_mode & 0o777 == 0o600
    assert pem.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert listed(secret)[0]["encrypted"] is True

    wrong = {**env, "AUTHSERVER_KEY_PASSPHRASE": "wrong"}
    for result in (run(wrong, "keys", "list"), process(wrong, "serve", "--port", "1")):
        line = one_line_error(result)
        assert line == (f"authserver: error: private key {pem}: wrong passphrase "
                        "(AUTHSERVER_KEY_PASSPHRASE) or corrupt file")
    line = one_line_error(run(env, "keys", "list"))
    assert "encrypted and AUTHSERVER_KEY_PASSPHRASE is not set" in line


def test_a_corrupt_key_file_stops_start_up_with_one_line(env, tmp_path, run, ok):
    ok(env, "keys", "ensure")
    pem = next((tmp_path / "keys").glob("*.pem"))
    pem.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    for result in (process(env, "serve", "--port", "1"), run(env, "keys", "list"),
                   run(env, "keys", "rotate")):
        line = one_line_error(result)
        assert line == (f"authserver: error: private key {pem}: corrupt file "
                        "(not a PEM private key for RS256)")
