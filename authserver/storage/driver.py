"""Statements run on the DBAPI connection itself, for the few that run on every request.

SQLAlchemy's execution layer (result metadata, type processing, events) costs more than a
short indexed statement, and psycopg builds a description object per column of every
result it is asked to describe: 0.3 ms for an 18-column lookup, more than the query. Here
a Core statement is compiled once per dialect, run with the driver's own ``execute``, and
its result columns are converted as the column types would (``UTCDateTime``: naive UTC,
on SQLite in the text format SQLAlchemy writes, so comparisons in SQL agree; booleans;
JSON). Driver errors surface as SQLAlchemy's, and a dead connection is invalidated.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import JSON, Boolean
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

from .base import UTCDateTime


@dataclass(frozen=True)
class Compiled:
    text: str
    order: tuple[str, ...] | None  # positional parameter names (SQLite), else named
    convert: tuple[tuple[int, Callable[[Any], Any]], ...]  # result column -> converter

    def params(self, values: dict[str, Any]) -> Any:
        return values if self.order is None else tuple(values[name] for name in self.order)


def _result_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC)


def _result_json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _result_bool(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _converter(column_type: Any) -> Callable[[Any], Any] | None:
    if isinstance(column_type, UTCDateTime):
        return _result_time
    if isinstance(column_type, Boolean):
        return _result_bool
    if isinstance(column_type, JSON):
        return _result_json
    return None


@functools.cache
def compiled(statement: ClauseElement, dialect: Dialect) -> Compiled:
    """``statement`` compiled for ``dialect`` (once per statement and engine)."""
    # A statement compiles to an SQLCompiler (typed as the base Compiled).
    result = cast(SQLCompiler, statement.compile(dialect=dialect))
    convert = []
    for index, column in enumerate(getattr(statement, "selected_columns", ())):
        function = _converter(column.type)
        if function is not None:
            convert.append((index, function))
    order = result.positiontup if result.positional else None  # a list once compiled
    return Compiled(str(result), tuple(order) if order is not None else None, tuple(convert))


def bind_time(connection: Connection, value: dt.datetime | None) -> Any:
    """A timestamp as ``UTCDateTime`` would bind it on this connection's database."""
    if value is None:
        return None
    naive = value.astimezone(dt.UTC).replace(tzinfo=None)
    return naive.strftime("%Y-%m-%d %H:%M:%S.%f") if connection.dialect.name == "sqlite" \
        else naive


class _DriverConnection(Protocol):
    """What pysqlite's and psycopg's connections both have beyond DB-API 2.0."""

    def execute(self, sql: str, parameters: Any, /) -> Any: ...


def execute(connection: Connection, statement: ClauseElement, values: dict[str, Any]) -> Any:
    """Run ``statement`` on the driver connection; return the driver's cursor."""
    sql = compiled(statement, connection.dialect)
    raw = connection.connection.driver_connection
    dbapi = connection.dialect.loaded_dbapi
    try:
        return cast(_DriverConnection, raw).execute(sql.text, sql.params(values))
    except dbapi.Error as exc:
        disconnected = connection.dialect.is_disconnect(exc, raw, None)
        if disconnected:
            connection.invalidate(exc)
        raise DBAPIError.instance(sql.text, None, exc, dbapi.Error,
                                  connection_invalidated=disconnected,
                                  dialect=connection.dialect) from exc


def fetchone(connection: Connection, statement: ClauseElement, values: dict[str, Any]
             ) -> list[Any] | None:
    """The first row of ``statement``'s result, its columns converted; None if none."""
    row = execute(connection, statement, values).fetchone()
    if row is None:
        return None
    result = list(row)
    for index, function in compiled(statement, connection.dialect).convert:
        result[index] = function(result[index])
    return result
