"""The account delay's arithmetic (docs/design.md, "Operations"), without storage or HTTP;
over HTTP: tests/http/test_rate_limits.py."""

from __future__ import annotations

import datetime as dt

from authserver.domain.attempt_limits import (
    AccountPolicy,
    AccountState,
    Limited,
    account_key,
    admit,
    failed,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC).timestamp()


def test_the_delay_doubles_from_one_second_after_the_free_attempts():
    policy = AccountPolicy(free=5, max_delay=900)
    assert [policy.delay(n) for n in (0, 4, 5, 6, 9, 15, 200)] == [0, 0, 1, 2, 16, 900, 900]
    assert policy.forget_after == 86_400


def test_a_wrong_password_is_counted_once_checked_and_refused_inside_the_delay():
    policy = AccountPolicy(free=1, max_delay=900)
    assert admit(None, NOW, policy) == (None, 0, False)  # admitting counts nothing
    state = failed(None, NOW)
    assert state == AccountState(1, NOW)
    refused, wait, first = admit(state, NOW + 0.25, policy)
    assert wait == 0.75 and first and refused.refused and refused.failures == 1
    again, _, first = admit(refused, NOW + 0.5, policy)
    assert not first  # audited once per delay
    kept, wait, _ = admit(again, NOW + 1, policy)
    assert wait == 0 and kept == again
    assert failed(kept, NOW + 1) == AccountState(2, NOW + 1)


def test_a_clock_ahead_on_another_instance_waits_no_longer_than_the_delay():
    _, wait, _ = admit(AccountState(5, NOW + 600), NOW, AccountPolicy(free=5, max_delay=900))
    assert wait == 1


def test_retry_after_is_a_whole_number_of_seconds():
    assert Limited("account", 0.2, first=True).retry_after == 1
    assert Limited("account", 2.01, first=True).retry_after == 3


def test_user_names_are_counted_normalised_and_never_stored():
    secret = b"k" * 32
    assert account_key("Alice ", secret) == account_key("alice", secret)
    assert account_key("alice", secret) != account_key("alice", b"j" * 32)
    assert "alice" not in account_key("alice", secret)
