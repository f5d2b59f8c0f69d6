"""The one clock the domain reads, so tests can move time without sleeping."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def seconds(value: int | float) -> dt.timedelta:
    return dt.timedelta(seconds=value)
