"""``authserver clients``: register, show, update, list, rotate secrets, disable, enable and
delete OAuth clients. Validation is the domain's (the same as the API's and the pages');
a bad value is one line naming the option, and changes nothing."""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable
from typing import Any

import click
from flask.cli import with_appcontext

from ..domain import client_admin
from ..domain import clients as domain_clients
from ..domain.binding import IP_POLICIES, MISMATCH_ACTIONS
from ..domain.client_metadata import (
    BODY,
    CLIENT_FIELDS,
    DEFAULT_REFRESH_ABSOLUTE_TTL,
    DEFAULT_REFRESH_IDLE_TTL,
    DEFAULT_REUSE_GRACE,
    LIST_FIELDS,
    REFRESH_TOKEN_DELIVERIES,
    SUPPORTED_GRANT_TYPES,
    ClientSpec,
)
from ..domain.clients import ClientRecord
from ..domain.errors import ValidationError
from ..extensions import db
from ..services import services
from .base import CliError, Group, table

LIST_OPTIONS = LIST_FIELDS
ACTOR = "cli"
# A ValidationError names a registration field; the operator typed an option.
OPTION_NAMES = {**{f.name: f.option for f in CLIENT_FIELDS},
                "overlap": "--overlap", "client_id": "CLIENT_ID"}


def _one_line_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """A validation error becomes one line naming the option; nothing is committed."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ValidationError as exc:
            db.session.rollback()
            option = OPTION_NAMES.get(exc.field or "", exc.field)
            raise CliError(f"{option}: {exc}" if option else str(exc)) from None

    return wrapper


@click.group("clients", cls=Group)
def clients_group() -> None:
    """OAuth clients."""


def _registration_options(update: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The registration options shared by ``create`` and ``update``.

    For ``update`` every option defaults to "unchanged"; for ``create`` to the defaults.
    """

    def default(value: object) -> object:
        return None if update else value

    options = [
        click.option("--name", required=not update, help="Display name."),
        click.option("--first-party/--third-party", "first_party", default=default(False),
                     help="Our own app: skips consent, may use the password grant."),
        click.option("--grant-type", "grant_types", multiple=True,
                     type=click.Choice(SUPPORTED_GRANT_TYPES),
                     help="An allowed grant type (repeatable)."),
        click.option("--redirect-uri", "redirect_uris", multiple=True,
                     help="Redirect URI (repeatable)."),
        click.option("--post-logout-redirect-uri", "post_logout_redirect_uris", multiple=True,
                     help="Where RP-initiated logout may return (repeatable)."),
        click.option("--web-origin", "web_origins", multiple=True,
                     help="An origin the app's browser code runs on, https://app.example "
                          "(repeatable): CORS answers it."),
        click.option("--refresh-token-delivery", type=click.Choice(REFRESH_TOKEN_DELIVERIES),
                     default=default(BODY),
                     help="cookie = the refresh token only in an HttpOnly cookie (public "
                          "browser apps with a web origin); body = in the JSON."),
        click.option("--scope", default=default(""),
                     help='Allowed scopes, space-separated: "read write".'),
        click.option("--access-ttl", "access_token_ttl", type=int, default=None,
                     help="Access-token lifetime (s); default: the server's."),
        click.option("--refresh-idle-ttl", type=int,
                     default=default(DEFAULT_REFRESH_IDLE_TTL),
                     show_default=not update, help="Refresh-token idle lifetime (s); 0 = none."),
        click.option("--refresh-absolute-ttl", type=int,
                     default=default(DEFAULT_REFRESH_ABSOLUTE_TTL),
                     show_default=not update,
                     help="Session (family) lifetime (s); 0 = never expires, only revoked."),
        click.option("--reuse-grace", type=int,
                     default=default(DEFAULT_REUSE_GRACE),
                     show_default=not update,
                     help="Seconds a rotated token may be retried; 0 = off."),
        click.option("--bind-device-id/--no-bind-device-id", default=default(True),
                     help="On refresh, the device_id given at sign-in must match."),
        click.option("--bind-user-agent/--no-bind-user-agent", default=default(True),
                     help="On refresh, the user-agent family (app/browser + OS) must match."),
        click.option("--bind-ip", type=click.Choice(IP_POLICIES), default=default("off"),
                     help="On refresh, the IP network must match (/24 = IPv6 /64, "
                          "/16 = IPv6 /48)."),
        click.option("--require-device-id/--no-require-device-id", default=default(False),
                     help="Sign-in must send a device_id."),
        click.option("--on-binding-mismatch", type=click.Choice(MISMATCH_ACTIONS),
                     default=default("revoke"),
                     help="reject = refuse the refresh; revoke = refuse and end the session."),
        click.option("--require-dpop/--no-require-dpop", default=default(False),
                     help="Every token request must carry a DPoP proof (RFC 9449)."),
        click.option("--allow-introspection/--no-allow-introspection", default=default(False),
                     help="A resource server that may call /oauth/introspect."),
        click.option("--backchannel-logout-uri", default=None, metavar="URI",
                     help="Where logout tokens are POSTed when a session ends (OpenID "
                          "Connect Back-Channel Logout); https. \"\" removes it."),
        click.option("--backchannel-logout-session-required/"
                     "--no-backchannel-logout-session-required",
                     default=default(False),
                     help="The client needs the sid claim in its logout tokens."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
    ]

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            function = option(function)
        return function

    return decorate


def _print(record: ClientRecord, as_json: bool, secret: str | None = None,
           show_secret: bool = False) -> None:
    data = record.to_public_dict()
    if as_json:
        if show_secret:
            data["client_secret"] = secret
        click.echo(json.dumps(data))
        return
    width = max(len(key) for key in data) + 2
    click.echo(f"{'client_id:':<{width}}{record.client_id}")
    if secret:
        click.echo(f"{'client_secret:':<{width}}{secret}")
        click.echo("Store the secret now: it is shown only once.")
    for key, value in data.items():
        if key != "client_id":
            shown = " ".join(value) if isinstance(value, list) else value
            click.echo(f"{key + ':':<{width}}{'' if shown is None else shown}")


@clients_group.command("create")
@click.option("--public", is_flag=True, help="A public client (no secret; native app or SPA).")
@_registration_options(update=False)
@with_appcontext
@_one_line_errors
def create(as_json: bool, **options: Any) -> None:
    """Register a client; print its id and (once, never again) its secret."""
    for name in LIST_OPTIONS:
        options[name] = list(options[name])
    record, secret = client_admin.create_client(db.session(), ClientSpec(**options),
                                                  actor=ACTOR)
    _print(record, as_json, secret, show_secret=True)


@clients_group.command("update")
@click.argument("client_id")
@_registration_options(update=True)
@with_appcontext
@_one_line_errors
def update(client_id: str, as_json: bool, **options: Any) -> None:
    """Change CLIENT_ID's registration; options not given stay as they are.

    A repeatable option (``--redirect-uri``, ``--grant-type``...) replaces the whole list.
    """
    changes = {k: (list(v) if k in LIST_OPTIONS else v) for k, v in options.items()
               if v is not None and v != ()}
    if not changes:
        raise CliError("nothing to change: give at least one option (see --help)")
    record = client_admin.update_client(db.session(), client_id, actor=ACTOR, **changes)
    services().clients.forget([client_id])
    _print(record, as_json)


def _client_command(name: str, *options: Callable[[Any], Any]
                    ) -> Callable[[Callable[..., None]], click.Command]:
    """``clients NAME CLIENT_ID [OPTIONS] [--json]``, run in the app context."""

    def decorate(function: Callable[..., None]) -> click.Command:
        function = with_appcontext(function)
        for option in (*options, click.option("--json", "as_json", is_flag=True,
                                              help="Print one JSON object."))[::-1]:
            function = option(function)
        return clients_group.command(name)(click.argument("client_id")(function))

    return decorate


@_client_command("show")
def show(client_id: str, as_json: bool) -> None:
    """Show CLIENT_ID's registration (never its secret)."""
    _print(domain_clients.get_client(db.session(), client_id), as_json)


@clients_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def list_clients(as_json: bool) -> None:
    """List registered clients."""
    records = domain_clients.list_clients(db.session())
    if as_json:
        click.echo(json.dumps([r.to_public_dict() for r in records], indent=2))
        return
    if not records:
        click.echo("no clients yet")
        return
    table(("CLIENT_ID", "TYPE", "STATE", "GRANT TYPES", "NAME"),
          [(r.client_id, ("public" if r.public else "confidential")
            + (" first-party" if r.first_party else ""),
            "active" if r.active else "disabled", " ".join(r.grant_types), r.name)
           for r in records])


@clients_group.command("rotate-secret")
@click.argument("client_id")
@click.option("--overlap", type=int, default=None,
              help="Seconds the old secret stays valid (default AUTHSERVER_CLIENT_SECRET_OVERLAP).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
@_one_line_errors
def rotate_secret(client_id: str, overlap: int | None, as_json: bool) -> None:
    """Give CLIENT_ID a new secret, printed once; the old one works during the overlap."""
    seconds = services().settings.client_secret_overlap if overlap is None else overlap
    now = services().clock()
    secret = client_admin.rotate_secret(db.session(), client_id, seconds, actor=ACTOR, now=now)
    services().clients.forget([client_id])
    until = (now + dt.timedelta(seconds=seconds)).isoformat() if seconds else None
    if as_json:
        click.echo(json.dumps({"client_id": client_id, "client_secret": secret,
                               "previous_secret_valid_for": seconds,
                               "previous_secret_valid_until": until}))
        return
    click.echo(f"client_secret: {secret}")
    if seconds:
        click.echo(f"Store the secret now: it is shown only once. The previous secret stays "
                   f"valid for {seconds} s (until {until}).")
    else:
        click.echo("Store the secret now: it is shown only once. The previous secret no "
                   "longer works.")


def _set_active(client_id: str, active: bool, as_json: bool) -> None:
    revoked = client_admin.set_active(db.session(), client_id, active, actor=ACTOR)
    services().clients.forget([client_id])
    if as_json:
        click.echo(json.dumps({"client_id": client_id, "active": active,
                               "sessions_revoked": revoked}))
    else:
        state = "enabled" if active else f"disabled; revoked {revoked} session(s)"
        click.echo(f"{client_id} {state}")


@_client_command("disable")
def disable(client_id: str, as_json: bool) -> None:
    """Disable CLIENT_ID: it cannot authenticate, and every session it holds is revoked."""
    _set_active(client_id, False, as_json)


@_client_command("enable")
def enable(client_id: str, as_json: bool) -> None:
    """Enable CLIENT_ID again (revoked sessions stay revoked)."""
    _set_active(client_id, True, as_json)


@_client_command("delete", click.option("--yes", is_flag=True,
                                         help="Do not ask for confirmation."))
def delete(client_id: str, yes: bool, as_json: bool) -> None:
    """Delete CLIENT_ID and every session, code and consent of it."""
    domain_clients.get_client(db.session(), client_id)  # an unknown id fails before asking
    if not yes and not click.confirm(f"Delete client {client_id} and all its sessions?",
                                     default=False):
        raise click.exceptions.Abort()
    revoked = client_admin.delete_client(db.session(), client_id, actor=ACTOR)
    services().clients.forget([client_id])
    if as_json:
        click.echo(json.dumps({"client_id": client_id, "deleted": True,
                               "sessions_revoked": revoked}))
    else:
        click.echo(f"deleted {client_id}; revoked {revoked} session(s)")
