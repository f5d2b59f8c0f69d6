"""Signing keys on disk, shared by every server process through ``keys/``.

Each key is two files: ``<kid>.pem`` (the private key, mode 0600, optionally encrypted
with AUTHSERVER_KEY_PASSPHRASE) and ``<kid>.json`` (public metadata: algorithm, state and
times). The states and when they change are computed by :mod:`.lifecycle`, so processes
sharing the directory agree on the signing key at the same instant without a restart.

Reading is cheap: a process re-scans the directory at most once per ``check_interval``
(a listing and a ``stat`` per file), re-reads only when a file changed, and parses a
private PEM only when that file is new; the token endpoint never parses PEM on its hot
path. Promotion needs no re-read at all: it is a comparison with the clock.

This module is all a serving process needs (docs/design.md, "Keys"): it never writes.
The ``authserver keys`` commands write through :mod:`.key_admin`, which takes an exclusive
``flock`` on ``keys/.lock`` and replaces files atomically, so readers never see half a file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import jose
from .lifecycle import (
    ACTIVE,
    NEXT,
    RETIRED,
    STATES,
    KeyPolicy,
    KeyRecord,
    KeyStatus,
    Resolution,
    resolve,
)

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["ACTIVE", "NEXT", "RETIRED", "KeyPolicy", "KeyStore", "KeyStoreError",
           "NoActiveKey", "SigningKey", "published_algorithms"]

log = logging.getLogger(__name__)
PUBLISHED_STATES = (NEXT, ACTIVE, RETIRED)
Clock = Callable[[], dt.datetime]


class KeyStoreError(Exception):
    """A problem with the key directory, reported as one readable line."""


class NoActiveKey(KeyStoreError):
    pass


@dataclass(frozen=True)
class SigningKey:
    """A key in its state at the instant it was looked up."""

    kid: str
    alg: str
    state: str
    created_at: dt.datetime
    state_changed_at: dt.datetime
    private: jose.PrivateJWK = field(repr=False, compare=False)
    activates_at: dt.datetime | None = None  # next keys: when they start signing
    removable_at: dt.datetime | None = None  # retired keys: when `keys prune` may remove them
    encrypted: bool = False
    jwk: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def public_jwk(self) -> dict[str, Any]:
        return dict(self.jwk) if self.jwk else jose.public_jwk(self.private, self.kid, self.alg)

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        return jose.sign_jwt(claims, self.private, kid=self.kid, alg=self.alg, typ=typ)


@dataclass(frozen=True)
class _Loaded:
    """One key as read from disk (the parsed private key is reused while the file is)."""

    record: KeyRecord
    private: jose.PrivateJWK
    pem_identity: tuple[int, int, int]
    encrypted: bool
    jwk: dict[str, Any]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _parse_time(value: Any) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _read_record(meta_path: Path) -> KeyRecord:
    try:
        meta = json.loads(meta_path.read_text())
        kid, alg, state = meta["kid"], meta["alg"], meta["state"]
        created = _parse_time(meta["created_at"])
        changed = _parse_time(meta.get("state_changed_at", meta["created_at"]))
        activates = _parse_time(meta["activates_at"]) if meta.get("activates_at") else None
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyStoreError(f"key metadata {meta_path} is unreadable ({exc})") from exc
    if not isinstance(kid, str) or kid != meta_path.stem:
        raise KeyStoreError(f"key metadata {meta_path}: kid does not match the file name")
    if alg not in jose.SUPPORTED_ALGORITHMS:
        raise KeyStoreError(f"key metadata {meta_path}: unsupported alg {alg!r}")
    if state not in STATES:
        raise KeyStoreError(f"key metadata {meta_path}: unknown state {state!r}")
    return KeyRecord(kid, alg, state, created, changed, activates)


def published_algorithms(directory: str | os.PathLike[str]) -> list[str]:
    """The algorithms of the keys in ``directory`` (metadata only), RS256 always first.

    For ``id_token_signing_alg_values_supported``: OIDC Discovery §3 requires RS256.
    """
    algs = {"RS256"}
    with contextlib.suppress(OSError):
        for meta_path in Path(directory).glob("*.json"):
            with contextlib.suppress(OSError, ValueError, TypeError, AttributeError):
                alg = json.loads(meta_path.read_text()).get("alg")
                if alg in jose.SUPPORTED_ALGORITHMS:
                    algs.add(alg)
    return sorted(algs, key=lambda a: (a != "RS256", a))


class KeyStore:
    """The key directory, with a per-process cache refreshed when a file changes."""

    def __init__(self, directory: str | os.PathLike[str], passphrase: str = "",
                 check_interval: float = 1.0, policy: KeyPolicy | None = None,
                 clock: Clock = _utcnow) -> None:
        self.directory = Path(directory)
        self.passphrase = passphrase
        self.check_interval = check_interval
        self.policy = policy or KeyPolicy()
        self.clock = clock
        self._lock = threading.RLock()
        self._loaded: dict[str, _Loaded] | None = None
        self._signature: tuple[Any, ...] | None = None
        self._checked_at = 0.0
        self._view: tuple[SigningKey, ...] = ()
        self._view_until: dt.datetime | None = None
        self._view_stale = True

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyStore:
        return cls(settings.keys_dir, settings.key_passphrase,
                   policy=KeyPolicy.for_jwks_max_age(settings.jwks_max_age))

    # -- reading -------------------------------------------------------------------
    def _scan(self) -> tuple[Any, ...] | None:
        """What identifies the directory's current contents: each file's inode, time, size.

        Files are replaced by rename (a new inode), so this catches every change even when
        two happen within one tick of the file system's clock.
        """
        try:
            entries = [
                (entry.name, st.st_ino, st.st_mtime_ns, st.st_size)
                for entry in os.scandir(self.directory)
                if entry.name.endswith((".json", ".pem")) and not entry.name.startswith(".")
                for st in (entry.stat(follow_symlinks=True),)
            ]
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeyStoreError(f"key directory {self.directory} is unreadable "
                                f"({exc.strerror})") from exc
        return tuple(sorted(entries))

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and self._loaded is not None and now - self._checked_at < self.check_interval:
            return
        with self._lock:
            if not force and self._loaded is not None and (
                    time.monotonic() - self._checked_at < self.check_interval):
                return
            signature = self._scan()
            if force or self._loaded is None or signature != self._signature:
                try:
                    loaded = self._read_all(self._loaded or {})
                except KeyStoreError as exc:
                    if self._loaded is None or force:
                        raise
                    # A running process keeps signing with what it had; the operator sees why.
                    if signature != self._signature:
                        log.error("keys: keeping the keys loaded before: %s", exc)
                    self._signature = signature
                else:
                    self._loaded = loaded
                    self._signature = signature
                    self._view_stale = True
            self._checked_at = time.monotonic()

    def _read_all(self, previous: dict[str, _Loaded]) -> dict[str, _Loaded]:
        if not self.directory.is_dir():
            return {}
        found: dict[str, _Loaded] = {}
        for meta_path in sorted(self.directory.glob("*.json")):
            if meta_path.name.startswith("."):
                continue
            try:
                record = _read_record(meta_path)
                found[record.kid] = self._load_private(record, previous.get(record.kid))
            except FileNotFoundError:
                continue  # removed while we listed (``keys prune``): the next scan sees it
        return found

    def _load_private(self, record: KeyRecord, previous: _Loaded | None) -> _Loaded:
        pem_path = self.directory / f"{record.kid}.pem"
        try:
            st = pem_path.stat()
        except FileNotFoundError:
            if not (self.directory / f"{record.kid}.json").exists():
                raise  # the whole key was removed while we read (``keys prune``)
            raise KeyStoreError(f"private key {pem_path} is missing") from None
        except OSError as exc:
            raise KeyStoreError(f"private key {pem_path} is unreadable ({exc.strerror})") from exc
        identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        if previous is not None and previous.pem_identity == identity \
                and previous.record.alg == record.alg:
            return replace(previous, record=record)
        if st.st_mode & 0o077:
            log.warning("keys: %s is readable by other users; it should be mode 0600", pem_path)
        try:
            data = pem_path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"private key {pem_path} is unreadable ({exc.strerror})") from exc
        try:
            private = jose.load_private_pem(record.alg, data, self.passphrase)
        except jose.KeyFormatError as exc:
            raise KeyStoreError(f"private key {pem_path}: {exc}") from exc
        if jose.thumbprint(private) != record.kid:
            raise KeyStoreError(f"private key {pem_path} does not match its metadata (kid)")
        return _Loaded(record, private, identity, jose.is_encrypted_pem(data),
                       jose.public_jwk(private, record.kid, record.alg))

    def resolution(self, now: dt.datetime | None = None) -> Resolution:
        """Every key's state now (or at ``now``), with prune and activation times."""
        self._refresh()
        loaded = self._loaded or {}
        return resolve((item.record for item in loaded.values()), now or self.clock(),
                       self.policy)

    def keys(self) -> list[SigningKey]:
        """All keys in their current states, newest first."""
        self._refresh()
        now = self.clock()
        if self._view_stale or (self._view_until is not None and now >= self._view_until):
            with self._lock:
                loaded = self._loaded or {}
                result = resolve((item.record for item in loaded.values()), now, self.policy)
                self._view = tuple(self._signing_key(status, loaded[status.kid])
                                   for status in result.statuses)
                self._view_until = result.valid_until
                self._view_stale = False
        return list(self._view)

    @staticmethod
    def _signing_key(status: KeyStatus, item: _Loaded) -> SigningKey:
        return SigningKey(status.kid, status.record.alg, status.state, status.record.created_at,
                          status.state_changed_at, item.private, status.activates_at,
                          status.removable_at, item.encrypted, item.jwk)

    def active(self) -> SigningKey:
        """The one key that signs now."""
        for key in self.keys():
            if key.state == ACTIVE:
                return key
        raise NoActiveKey(
            f"no active signing key in {self.directory}; run 'authserver keys ensure'"
        )

    def health(self) -> tuple[bool, str]:
        """Whether this process can sign now, and one line saying why (for ``/readyz``)."""
        try:
            key = self.active()
        except KeyStoreError as exc:
            return False, str(exc)
        return True, f"active key {key.kid} ({key.alg}), {len(self.published())} published"

    def published(self) -> list[SigningKey]:
        return [k for k in self.keys() if k.state in PUBLISHED_STATES]

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set: next, active and retired keys, never private members."""
        return {"keys": [k.public_jwk() for k in self.published()]}

    def published_key(self, kid: object) -> SigningKey | None:
        """The published key whose kid is exactly ``kid`` (a JWS header's, unverified).

        What every check of a token we signed starts with; the caller still compares the
        header's ``alg`` with the key's.
        """
        for key in self.keys():
            if key.kid == kid and key.state in PUBLISHED_STATES:
                return key
        return None
