"""Human passwords: argon2id (argon2-cffi's defaults follow RFC 9106's second recommendation)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()  # argon2id
_dummy: str | None = None


def _dummy_hash() -> str:
    """Verified when the user does not exist, so that a missing user costs as long as a
    wrong password and user names cannot be probed by timing. Made on first use (hashing
    costs ~0.15 s, which every CLI command would otherwise pay at import)."""
    global _dummy
    if _dummy is None:
        _dummy = _hasher.hash("not-a-real-password")
    return _dummy

MIN_LENGTH = 8
MAX_LENGTH = 1024


def warm_up() -> None:
    """Make the dummy hash now (a server process calls this before serving)."""
    _dummy_hash()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; always spends one argon2 verification."""
    try:
        return _hasher.verify(stored_hash or _dummy_hash(), password) and stored_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """A reason the password is unacceptable, or None."""
    if len(password) < MIN_LENGTH:
        return f"password must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"password must be at most {MAX_LENGTH} characters"
    return None
