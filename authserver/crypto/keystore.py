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

from ..domain import events
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
           "NoActiveKey", "SigningKey", "secure_directory"]

log = logging.getLogger(__name__)
PUBLISHED_STATES = (NEXT, ACTIVE, RETIRED)
Clock = Callable[[], dt.datetime]
# ``<kid>.removed``: written by ``keys remove`` so that running processes drop a key removed
# on purpose (a compromised one) instead of keeping it as one that vanished by accident.
REMOVED_SUFFIX = ".removed"
# A scan that failed: differs from every real listing, so the next good scan re-reads.
_UNREADABLE: tuple[Any, ...] = ("unreadable",)


class KeyStoreError(Exception):
    """A problem with the key directory, reported as one readable line."""


class NoActiveKey(KeyStoreError):
    pass


def missing_directory(directory: Path) -> str:
    """What to say when ``keys/`` is not there. Never "run keys ensure": on a host whose
    shared mount is missing, that would create a key no other instance has."""
    return (f"key directory {directory} does not exist; check that it is mounted and that "
            "AUTHSERVER_KEYS_DIR names it")


def secure_directory(directory: Path) -> str | None:
    """Make sure only this user can enter ``directory``; one line when it was tightened.

    An existing directory with group or other access is set to 0700 when this user owns
    it; one owned by someone else is refused (we cannot fix it, and its private keys are
    exposed to that owner's group). A missing directory is left to the caller.
    """
    try:
        st = directory.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise KeyStoreError(f"key directory {directory} is unreadable ({exc.strerror})") from exc
    mode = st.st_mode & 0o777
    if not mode & 0o077:
        return None
    if st.st_uid != os.geteuid():
        raise KeyStoreError(
            f"key directory {directory} has mode {mode:04o} and belongs to uid {st.st_uid}, "
            f"not to this user (uid {os.geteuid()}); its owner must make it mode 0700")
    try:
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise KeyStoreError(f"key directory {directory} has mode {mode:04o} and cannot be "
                            f"made 0700 ({exc.strerror})") from exc
    return f"key directory {directory} had mode {mode:04o}; it is now 0700"


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


class KeyStore:
    """The key directory, with a per-process cache refreshed when a file changes.

    A serving process never loses a key it has loaded (docs/design.md, "Keys that stay"):
    when the directory goes missing, unreadable or empty, or a file in it is corrupt, it
    keeps the keys it had, logs one line and emits ``keys_unavailable`` (once per change),
    and :meth:`health` says so. A key whose files vanish on their own stays published (and
    signing, if it was active) until every token it signed can have expired, unless
    ``keys remove`` left its ``<kid>.removed`` mark.
    """

    # KeyAdmin (the ``keys`` commands) sees the directory as it is, and publishes nothing.
    keeps_vanished_keys = True
    observes = True

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
        # Why the directory does not read cleanly now (None: it does), and since when.
        self._problem: str | None = None
        self._problem_since: dt.datetime | None = None
        self._active_kid: str | None = None  # the active key this process saw last
        self._vanished: set[str] = set()  # kept keys whose files are gone (logged once)

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
                if entry.name.endswith((".json", ".pem", REMOVED_SUFFIX))
                and not entry.name.startswith(".")
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
            try:
                self._reload(force)
            finally:
                self._checked_at = time.monotonic()

    def _reload(self, force: bool) -> None:
        """One look at the directory (holding the lock)."""
        keep = self.keeps_vanished_keys and not force and bool(self._loaded)
        try:
            signature = self._scan()
        except KeyStoreError as exc:
            if not keep:
                raise
            self._signature = _UNREADABLE
            self._degrade(str(exc))
            return
        if keep and signature is None:
            self._signature = None
            self._degrade(missing_directory(self.directory))
            return
        if keep and not any(name.endswith(".json") for name, *_ in signature or ()):
            self._signature = signature
            self._degrade(f"key directory {self.directory} has no keys")
            return
        if not (force or self._loaded is None or signature != self._signature):
            return
        try:
            loaded = self._read_all(self._loaded or {})
        except KeyStoreError as exc:
            if not keep:
                raise
            # A running process keeps signing with what it had; the operator sees why.
            self._signature = signature
            self._degrade(str(exc))
            return
        if keep:
            loaded = self._keep_vanished(loaded)
        self._loaded = loaded
        self._signature = signature
        self._view_stale = True
        if signature is None and not loaded:
            self._problem, self._problem_since = missing_directory(self.directory), None
        elif self._problem is not None:
            if self.observes and self._problem_since is not None:
                log.warning("keys: key directory %s reads again (%d keys)", self.directory,
                            len(loaded))
            self._problem = self._problem_since = None

    def _degrade(self, detail: str) -> None:
        """Keep the loaded keys; say why once per change of the reason."""
        if detail == self._problem:
            return
        if self._problem_since is None:
            self._problem_since = self.clock()
        self._problem = detail
        if self.observes:
            log.error("keys: %s; keeping the keys loaded before (%d)", detail,
                      len(self._loaded or {}))
            events.emit(events.KEYS_UNAVAILABLE, detail=detail)

    def _keep_vanished(self, found: dict[str, _Loaded]) -> dict[str, _Loaded]:
        """``found`` plus each loaded key whose files vanished while its tokens may be valid
        (an active key, or a retired one before its prune time), unless removed on purpose."""
        previous = self._loaded or {}
        gone = [kid for kid in previous if kid not in found]
        if not gone:
            return found
        now = self.clock()
        statuses = {s.kid: s for s in resolve((i.record for i in previous.values()), now,
                                              self.policy).statuses}
        merged = dict(found)
        for kid in gone:
            status = statuses[kid]
            needed = status.state == ACTIVE or (
                status.state == RETIRED and status.removable_at is not None
                and status.removable_at > now)
            if not needed or (self.directory / f"{kid}{REMOVED_SUFFIX}").exists():
                self._vanished.discard(kid)
                continue
            # Keep it as it was seen (its computed state), so it stays what it was.
            merged[kid] = replace(previous[kid], record=status.stored)
            if kid not in self._vanished:
                self._vanished.add(kid)
                detail = (f"key {kid} vanished from {self.directory} while tokens it signed "
                          f"may be valid; keeping it ({status.state})")
                if self.observes:
                    log.error("keys: %s", detail)
                    events.emit(events.KEYS_UNAVAILABLE, detail=detail)
        return merged

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
                changed = self._observe(result)
            if changed is not None and self.observes:
                active, previous = changed
                events.emit(events.KEY_ACTIVATED, kid=active.kid, alg=active.record.alg)
                events.emit(events.KEY_RETIRED, kid=previous)
        return list(self._view)

    def _observe(self, result: Resolution) -> tuple[KeyStatus, str] | None:
        """The new active key and the one it replaced, when the active key changed since
        this process last looked (not on the first look)."""
        active = result.active
        if active is None or active.kid == self._active_kid:
            return None
        previous, self._active_kid = self._active_kid, active.kid
        return None if previous is None else (active, previous)

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
        if self._problem is not None and not self._loaded:
            raise NoActiveKey(self._problem)
        raise NoActiveKey(
            f"no active signing key in {self.directory}; on a new installation run "
            "'authserver keys ensure' (a shared directory: check that it is mounted)"
        )

    def secure(self) -> str | None:
        """Tighten the directory to 0700 if it is ours (a line saying so), else refuse."""
        return secure_directory(self.directory)

    def health(self) -> tuple[bool, str]:
        """Whether this process can sign now with keys that match the directory, and one
        line saying why (for ``/readyz``).

        Not ready while the directory does not read cleanly, even though the process keeps
        signing with its kept keys: it cannot see a rotation the other instances see, so a
        load balancer should prefer them (docs/design.md, "Keys that stay").
        """
        try:
            key = self.active()
        except KeyStoreError as exc:
            return False, str(exc)
        problem, since = self._problem, self._problem_since
        if problem is not None:
            when = f" since {since.astimezone(dt.UTC):%H:%M:%S}Z" if since else ""
            return False, (f"{problem}{when}: keeping {len(self._loaded or {})} loaded keys, "
                           f"active key {key.kid}")
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
