"""``authserver users``: create, list and deactivate users."""

from __future__ import annotations

import json
import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from ..domain import users as domain_users
from ..extensions import db
from ..storage.models import User
from .base import CliError, Group


@click.group("users", cls=Group)
def users_group() -> None:
    """Users (resource owners)."""


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
    user = domain_users.create_user(db.session(), username, password, email=email,
                                    name=display_name, admin=admin)
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
    revoked = domain_users.deactivate_user(db.session(), username, by={"via": "cli"})
    click.echo(f"deactivated {username}; revoked {revoked} session(s)")


@users_group.command("reset-password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
@with_appcontext
def reset_password(username: str, password_stdin: bool) -> None:
    """Set USERNAME's password; every session and signed-in browser of theirs ends."""
    password = _read_password(password_stdin)
    revoked = domain_users.reset_password(db.session(), username, password, by={"via": "cli"})
    click.echo(f"password of {username} reset; revoked {revoked} session(s)")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@with_appcontext
def list_users(as_json: bool) -> None:
    """List users."""
    rows = db.session.scalars(select(User).order_by(User.id)).all()
    data = [
        {"username": u.username, "sub": u.subject, "email": u.email, "name": u.name,
         "active": u.active, "admin": u.is_admin, "created_at": u.created_at.isoformat()}
        for u in rows
    ]
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for item in data:
        state = "active" if item["active"] else "deactivated"
        click.echo(f"{item['username']:<24} {item['sub']}  {state}")
