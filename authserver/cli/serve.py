"""``authserver serve``: the production server (granian, WSGI) with start-up checks.

granian's Rust side owns every socket: it reads request heads (with a timeout), keeps idle
keep-alive connections and limits connections per worker, so a client slow to send its
headers, or idle, never holds a Python thread. A request is handed to one of the worker's
``--threads`` Python threads once its head has arrived; the thread then reads the body
(granian has no body timeout: a buffering reverse proxy in front covers that).

Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads connections
evenly over the workers (with one shared socket the first worker to wake took nearly all
of them, and the server ran on one core). The address is claimed first (``_claim``), so a
second server on the same address fails to start instead of silently taking part of the
connections. granian internals are overridden for clean shutdowns (``_server``):
tests/live/test_serve_resilience.py checks both.
"""

from __future__ import annotations

import logging
import os
import resource
import socket
import tomllib
from typing import Any
from urllib.parse import urlsplit

import click
from flask import current_app
from flask.cli import with_appcontext

from ..config import ENV_PREFIX, Settings, settings_file
from ..crypto.keystore import KeyStoreError
from ..extensions import db
from ..ops import logs
from ..ops.access_log import AccessLog
from ..services import services
from .base import CliError

# Python threads per worker process (docs/operators.md, "Serving", has the measurements). A worker
# takes its share of connections whether or not a thread is free, so up to 3 requests
# waiting on the database (SQLite's write lock, a PostgreSQL row lock) leave it serving.
# 1 or 2 do up to 20 % more where the GIL is the limit; PostgreSQL does best with 4.
DEFAULT_THREADS = 4
# Seconds a client has to send a request's headers, from its first byte or, between
# requests on a keep-alive connection, from the end of the previous response.
DEFAULT_HEADER_TIMEOUT = 10
# Open connections per worker process; past it a worker stops accepting and new
# connections wait in the listen backlog.
DEFAULT_MAX_CONNECTIONS = 1000
BACKLOG = 1024
# On SIGTERM / SIGINT a worker stops accepting, finishes its in-flight requests and exits;
# one still busy after this many seconds is killed.
GRACEFUL_TIMEOUT = 10
# hyper's read buffer for a request head; a head much larger (about 2x) is refused, 431.
HTTP1_BUFFER = 64 * 1024
WORKER_APP = "authserver.cli.serve:worker_app"
LOGGED_WORKER_APP = "authserver.cli.serve:logged_worker_app"


def _default_workers() -> int:
    return max(2, min(8, os.cpu_count() or 1))


def worker_app() -> Any:
    """The WSGI app of one worker process (granian's factory): its own app and engines,
    and its background work (the sweeper of expired sealed responses, the Back-Channel
    Logout worker)."""
    from ..app import create_app, start_background_work
    from ..domain import passwords

    app = create_app()
    refuse_without_key(app)
    # Before the first request: an unknown user's first sign-in must cost what any
    # other does, or that worker's first answer would tell user names apart.
    passwords.warm_up()
    start_background_work(app)
    if app.extensions["authserver"].settings.backchannel_worker:
        # Back-Channel Logout deliveries, in a thread of each worker process: their claims
        # keep them apart (docs/design.md, "Revocation that reaches APIs").
        from ..backchannel.worker import start_in_process

        start_in_process(app)
    return app


def refuse_without_key(app: Any) -> None:
    """A worker that cannot load an active key exits (status 3, one line) instead of
    answering 500s. granian respawns it once; a second failure within 5.5 s is a crash
    loop, and granian stops the whole server (exit status 1) rather than respawn again,
    so a supervisor's restart meets ``serve``'s own check (docs/design.md, "Keys that stay").
    """
    try:
        app.extensions["authserver"].keys.active()
    except KeyStoreError as exc:
        logs.announce(app.extensions["authserver"].settings,
                      f"authserver: worker {os.getpid()} refuses to start: {exc}", "ERROR")
        raise SystemExit(3) from None


def logged_worker_app() -> Any:
    return AccessLog.for_app(worker_app())


def _claim(host: str, port: int) -> socket.socket:
    """Make sure no other server listens on ``host:port``, and keep it that way.

    A plain bind (no SO_REUSEPORT) fails while any socket holds the address, so a second
    instance refuses to start. Then a socket bound with SO_REUSEPORT, never listening, is
    held for this server's life: the workers' SO_REUSEPORT listeners can join it, a later
    plain bind cannot. It receives no connections (only listening sockets do).
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except OSError as exc:
        raise CliError(f"cannot listen on {_where(host)}:{port}: {exc.strerror or exc}"
                       ) from None
    guard = socket.socket(family, kind, proto)
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
        guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        guard.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        guard.bind(address)
    except OSError as exc:
        guard.close()
        raise CliError(f"cannot listen on {_where(host)}:{port}: {exc.strerror or exc}"
                       ) from None
    return guard


def _where(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _issuer_configured(settings: Settings) -> bool:
    """Whether AUTHSERVER_ISSUER is set, in the environment or the settings file (or the
    app was built with another issuer than the default)."""
    if ENV_PREFIX + "ISSUER" in os.environ or settings.issuer != Settings.issuer:
        return True
    try:
        return "issuer" in tomllib.loads(settings_file(os.environ).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return False


def _loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def choose_issuer(settings: Settings, host: str, port: int) -> tuple[str, str | None]:
    """The issuer to serve, and a warning line (or None).

    Unset, the issuer follows the address served (``make run PORT=9000`` serves
    ``http://127.0.0.1:9000``); every address (``0.0.0.0``) gives the loopback one and a
    warning, and is refused in production, where clients reach the server by a name only
    the operator knows. A configured loopback issuer naming another port than the one
    served is kept, with a warning: tokens would name a server that is not there.
    """
    if not _issuer_configured(settings):
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - comparing, not binding
            if settings.production:
                raise CliError("set AUTHSERVER_ISSUER to the https URL clients use: serving "
                               f"on every address ({_where(host)}) it cannot be guessed")
            issuer = f"http://127.0.0.1:{port}"
            return issuer, (f"AUTHSERVER_ISSUER is not set: the issuer is {issuer}; set it "
                            "to the URL clients use to reach this server")
        return f"http://{_where(host)}:{port}", None
    parts = urlsplit(settings.issuer)
    issuer_port = parts.port or (443 if parts.scheme == "https" else 80)
    if parts.hostname and _loopback(parts.hostname) and issuer_port != port and (
            _loopback(host) or host in ("0.0.0.0", "::")):  # noqa: S104
        return settings.issuer, (
            f"the issuer {settings.issuer} names port {issuer_port} but this server listens "
            f"on {port}; clients will not find it (set AUTHSERVER_ISSUER, or unset it to "
            "follow the port)")
    return settings.issuer, None


def _raise_open_files_limit(max_connections: int) -> None:
    """Let each worker hold its connections plus database and key files (soft -> hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def _server(**options: Any) -> Any:
    """A granian multi-process server that exits cleanly on a group-wide signal."""
    from granian.server import MPServer

    class Server(MPServer):
        def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
            # systemd and Ctrl-C signal the workers too: one that finishes draining
            # before we stop it has not crashed (no "unexpected exit", exit status 0).
            for worker in self.wrks:
                worker.interrupt_by_parent = True
            super().signal_handler_interrupt(*args, **kwargs)

        def shutdown(self, exit_code: int = 0) -> None:
            if self.interrupt_signal:
                self.interrupt_children.clear()
            super().shutdown(exit_code)

    return Server(**options)


def _preflight() -> None:
    """Refuse to start on an unmigrated database or without an active key."""
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    logging.getLogger("alembic").setLevel(logging.WARNING)
    svc = services()
    tightened = svc.keys.secure()  # 0700, or refused when another user owns it
    if tightened:
        logs.announce(svc.settings, f"authserver: {tightened}", "WARNING")
    svc.keys.active()  # raises NoActiveKey / KeyStoreError with a readable message
    migrate_ext = current_app.extensions["migrate"]
    script = ScriptDirectory(migrate_ext.directory)
    with db.engine.connect() as connection:
        current_heads = set(MigrationContext.configure(connection).get_current_heads())
    from ..ops.health import schema_is_newer

    if current_heads != set(script.get_heads()) and not schema_is_newer(
            current_heads, migrate_ext.directory):
        raise CliError("the database is not migrated; run 'authserver db upgrade'")
    db.engine.dispose()


def _start_metrics() -> None:
    """Workers count into one shared directory; the optional loopback metrics port is
    served from here (docs/design.md, "Health and metrics")."""
    from ..ops import metrics

    try:
        metrics.start_for_serve(current_app._get_current_object())  # type: ignore[attr-defined]
    except OSError as exc:
        port = services().settings.metrics_port
        raise CliError(f"cannot listen on 127.0.0.1:{port} for metrics: "
                       f"{exc.strerror or exc}") from None


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--workers", default=_default_workers, show_default="cores, 2 to 8",
              type=click.IntRange(1, 64), help="Worker processes.")
@click.option("--threads", default=DEFAULT_THREADS, show_default=True,
              type=click.IntRange(1, 64), help="Python threads per worker.")
@click.option("--header-timeout", default=DEFAULT_HEADER_TIMEOUT, show_default=True,
              type=click.IntRange(1, 60),
              help="Seconds a client has to send a request's headers (and an idle "
                   "keep-alive connection stays open).")
@click.option("--max-connections", default=DEFAULT_MAX_CONNECTIONS, show_default=True,
              type=click.IntRange(16, 100_000), help="Open connections per worker.")
@click.option("--access-log/--no-access-log", default=True, show_default=True,
              help="One line per request on stdout: address, method, path (never the "
                   "query string), status, duration, client id, request id.")
@with_appcontext
def serve(host: str, port: int, workers: int, threads: int, header_timeout: int,
          max_connections: int, access_log: bool) -> None:
    """Serve the authorization server under granian."""
    from granian.constants import HTTPModes, Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    issuer, warning = choose_issuer(services().settings, host, port)
    _preflight()
    guard = _claim(host, port)  # noqa: F841 - held open while serving; a busy port: at once
    # The worker processes build their settings from the environment they inherit.
    os.environ[ENV_PREFIX + "ISSUER"] = issuer
    if warning:
        logs.announce(services().settings, f"authserver: warning: {warning}", "WARNING")
    _raise_open_files_limit(max_connections)
    _start_metrics()
    where = f"[{host}]" if ":" in host else host
    logs.announce(services().settings, f"authserver: serving {issuer} on http://{where}:{port} "
                  f"({workers} workers x {threads} threads)")
    _server(
        target=LOGGED_WORKER_APP if access_log else WORKER_APP,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        # HTTP/1.1 only: an idle h2c connection would have no header timeout. TLS and
        # HTTP/2 belong to the reverse proxy in front.
        http=HTTPModes.http1,
        workers=workers,
        blocking_threads=threads,
        backpressure=max_connections,
        backlog=BACKLOG,
        http1_settings=HTTP1Settings(header_read_timeout=header_timeout * 1000,
                                     keep_alive=True, max_buffer_size=HTTP1_BUFFER),
        respawn_failed_workers=True,
        workers_kill_timeout=GRACEFUL_TIMEOUT,
        log_level=LogLevels.warning,
        # granian's own messages (a worker crashed, one killed after the graceful timeout)
        # on stderr, in the form of ours.
        log_dictconfig=logs.granian_config(services().settings),
    ).serve()
