"""``authserver config check``: the effective settings, where each came from (secrets
masked), and every problem: the settings' own validation (all of it, even when they are
invalid: this never needs the app), the keys directory and its active key, the database
(reachable, migrated to the newest revision), Redis when set, and what production should
not run with.

Exit status 0 when there is no problem (warnings do not count), 1 otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import click

from .. import config
from ..config import ENV_PREFIX, ConfigError, Settings, load_settings, settings_file
from .base import Group

SECRETS = ("secret_key", "key_passphrase", "metrics_token")
URLS = ("database_url", "redis_url")
TIMEOUT = 3  # seconds for each connection the check makes


@click.group("config", cls=Group)
def config_group() -> None:
    """Settings."""


def _mask_url(url: str) -> str:
    """The URL with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"  # unparsable: it may hold anything
    if not password:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def shown(name: str, value: Any) -> str:
    """A setting as ``config check`` prints it: secrets masked, passwords out of URLs."""
    if name in SECRETS:
        if not value:
            return '""'
        return "*** (the development default)" if (
            name == "secret_key" and value == config.DEV_SECRET_KEY) else "***"
    if name in URLS and isinstance(value, str):
        return _mask_url(value) if value else '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)


def _file_keys(path: Path) -> set[str]:
    try:
        return set(tomllib.loads(path.read_text()))
    except (OSError, tomllib.TOMLDecodeError):
        return set()  # the settings' own problems say why


def _source(name: str, environ: Mapping[str, str], in_file: set[str]) -> str:
    if ENV_PREFIX + name.upper() in environ:
        return "env"
    return "file" if name in in_file else "default"


def _scrub(text: str, settings: Settings) -> str:
    """An error message without any password of the configured URLs, on one line."""
    for url in (settings.database_url, settings.redis_url):
        try:
            password = urlsplit(url).password if url else None
        except ValueError:
            password = None
        if password:
            text = text.replace(password, "***")
    return " ".join(text.split())[:300]


def _check_keys(settings: Settings) -> tuple[bool, str]:
    from ..crypto.keystore import KeyStore

    directory = Path(settings.keys_dir)
    where = f"{ENV_PREFIX}KEYS_DIR ({directory})"
    if not directory.exists():
        return False, f"keys: {where} does not exist (a missing mount? 'authserver keys " \
                      "ensure' creates a first key on a single host)"
    if not directory.is_dir() or not os.access(directory, os.R_OK | os.X_OK):
        return False, f"keys: {where} is not a readable directory"
    try:
        ok, detail = KeyStore.from_settings(settings).health()
    except Exception as exc:  # a check reports, never crashes
        return False, f"keys: {type(exc).__name__}: {_scrub(str(exc), settings)}"
    return ok, f"keys: {detail}"


def _sqlite_file(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


def _check_database(settings: Settings) -> tuple[bool, str]:
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import create_engine

    from ..ops.health import schema_is_newer

    url = settings.database_url
    shown_url = _mask_url(url)
    connect_args: dict[str, Any] = {}
    if url.startswith("sqlite"):
        path = _sqlite_file(url)
        if path is not None and not path.exists():
            return False, f"database: {path} does not exist; run 'authserver db upgrade'"
        connect_args = {"timeout": TIMEOUT}
    else:
        connect_args = {"connect_timeout": TIMEOUT}
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        engine = create_engine(url, connect_args=connect_args, hide_parameters=True)
        try:
            with engine.connect() as connection:
                current = set(MigrationContext.configure(connection).get_current_heads())
        finally:
            engine.dispose()
    except Exception as exc:  # unreachable, refused, wrong password, ...
        return False, f"database: {shown_url} unreachable: {type(exc).__name__}: " \
                      f"{_scrub(str(getattr(exc, 'orig', None) or exc), settings)}"
    directory = str(config.shipped_path("migrations", "migrations"))
    heads = set(ScriptDirectory(directory).get_heads())
    if current != heads and not schema_is_newer(current, directory):
        at = ", ".join(sorted(current)) or "no revision"
        return False, f"database: {shown_url} is at {at}, not {', '.join(sorted(heads))}; " \
                      "run 'authserver db upgrade'"
    return True, f"database: {shown_url} reachable, migrated to {', '.join(sorted(current))}"


def _check_redis(settings: Settings) -> tuple[bool, str]:
    import redis

    shown_url = _mask_url(settings.redis_url)
    try:
        client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=TIMEOUT,
                                      socket_timeout=TIMEOUT)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # refused, timed out, wrong password, ...
        return False, f"redis: {shown_url} unreachable: {type(exc).__name__}: " \
                      f"{_scrub(str(exc), settings)}"
    return True, f"redis: {shown_url} answers PING"


def _warnings(s: Settings, environ: Mapping[str, str]) -> list[str]:
    """What runs, but should not in front of customers."""
    found = []
    if s.secret_key == config.DEV_SECRET_KEY:
        found.append(f"{ENV_PREFIX}SECRET_KEY is the development default: anyone can forge "
                     "this server's session cookies; set a random one of your own")
    if not s.production:
        found.append(f"{ENV_PREFIX}ENV is {s.env!r}: set production in front of customers "
                     "(https issuer, secure cookies, HSTS, JSON logs)")
        return found + _unknown(environ)
    if s.database_url.startswith("sqlite"):
        found.append(f"{ENV_PREFIX}DATABASE_URL is SQLite: one host only; PostgreSQL for "
                     "several instances")
    if not s.redis_url:
        found.append(f"{ENV_PREFIX}REDIS_URL is not set: rate limits are counted per process "
                     "and DPoP replays in the database; set it for several instances")
    if not s.key_passphrase:
        found.append(f"{ENV_PREFIX}KEY_PASSPHRASE is not set: the signing keys are not "
                     "encrypted at rest")
    if not s.ratelimit_enabled:
        found.append(f"{ENV_PREFIX}RATELIMIT_ENABLED is off: password guessing is not slowed")
    if s.log_level.upper() == "DEBUG":
        found.append(f"{ENV_PREFIX}LOG_LEVEL is DEBUG: a line for every request")
    if s.trusted_proxies == 0:
        found.append(f"{ENV_PREFIX}TRUSTED_PROXIES is 0: behind a TLS-terminating proxy, set "
                     "it to the number of proxies (client addresses, https)")
    return found + _unknown(environ)


def _unknown(environ: Mapping[str, str]) -> list[str]:
    return [f"{key} is not a setting and is ignored (a typo?)"
            for key in sorted(config._unknown_variables(environ))]


@config_group.command("check", with_appcontext=False)
def check() -> None:
    """Print the effective settings (secrets masked) and every problem: invalid settings,
    the keys directory and its active key, the database and its migrations, Redis, and
    warnings for production. Exit 1 if there is a problem."""
    environ = os.environ
    path = settings_file(environ)
    problems: list[str] = []
    logging.getLogger(config.__name__).setLevel(logging.ERROR)  # listed below instead
    try:
        settings: Settings | None = load_settings()
    except ConfigError as exc:
        problems.extend(exc.problems)
        settings = exc.settings
    in_file = _file_keys(path) if path.exists() else set()
    click.echo(f"settings file: {path}" + ("" if path.exists() else " (none)"))
    if settings is not None:
        for field in dataclasses.fields(Settings):
            value = getattr(settings, field.name)
            click.echo(f"{ENV_PREFIX}{field.name.upper()} = {shown(field.name, value)} "
                       f"(source: {_source(field.name, environ, in_file)})")
    click.echo("")
    oks: list[str] = []
    if settings is not None:
        checks = [_check_keys, _check_database]
        if settings.redis_url:
            checks.append(_check_redis)
        for run_check in checks:
            ok, line = run_check(settings)
            (oks if ok else problems).append(line)
        warnings = _warnings(settings, environ)
    else:
        warnings = []
    for line in oks:
        click.echo(f"ok: {line}")
    for line in warnings:
        click.echo(f"warning: {line}")
    for line in problems:
        click.echo(f"problem: {line}")
    if problems:
        click.echo(f"{len(problems)} problem(s)")
        raise click.exceptions.Exit(1)
    click.echo("no problems" + (f" ({len(warnings)} warning(s))" if warnings else ""))
