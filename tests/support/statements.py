"""The SQL statements an app sends while a test watches (docs/design.md, "Performance budget")."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask
from sqlalchemy import event
from werkzeug.test import TestResponse

from authserver.extensions import db

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA")


@contextmanager
def recorded_statements(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """Each statement the app's engine executes meanwhile, with its parameters; transaction
    control (BEGIN, COMMIT, ROLLBACK) and SQLite's PRAGMAs left out."""
    recorded: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        if not statement.lstrip().upper().startswith(TRANSACTION_CONTROL):
            recorded.append((statement, parameters))

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield recorded
    finally:
        event.remove(engine, "before_cursor_execute", record)


def statements_of(app: Flask, call: Callable[[], TestResponse]) -> list[str]:
    """The statements of one request, ``call()``, which must answer 200."""
    with recorded_statements(app) as recorded:
        assert call().status_code == 200
    return [statement for statement, _ in recorded]
