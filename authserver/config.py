"""Settings: defaults <- config/default.toml <- AUTHSERVER_* environment <- overrides.

One frozen object, built and validated once at start-up. Every problem is reported at
once, each with the full key name it came from (node-oidc-provider's Configuration does
the same; lazy validation finds the second problem only after the first is fixed).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

ENV_PREFIX = "AUTHSERVER_"
DEV_SECRET_KEY = "dev-insecure-secret-key-change-me"  # noqa: S105 - the known-bad default
PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_path(installed: str, checkout: str) -> Path:
    """A file or folder the distribution ships beside the code (migrations, default settings).

    Installed from a wheel it is inside the package, ``authserver/<installed>``; in a source
    checkout (the editable install of ``make run``) it is the top-level ``<checkout>`` beside
    the package, the copy people edit. pyproject.toml maps the one onto the other.
    """
    inside = PACKAGE_DIR / installed
    return inside if inside.exists() else PACKAGE_DIR.parent / checkout


# The settings file read when AUTHSERVER_CONFIG names none: config/default.toml in the
# working directory (a source checkout's) if there is one, else the one shipped with the code.
DEFAULT_CONFIG_FILE = Path("config/default.toml")
SHIPPED_CONFIG_FILE = shipped_path("default_config/default.toml", "config/default.toml")
# Algorithms of new signing keys (authserver.crypto.jose.SUPPORTED_ALGORITHMS; kept here so
# loading settings imports no crypto). RS256 is the default OIDC requires every OP to offer.
SIGNING_ALGORITHMS = ("RS256", "ES256", "EdDSA")


class ConfigError(Exception):
    """Raised when settings are invalid; ``problems`` lists each one with its key."""

    def __init__(self, problems: list[str], settings: Settings | None = None) -> None:
        self.problems = problems
        # What the settings would be despite the problems (``config check`` prints them).
        self.settings = settings
        super().__init__("invalid configuration: " + "; ".join(problems))


@dataclass(frozen=True)
class Settings:
    """Every setting the server reads. Field names map to ``AUTHSERVER_<NAME>``."""

    env: str = "development"
    issuer: str = "http://127.0.0.1:8000"
    database_url: str = "sqlite:///instance/authserver.sqlite3"
    keys_dir: str = "keys"
    secret_key: str = DEV_SECRET_KEY
    key_passphrase: str = ""
    signing_alg: str = "RS256"
    access_token_ttl: int = 900
    default_audience: str = ""
    jwks_max_age: int = 300
    client_cache_seconds: int = 5
    sqlite_busy_timeout_ms: int = 10_000
    # PostgreSQL: no request waits longer than this on a row lock (it answers 503 and the
    # client retries); the rotation's grace window is lengthened by it
    # (docs/design.md, "Rotation" 2).
    db_lock_timeout_ms: int = 2_000
    db_statement_timeout_ms: int = 30_000  # PostgreSQL: a runaway statement is cancelled
    db_pool_size: int = 5
    max_request_bytes: int = 65_536
    trusted_proxies: int = 0
    redis_url: str = ""
    client_secret_overlap: int = 3600
    open_registration: bool = False
    # What a client may give itself without an admin (open registration, or an update with
    # its registration token): these scopes, plus any it was already granted.
    open_registration_scopes: str = "openid profile email offline_access"
    dpop_nonce: bool = False
    log_level: str = "INFO"
    # Token Status List (docs/design.md, "Revocation that reaches APIs"): how long a
    # resource server may cache a list, and how many entries a list holds.
    status_list_ttl: int = 60
    status_list_size: int = 131_072
    # Back-Channel Logout delivery: the in-process worker of ``serve``, outbound request
    # timeout, attempts before giving up, and whether private/loopback receivers are allowed
    # in production.
    backchannel_worker: bool = True
    backchannel_timeout_seconds: int = 5
    backchannel_max_attempts: int = 8
    backchannel_allow_private: bool = False
    # Running in production (docs/design.md, "Operations"). Logs: json or text (empty:
    # json in production, text otherwise). Metrics: /metrics on the main listener only
    # with this bearer token; a port of its own on loopback serves them without one.
    log_format: str = ""
    metrics_token: str = ""
    metrics_port: int = 0
    # Strict-Transport-Security max-age in production (0: no header).
    hsts_max_age: int = 31_536_000
    # A browser's sign-in at this server ends after this long unused, and this long after
    # the password was given, whatever its use.
    browser_session_idle_ttl: int = 86_400
    browser_session_max_ttl: int = 1_209_600
    # Brute-force limits ("limits" syntax, "N/unit;M/unit"): wrong passwords per account
    # are free up to ``ratelimit_account_free``, then each needs a doubling delay (from one
    # second to ``ratelimit_account_max_delay``); per source address and for the whole
    # server on every password or client-secret check; open registrations per address.
    ratelimit_enabled: bool = True
    ratelimit_account_free: int = 5
    ratelimit_account_max_delay: int = 900
    ratelimit_per_address: str = "30/minute;300/hour"
    ratelimit_global: str = "1200/minute"
    ratelimit_registration: str = "10/hour"

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def log_json(self) -> bool:
        """Log lines as JSON objects (the default in production) rather than text."""
        return self.log_format == "json" or (not self.log_format and self.production)

    @property
    def audience(self) -> str:
        """RFC 9068 §3: the default resource indicator when a request names none."""
        return self.default_audience or self.issuer


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, raw: Any, source: str, problems: list[str]) -> Any:
    """Convert a raw value (TOML or environment string) to the field's type."""
    kind = _FIELDS[name].type
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        problems.append(f"{source}: expected true or false, got {raw!r}")
        return None
    if kind == "int":
        if isinstance(raw, bool):
            problems.append(f"{source}: expected an integer, got {raw!r}")
            return None
        try:
            return int(raw)
        except (TypeError, ValueError):
            problems.append(f"{source}: expected an integer, got {raw!r}")
            return None
    if not isinstance(raw, str):
        problems.append(f"{source}: expected a string, got {raw!r}")
        return None
    return raw


def _unknown_variables(environ: Mapping[str, str]) -> set[str]:
    known = {ENV_PREFIX + name.upper() for name in _FIELDS} | {ENV_PREFIX + "CONFIG"}
    return {k for k in environ if k.startswith(ENV_PREFIX) and k not in known
            and not k.startswith(ENV_PREFIX + "TEST_")}


def _normalise_database_url(url: str) -> str:
    """Use psycopg 3 for plain ``postgresql://`` URLs (the form operators write)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def settings_file(environ: Mapping[str, str],
                  config_file: str | os.PathLike[str] | None = None) -> Path:
    """The settings file read: ``config_file``, else AUTHSERVER_CONFIG, else
    config/default.toml in the working directory if there is one, else the shipped one."""
    return Path(config_file or environ.get(ENV_PREFIX + "CONFIG") or (
        DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else SHIPPED_CONFIG_FILE))


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Build the settings object; raise :class:`ConfigError` listing every problem."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    values: dict[str, Any] = {}

    path = settings_file(environ, config_file)
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            problems.append(f"{path}: cannot be read ({exc})")
            data = {}
        for key, raw in data.items():
            if key not in _FIELDS:
                problems.append(f"{path}: unknown setting {key!r}")
                continue
            value = _coerce(key, raw, f"{path}:{key}", problems)
            if value is not None:
                values[key] = value
    elif config_file or environ.get(ENV_PREFIX + "CONFIG"):
        problems.append(f"{ENV_PREFIX}CONFIG: file {str(path)!r} does not exist")

    for name in _FIELDS:
        env_key = ENV_PREFIX + name.upper()
        if env_key in environ:
            value = _coerce(name, environ[env_key], env_key, problems)
            if value is not None:
                values[name] = value
    for env_key in sorted(_unknown_variables(environ)):
        # Not an error (other tools may share the prefix), but a typo must not pass unseen.
        log.warning("settings: %s is not a setting and is ignored", env_key)

    for key, raw in (overrides or {}).items():
        if key not in _FIELDS:
            problems.append(f"override: unknown setting {key!r}")
            continue
        values[key] = raw

    if "database_url" in values:
        values["database_url"] = _normalise_database_url(values["database_url"])
    settings = Settings(**values)
    problems.extend(validate(settings))
    if problems:
        raise ConfigError(problems, settings)
    return settings


def _is_loopback_host(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _rate_limit_problem(value: str) -> str | None:
    """Why ``value`` is not rate limits in the ``limits`` syntax ("30/minute;300/hour")."""
    from limits import parse_many

    if not value.strip():
        return "must give at least one limit, such as 30/minute"
    try:
        parse_many(value)
    except ValueError:
        return f"must be limits such as 30/minute;300/hour, got {value!r}"
    return None


def validate(s: Settings) -> list[str]:
    """Return every problem with the settings, each naming its environment key."""
    problems: list[str] = []

    def key(name: str) -> str:
        return ENV_PREFIX + name.upper()

    if s.env not in ("development", "production"):
        problems.append(f"{key('env')}: must be 'development' or 'production', got {s.env!r}")

    parts = urlsplit(s.issuer)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(f"{key('issuer')}: must be an absolute http(s) URL, got {s.issuer!r}")
    elif parts.query or parts.fragment or s.issuer.endswith("/"):
        problems.append(
            f"{key('issuer')}: must have no query, fragment or trailing slash (RFC 8414 §2)"
        )
    elif parts.username is not None or parts.password is not None:
        problems.append(f"{key('issuer')}: must not carry a user name or password")
    elif any(c.isupper() for c in s.issuer.split(":", 1)[0] + parts.netloc):
        # Clients compare the issuer as a string (RFC 8414 §3.3, OIDC Discovery §4.3).
        problems.append(f"{key('issuer')}: scheme and host must be lower case")
    elif s.production and parts.scheme != "https" and not _is_loopback_host(parts.hostname):
        problems.append(f"{key('issuer')}: production requires https (loopback excepted)")

    if not s.database_url.startswith(("sqlite", "postgresql")):
        problems.append(f"{key('database_url')}: only sqlite:/// and postgresql:// are supported")

    if s.production and (not s.secret_key or s.secret_key == DEV_SECRET_KEY):
        problems.append(f"{key('secret_key')}: production requires a secret key of your own")
    elif len(s.secret_key.strip()) < 32:
        problems.append(f"{key('secret_key')}: must be at least 32 characters, not blank")

    if not s.keys_dir:
        problems.append(f"{key('keys_dir')}: must name a directory")
    if s.signing_alg not in SIGNING_ALGORITHMS:
        problems.append(f"{key('signing_alg')}: must be one of {', '.join(SIGNING_ALGORITHMS)}, "
                        f"got {s.signing_alg!r}")

    bounds = {
        "access_token_ttl": (60, 86_400),
        "jwks_max_age": (0, 86_400),
        "client_cache_seconds": (0, 3_600),
        "sqlite_busy_timeout_ms": (0, 600_000),
        "db_lock_timeout_ms": (100, 60_000),
        "db_statement_timeout_ms": (0, 3_600_000),
        "db_pool_size": (1, 200),
        "max_request_bytes": (1_024, 10_485_760),
        "trusted_proxies": (0, 10),
        "client_secret_overlap": (0, 30 * 86_400),
        "status_list_ttl": (10, 86_400),
        "status_list_size": (1_024, 1_048_576),
        "backchannel_timeout_seconds": (1, 60),
        "backchannel_max_attempts": (1, 50),
        "metrics_port": (0, 65_535),
        "hsts_max_age": (0, 63_072_000),
        "browser_session_idle_ttl": (60, 31_536_000),
        "browser_session_max_ttl": (60, 31_536_000),
        "ratelimit_account_free": (1, 100),
        "ratelimit_account_max_delay": (1, 86_400),
    }
    for name, (low, high) in bounds.items():
        value = getattr(s, name)
        if not isinstance(value, int) or not low <= value <= high:
            problems.append(f"{key(name)}: must be an integer from {low} to {high}, got {value!r}")

    if s.redis_url and not s.redis_url.startswith(("redis://", "rediss://", "unix://")):
        problems.append(f"{key('redis_url')}: must be a redis://, rediss:// or unix:// URL")

    if isinstance(s.status_list_size, int) and s.status_list_size % 8:
        problems.append(f"{key('status_list_size')}: must be a multiple of 8, got "
                        f"{s.status_list_size!r}")

    if s.log_format not in ("", "json", "text"):
        problems.append(f"{key('log_format')}: must be json or text, got {s.log_format!r}")
    if s.metrics_token and len(s.metrics_token.strip()) < 32:
        problems.append(f"{key('metrics_token')}: must be at least 32 characters, not blank")
    for name in ("ratelimit_per_address", "ratelimit_global", "ratelimit_registration"):
        problem = _rate_limit_problem(getattr(s, name))
        if problem:
            problems.append(f"{key(name)}: {problem}")

    if s.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        problems.append(f"{key('log_level')}: must be DEBUG, INFO, WARNING or ERROR")
    return problems
