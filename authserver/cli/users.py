"""``authserver users``: create, list, search, show, update, deactivate, reactivate and
delete users; reset a password; end one session, every session, or a consent. Every change
is audited (``by`` the CLI); an unknown user, session or client is one line and changes
nothing."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from flask.cli import with_appcontext

from ..domain import sessions, user_admin
from ..domain import users as domain_users
from ..domain.errors import ValidationError
from ..extensions import db
from ..services import services
from .base import CliError, Group, table, when

BY = {"via": "cli"}


@click.group("users", cls=Group)
def users_group() -> None:
    """Users (resource owners)."""


def _validated(action: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a domain change; a bad value is one line naming its option."""
    try:
        return action(*args, **kwargs)
    except ValidationError as exc:
        option = {"email": "--email", "name": "--name"}.get(exc.field or "")
        raise CliError(f"{option}: {exc}" if option else str(exc)) from None


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CliError("no password on standard input")
        return password
    if not sys.stdin.isatty():
        raise CliError("no terminal to ask for a password; use --password-stdin")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@users_group.command("create")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--email", default=None, help="The user's e-mail address.")
@click.option("--name", "display_name", default=None, help="The user's display name.")
@click.option("--admin", is_flag=True, help="May use the admin pages at /admin.")
@with_appcontext
def create(username: str, password_stdin: bool, email: str | None,
           display_name: str | None, admin: bool) -> None:
    """Create USERNAME (the password is hashed with argon2id)."""
    password = _read_password(password_stdin)
    user = _validated(domain_users.create_user, db.session(), username, password,
                      email=email, name=display_name, admin=admin)
    role = " as an admin" if admin else ""
    click.echo(f"created user {user.username}{role} (sub {user.subject})")


def _admin_role_command(name: str, admin: bool, summary: str, done: str) -> click.Command:
    """``users grant-admin`` / ``users revoke-admin``: set USERNAME's admin role (audited)."""

    @users_group.command(name, help=summary)
    @click.argument("username")
    @with_appcontext
    def command(username: str) -> None:
        domain_users.set_admin(db.session(), username, admin)
        click.echo(f"{username} {done}")

    return command


grant_admin = _admin_role_command("grant-admin", True, "Let USERNAME use the admin pages.",
                                  "is now an admin")
revoke_admin = _admin_role_command("revoke-admin", False,
                                   "Take the admin role away from USERNAME.",
                                   "is no longer an admin")


@users_group.command("deactivate")
@click.argument("username")
@with_appcontext
def deactivate(username: str) -> None:
    """Deactivate USERNAME: every device of theirs is signed out (every refresh-token
    family revoked, every browser sign-in ended) and they can no longer sign in."""
    revoked = domain_users.deactivate_user(db.session(), username, by=BY)
    click.echo(f"deactivated {username}; revoked {revoked} session(s)")


@users_group.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@with_appcontext
def reset_password(username: str, password_stdin: bool) -> None:
    """Set USERNAME's password; every session and signed-in browser of theirs ends."""
    password = _read_password(password_stdin)
    revoked = domain_users.reset_password(db.session(), username, password, by=BY)
    click.echo(f"password of {username} reset; revoked {revoked} session(s)")




def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@users_group.command("list")
@click.option("--search", default=None, metavar="TEXT",
              help="Only users whose username, e-mail address or name contains TEXT.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def list_users(search: str | None, as_json: bool) -> None:
    """List users, oldest first (times in UTC; the last sign-in the audit trail holds)."""
    found = user_admin.list_users(db.session(), search)
    if as_json:
        _echo_json([u.to_dict() for u in found])
        return
    if not found:
        click.echo("no users match" if search else "no users yet")
        return
    table(("USERNAME", "EMAIL", "NAME", "STATE", "ADMIN", "CREATED", "LAST SIGN-IN"),
          [(u.username, u.email, u.name, u.state, "yes" if u.admin else "no",
            when(u.created_at), when(u.last_sign_in_at)) for u in found])


@users_group.command("show")
@click.argument("username")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def show(username: str, as_json: bool) -> None:
    """USERNAME's profile, sessions (browser sign-ins and the applications' refresh-token
    families), consents and newest audit events."""
    settings = services().settings
    detail = user_admin.user_detail(
        db.session(), username, services().clock(),
        browser_lifetime=sessions.BrowserLifetime(settings.browser_session_idle_ttl,
                                                  settings.browser_session_max_ttl))
    if as_json:
        _echo_json(detail.to_dict())
        return
    u = detail.user
    for label, value in (("username", u.username), ("sub", u.subject), ("email", u.email),
                         ("name", u.name), ("state", u.state),
                         ("admin", "yes" if u.admin else "no"), ("created", when(u.created_at)),
                         ("deactivated", when(u.deactivated_at) if u.deactivated_at else None),
                         ("password changed", when(u.password_changed_at)),
                         ("last sign-in", when(u.last_sign_in_at))):
        if value is not None or label in ("email", "name"):
            click.echo(f"{label + ':':<18}{value or '-'}")
    click.echo(f"\nsessions ({len(detail.devices)}):")
    if detail.devices:
        rows: list[tuple[object, ...]] = []
        for device in detail.devices:
            if device.kind == sessions.BROWSER:
                rows.append((device.id, "browser", "-", device.label, when(device.created_at),
                             when(device.last_used_at), device.last_ip))
            for app in device.apps:
                kind = "app in browser" if device.kind == sessions.BROWSER else "app"
                rows.append((app.family_id, kind, app.client_id, device.label,
                             when(app.created_at), when(app.last_used_at), app.last_ip))
        table(("SESSION", "TYPE", "CLIENT", "DEVICE", "CREATED", "LAST USED", "IP"), rows)
    click.echo(f"\nconsents ({len(detail.consents)}):")
    if detail.consents:
        table(("CLIENT", "NAME", "GRANTED", "SCOPE"),
              [(c.client_id, c.client_name, when(c.created_at), c.scope)
               for c in detail.consents])
    click.echo(f"\nrecent events ({len(detail.events)}):")
    if detail.events:
        table(("TIME", "EVENT", "CLIENT", "SESSION", "DETAIL"),
              [(when(e.created_at), e.event, e.client_id, e.family_id,
                json.dumps(e.detail, sort_keys=True)) for e, _ in detail.events])


@users_group.command("update")
@click.argument("username")
@click.option("--email", default=None, help='The new e-mail address ("" removes it).')
@click.option("--name", "display_name", default=None,
              help='The new display name ("" removes it).')
@with_appcontext
def update(username: str, email: str | None, display_name: str | None) -> None:
    """Change USERNAME's e-mail address or display name (checked as at creation)."""
    if email is None and display_name is None:
        raise CliError("nothing to change: give --email or --name")
    changed = _validated(user_admin.update_user, db.session(), username, email=email,
                         name=display_name, by=BY)
    click.echo(f"updated {username}: {', '.join(changed)}" if changed
               else f"{username} unchanged: the values given are the current ones")


@users_group.command("reactivate")
@click.argument("username")
@with_appcontext
def reactivate(username: str) -> None:
    """Let deactivated USERNAME sign in again (sessions revoked before stay revoked)."""
    if user_admin.reactivate_user(db.session(), username, by=BY):
        click.echo(f"reactivated {username}")
    else:
        click.echo(f"{username} is already active; nothing changed")


@users_group.command("delete")
@click.argument("username")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def delete(username: str, yes: bool) -> None:
    """Delete USERNAME: every session and browser sign-in ends, consents and unused codes
    go; the audit trail stays."""
    domain_users.find_user(db.session(), username)  # an unknown name fails before asking
    if not yes and not click.confirm(f"Delete user {username} and end all their sessions?",
                                     default=False):
        raise click.exceptions.Abort()
    done = user_admin.delete_user(db.session(), username, by=BY)
    click.echo(f"deleted {username}; signed out {done.devices_signed_out} device(s), "
               f"removed {done.consents} consent(s)")


@users_group.command("revoke-session")
@click.argument("username")
@click.argument("session_id", metavar="SESSION_ID")
@with_appcontext
def revoke_session(username: str, session_id: str) -> None:
    """End one of USERNAME's sessions: a refresh-token family by its id, or a browser
    sign-in (web-...) with the applications signed in through it (ids: users show)."""
    kind = user_admin.revoke_session(db.session(), username, session_id, by=BY)
    what = "browser sign-in" if kind == "browser" else "session"
    click.echo(f"revoked {what} {session_id} of {username}")


@users_group.command("sign-out")
@click.argument("username")
@with_appcontext
def sign_out(username: str) -> None:
    """Sign USERNAME out everywhere: every session and browser sign-in ends (they may sign
    in again)."""
    count = user_admin.sign_out_everywhere(db.session(), username, by=BY)
    click.echo(f"signed {username} out of {count} device(s)")


@users_group.command("revoke-consent")
@click.argument("username")
@click.argument("client_id")
@with_appcontext
def revoke_consent(username: str, client_id: str) -> None:
    """Take back what USERNAME granted CLIENT_ID; their sessions at that client end too."""
    ended = user_admin.revoke_consent(db.session(), username, client_id, by=BY)
    click.echo(f"revoked the consent of {username} for {client_id}; ended {ended} session(s)")
