"""What every command module of the ``authserver`` command shares: the one-line error, and
the group class that turns domain and key errors into one."""

from __future__ import annotations

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
    """Turns domain and key errors raised by a command into one clear line."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DomainError, KeyStoreError) as exc:
            raise CliError(str(exc)) from None
