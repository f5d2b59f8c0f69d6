"""Writing ``keys/``: what the ``authserver keys`` commands do (docs/design.md, "Keys").

:class:`KeyAdmin` is the read-side :class:`~.keystore.KeyStore` plus create, rotate,
activate, sync, prune and remove. Every write holds an exclusive ``flock`` on ``keys/.lock``
(and the store's thread lock), re-reads the directory inside it, and replaces files by
atomic rename, so two operators cannot create two next keys and a reader never sees half a
file. A serving process never imports this module.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from . import jose
from .keystore import (
    REMOVED_SUFFIX,
    KeyStore,
    KeyStoreError,
    NoActiveKey,
    SigningKey,
    secure_directory,
)
from .lifecycle import ACTIVE, NEXT, RETIRED, KeyRecord, KeyStatus, activation_time, resolve

__all__ = ["LOCK_FILE", "KeyAdmin"]

LOCK_FILE = ".lock"


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class KeyAdmin(KeyStore):
    """The key directory as the ``authserver keys`` commands see it: read and write."""

    keeps_vanished_keys = False  # what is on disk, nothing kept from an earlier look
    observes = False  # the serving processes report key changes, not each command

    @classmethod
    def of(cls, store: KeyStore) -> KeyAdmin:
        """An administrator of ``store``'s directory, with its passphrase, policy and clock."""
        return cls(store.directory, store.passphrase, store.check_interval, store.policy,
                   store.clock)

    def find(self, kid: str) -> SigningKey:
        """A key by its kid or an unambiguous prefix of at least 8 characters."""
        keys = self.keys()
        exact = [k for k in keys if k.kid == kid]
        matches = exact or ([k for k in keys if k.kid.startswith(kid)] if len(kid) >= 8 else [])
        if len(matches) != 1:
            problem = "matches several keys" if matches else "is not a key"
            raise KeyStoreError(
                f"{kid!r} {problem} in {self.directory}; see 'authserver keys list'")
        return matches[0]

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Exclusive across processes (flock) and threads; re-read from disk inside."""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            secure_directory(self.directory)
            fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise KeyStoreError(f"key directory {self.directory} is not writable "
                                f"({exc.strerror})") from exc
        try:
            with self._lock:
                fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    self._refresh(force=True)
                    yield
                finally:
                    self._checked_at = 0.0  # our own writes: re-scan on the next look
                    self._view_stale = True
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _write_record(self, record: KeyRecord) -> None:
        data = json.dumps(record.to_json(), indent=2).encode() + b"\n"
        _write_atomic(self.directory / f"{record.kid}.json", data, 0o644)

    def _sync_locked(self, now: dt.datetime) -> list[KeyStatus]:
        loaded = self._loaded or {}
        result = resolve((item.record for item in loaded.values()), now, self.policy)
        changed = []
        for status in result.statuses:
            if status.stored != status.record:
                self._write_record(status.stored)
                changed.append(status)
        return changed

    def sync(self) -> list[KeyStatus]:
        """Write the computed states to the metadata files; returns the keys rewritten.

        Idempotent and deterministic (the times written are those computed, not "now"),
        so processes racing here write the same bytes.
        """
        with self._writing():
            return self._sync_locked(self.clock())

    def create(self, alg: str = "RS256", state: str = NEXT) -> SigningKey:
        """Generate a key and write it (private PEM 0600 first, then its metadata)."""
        with self._writing():
            return self._create_locked(alg, state, self.clock())

    def _create_locked(self, alg: str, state: str, now: dt.datetime) -> SigningKey:
        if alg not in jose.SUPPORTED_ALGORITHMS:
            raise KeyStoreError(
                f"unsupported algorithm {alg!r}; use one of {', '.join(jose.SUPPORTED_ALGORITHMS)}"
            )
        private = jose.generate_private_key(alg)
        kid = jose.thumbprint(private)
        exact = now.replace(microsecond=0)
        activates = activation_time(now, self.policy) if state == NEXT else None
        pem = jose.private_pem(private, self.passphrase)
        _write_atomic(self.directory / f"{kid}.pem", pem, 0o600)
        self._write_record(KeyRecord(kid, alg, state, exact, exact, activates))
        return SigningKey(kid, alg, state, exact, exact, private, activates, None,
                          jose.is_encrypted_pem(pem), jose.public_jwk(private, kid, alg))

    def ensure(self, alg: str = "RS256") -> tuple[SigningKey, bool]:
        """Return the active key, creating one if there is none (True when created)."""
        try:
            return self.active(), False
        except NoActiveKey:
            pass
        with self._writing():
            now = self.clock()
            current = resolve((i.record for i in (self._loaded or {}).values()), now,
                              self.policy).active
            if current is not None:  # another process created it meanwhile
                self._view_stale = True
                return self._signing_key(current, (self._loaded or {})[current.kid]), False
            return self._create_locked(alg, ACTIVE, now), True

    def rotate(self, alg: str = "RS256", force: bool = False) -> tuple[SigningKey, bool]:
        """Create the next key (or, with no active key, an active one: True).

        Refuses while another next key is waiting, unless ``force``.
        """
        with self._writing():
            now = self.clock()
            self._sync_locked(now)
            result = resolve((i.record for i in (self._loaded or {}).values()), now,
                             self.policy)
            if result.active is None:
                return self._create_locked(alg, ACTIVE, now), True
            waiting = [s for s in result.statuses if s.state == NEXT]
            if waiting and not force:
                first = waiting[-1]
                raise KeyStoreError(
                    f"next key {first.kid} is already waiting to become active at "
                    f"{first.activates_at:%Y-%m-%d %H:%M:%S}Z; pass --force to add another")
            return self._create_locked(alg, NEXT, now), False

    def activate(self, kid: str, force: bool = False) -> tuple[SigningKey, SigningKey | None]:
        """Make ``kid`` the signing key now; the one it replaces is retired now.

        Refuses a key published for less than the pre-publication period (resource servers
        may still hold a JWKS without it) unless ``force``.
        """
        with self._writing():
            now = self.clock()
            self._sync_locked(now)
            self._refresh(force=True)
            target = self.find(kid)
            if target.state == ACTIVE:
                return target, None
            published_for = (now - target.created_at).total_seconds()
            if published_for < self.policy.prepublish and not force:
                ready = activation_time(target.created_at, self.policy)
                raise KeyStoreError(
                    f"key {target.kid} has been published for only {int(published_for)} s; "
                    f"resource servers may cache the JWKS for {self.policy.prepublish} s "
                    f"and would reject its tokens. Wait until {ready:%Y-%m-%d %H:%M:%S}Z "
                    "(a next key becomes active by itself then) or pass --force")
            previous = next((k for k in self.keys() if k.state == ACTIVE), None)
            stamp = now.replace(microsecond=0)
            if previous is not None and previous.state_changed_at >= stamp:
                stamp = previous.state_changed_at + dt.timedelta(seconds=1)
            # Activate first, then retire: a reader in between sees two active keys and
            # picks the later activation (this one), never none.
            self._write_record(KeyRecord(target.kid, target.alg, ACTIVE, target.created_at,
                                         stamp))
            if previous is not None:
                self._write_record(KeyRecord(previous.kid, previous.alg, RETIRED,
                                             previous.created_at, stamp))
            self._refresh(force=True)
            self._view_stale = True
            return self.find(target.kid), previous

    def prune(self, dry_run: bool = False) -> list[SigningKey]:
        """Remove retired keys whose every token has expired; returns them."""
        with self._writing():
            now = self.clock()
            self._sync_locked(now)
            self._refresh(force=True)
            self._view_stale = True
            removable = [k for k in self.keys() if k.state == RETIRED
                         and k.removable_at is not None and k.removable_at <= now]
            if not dry_run:
                for key in removable:
                    self._delete(key.kid)
                self._prune_marks(now)
            return removable

    def _prune_marks(self, now: dt.datetime) -> None:
        """Remove ``<kid>.removed`` marks older than the retention: by then every running
        process would have dropped the key by itself."""
        horizon = now.timestamp() - self.policy.retention
        for mark in self.directory.glob(f"*{REMOVED_SUFFIX}"):
            with contextlib.suppress(OSError):
                if mark.stat().st_mtime < horizon:
                    mark.unlink()

    def remove(self, kid: str, force: bool = False) -> SigningKey:
        """Remove one key now (a compromised key); never the active one."""
        with self._writing():
            now = self.clock()
            self._sync_locked(now)
            self._refresh(force=True)
            self._view_stale = True
            key = self.find(kid)
            if key.state == ACTIVE:
                raise KeyStoreError(f"key {key.kid} is the active key; activate another first")
            if key.state == RETIRED and key.removable_at is not None and \
                    key.removable_at > now and not force:
                raise KeyStoreError(
                    f"tokens signed by {key.kid} may be valid until "
                    f"{key.removable_at:%Y-%m-%d %H:%M:%S}Z; removing it now makes resource "
                    "servers reject them. Pass --force to remove it anyway")
            if key.state == RETIRED:
                # Running processes keep a retired key whose files vanish; this mark says
                # it was removed on purpose, so they drop it too.
                mark = json.dumps({"kid": key.kid, "removed_at": now.isoformat()}).encode()
                _write_atomic(self.directory / f"{key.kid}{REMOVED_SUFFIX}", mark, 0o644)
            self._delete(key.kid)
            return key

    def _delete(self, kid: str) -> None:
        # Metadata first: a reader never finds metadata without its private key.
        for suffix in (".json", ".pem"):
            with contextlib.suppress(FileNotFoundError):
                (self.directory / f"{kid}{suffix}").unlink()
