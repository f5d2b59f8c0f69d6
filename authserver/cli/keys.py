"""``authserver keys``: signing keys under AUTHSERVER_KEYS_DIR."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from ..crypto import jose
from ..services import services
from . import cli


@cli.group("keys", cls=type(cli))
def keys_group() -> None:
    """Signing keys."""


@keys_group.command("ensure")
@click.option("--alg", type=click.Choice(jose.SUPPORTED_ALGORITHMS), default="RS256",
              show_default=True, help="Algorithm of a key created now.")
@with_appcontext
def ensure(alg: str) -> None:
    """Create an active signing key if there is none."""
    key, created = services().keys.ensure(alg)
    verb = "created" if created else "found"
    click.echo(f"{verb} active {key.alg} key {key.kid}")


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def list_keys(as_json: bool) -> None:
    """List keys: state, kid, algorithm, created and state-change times."""
    keys = services().keys.keys()
    data = [
        {"kid": k.kid, "alg": k.alg, "state": k.state, "created_at": k.created_at.isoformat(),
         "state_changed_at": k.state_changed_at.isoformat()}
        for k in keys
    ]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data:
        click.echo("no keys; run 'authserver keys ensure'")
    for item in data:
        click.echo(f"{item['state']:<8} {item['kid']}  {item['alg']:<6} "
                   f"created {item['created_at']}  changed {item['state_changed_at']}")
