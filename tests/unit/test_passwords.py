"""Passwords are argon2id with RFC 9106's second recommended parameters.

The rest of the suite hashes with minimal cost in process (``conftest.cheap_argon2``);
this file checks what the server itself uses.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest
from argon2 import extract_parameters
from argon2.exceptions import VerifyMismatchError

from authserver.domain import passwords
from tests.conftest import PRODUCTION_PASSWORD_HASHER


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


class _SlowHasher:
    """Stands in for argon2: each call takes a while and records how many overlap."""

    def __init__(self, release: threading.Event | None = None) -> None:
        self.release = release
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()
        self.priorities: list[int] = []

    def _work(self) -> None:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        if sys.platform.startswith("linux"):
            self.priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        if self.release is not None:
            assert self.release.wait(10)
        else:
            time.sleep(0.02)
        with self.lock:
            self.running -= 1

    def hash(self, password: str) -> str:
        self._work()
        return "$argon2id$fake$" + password

    def verify(self, stored: str, password: str) -> bool:
        self._work()
        if stored != "$argon2id$fake$" + password:
            raise VerifyMismatchError
        return True


def test_hashing_runs_one_at_a_time_at_a_lower_priority(monkeypatch) -> None:
    slow = _SlowHasher()
    monkeypatch.setattr(passwords, "_hasher", slow)
    stored = passwords.hash_password("correct horse battery")
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(
        passwords.verify_password(stored, "correct horse battery", sign_in=False)))
        for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 6 and slow.most == 1
    if sys.platform.startswith("linux"):
        mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert set(slow.priorities) == {min(19, mine + passwords.HASHING_NICENESS)}


def test_sign_in_checks_that_would_wait_too_long_are_refused_not_queued(monkeypatch) -> None:
    release = threading.Event()
    slow = _SlowHasher(release)
    monkeypatch.setattr(passwords, "_hasher", slow)
    monkeypatch.setattr(passwords, "_dummy", "$argon2id$fake$dummy")
    # Hashes take 0.1 s here: two more checks may wait for the one hashing (0.2 s, within
    # the 0.25 s bound); a fourth would wait 0.3 s.
    monkeypatch.setattr(passwords, "_hash_seconds", 0.1)
    results: list[bool] = []
    admitted = [threading.Thread(target=lambda: results.append(
        passwords.verify_password("$argon2id$fake$right password", "wrong password")))
        for _ in range(3)]
    for thread in admitted:
        thread.start()
    deadline = time.monotonic() + 5
    while passwords._sign_in_checks < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    started = time.monotonic()
    with pytest.raises(passwords.Busy):
        passwords.verify_password(None, "anything at all")
    assert time.monotonic() - started < 0.5  # at once: a refused check holds no thread
    # Hashing that a signed-in user or an operator asked for waits its turn instead.
    waiting = threading.Thread(target=lambda: results.append(
        passwords.verify_password("$argon2id$fake$x", "x", sign_in=False)))
    waiting.start()
    release.set()
    for thread in [*admitted, waiting]:
        thread.join()
    assert sorted(results) == [False, False, False, True] and slow.most == 1
    assert passwords._sign_in_checks == 0
    # Hashing got cheap (the latest took microseconds): many checks may wait at once.
    results.clear()
    checks = [threading.Thread(target=lambda: results.append(
        passwords.verify_password("$argon2id$fake$y", "y"))) for _ in range(8)]
    for thread in checks:
        thread.start()
    for thread in checks:
        thread.join()
    assert results == [True] * 8
