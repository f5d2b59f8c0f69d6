"""What every command module of the ``authserver`` command shares: the one-line error, and
the group class that turns domain and key errors into one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from typing import Any

import click
from flask.cli import AppGroup

from ..crypto.keystore import KeyStoreError
from ..domain.errors import DomainError


class CliError(click.ClickException):
    """A one-line error for the operator."""

    def show(self, file: Any = None) -> None:
        click.echo(f"authserver: error: {self.format_message()}", err=True)


class Group(AppGroup):
    """Turns domain and key errors raised by a command into one clear line; ``-h`` is
    ``--help`` for the group and every command under it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = kwargs.setdefault("context_settings", {})
        settings.setdefault("help_option_names", ["-h", "--help"])
        super().__init__(*args, **kwargs)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DomainError, KeyStoreError) as exc:
            raise CliError(str(exc)) from None


def when(moment: dt.datetime | None) -> str:
    """A time for a table: UTC to the minute, or "-"."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M") if moment else "-"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Print a header row and the rows in aligned columns (the last one unpadded)."""
    cells = [[str(c) for c in headers], *([("-" if c is None or c == "" else str(c))
                                           for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths[:-1], strict=True)]
        click.echo("  ".join([*padded, row[-1]]))
