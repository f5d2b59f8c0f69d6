"""``authserver keys``: signing keys under AUTHSERVER_KEYS_DIR and their lifecycle.

``rotate`` adds a *next* key, which becomes active by itself once every JWKS cache holds
it; the key it replaces is *retired* and ``prune`` removes it when every token it signed
has expired. See docs/operators.md, "Key rotation runbook".
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import click
from flask.cli import with_appcontext

from ..crypto import jose
from ..crypto.key_admin import KeyAdmin
from ..crypto.keystore import SigningKey
from ..services import services
from .base import Group

ALG_CHOICE = click.Choice(jose.SUPPORTED_ALGORITHMS)


def _store() -> KeyAdmin:
    return KeyAdmin.of(services().keys)


def _default_alg(alg: str | None) -> str:
    return alg or services().settings.signing_alg


def _time(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def _as_json(key: SigningKey) -> dict[str, Any]:
    return {"kid": key.kid, "alg": key.alg, "state": key.state,
            "created_at": _iso(key.created_at), "state_changed_at": _iso(key.state_changed_at),
            "activates_at": _iso(key.activates_at), "removable_at": _iso(key.removable_at),
            "encrypted": key.encrypted}


@click.group("keys", cls=Group)
def keys_group() -> None:
    """Signing keys: ensure, rotate, activate, list, prune, remove."""


@keys_group.command("ensure")
@click.option("--alg", type=ALG_CHOICE, default=None,
              help="Algorithm of a key created now [default: AUTHSERVER_SIGNING_ALG].")
@with_appcontext
def ensure(alg: str | None) -> None:
    """Create an active signing key if there is none."""
    store = _store()
    tightened = store.secure()  # an existing directory open to others: 0700, or refused
    if tightened:
        click.echo(tightened)
    key, created = store.ensure(_default_alg(alg))
    verb = "created" if created else "found"
    click.echo(f"{verb} active {key.alg} key {key.kid}")


@keys_group.command("rotate")
@click.option("--alg", type=ALG_CHOICE, default=None,
              help="Algorithm of the new key [default: AUTHSERVER_SIGNING_ALG].")
@click.option("--force", is_flag=True, help="Add a next key even if one is already waiting.")
@with_appcontext
def rotate(alg: str | None, force: bool) -> None:
    """Create the next key: published now, signing once every JWKS cache has it."""
    store = _store()
    key, active_now = store.rotate(_default_alg(alg), force=force)
    if active_now:
        click.echo(f"created active {key.alg} key {key.kid} (there was no active key)")
        return
    click.echo(f"created next {key.alg} key {key.kid}; it becomes active at "
               f"{_time(key.activates_at)} (published {store.policy.prepublish} s, longer "
               f"than the JWKS cache lifetime {services().settings.jwks_max_age} s)")


def _kid_command(name: str, force_help: str) -> Callable[[Callable[..., None]], click.Command]:
    """``keys NAME KID [--force]``, run in the app context."""

    def decorate(function: Callable[..., None]) -> click.Command:
        function = click.option("--force", is_flag=True, help=force_help)(
            with_appcontext(function))
        # A kid is base64url: one in 64 starts with "-", which must not be read as an option.
        return keys_group.command(name, context_settings={"ignore_unknown_options": True})(
            click.argument("kid")(function))

    return decorate


@_kid_command("activate",
              "Activate even if resource servers may not have fetched the key yet.")
def activate(kid: str, force: bool) -> None:
    """Make KID the signing key now (KID may be a unique prefix of 8+ characters)."""
    store = _store()
    key, previous = store.activate(kid, force=force)
    if previous is None:
        click.echo(f"key {key.kid} is the active key")
        return
    click.echo(f"activated {key.alg} key {key.kid}; retired {previous.kid}")
    current = store.keys()
    for waiting in current:
        if waiting.state == "next":
            click.echo(f"note: next key {waiting.kid} still becomes active at "
                       f"{_time(waiting.activates_at)}")


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def list_keys(as_json: bool) -> None:
    """List keys: state, kid, algorithm, created and state-change times."""
    keys = _store().keys()
    if as_json:
        click.echo(json.dumps([_as_json(k) for k in keys], indent=2))
        return
    if not keys:
        click.echo("no keys; run 'authserver keys ensure'")
        return
    click.echo(f"{'STATE':<8} {'KID':<43}  {'ALG':<6} {'CREATED':<20} {'CHANGED':<20} NOTE")
    for key in keys:
        note = ""
        if key.activates_at:
            note = f"active at {_time(key.activates_at)}"
        elif key.removable_at:
            note = f"removable at {_time(key.removable_at)}"
        click.echo(f"{key.state:<8} {key.kid:<43}  {key.alg:<6} {_time(key.created_at):<20} "
                   f"{_time(key.state_changed_at):<20} {note}".rstrip())


@keys_group.command("prune")
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@with_appcontext
def prune(dry_run: bool) -> None:
    """Remove retired keys once every token they signed has expired."""
    store = _store()
    removed = store.prune(dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for key in removed:
        click.echo(f"{verb} retired {key.alg} key {key.kid}")
    if removed:
        return
    current = store.keys()
    waits = sorted(k.removable_at for k in current if k.removable_at is not None)
    if waits:
        click.echo(f"nothing to prune; {len(waits)} retired key(s) still needed, the first "
                   f"until {_time(waits[0])}")
    else:
        click.echo("nothing to prune")


@_kid_command("remove",
              "Remove a retired key whose tokens may still be valid (a compromised key).")
def remove(kid: str, force: bool) -> None:
    """Remove one next or retired key now (never the active key)."""
    key = _store().remove(kid, force=force)
    click.echo(f"removed {key.state} {key.alg} key {key.kid}")
