"""The signing-key lifecycle as a pure function of key metadata and the clock.

docs/design.md, "Keys": *next* (published, not signing) → *active* (signing; exactly one) →
*retired* (published until every token it signed has expired) → removed.

Promotion is not an event some process must perform: it is **computed**. A next key
records, when it is created, the instant ``activates_at`` after which every JWKS cache
holds it (creation + the cache lifetime + a margin). Every server process that reads the
same ``keys/`` metadata and looks at the clock therefore agrees, at the same instant and
without writing anything or restarting, which key signs: the one activated last. The key
it replaces is retired at that very instant. Writing the resolved states back to disk
(``KeyAdmin.sync``) only makes the files say what every process already computes, so two
processes racing to do it write identical bytes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from dataclasses import dataclass

NEXT, ACTIVE, RETIRED = "next", "active", "retired"
STATES = (NEXT, ACTIVE, RETIRED)

# The longest any token we sign can live: access tokens (AUTHSERVER_ACCESS_TOKEN_TTL and the
# per-client override are both capped at 86400 s by validation) and ID tokens (same TTL).
MAX_TOKEN_LIFETIME = 86_400
# Slack on top of the token lifetime: resource servers accept exp with a leeway (30 s in
# authserver.resource) and clocks differ.
RETIREMENT_LEEWAY = 300
# Slack on top of the JWKS cache lifetime before a next key may sign: a process notices a
# new key file within its check interval (1 s), and hosts' clocks differ by a few seconds.
MIN_PREPUBLISH_MARGIN = 5


@dataclass(frozen=True)
class KeyPolicy:
    """How long keys are published before signing and after retirement (seconds)."""

    prepublish: int = 300 + 30
    retention: int = MAX_TOKEN_LIFETIME + RETIREMENT_LEEWAY

    @classmethod
    def for_jwks_max_age(cls, jwks_max_age: int,
                         max_token_lifetime: int = MAX_TOKEN_LIFETIME) -> KeyPolicy:
        """Pre-publish for longer than any JWKS cache may hold a copy without the new key.

        A cache filled just before the key appeared keeps that copy for ``max_age``; the
        margin covers the processes' file check interval and clock skew.
        """
        margin = max(MIN_PREPUBLISH_MARGIN, math.ceil(jwks_max_age / 10))
        return cls(prepublish=jwks_max_age + margin,
                   retention=max_token_lifetime + RETIREMENT_LEEWAY)


@dataclass(frozen=True)
class KeyRecord:
    """What ``<kid>.json`` says (the stored state, possibly behind the computed one)."""

    kid: str
    alg: str
    state: str
    created_at: dt.datetime
    state_changed_at: dt.datetime
    activates_at: dt.datetime | None = None  # next keys only

    def to_json(self) -> dict[str, str]:
        data = {"kid": self.kid, "alg": self.alg, "state": self.state,
                "created_at": _iso(self.created_at),
                "state_changed_at": _iso(self.state_changed_at)}
        if self.state == NEXT and self.activates_at is not None:
            data["activates_at"] = _iso(self.activates_at)
        return data


@dataclass(frozen=True)
class KeyStatus:
    """A key's state at a given instant, computed from every key's record."""

    record: KeyRecord
    state: str
    state_changed_at: dt.datetime
    activates_at: dt.datetime | None  # when a next key starts signing
    removable_at: dt.datetime | None  # when a retired key may be pruned

    @property
    def kid(self) -> str:
        return self.record.kid

    @property
    def stored(self) -> KeyRecord:
        """The record as it should be written so the file says what is computed."""
        return KeyRecord(self.record.kid, self.record.alg, self.state, self.record.created_at,
                         self.state_changed_at,
                         self.activates_at if self.state == NEXT else None)


@dataclass(frozen=True)
class Resolution:
    statuses: tuple[KeyStatus, ...]  # newest first
    valid_until: dt.datetime | None  # the next instant at which a state changes by itself

    @property
    def active(self) -> KeyStatus | None:
        return next((s for s in self.statuses if s.state == ACTIVE), None)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def activation_time(created_at: dt.datetime, policy: KeyPolicy) -> dt.datetime:
    """When a next key created at ``created_at`` starts signing (whole seconds, rounded up)."""
    instant = created_at + dt.timedelta(seconds=policy.prepublish)
    if instant.microsecond:
        instant = instant.replace(microsecond=0) + dt.timedelta(seconds=1)
    return instant


def scheduled_activation(record: KeyRecord, policy: KeyPolicy) -> dt.datetime:
    """A next key's recorded activation (files written before it was recorded: computed)."""
    return record.activates_at or activation_time(record.created_at, policy)


def resolve(records: Iterable[KeyRecord], now: dt.datetime, policy: KeyPolicy) -> Resolution:
    """Every key's state at ``now``.

    The candidates for signing are the keys stored as active and the next keys whose
    activation time has come; ordered by activation time, the last one signs and each
    earlier one was retired when its successor was activated. Next keys still waiting stay
    next. Stored retired keys stay retired. The result depends only on the records and
    ``now``, so every process computes the same.
    """
    records = list(records)
    candidates: list[tuple[dt.datetime, dt.datetime, str, KeyRecord]] = []
    waiting: list[dt.datetime] = []
    for record in records:
        if record.state == ACTIVE:
            candidates.append((record.state_changed_at, record.created_at, record.kid, record))
        elif record.state == NEXT:
            at = scheduled_activation(record, policy)
            if at <= now:
                candidates.append((at, record.created_at, record.kid, record))
            else:
                waiting.append(at)
    candidates.sort(key=lambda c: c[:3])

    computed: dict[str, KeyStatus] = {}
    for index, (activated, _, kid, record) in enumerate(candidates):
        if index == len(candidates) - 1:
            computed[kid] = KeyStatus(record, ACTIVE, activated, None, None)
        else:
            retired_at = candidates[index + 1][0]
            computed[kid] = KeyStatus(
                record, RETIRED, retired_at, None,
                retired_at + dt.timedelta(seconds=policy.retention))
    for record in records:
        if record.kid in computed:
            continue
        if record.state == NEXT:
            computed[record.kid] = KeyStatus(record, NEXT, record.state_changed_at,
                                             scheduled_activation(record, policy), None)
        else:  # stored retired
            computed[record.kid] = KeyStatus(
                record, RETIRED, record.state_changed_at, None,
                record.state_changed_at + dt.timedelta(seconds=policy.retention))
    statuses = sorted(computed.values(), key=lambda s: (s.record.created_at, s.kid),
                      reverse=True)
    return Resolution(tuple(statuses), min(waiting) if waiting else None)
