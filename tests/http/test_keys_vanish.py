"""Keys never vanish from a running server (docs/design.md, "Keys that stay").

The app's key store reads its own directory with no check interval; the directory is then
removed, emptied, made unreadable or damaged while the test client is serving: tokens are
still issued with the kept key, the JWKS answers the same bytes, ``health()`` (what
``/readyz`` reports) says why, one log line and one ``keys_unavailable`` event per change.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import pytest

from authserver.cli.serve import refuse_without_key
from authserver.crypto.key_admin import KeyAdmin
from authserver.crypto.keystore import KeyStore
from authserver.crypto.lifecycle import KeyPolicy
from authserver.domain import events
from authserver.protocol.tokens import AccessTokenIssuer
from tests.conftest import FakeClock

JWKS = "/.well-known/jwks.json"
# The store is what is tested; the database does not matter.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def own_keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def store(app, own_keys: Path) -> KeyStore:
    """The app signs with its own directory, re-read on every look (check interval 0)."""
    KeyAdmin(own_keys).ensure()
    svc = app.extensions["authserver"]
    svc.settings = dataclasses.replace(svc.settings, keys_dir=str(own_keys))
    svc.keys = KeyStore(own_keys, check_interval=0.0,
                        policy=KeyPolicy.for_jwks_max_age(svc.settings.jwks_max_age))
    svc.tokens = AccessTokenIssuer(svc.settings, svc.keys)
    return svc.keys


@pytest.fixture
def seen() -> Iterator[list[tuple[str, dict]]]:
    """The key events published while the test runs."""
    got: list[tuple[str, dict]] = []

    def listener(name: str, fields) -> None:
        if name in (events.KEYS_UNAVAILABLE, events.KEY_ACTIVATED, events.KEY_RETIRED):
            got.append((name, dict(fields)))

    events.subscribe(listener)
    yield got
    events.unsubscribe(listener)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _signed_kid(oauth, app_client) -> str:
    pair = oauth.password_login(app_client).get_json()
    return jwt.get_unverified_header(pair["access_token"])["kid"]


def _remove(path: Path) -> Callable[[], None]:
    aside = path.with_name("keys-aside")
    path.rename(aside)
    return lambda: aside.rename(path)


def _empty(path: Path) -> Callable[[], None]:
    aside = path.with_name("keys-aside")
    aside.mkdir()
    for item in path.iterdir():
        item.rename(aside / item.name)

    def restore() -> None:
        for item in aside.iterdir():
            item.rename(path / item.name)
    return restore


def _unreadable(path: Path) -> Callable[[], None]:
    if os.geteuid() != 0:
        path.chmod(0)
        return lambda: path.chmod(0o700)
    # root reads through mode 000: a file where the directory was fails the listing too.
    aside = path.with_name("keys-aside")
    path.rename(aside)
    path.write_text("")

    def restore() -> None:
        path.unlink()
        aside.rename(path)
    return restore


def _corrupt(path: Path) -> Callable[[], None]:
    broken = path / "broken.json"
    broken.write_text("{")
    return broken.unlink


@pytest.mark.parametrize("damage, reason", [
    (_remove, "does not exist; check that it is mounted"),
    (_empty, "has no keys"),
    (_unreadable, "is unreadable"),
    (_corrupt, "is unreadable"),
], ids=["missing", "empty", "unreadable", "corrupt-file"])
def test_the_running_server_keeps_its_keys_when_the_directory_goes(
        client, oauth, store, own_keys, seen, caplog, damage, reason):
    app_client = oauth.first_party_app()
    oauth.create_user()
    kid = store.active().kid
    assert _signed_kid(oauth, app_client) == kid
    before = client.get(JWKS)
    assert store.health() == (True, f"active key {kid} (RS256), 1 published")

    caplog.set_level(logging.INFO, logger="authserver.crypto.keystore")
    restore = damage(own_keys)
    for _ in range(3):
        assert _signed_kid(oauth, app_client) == kid
        jwks = client.get(JWKS)
        assert jwks.status_code == 200 and jwks.get_data() == before.get_data()
        assert jwks.headers["ETag"] == before.headers["ETag"]
        ok, detail = store.health()
        assert not ok and reason in detail and f"active key {kid}" in detail, detail
        assert "keeping 1 loaded keys" in detail and "\n" not in detail
    lines = [r for r in caplog.records if r.name == "authserver.crypto.keystore"]
    assert len(lines) == 1 and reason in lines[0].getMessage(), caplog.text
    assert lines[0].levelno == logging.ERROR
    assert [name for name, _ in seen] == [events.KEYS_UNAVAILABLE]
    assert reason in seen[0][1]["detail"]

    restore()
    assert store.health()[0], store.health()
    assert client.get(JWKS).get_data() == before.get_data()
    assert "reads again" in caplog.text
    assert [name for name, _ in seen] == [events.KEYS_UNAVAILABLE]


def test_a_key_whose_files_vanish_stays_published_until_its_tokens_expire(
        client, oauth, store, own_keys, seen):
    """Files of one key deleted by hand (not by ``keys remove``): the process keeps the
    key while tokens it signed may be valid; a retired key removed with ``keys remove
    --force`` (a compromised key) leaves the JWKS at once."""
    app_client = oauth.first_party_app()
    oauth.create_user()
    clock = FakeClock()  # activations whole seconds apart, as in life (activate stamps seconds)
    store.clock = clock
    admin = KeyAdmin(own_keys, clock=clock)

    def activate(kid: str) -> None:
        clock.advance(5)
        admin.activate(kid, force=True)

    old = store.active().kid
    new = admin.create("ES256", "next").kid
    activate(new)
    assert _signed_kid(oauth, app_client) == new
    published = {k["kid"] for k in client.get(JWKS).get_json()["keys"]}
    assert published == {old, new}

    for suffix in (".json", ".pem"):  # the retired key, by hand
        (own_keys / f"{old}{suffix}").unlink()
    assert {k["kid"] for k in client.get(JWKS).get_json()["keys"]} == {old, new}
    (kept,) = [detail for name, fields in seen if name == events.KEYS_UNAVAILABLE
               for detail in (fields["detail"],)]
    assert old in kept and "vanished" in kept

    # The active key itself, by hand: it keeps signing.
    for suffix in (".json", ".pem"):
        (own_keys / f"{new}{suffix}").unlink()
    newest = admin.create("ES256", "next").kid  # the directory still reads: not empty
    assert _signed_kid(oauth, app_client) == new
    assert {k["kid"] for k in client.get(JWKS).get_json()["keys"]} == {old, new, newest}

    # On purpose: keys remove --force writes the mark every process honours.
    third = admin.create("ES256", "next").kid
    activate(third)
    admin.remove(newest, force=True)
    assert not (own_keys / f"{newest}.removed").exists()  # a next key never signed
    fourth = admin.create("ES256", "next").kid
    activate(fourth)
    admin.remove(third, force=True)
    assert (own_keys / f"{third}.removed").exists()
    assert _signed_kid(oauth, app_client) == fourth
    assert {k["kid"] for k in client.get(JWKS).get_json()["keys"]} == {old, new, fourth}


def test_an_active_key_change_is_one_event_per_process(oauth, store, own_keys, seen):
    first = store.active()
    assert seen == []  # the first look is not a change
    admin = KeyAdmin(own_keys)
    second = admin.create("ES256", "next").kid
    admin.activate(second, force=True)
    for _ in range(3):
        assert store.active().kid == second
    assert seen == [(events.KEY_ACTIVATED, {"kid": second, "alg": "ES256"}),
                    (events.KEY_RETIRED, {"kid": first.kid})]


def test_a_process_without_any_key_never_publishes_an_empty_jwks(app, client, tmp_path):
    svc = app.extensions["authserver"]
    svc.keys = KeyStore(tmp_path / "missing", check_interval=0.0)
    response = client.get(JWKS)
    assert response.status_code == 503 and response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"]
    ok, detail = svc.keys.health()
    assert not ok and "does not exist" in detail and "keys ensure" not in detail
    discovery = client.get("/.well-known/openid-configuration")
    assert discovery.status_code == 200
    assert discovery.get_json()["id_token_signing_alg_values_supported"] == ["RS256"]


def test_a_token_request_without_any_key_is_503_in_one_line(app, oauth, tmp_path, caplog):
    app_client = oauth.first_party_app()
    oauth.create_user()
    refresh_token = oauth.login_pair(app_client)["refresh_token"]
    svc = app.extensions["authserver"]
    kept = svc.keys
    svc.keys = svc.tokens.keys = KeyStore(tmp_path / "missing", check_interval=0.0)
    caplog.set_level(logging.INFO)
    for response in (oauth.password_login(app_client), oauth.refresh(app_client, refresh_token)):
        assert response.status_code == 503, response.get_data(True)
        assert response.get_json()["error"] == "temporarily_unavailable"
        assert response.headers["Retry-After"] and response.headers["Cache-Control"] == "no-store"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and all("no signing key" in r.getMessage() and not r.exc_info
                                    for r in errors)
    svc.keys = svc.tokens.keys = kept  # nothing was half-done: the token still rotates
    assert oauth.refresh(app_client, refresh_token).status_code == 200


def test_a_worker_that_cannot_load_an_active_key_refuses_to_start(app, own_keys, capsys):
    KeyAdmin(own_keys).ensure()
    (own_keys / "broken.json").write_text("{")
    svc = app.extensions["authserver"]
    svc.keys = KeyStore(own_keys)
    with pytest.raises(SystemExit) as info:
        refuse_without_key(app)
    assert info.value.code == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refuses to start" in err and "broken.json" in err


def test_serve_refuses_a_corrupt_key_file_in_one_line(app, run, own_keys):
    key, _ = KeyAdmin(own_keys).ensure()
    (own_keys / f"{key.kid}.pem").write_text("not a key")
    svc = app.extensions["authserver"]
    svc.keys = KeyStore(own_keys)
    result = run("serve", "--port", str(_free_port()))
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "authserver: error: private key" in result.output


def test_serve_on_a_missing_directory_does_not_advise_creating_a_key(app, run, tmp_path):
    svc = app.extensions["authserver"]
    svc.keys = KeyStore(tmp_path / "not-mounted")
    result = run("serve", "--port", str(_free_port()))
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "does not exist; check that it is mounted" in result.output
    assert "keys ensure" not in result.output
    assert not (tmp_path / "not-mounted").exists()


@pytest.mark.parametrize("command", [("keys", "ensure"), ("keys", "list")])
def test_a_keys_directory_open_to_others_is_tightened_when_ours(app, run, own_keys, command):
    own_keys.mkdir(mode=0o755)
    own_keys.chmod(0o755)
    svc = app.extensions["authserver"]
    svc.keys = KeyStore(own_keys)
    result = run(*command)
    if command == ("keys", "list"):  # reading only: left as it is
        assert own_keys.stat().st_mode & 0o777 == 0o755
        return
    assert result.exit_code == 0, result.output
    assert "had mode 0755; it is now 0700" in result.output
    assert own_keys.stat().st_mode & 0o777 == 0o700
    (pem,) = own_keys.glob("*.pem")
    assert pem.stat().st_mode & 0o777 == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
def test_a_keys_directory_open_to_others_and_not_ours_is_refused(app, run, own_keys):
    own_keys.mkdir()
    own_keys.chmod(0o750)
    os.chown(own_keys, 65534, 65534)
    svc = app.extensions["authserver"]
    svc.keys = KeyStore(own_keys)
    result = run("keys", "ensure")
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "has mode 0750 and belongs to uid 65534" in result.output
    assert not list(own_keys.iterdir())
    shutil.rmtree(own_keys)
