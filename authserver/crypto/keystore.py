"""Signing keys on disk, shared by every server process through ``keys/``.

Each key is two files: ``<kid>.pem`` (the private key, mode 0600, optionally encrypted
with AUTHSERVER_KEY_PASSPHRASE) and ``<kid>.json`` (public metadata: algorithm, state and
times). States follow DESIGN.md "Keys": ``next`` (published, not signing), ``active``
(signing; exactly one), ``retired`` (published until its tokens have expired).

Keys are parsed once per process and re-read only when the directory changes (checked
at most once a second), so the token endpoint never parses PEM on its hot path.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import jose

NEXT, ACTIVE, RETIRED = "next", "active", "retired"
STATES = (NEXT, ACTIVE, RETIRED)
PUBLISHED_STATES = (NEXT, ACTIVE, RETIRED)


class KeyStoreError(Exception):
    """A problem with the key directory, reported as one readable line."""


class NoActiveKey(KeyStoreError):
    pass


@dataclass(frozen=True)
class SigningKey:
    kid: str
    alg: str
    state: str
    created_at: dt.datetime
    state_changed_at: dt.datetime
    private: jose.PrivateJWK = field(repr=False, compare=False)

    def public_jwk(self) -> dict[str, Any]:
        return jose.public_jwk(self.private, self.kid, self.alg)

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        return jose.sign_jwt(claims, self.private, kid=self.kid, alg=self.alg, typ=typ)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class KeyStore:
    """The key directory, with a per-process cache refreshed when the directory changes."""

    def __init__(self, directory: str | os.PathLike[str], passphrase: str = "",
                 check_interval: float = 1.0) -> None:
        self.directory = Path(directory)
        self.passphrase = passphrase
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = []
        self._signature: tuple[int, int] | None = None
        self._checked_at = 0.0

    # -- reading -------------------------------------------------------------------
    def _dir_signature(self) -> tuple[int, int] | None:
        try:
            st = self.directory.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_ino)

    def keys(self) -> list[SigningKey]:
        """All keys, newest first; re-read if the directory changed since the last look."""
        now = time.monotonic()
        if self._signature is not None and now - self._checked_at < self.check_interval:
            return self._keys
        with self._lock:
            signature = self._dir_signature()
            if signature != self._signature or signature is None:
                self._keys = self._read_all()
                self._signature = signature
            self._checked_at = now
            return self._keys

    def _read_all(self) -> list[SigningKey]:
        if not self.directory.is_dir():
            return []
        found = []
        for meta_path in sorted(self.directory.glob("*.json")):
            found.append(self._read_one(meta_path))
        found.sort(key=lambda k: k.created_at, reverse=True)
        return found

    def _read_one(self, meta_path: Path) -> SigningKey:
        try:
            meta = json.loads(meta_path.read_text())
            kid, alg, state = meta["kid"], meta["alg"], meta["state"]
            created = dt.datetime.fromisoformat(meta["created_at"])
            changed = dt.datetime.fromisoformat(meta.get("state_changed_at", meta["created_at"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KeyStoreError(f"key metadata {meta_path} is unreadable ({exc})") from exc
        if alg not in jose.SUPPORTED_ALGORITHMS or state not in STATES:
            raise KeyStoreError(f"key metadata {meta_path}: bad alg or state")
        pem_path = meta_path.with_suffix(".pem")
        try:
            data = pem_path.read_bytes()
        except OSError as exc:
            raise KeyStoreError(f"private key {pem_path} is unreadable ({exc.strerror})") from exc
        try:
            private = jose.load_private_pem(alg, data, self.passphrase)
        except jose.KeyFormatError as exc:
            raise KeyStoreError(f"private key {pem_path}: {exc}") from exc
        return SigningKey(kid, alg, state, created, changed, private)

    def active(self) -> SigningKey:
        """The one key that signs now."""
        for key in self.keys():
            if key.state == ACTIVE:
                return key
        raise NoActiveKey(
            f"no active signing key in {self.directory}; run 'authserver keys ensure'"
        )

    def published(self) -> list[SigningKey]:
        return [k for k in self.keys() if k.state in PUBLISHED_STATES]

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set: next, active and retired keys, never private members."""
        return {"keys": [k.public_jwk() for k in self.published()]}

    # -- writing -------------------------------------------------------------------
    def create(self, alg: str = "RS256", state: str = NEXT) -> SigningKey:
        """Generate a key and write it (private PEM 0600, then metadata)."""
        if alg not in jose.SUPPORTED_ALGORITHMS:
            raise KeyStoreError(
                f"unsupported algorithm {alg!r}; use one of {', '.join(jose.SUPPORTED_ALGORITHMS)}"
            )
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        private = jose.generate_private_key(alg)
        kid = jose.thumbprint(private)
        now = _now()
        _write_atomic(self.directory / f"{kid}.pem",
                      jose.private_pem(private, self.passphrase), 0o600)
        meta = {"kid": kid, "alg": alg, "state": state, "created_at": now.isoformat(),
                "state_changed_at": now.isoformat()}
        _write_atomic(self.directory / f"{kid}.json",
                      json.dumps(meta, indent=2).encode() + b"\n", 0o644)
        self._signature = None
        return SigningKey(kid, alg, state, now, now, private)

    def ensure(self, alg: str = "RS256") -> tuple[SigningKey, bool]:
        """Return the active key, creating one if there is none (True when created)."""
        try:
            return self.active(), False
        except NoActiveKey:
            return self.create(alg, ACTIVE), True
