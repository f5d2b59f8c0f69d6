"""Passwords are argon2id with RFC 9106's second recommended parameters.

The rest of the suite hashes with minimal cost in process (``conftest.cheap_argon2``);
this file checks what the server itself uses.
"""

from __future__ import annotations

from argon2 import extract_parameters

from authserver.domain import passwords

from .conftest import PRODUCTION_PASSWORD_HASHER


def test_the_server_hashes_with_argon2id_and_rfc_9106_parameters(monkeypatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PRODUCTION_PASSWORD_HASHER)
    stored = passwords.hash_password("correct horse battery")
    params = extract_parameters(stored)
    assert stored.startswith("$argon2id$")
    assert (params.time_cost, params.memory_cost, params.parallelism) == (3, 65536, 4)
    assert passwords.verify_password(stored, "correct horse battery")
    assert not passwords.verify_password(stored, "wrong horse battery")


def test_an_unknown_user_costs_one_verification_and_never_matches() -> None:
    assert not passwords.verify_password(None, "not-a-real-password")
