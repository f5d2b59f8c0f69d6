"""Logging: text or JSON lines with the request id, and the security events as log lines
(docs/design.md, "Operations").

:func:`setup` (from ``create_app``, any number of times) puts one handler on the root logger,
on stderr, with :class:`TextFormatter` or :class:`JsonFormatter` (``settings.log_json``), and
subscribes :func:`on_event` to the events feed. Every line carries the time, level, logger,
message and the id of the request it was written for. The events are written by the logger
``authserver.events`` at the level :func:`event_level` gives: WARNING where a person should
look, INFO for the rest, DEBUG for ordinary traffic (a token request, a rotation), so a
normal refresh writes a line at DEBUG and none at INFO (the level is checked first: the
hot path pays a dictionary look-up).

Events carry ids, causes and error codes, never a credential. As defence in depth both
formatters replace anything shaped like one (a refresh or registration token, a JWT, a
long random string such as a code, a client secret or a PKCE verifier) with
``[redacted]``, in the message, the fields and a traceback alike.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

from ..config import Settings
from ..domain import audit, events
from . import request_id

EVENTS_LOGGER = "authserver.events"
_HANDLER_NAME = "authserver"
_events_log = logging.getLogger(EVENTS_LOGGER)

# Libraries whose DEBUG (and INFO) lines are not the operator's: SQL statements with their
# parameters, HTTP client connection chatter. They log at WARNING and above.
QUIET_LIBRARIES = ("sqlalchemy", "alembic", "urllib3", "authlib", "httpx", "httpcore",
                   "asyncio", "multipart")

WARNING_EVENTS = frozenset({
    audit.REUSE_DETECTED, audit.BINDING_MISMATCH, audit.CODE_REPLAYED,
    audit.BACKCHANNEL_LOGOUT_GIVEN_UP, events.RATE_LIMITED, events.KEYS_UNAVAILABLE,
})
# A family revoked because a token was stolen (reuse, a different DPoP key): a person looks.
WARNING_CAUSES = frozenset({"reuse_detected", "binding_mismatch"})
DEBUG_EVENTS = frozenset({
    events.TOKEN_REQUEST, events.REFRESH_ROTATED, audit.FAMILY_CREATED,
    audit.FAMILY_BOUND_TO_DPOP_KEY, audit.BACKCHANNEL_LOGOUT_DELIVERED,
})
# Written as its own line by the error handler that answers the request 503 (one line a
# failed request, with the error's first line), so not twice.
SILENT_EVENTS = frozenset({events.DATABASE_ERROR})
_LEVELS: dict[str, int] = {
    **dict.fromkeys(WARNING_EVENTS, logging.WARNING),
    **dict.fromkeys(DEBUG_EVENTS, logging.DEBUG),
}

# Defence in depth (as domain/audit.py scrubs its detail): refresh tokens, registration
# tokens, JWTs (access and ID tokens, DPoP proofs, logout tokens), and long random strings
# with upper and lower case letters and digits (codes, client secrets, PKCE verifiers). A
# hash in hex or an identifier in snake_case is left alone.
_CREDENTIAL = re.compile(r"(?:rt_|reg_)[A-Za-z0-9_-]{20,}|eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_.-]+")
_RANDOM = re.compile(r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.-]{40,}")
_UPPER, _LOWER, _DIGIT = re.compile(r"[A-Z]"), re.compile(r"[a-z]"), re.compile(r"[0-9]")
REDACTED = "[redacted]"
# A field value written without quotes in a text line.
_PLAIN = re.compile(r"[A-Za-z0-9._~:@+/=,-]{1,200}")
# Control characters (and Unicode's line breaks) written as escapes in a text line.
_CONTROL = {i: f"\\x{i:02x}" for i in (*range(32), 127, 0x85)} | {
    ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", 0x2028: "\\u2028",
    0x2029: "\\u2029"}
# Keys of a JSON line the event fields may not take.
_RESERVED = frozenset({"time", "level", "logger", "message", "request_id", "event",
                       "exc_info"})


def _random_shaped(match: re.Match[str]) -> str:
    text = match.group(0)
    if _UPPER.search(text) and _LOWER.search(text) and _DIGIT.search(text):
        return REDACTED
    return text


def scrub(text: str) -> str:
    """``text`` with every credential-shaped string replaced by ``[redacted]``."""
    return _RANDOM.sub(_random_shaped, _CREDENTIAL.sub(REDACTED, text))


def event_level(event: str, fields: Mapping[str, Any]) -> int:
    """The level an event is logged at (0: not logged)."""
    if event in SILENT_EVENTS:
        return 0
    if event == audit.FAMILY_REVOKED:
        return logging.WARNING if fields.get("cause") in WARNING_CAUSES else logging.INFO
    return _LEVELS.get(event, logging.INFO)


def _text_value(value: Any) -> str:
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) else json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def on_event(event: str, fields: Mapping[str, Any]) -> None:
    """The events listener: one line an event, if its level is logged."""
    level = event_level(event, fields)
    if not level or not _events_log.isEnabledFor(level):  # a refresh at INFO stops here
        return
    shown = {key: value for key, value in fields.items() if value is not None}
    message = " ".join([event, *(f"{key}={_text_value(value)}" for key, value in shown.items())])
    _events_log.log(level, "%s", message, extra={"event": event, "event_fields": shown})


class _Formatter(logging.Formatter):
    """The time as the access log writes it: local, milliseconds, the zone's offset."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        local = time.localtime(record.created)
        return (f"{time.strftime('%Y-%m-%dT%H:%M:%S', local)}.{int(record.msecs):03d}"
                f"{time.strftime('%z', local)}")


class TextFormatter(_Formatter):
    """``time LEVEL logger: message request_id=...`` (the request id when there is one),
    then a traceback's lines if any."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not message.isprintable():  # a request's path with a newline forges no line
            message = message.translate(_CONTROL)
        line = f"{self.formatTime(record)} {record.levelname} {record.name}: {message}"
        rid = _request_id(record)
        if rid:
            line += f" request_id={rid}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return scrub(line)


class JsonFormatter(_Formatter):
    """One JSON object a line: ``time``, ``level``, ``logger``, ``message``, ``request_id``
    (null outside a request), for an event ``event`` and its fields, for an error
    ``exc_info`` (the traceback as one string)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": scrub(record.getMessage()),
            "request_id": _request_id(record) or None,
        }
        event = getattr(record, "event", None)
        if event is not None:
            line["event"] = event
            for key, value in getattr(record, "event_fields", {}).items():
                line[f"field_{key}" if key in _RESERVED else key] = _scrubbed(value)
        if record.exc_info:
            line["exc_info"] = scrub(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc_info"] = scrub(record.exc_text)
        if record.stack_info:
            line["stack_info"] = scrub(self.formatStack(record.stack_info))
        return json.dumps(line, default=str)


def _request_id(record: logging.LogRecord) -> str:
    rid = getattr(record, "request_id", None)
    return rid if isinstance(rid, str) else request_id.current.get()


def _install_record_factory() -> None:
    """Every log record gets ``request_id``: the id of the request it was written for (""
    outside one), whichever handler formats it, here or later."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "authserver", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = request_id.current.get()
        return record

    factory.authserver = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, Mapping):
        return {str(key): _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(item) for item in value]
    return value


def formatter(settings: Settings) -> logging.Formatter:
    return JsonFormatter() if settings.log_json else TextFormatter()


def setup(settings: Settings) -> None:
    """Configure logging for ``settings`` (idempotent: the last call's settings hold).

    As ``logging.basicConfig`` does, a process whose root logger already has handlers of
    someone else's (a test runner's) keeps them, and gets only the level and the events."""
    root = logging.getLogger()
    level = logging.getLevelName(settings.log_level.upper())
    root.setLevel(level)
    ours = next((h for h in root.handlers if h.get_name() == _HANDLER_NAME), None)
    if ours is None and not root.handlers:
        ours = logging.StreamHandler(sys.stderr)
        ours.set_name(_HANDLER_NAME)
        root.addHandler(ours)
        # Python's warnings as lines of the same form (a JSON log stays JSON).
        logging.captureWarnings(True)
    if ours is not None:
        ours.setFormatter(formatter(settings))
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    _events_log.setLevel(logging.NOTSET)  # a serving process logs every event
    _install_record_factory()
    events.subscribe(on_event)


def quiet_events() -> None:
    """Command-line processes: only the events logged at WARNING (a command prints what it
    did; the audit trail has the rest)."""
    _events_log.setLevel(logging.WARNING)


def granian_config(settings: Settings) -> dict[str, Any]:
    """granian's ``log_dictconfig``: its own messages (a worker crashed, one killed after
    the graceful timeout) on stderr in the same form as ours; its access log off (ours is
    :class:`~authserver.ops.access_log.AccessLog`)."""
    kind = "JsonFormatter" if settings.log_json else "TextFormatter"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"ours": {"()": f"authserver.ops.logs.{kind}"}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "ours",
                                 "stream": "ext://sys.stderr"}},
        "loggers": {"_granian": {"handlers": ["console"], "level": "WARNING",
                                 "propagate": False},
                    "granian.access": {"handlers": [], "propagate": False}},
    }


def announce(settings: Settings, message: str, level: str = "INFO") -> None:
    """A message of ``authserver serve`` to the operator (it is serving, a warning about
    its configuration, a worker that refuses to start) on stderr, whatever the log level:
    as is in text, one object a line in JSON."""
    if settings.log_json:
        line = json.dumps({"time": _Formatter().formatTime(logging.makeLogRecord({})),
                           "level": level, "logger": "authserver.serve",
                           "message": scrub(message), "request_id": None})
    else:
        line = message
    print(line, file=sys.stderr, flush=True)
