"""Signing-key lifecycle: next -> active -> retired -> removed, shared by processes.

The store is driven with a settable clock; "processes" are separate KeyAdmin objects on
the same directory (each with its own cache), plus real ``authserver keys`` commands.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path

import pytest

from authserver.crypto.key_admin import KeyAdmin
from authserver.crypto.keystore import KeyStore, KeyStoreError, NoActiveKey
from authserver.crypto.lifecycle import (
    MAX_TOKEN_LIFETIME,
    KeyPolicy,
    KeyRecord,
    activation_time,
    resolve,
)

POLICY = KeyPolicy(prepublish=60, retention=600)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2030, 1, 1, 12, 0, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def keys_path(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def store(path: Path, clock: Clock, check_interval: float = 0.0, **kwargs) -> KeyAdmin:
    return KeyAdmin(path, check_interval=check_interval, policy=POLICY, clock=clock, **kwargs)


def listing(ks: KeyStore) -> list:
    return ks.keys()


def states(ks: KeyStore) -> dict[str, str]:
    return {k.kid: k.state for k in listing(ks)}


def files(path: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_ino, p.read_bytes()) for p in sorted(path.glob("*.json"))}


# -- the timeline ----------------------------------------------------------------------

def test_a_next_key_becomes_active_once_published_for_the_prepublication_period(
        keys_path, clock):
    ks = store(keys_path, clock)
    old, created = ks.ensure("RS256")
    assert created and old.state == "active"
    new, active_now = ks.rotate("ES256")
    assert not active_now and new.state == "next" and new.alg == "ES256"
    assert new.activates_at == clock.now + dt.timedelta(seconds=POLICY.prepublish)
    assert {k.kid for k in ks.published()} == {old.kid, new.kid}

    clock.advance(POLICY.prepublish - 1)
    assert ks.active().kid == old.kid
    assert states(ks)[new.kid] == "next"

    clock.advance(1)
    assert ks.active().kid == new.kid
    retired = next(k for k in listing(ks) if k.kid == old.kid)
    assert retired.state == "retired"
    assert retired.state_changed_at == new.activates_at  # retired the instant it was replaced
    assert retired.removable_at == new.activates_at + dt.timedelta(seconds=POLICY.retention)
    assert {k.kid for k in ks.published()} == {old.kid, new.kid}


def test_processes_agree_on_the_active_key_without_rereading_or_writing(keys_path, clock):
    """Promotion is computed from metadata and the clock: a process that loaded the keys
    before the promotion (and will not look at the directory again for an hour) switches
    at the same instant as every other, and nothing on disk has to change."""
    writer = store(keys_path, clock)
    old, _ = writer.ensure()
    new, _ = writer.rotate()
    other = store(keys_path, clock, check_interval=3600)
    third = store(keys_path, clock, check_interval=3600)
    assert other.active().kid == third.active().kid == old.kid
    before = files(keys_path)

    clock.advance(POLICY.prepublish)
    assert other.active().kid == third.active().kid == writer.active().kid == new.kid
    assert files(keys_path) == before


def test_a_new_key_file_is_noticed_after_the_check_interval(keys_path, clock):
    reader = store(keys_path, clock, check_interval=3600)
    writer = store(keys_path, clock)
    writer.ensure()
    assert len(listing(reader)) == 1
    new, _ = writer.rotate()
    assert len(listing(reader)) == 1  # within the interval the directory is not looked at
    reader.check_interval = 0  # the interval has passed
    assert new.kid in {k.kid for k in reader.published()}


def test_materialising_the_states_is_deterministic_and_idempotent(keys_path, clock):
    ks = store(keys_path, clock)
    old, _ = ks.ensure()
    new, _ = ks.rotate()
    clock.advance(POLICY.prepublish + 5)
    a, b = store(keys_path, clock), store(keys_path, clock)
    barrier = threading.Barrier(2)
    results = []

    def sync(s: KeyAdmin) -> None:
        barrier.wait()
        results.append(s.sync())

    threads = [threading.Thread(target=sync, args=(s,)) for s in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r) for r in results) == [0, 2]  # one wrote both changes, then nothing
    on_disk = {p.stem: json.loads(p.read_text()) for p in keys_path.glob("*.json")}
    assert on_disk[new.kid]["state"] == "active"
    assert on_disk[new.kid]["state_changed_at"] == new.activates_at.isoformat()
    assert "activates_at" not in on_disk[new.kid]
    assert on_disk[old.kid]["state"] == "retired"
    assert on_disk[old.kid]["state_changed_at"] == new.activates_at.isoformat()
    before = files(keys_path)
    assert ks.sync() == []
    assert files(keys_path) == before


def test_concurrent_rotations_create_one_next_key(keys_path, clock):
    store(keys_path, clock).ensure()
    stores = [store(keys_path, clock) for _ in range(4)]
    barrier = threading.Barrier(len(stores))
    outcomes: list[str] = []

    def rotate(s: KeyAdmin) -> None:
        barrier.wait()
        try:
            s.rotate()
            outcomes.append("created")
        except KeyStoreError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=rotate, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("created") == 1
    assert all("already waiting" in o and "--force" in o for o in outcomes if o != "created")
    assert sorted(states(store(keys_path, clock)).values()) == ["active", "next"]


def test_rotate_with_force_adds_another_next_key_and_the_latest_activation_wins(
        keys_path, clock):
    ks = store(keys_path, clock)
    first, _ = ks.ensure()
    second, _ = ks.rotate()
    clock.advance(10)
    third, _ = ks.rotate(force=True)
    clock.advance(POLICY.prepublish - 10)
    assert ks.active().kid == second.kid
    clock.advance(10)
    assert ks.active().kid == third.kid
    assert states(ks) == {first.kid: "retired", second.kid: "retired", third.kid: "active"}


def test_rotate_with_no_active_key_creates_an_active_one(keys_path, clock):
    key, active_now = store(keys_path, clock).rotate("EdDSA")
    assert active_now and key.state == "active" and key.alg == "EdDSA"


def test_ensure_creates_one_active_key_once(keys_path, clock):
    ks = store(keys_path, clock)
    with pytest.raises(NoActiveKey):
        ks.active()
    key, created = ks.ensure("ES256")
    again, created_again = store(keys_path, clock).ensure("RS256")
    assert created and not created_again and again.kid == key.kid


# -- activate, prune, remove -----------------------------------------------------------

def test_activate_refuses_a_key_not_yet_published_for_the_cache_lifetime(keys_path, clock):
    ks = store(keys_path, clock)
    old, _ = ks.ensure()
    new, _ = ks.rotate()
    clock.advance(POLICY.prepublish - 2)
    with pytest.raises(KeyStoreError) as info:
        ks.activate(new.kid)
    assert "--force" in str(info.value) and "published for only 58 s" in str(info.value)
    assert ks.active().kid == old.kid

    activated, previous = ks.activate(new.kid[:10], force=True)
    assert activated.kid == new.kid and previous is not None and previous.kid == old.kid
    other = store(keys_path, clock)
    assert other.active().kid == new.kid
    assert states(other) == {new.kid: "active", old.kid: "retired"}
    retired = next(k for k in listing(other) if k.kid == old.kid)
    assert retired.state_changed_at == clock.now


def test_activate_rolls_back_to_a_retired_key(keys_path, clock):
    ks = store(keys_path, clock)
    old, _ = ks.ensure()
    new, _ = ks.rotate()
    clock.advance(POLICY.prepublish + 1)
    assert ks.active().kid == new.kid
    clock.advance(1)
    ks.activate(old.kid)  # published long enough: no --force needed
    assert store(keys_path, clock).active().kid == old.kid
    assert states(ks)[new.kid] == "retired"


@pytest.mark.parametrize("kid", ["nope", "", "abc"])
def test_activate_an_unknown_key_is_a_clear_error(keys_path, clock, kid):
    store(keys_path, clock).ensure()
    with pytest.raises(KeyStoreError, match="is not a key"):
        store(keys_path, clock).activate(kid)


def test_prune_removes_a_retired_key_only_after_its_tokens_expired(keys_path, clock):
    ks = store(keys_path, clock)
    old, _ = ks.ensure()
    assert ks.prune() == []
    new, _ = ks.rotate()
    clock.advance(POLICY.prepublish)
    assert ks.prune() == []  # just retired: its tokens are still valid
    clock.advance(POLICY.retention - 1)
    assert ks.prune() == []
    clock.advance(1)
    assert [k.kid for k in ks.prune(dry_run=True)] == [old.kid]
    assert (keys_path / f"{old.kid}.pem").exists()
    assert [k.kid for k in ks.prune()] == [old.kid]
    assert not (keys_path / f"{old.kid}.pem").exists()
    assert not (keys_path / f"{old.kid}.json").exists()
    assert states(store(keys_path, clock)) == {new.kid: "active"}


def test_prune_never_removes_the_active_or_a_next_key(keys_path, clock):
    ks = store(keys_path, clock)
    a, _ = ks.ensure()
    b, _ = ks.rotate()
    clock.advance(POLICY.prepublish + POLICY.retention)
    c, _ = ks.rotate()
    assert states(ks) == {a.kid: "retired", b.kid: "active", c.kid: "next"}
    assert [k.kid for k in ks.prune()] == [a.kid]
    clock.advance(POLICY.retention * 100)  # c became active, b retired long ago
    assert [k.kid for k in ks.prune()] == [b.kid]
    assert states(ks) == {c.kid: "active"}
    assert ks.prune() == []


def test_remove_refuses_the_active_key_and_a_needed_retired_key(keys_path, clock):
    ks = store(keys_path, clock)
    old, _ = ks.ensure()
    new, _ = ks.rotate()
    with pytest.raises(KeyStoreError, match="active key"):
        ks.remove(old.kid)
    clock.advance(POLICY.prepublish)
    with pytest.raises(KeyStoreError, match="--force"):
        ks.remove(old.kid)
    assert ks.remove(old.kid, force=True).kid == old.kid
    assert states(ks) == {new.kid: "active"}


# -- the pure resolution ---------------------------------------------------------------

def test_resolution_orders_by_activation_time():
    t0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    records = [
        KeyRecord("a", "RS256", "active", t0, t0),
        KeyRecord("b", "RS256", "next", t0, t0, t0 + dt.timedelta(seconds=60)),
        KeyRecord("c", "RS256", "next", t0, t0, t0 + dt.timedelta(seconds=120)),
        KeyRecord("z", "RS256", "retired", t0, t0),
    ]
    at = {s.kid: s for s in resolve(records, t0 + dt.timedelta(seconds=90), POLICY).statuses}
    assert {k: s.state for k, s in at.items()} == {"a": "retired", "b": "active", "c": "next",
                                                  "z": "retired"}
    assert resolve(records, t0, POLICY).valid_until == t0 + dt.timedelta(seconds=60)
    later = resolve(records, t0 + dt.timedelta(seconds=500), POLICY)
    assert later.active is not None and later.active.kid == "c"
    assert later.valid_until is None


@pytest.mark.parametrize("max_age", [0, 1, 2, 60, 300, 3600, 86_400])
def test_the_jwks_cache_lifetime_is_always_shorter_than_the_prepublication(max_age):
    policy = KeyPolicy.for_jwks_max_age(max_age)
    assert policy.prepublish > max_age
    assert policy.retention > MAX_TOKEN_LIFETIME


def test_activation_time_rounds_up_to_whole_seconds():
    created = dt.datetime(2030, 1, 1, 0, 0, 0, 500_000, tzinfo=dt.UTC)
    assert activation_time(created, POLICY) == dt.datetime(2030, 1, 1, 0, 1, 1, tzinfo=dt.UTC)


# -- files: modes, passphrase, corruption -------------------------------------------------

def test_private_keys_are_0600_and_encrypted_with_the_passphrase(keys_path, clock):
    ks = store(keys_path, clock, passphrase="correct horse")
    key, _ = ks.ensure("RS256")
    ks.rotate("ES256")
    ks.rotate("EdDSA", force=True)
    assert oct(keys_path.stat().st_mode & 0o777) == "0o700"
    for pem in keys_path.glob("*.pem"):
        assert pem.stat().st_mode & 0o777 == 0o600
        assert pem.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    for meta in keys_path.glob("*.json"):
        assert set(json.loads(meta.read_text())) <= {
            "kid", "alg", "state", "created_at", "state_changed_at", "activates_at"}
    reader = store(keys_path, clock, passphrase="correct horse")
    assert reader.active().kid == key.kid
    assert all(k.encrypted for k in listing(reader))


@pytest.mark.parametrize(
    ("passphrase", "message"),
    [
        pytest.param("wrong", "wrong passphrase (AUTHSERVER_KEY_PASSPHRASE) or corrupt file",
                     id="wrong-passphrase"),
        pytest.param("", "encrypted and AUTHSERVER_KEY_PASSPHRASE is not set",
                     id="no-passphrase"),
    ],
)
def test_a_wrong_or_missing_passphrase_is_one_clear_error(keys_path, clock, passphrase,
                                                          message):
    store(keys_path, clock, passphrase="correct horse").ensure()
    with pytest.raises(KeyStoreError) as info:
        store(keys_path, clock, passphrase=passphrase).active()
    text = str(info.value)
    assert message in text and ".pem" in text and "\n" not in text
    assert "correct horse" not in text


def test_unencrypted_keys_still_load_after_a_passphrase_is_set(keys_path, clock):
    old, _ = store(keys_path, clock).ensure()
    ks = store(keys_path, clock, passphrase="now encrypted")
    assert ks.active().kid == old.kid
    new, _ = ks.rotate()
    assert (keys_path / f"{new.kid}.pem").read_bytes().startswith(b"-----BEGIN ENCRYPTED")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda p, kid: (p / f"{kid}.pem").write_bytes(b"garbage"),
                     "corrupt file", id="corrupt-pem"),
        pytest.param(lambda p, kid: (p / f"{kid}.pem").unlink(), "is missing",
                     id="missing-pem"),
        pytest.param(lambda p, kid: (p / f"{kid}.json").write_text("{not json"),
                     "is unreadable", id="corrupt-metadata"),
        pytest.param(lambda p, kid: (p / f"{kid}.json").write_text(
            json.dumps({"kid": kid, "alg": "HS256", "state": "active",
                        "created_at": "2030-01-01T00:00:00+00:00"})),
            "unsupported alg", id="bad-alg"),
        pytest.param(lambda p, kid: (p / "other.json").write_text(
            (p / f"{kid}.json").read_text()),
            "kid does not match the file name", id="metadata-of-another-file"),
    ],
)
def test_a_damaged_key_file_is_one_clear_error_at_start(keys_path, clock, damage, message):
    key, _ = store(keys_path, clock).ensure()
    damage(keys_path, key.kid)
    with pytest.raises(KeyStoreError) as info:
        store(keys_path, clock).active()
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_running_process_keeps_its_keys_when_a_file_breaks(keys_path, clock, caplog):
    key, _ = store(keys_path, clock).ensure()
    ks = KeyStore(keys_path, check_interval=0.0, policy=POLICY, clock=clock)
    assert ks.active().kid == key.kid
    (keys_path / "broken.json").write_text("{")
    assert ks.active().kid == key.kid
    assert "keeping the keys loaded before" in caplog.text
    (keys_path / "broken.json").unlink()
    new, _ = store(keys_path, clock).rotate()
    assert new.kid in {k.kid for k in listing(ks)}


def test_a_key_pem_that_does_not_match_its_kid_is_refused(keys_path, clock):
    ks = store(keys_path, clock)
    a, _ = ks.ensure()
    b = ks.create("RS256", "next")
    os.replace(keys_path / f"{b.kid}.pem", keys_path / f"{a.kid}.pem")
    (keys_path / f"{b.kid}.json").unlink()
    with pytest.raises(KeyStoreError, match="does not match its metadata"):
        store(keys_path, clock).active()


# -- the read side ----------------------------------------------------------------------

def test_a_published_key_is_found_by_its_exact_kid_only(keys_path, clock):
    admin = store(keys_path, clock)
    old, _ = admin.ensure()
    new, _ = admin.rotate()
    reader = KeyStore(keys_path, check_interval=0.0, policy=POLICY, clock=clock)
    assert reader.published_key(old.kid) == reader.active()
    assert reader.published_key(new.kid).state == "next"
    for kid in (new.kid[:10], None, 7, ["x"], ""):
        assert reader.published_key(kid) is None


def test_the_read_side_never_imports_the_administration():
    """A serving process reads keys/ and never writes it (docs/design.md, "Keys")."""
    import ast

    import authserver.crypto.keystore as keystore

    tree = ast.parse(Path(keystore.__file__).read_text())
    imported = {node.module for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert not {name for name in imported if name.endswith("key_admin")}
    assert "fcntl" not in imported
