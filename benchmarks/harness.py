"""Shared benchmark plumbing: a real ``authserver serve`` process, its database, its CPU.

Nothing here assumes which HTTP server ``authserver serve`` runs (gunicorn, granian, ...):
its processes are the serve process and all its descendants, and it is ready when the
JWKS answers 200 and that process tree has stopped growing.

The server is started exactly as an operator starts it (docs/operators.md): ``authserver db
upgrade``, ``authserver keys ensure`` and ``authserver serve`` with ``AUTHSERVER_*``
environment variables, in a throw-away working directory with its own ``keys/``. It binds
to 127.0.0.1 only. Every resource is released on every exit path: use the context
managers (``server``, ``postgres_database``) inside ``with`` or an ``ExitStack``, and
call :func:`exit_on_sigterm` once so that SIGTERM unwinds them like Ctrl-C does.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
DEFAULT_POSTGRES_URL = os.environ.get(
    "AUTHSERVER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
LOOPBACK = "127.0.0.1"
USERNAME = "bench"
PASSWORD = "bench-password-0123456789"
USER_AGENT = "authserver-bench/1.0"
PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def authserver_command() -> str:
    """The ``authserver`` console script of the interpreter running us (the venv's)."""
    beside = Path(sys.executable).with_name("authserver")
    if beside.exists():
        return str(beside)
    venv = REPO / ".venv" / "bin" / "authserver"
    if venv.exists():
        return str(venv)
    raise SystemExit("benchmark: cannot find the authserver command; run 'make install' first")


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks stop servers and drop databases."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def workdir(purpose: str) -> Iterator[Path]:
    """A temporary working directory ``authserver-bench-<purpose>-<pid>-*``, removed on exit.

    Directories of this purpose left by a killed run (its pid is gone) are removed first.
    """
    prefix = f"authserver-bench-{purpose}-"
    for old in Path(tempfile.gettempdir()).glob(prefix + "*"):
        pid = old.name[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=f"{prefix}{os.getpid()}-") as name:
        yield Path(name)


# -- databases ---------------------------------------------------------------------------


def postgres_unreachable(admin_url: str) -> str | None:
    """None when PostgreSQL answers at ``admin_url``, else why not (one line)."""
    try:
        import psycopg

        with psycopg.connect(admin_url, connect_timeout=3) as conn:
            conn.execute("select 1")
    except Exception as exc:  # any failure means: skip this backend, say why
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        return f"PostgreSQL not reachable at {admin_url}: {type(exc).__name__}: {first}"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _admin(admin_url: str, *statements: object) -> list[tuple[object, ...]]:
    import psycopg

    rows: list[tuple[object, ...]] = []
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        for statement in statements:
            cursor = conn.execute(statement)  # type: ignore[call-overload]
            if cursor.description is not None:
                rows.extend(cursor.fetchall())
    return rows


@contextlib.contextmanager
def postgres_database(admin_url: str, purpose: str) -> Iterator[str]:
    """A fresh database ``authserver_bench_<purpose>_<pid>``; dropped on exit.

    Databases of this purpose left by a benchmark that was killed (its pid is gone) are
    dropped first, so a SIGKILL never leaves one behind for long.
    """
    from psycopg import sql

    prefix = f"authserver_bench_{purpose}_"
    name = f"{prefix}{os.getpid()}"
    existing = _admin(admin_url, sql.SQL("SELECT datname FROM pg_database WHERE datname LIKE {}")
                      .format(sql.Literal(prefix.replace("_", r"\_") + "%")))
    stale = [str(row[0]) for row in existing
             if str(row[0])[len(prefix):].isdigit()
             and (str(row[0]) == name or not _pid_alive(int(str(row[0])[len(prefix):])))]
    drops = [sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
             for db in stale]
    _admin(admin_url, *drops, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    parts = urlsplit(admin_url)
    try:
        yield urlunsplit(parts._replace(path="/" + name))
    finally:
        _admin(admin_url,
               sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def postgres_backend_pids(admin_url: str, database: str) -> list[int]:
    """The PostgreSQL server processes serving ``database`` (for CPU accounting)."""
    rows = _admin(admin_url, _literal_query(
        "SELECT pid FROM pg_stat_activity WHERE datname = {}", database))
    return [int(str(row[0])) for row in rows]


def _literal_query(template: str, value: str) -> object:
    from psycopg import sql

    return sql.SQL(template).format(sql.Literal(value))


# -- CPU accounting ----------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of one process (all its threads) from /proc; None if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _parents() -> dict[int, int]:
    """pid -> parent pid of every process (Linux /proc; empty elsewhere)."""
    parents = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and fields[1].isdigit():
            parents[int(entry.parent.name)] = int(fields[1])
    return parents


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``: children, their children, and so on (Linux /proc)."""
    below: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        below.setdefault(parent, []).append(child)
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in below.get(pending.pop(), []):
            if child not in found:
                found.append(child)
                pending.append(child)
    return sorted(found)


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (for CPU accounting of a multi-process server)."""
    return [pid, *descendants(pid)]


def cpu_snapshot(pids: Sequence[int]) -> dict[int, float]:
    snapshot = {}
    for pid in pids:
        seconds = cpu_seconds(pid)
        if seconds is not None:
            snapshot[pid] = seconds
    return snapshot


def cpu_used(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two snapshots (a process new in ``after`` counts from 0)."""
    return sum(max(0.0, value - before.get(pid, 0.0)) for pid, value in after.items())


# -- the server --------------------------------------------------------------------------


@dataclass
class Server:
    """A running ``authserver serve``: ``process`` and its descendants (workers)."""

    url: str
    host: str
    port: int
    env: dict[str, str]
    workdir: Path
    process: subprocess.Popen[bytes]
    workers: int | None = None  # as ``authserver serve`` announced them, if it did
    threads: int | None = None
    algorithms: list[str] = field(default_factory=list)  # of the published signing keys
    extra_settings: list[str] = field(default_factory=list)

    def cli(self, *args: str, input: str | None = None) -> str:
        """Run an ``authserver`` command against this server's configuration."""
        return run_cli(self.env, self.workdir, *args, input=input)

    def worker_pids(self) -> list[int]:
        return descendants(self.process.pid)

    def pids(self) -> list[int]:
        """The serve process and all its descendants, whatever the HTTP server."""
        return process_tree(self.process.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = (self.workdir / "server.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM the server's process group (it drains), SIGKILL after 15 s."""
        if self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)


def get(host: str, port: int, path: str, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def prepare(workdir: Path, database_url: str, issuer: str, alg: str | None = None
            ) -> dict[str, str]:
    """The server's environment, after ``db upgrade`` and ``keys ensure`` ran with it.

    ``alg`` picks the signing key's algorithm (``keys ensure --alg``); None: the server's.
    """
    env = {
        **os.environ,
        "AUTHSERVER_ISSUER": issuer,
        "AUTHSERVER_DATABASE_URL": database_url,
        "AUTHSERVER_KEYS_DIR": str(workdir / "keys"),
        "AUTHSERVER_SECRET_KEY": secrets.token_urlsafe(32),
    }
    shipped_config = REPO / "config" / "default.toml"
    if "AUTHSERVER_CONFIG" not in env and shipped_config.exists():
        env["AUTHSERVER_CONFIG"] = str(shipped_config)
    run_cli(env, workdir, "db", "upgrade")
    run_cli(env, workdir, "keys", "ensure", *(["--alg", alg] if alg else []))
    return env


def run_cli(env: dict[str, str], workdir: Path, *args: str, input: str | None = None) -> str:
    """Run an ``authserver`` command with ``env``; its stdout, or RuntimeError with stderr."""
    result = subprocess.run([authserver_command(), *args], env=env, input=input,
                            capture_output=True, text=True, timeout=300, cwd=workdir,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"authserver {' '.join(args[:2])}: {result.stderr.strip()}")
    return result.stdout


def register(env: dict[str, str], workdir: Path, reuse_grace: int) -> str:
    """The benchmark user and a public first-party client, through the CLI; the client id."""
    run_cli(env, workdir, "users", "create", USERNAME, "--password-stdin", input=PASSWORD + "\n")
    created = json.loads(run_cli(
        env, workdir, "clients", "create", "--name", "Benchmark app", "--public",
        "--first-party", "--grant-type", "password", "--grant-type", "refresh_token",
        "--scope", "read write", "--reuse-grace", str(reuse_grace), "--json"))
    return str(created["client_id"])


@contextlib.contextmanager
def server(workdir: Path, database_url: str, *, workers: int | None = None,
           threads: int | None = None, alg: str | None = None,
           start_timeout: float = 60.0) -> Iterator[Server]:
    """Migrate, ensure a key, and ``authserver serve`` on 127.0.0.1; stopped on exit.

    ``workers`` / ``threads`` of None leave ``authserver serve``'s own defaults.
    """
    port = free_port()
    url = f"http://{LOOPBACK}:{port}"
    env = prepare(workdir, database_url, issuer=url, alg=alg)
    ours = {"AUTHSERVER_ISSUER", "AUTHSERVER_DATABASE_URL", "AUTHSERVER_KEYS_DIR",
            "AUTHSERVER_SECRET_KEY", "AUTHSERVER_CONFIG", "AUTHSERVER_TEST_POSTGRES_URL"}
    extra = sorted(k for k in env if k.startswith("AUTHSERVER_") and k not in ours)
    command = [authserver_command(), "serve", "--host", LOOPBACK, "--port", str(port)]
    if workers is not None:
        command += ["--workers", str(workers)]
    if threads is not None:
        command += ["--threads", str(threads)]
    with open(workdir / "server.log", "wb") as log:
        process = subprocess.Popen(command, env=env, cwd=workdir, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=_die_with_parent)
    srv = Server(url, LOOPBACK, port, env, workdir, process, workers=workers, threads=threads,
                 extra_settings=extra)
    try:
        _wait_ready(srv, start_timeout)
        srv.workers = _announced(srv, r"\((\d+) workers") or srv.workers
        srv.threads = _announced(srv, r"x (\d+) threads\)") or srv.threads
        yield srv
    finally:
        srv.stop()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it when we die, even by SIGKILL (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _announced(srv: Server, pattern: str) -> int | None:
    """A number from ``authserver serve``'s own start-up line, if it printed one.

    Information for the report only; readiness never depends on the log's wording.
    """
    match = re.search(pattern, srv.log_tail(200))
    return int(match.group(1)) if match else None


def _wait_ready(srv: Server, timeout: float, settle: float = 1.0) -> None:
    """Until the JWKS answers 200 and the process tree was unchanged for ``settle`` s.

    The HTTP probe says the server accepts requests; the settling wait lets every worker
    process start (a server that spawns workers after binding its socket answers the
    first probe before its last worker exists). Bounded by ``timeout``.
    """
    deadline = time.monotonic() + timeout
    tree: list[int] | None = None
    stable_since = 0.0
    while time.monotonic() < deadline:
        if srv.process.poll() is not None:
            raise RuntimeError("the server exited during start-up:\n" + srv.log_tail())
        try:
            status, body = get(srv.host, srv.port, "/.well-known/jwks.json", timeout=1.0)
        except OSError:
            time.sleep(0.1)
            continue
        keys = json.loads(body).get("keys") if status == 200 else None
        if keys:
            srv.algorithms = sorted({str(key.get("alg")) for key in keys})
            now_tree = srv.pids()
            if now_tree != tree:
                tree, stable_since = now_tree, time.monotonic()
            elif time.monotonic() - stable_since >= settle:
                return
        time.sleep(0.1)
    raise RuntimeError(f"the server did not become ready in {timeout:.0f} s:\n" + srv.log_tail())
