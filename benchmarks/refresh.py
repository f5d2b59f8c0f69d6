"""Refresh-grant throughput of authserver against node-oidc-provider 9, one load generator.

One run measures, side by side and driven by the same load generator (wrk, 2 threads, one
keep-alive connection per refresh-token chain: every request presents the token the
previous answer returned):

- the refresh grant on authserver with SQLite and with PostgreSQL (when reachable) and on
  node-oidc-provider 9 (npm ``oidc-provider``, installed by this script into a cache
  directory, configured like authserver: in-memory store, RS256 JWT access tokens,
  rotating refresh tokens; see ``peer/server.mjs``);
- ``GET`` of the JWKS and the ``client_credentials`` grant on both.

For each it prints requests/s, the ratio to node-oidc-provider, p50/p99 latency, errors,
the server's CPU per request (and, on PostgreSQL, the database backends' separately) and
wrk's own CPU, with the machine's core count. Optionally the refresh grant is measured at
several concurrencies (``--scale-concurrency 1,16,64``) and with 10^5 / 10^6 extra refresh
tokens (each with its own family) already in the table (``--existing-rows``).

    .venv/bin/python benchmarks/refresh.py                     # both backends + peer, 10 s each
    .venv/bin/python benchmarks/refresh.py --duration 3 --warmup 1           # a smoke run
    .venv/bin/python benchmarks/refresh.py --backends sqlite --scale-concurrency 1,16,64 \\
        --existing-rows 100000,1000000
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import fcntl
import hashlib
import http.client
import json
import math
import os
import platform
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
PEER_SOURCE = HERE / "peer"
WRK_SCRIPT = HERE / "wrk" / "refresh_chains.lua"
BACKENDS = ("sqlite", "postgresql")
TESTS = ("refresh", "jwks", "client_credentials")
TEST_TITLES = {"refresh": "refresh grant", "jwks": "JWKS GET",
               "client_credentials": "client_credentials"}
AUTHSERVER, PEER = "authserver", "node-oidc-provider"
SCOPE = "read write"
CC_BODY = urlencode({"grant_type": "client_credentials", "scope": SCOPE})
DRAIN_SECONDS = 1.0  # wrk runs this much past a chain run's window: answers in flight land


# -- results -----------------------------------------------------------------------------


@dataclass
class Run:
    """One measured wrk run against one server."""

    test: str  # refresh | jwks | client_credentials
    server: str  # authserver | node-oidc-provider
    backend: str  # sqlite | postgresql | memory
    concurrency: int
    existing_rows: int = 0  # extra refresh tokens bulk-inserted before serving
    rows_in_table: int | None = None  # refresh_tokens rows when the run started
    wrk_threads: int = 0
    duration: float = 0.0  # measured seconds
    requests: int = 0  # successful (200) answers in the window
    rps: float = 0.0
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    server_cpu_ms_per_req: float | None = None
    db_cpu_ms_per_req: float | None = None
    wrk_cpu_ms_per_req: float | None = None
    wrk_cpu_percent: float | None = None  # of one core
    tokens_lost: int = 0  # chains whose last answer did not arrive before wrk stopped
    failed: str | None = None


@dataclass
class Report:
    runs: list[Run] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "what: why"
    failed: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    insert_seconds: dict[str, float] = field(default_factory=dict)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- token pools ---------------------------------------------------------------------------


class TokenPool:
    """The chains' current refresh tokens, in a file wrk reads and rewrites after each run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tokens: list[str] = []

    def add(self, tokens: Sequence[str]) -> None:
        self.tokens.extend(tokens)
        self.save()

    def save(self) -> None:
        self.path.write_text("".join(f"{token}\n" for token in self.tokens))

    def load(self, path: Path) -> None:
        """Take the tokens wrk left (still valid: never presented, or just issued)."""
        self.tokens = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        self.save()

    def pop(self) -> str:
        token = self.tokens.pop()
        self.save()
        return token


def tokens_needed(concurrency: int, args: argparse.Namespace) -> int:
    """One per connection, spares for errors, and one wrk drops (it builds a test request)."""
    spares = args.spares if args.spares is not None else max(2, concurrency // 4)
    return concurrency + spares + 1


# -- wrk ---------------------------------------------------------------------------------


@dataclass
class Target:
    """One server under test, as the load generator and the CPU accounting see it."""

    server: str
    backend: str
    url: str
    token_path: str
    jwks_path: str
    public_client_id: str
    service_authorization: str  # the Authorization header of client_credentials
    pool: TokenPool
    workdir: Path  # wrk's files
    pids: Callable[[], list[int]]
    db_pids: Callable[[], list[int]] = list
    replenish: Callable[[int], list[str]] | None = None  # n fresh tokens, or None: cannot
    rows_in_table: Callable[[], int | None] = lambda: None
    log_tail: Callable[[], str] = str
    extra_form: str = ""
    broken: str | None = None  # why this server is measured no further

    @property
    def name(self) -> str:
        return f"{self.server}/{self.backend}"


def wrk_threads(concurrency: int, args: argparse.Namespace) -> int:
    """wrk's threads: --wrk-threads, fewer if they would not share the connections evenly."""
    return math.gcd(concurrency, args.wrk_threads)


def run_wrk(target: Target, test: str, concurrency: int, seconds: float,
            args: argparse.Namespace, measured: bool) -> Run:
    """One wrk run of ``test``; a Run with wrk's and /proc's figures."""
    workdir = target.workdir
    threads = wrk_threads(concurrency, args)
    run = Run(test, target.server, target.backend, concurrency, wrk_threads=threads)
    name = f"{target.server}-{target.backend}-{test}-c{concurrency}-{time.monotonic_ns()}"
    result_file = workdir / f"{name}.json"
    env = {**os.environ, "BENCH_RESULT": str(result_file), "BENCH_USER_AGENT": harness.USER_AGENT}
    if test == "refresh":
        needed = tokens_needed(concurrency, args)
        if len(target.pool.tokens) < needed:
            if target.replenish is None:
                raise RuntimeError(f"{target.server}: {len(target.pool.tokens)} refresh tokens "
                                   f"left, {needed} needed")
            target.pool.add(target.replenish(needed - len(target.pool.tokens)))
        tokens_in = len(target.pool.tokens)
        tokens_out = workdir / f"{name}.tokens"
        env.update(BENCH_MODE="refresh", BENCH_TOKENS=str(target.pool.path),
                   BENCH_TOKENS_OUT=str(tokens_out), BENCH_THREADS=str(threads),
                   BENCH_CLIENT_ID=target.public_client_id, BENCH_EXTRA_FORM=target.extra_form,
                   BENCH_ACTIVE_MS=f"{seconds * 1000:.0f}")
        wrk_seconds = math.ceil(seconds + DRAIN_SECONDS)
        url = target.url + target.token_path
        if measured:
            run.rows_in_table = target.rows_in_table()
    elif test == "jwks":
        env.update(BENCH_MODE="get")
        wrk_seconds = max(1, math.ceil(seconds))
        url = target.url + target.jwks_path
    else:
        env.update(BENCH_MODE="post", BENCH_BODY=CC_BODY,
                   BENCH_AUTHORIZATION=target.service_authorization)
        wrk_seconds = max(1, math.ceil(seconds))
        url = target.url + target.token_path
    command = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{wrk_seconds}s",
               "--timeout", f"{args.timeout:g}s", "-s", str(WRK_SCRIPT), url]

    server_pids = target.pids()
    db_pids = target.db_pids()
    server_before = harness.cpu_snapshot(server_pids)
    db_before = harness.cpu_snapshot(db_pids)
    usage = _run_and_reap(command, env, workdir / f"{name}.log", wrk_seconds + 60)
    server_after = harness.cpu_snapshot(sorted({*server_pids, *target.pids()}))
    db_after = harness.cpu_snapshot(sorted({*db_pids, *target.db_pids()}))

    try:
        summary = json.loads(result_file.read_text())
    except (OSError, ValueError) as exc:
        tail = (workdir / f"{name}.log").read_text(errors="replace")[-800:]
        raise RuntimeError(f"wrk wrote no summary ({exc}):\n{tail}") from exc
    if test == "refresh":
        target.pool.load(tokens_out)
        errors_in_run = sum(summary["statuses"].values()) + summary["bad_body"]
        run.tokens_lost = max(0, tokens_in - 1 - errors_in_run - summary["tokens_left"])
        run.duration = summary["active_ms"] / 1000
        run.requests = summary["ok_in_window"]
    else:
        run.duration = summary["duration_us"] / 1e6
        run.requests = summary["ok"]
    kinds = {f"HTTP {kind}": count for kind, count in summary["statuses"].items()}
    if summary["bad_body"]:
        kinds["HTTP 200 without a refresh_token"] = summary["bad_body"]
    if summary["exhausted"]:
        kinds["chains ran out of spare tokens"] = summary["exhausted"]
    for kind, count in summary["socket_errors"].items():
        if count:
            kinds[f"socket {kind}"] = count
    run.error_kinds = kinds
    run.errors = sum(kinds.values())
    run.rps = run.requests / run.duration if run.duration else 0.0
    latency = summary["latency_us"]
    if summary["requests"]:
        run.p50_ms, run.p90_ms = latency["p50"] / 1000, latency["p90"] / 1000
        run.p99_ms, run.max_ms = latency["p99"] / 1000, latency["max"] / 1000
    handled = summary["requests"]  # every answer, in the window or not, errors included
    if handled:
        run.server_cpu_ms_per_req = (
            harness.cpu_used(server_before, server_after) * 1000 / handled)
        if db_pids or db_after:
            run.db_cpu_ms_per_req = harness.cpu_used(db_before, db_after) * 1000 / handled
        wrk_cpu = usage.ru_utime + usage.ru_stime
        run.wrk_cpu_ms_per_req = wrk_cpu * 1000 / handled
        run.wrk_cpu_percent = wrk_cpu / (summary["duration_us"] / 1e6) * 100
    return run


def _run_and_reap(command: list[str], env: dict[str, str], log_path: Path,
                  timeout: float) -> Any:
    """Run ``command`` to its end; its resource usage (CPU). Killed on any way out."""
    with open(log_path, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True, preexec_fn=harness._die_with_parent)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                process.returncode = os.waitstatus_to_exitcode(status)
                if process.returncode != 0:
                    tail = log_path.read_text(errors="replace")[-800:]
                    raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{tail}")
                return usage
            time.sleep(0.05)
        raise RuntimeError(f"{command[0]} did not finish in {timeout:.0f} s")
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def measure(target: Target, test: str, concurrency: int, args: argparse.Namespace,
            existing_rows: int = 0) -> Run:
    """Warm up, then one measured run."""
    label = f"[{target.name}] {TEST_TITLES[test]} at concurrency {concurrency}"
    if existing_rows:
        label += f", {existing_rows:,} extra rows"
    log(f"{label}: warm-up {args.warmup:g} s, measuring {args.duration:g} s ...")
    if args.warmup > 0:
        run_wrk(target, test, concurrency, args.warmup, args, measured=False)
    run = run_wrk(target, test, concurrency, args.duration, args, measured=True)
    run.existing_rows = existing_rows
    log(f"{label}: {run.rps:.0f} req/s, p99 {run.p99_ms or 0:.1f} ms, {run.errors} errors")
    return run


def measure_or_break(target: Target, test: str, concurrency: int, args: argparse.Namespace,
                     report: Report, existing_rows: int = 0) -> None:
    """``measure``, recording a failure (the server is then measured no further)."""
    if target.broken:
        return
    try:
        report.runs.append(measure(target, test, concurrency, args, existing_rows))
    except Exception as exc:  # reported; the other servers are still measured
        target.broken = _first_line(exc)
        report.failed.append(f"{target.name}: {TEST_TITLES[test]} c={concurrency}: "
                             f"{target.broken}")
        log(f"[{target.name}] failed: {exc}\n{target.log_tail()}")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


# -- smoke checks: the servers answer what we think we measure ------------------------------


def _request(url: str, method: str, path: str, body: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    status, decoded, _ = _request_with_headers(url, method, path, body, headers)
    return status, decoded


def _request_with_headers(url: str, method: str, path: str, body: str | None = None,
                          headers: dict[str, str] | None = None
                          ) -> tuple[int, dict[str, Any], dict[str, str]]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request(method, path, body, {"User-Agent": harness.USER_AGENT,
                                          "Accept": "application/json", **(headers or {})})
        response = conn.getresponse()
        data = response.read()
        answer_headers = {name.lower(): value for name, value in response.getheaders()}
    finally:
        conn.close()
    try:
        decoded = json.loads(data)
    except ValueError:
        decoded = {}
    return response.status, decoded if isinstance(decoded, dict) else {}, answer_headers


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _jwt_header(token: object, what: str, alg: str) -> str:
    """The JWT's typ; RuntimeError unless ``token`` is a compact JWS signed with ``alg``."""
    parts = str(token).split(".")
    if len(parts) != 3:
        raise RuntimeError(f"{what}: the access token is not a JWT")
    header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    if header.get("alg") != alg:
        raise RuntimeError(f"{what}: the access token is signed with {header.get('alg')}, "
                           f"not {alg}")
    return str(header.get("typ"))


def smoke_check(target: Target, tests: Sequence[str], alg: str) -> dict[str, str]:
    """One of each request before measuring: refresh rotates and returns a JWT, and so on."""
    what = f"{target.server}/{target.backend}"
    seen: dict[str, str] = {}
    if "refresh" in tests:
        token = target.pool.pop()
        form = {"grant_type": "refresh_token", "client_id": target.public_client_id,
                "refresh_token": token}
        status, body = _request(target.url, "POST", target.token_path, urlencode(form), FORM)
        if status != 200:
            raise RuntimeError(f"{what}: a refresh answered HTTP {status} {body}")
        new = body.get("refresh_token")
        if not new or new == token:
            raise RuntimeError(f"{what}: a refresh did not rotate the refresh token")
        seen["refresh access token typ"] = _jwt_header(body.get("access_token"), what, alg)
        target.pool.add([str(new)])
    if "jwks" in tests:
        status, body = _request(target.url, "GET", target.jwks_path)
        if status != 200 or not body.get("keys"):
            raise RuntimeError(f"{what}: the JWKS answered HTTP {status}")
        seen["jwks algs"] = ",".join(sorted({str(k.get("alg")) for k in body["keys"]}))
    if "client_credentials" in tests:
        status, body = _request(target.url, "POST", target.token_path, CC_BODY,
                                {**FORM, "Authorization": target.service_authorization})
        if status != 200:
            raise RuntimeError(f"{what}: client_credentials answered HTTP {status} {body}")
        seen["client_credentials access token typ"] = _jwt_header(
            body.get("access_token"), what, alg)
    return seen


def basic_authorization(client_id: str, secret: str) -> str:
    """RFC 6749 §2.3.1: both form-encoded, then HTTP Basic."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


# -- node-oidc-provider --------------------------------------------------------------------


def peer_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "authserver-bench" / "oidc-provider-9"


def install_peer() -> Path:
    """``npm install`` our package.json into the cache directory, once; our server.mjs there.

    Reused while package.json is unchanged. Nothing is written into the repository.
    """
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    cache = peer_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    package = (PEER_SOURCE / "package.json").read_bytes()
    stamp = hashlib.sha256(package).hexdigest()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two benchmark runs never install at once
        marker = cache / ".installed"
        installed = cache / "node_modules" / "oidc-provider" / "package.json"
        if not (installed.exists() and marker.exists() and marker.read_text() == stamp):
            log(f"[peer] npm install oidc-provider into {cache} ...")
            (cache / "package.json").write_bytes(package)
            result = subprocess.run(
                ["npm", "install", "--prefix", str(cache), "--omit=dev", "--no-audit",
                 "--no-fund", "--loglevel=error"],
                cwd=cache, capture_output=True, text=True, timeout=600, check=False)
            if result.returncode != 0:
                raise RuntimeError(f"npm install failed: {result.stderr.strip()[-500:]}")
            marker.write_text(stamp)
        shutil.copyfile(PEER_SOURCE / "server.mjs", cache / "server.mjs")
    return cache


@dataclass
class Peer:
    process: subprocess.Popen[bytes]
    ready: dict[str, Any]
    secret: str
    log: Path

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@contextlib.contextmanager
def node_peer(workdir: Path, mint: int, timeout: float = 60.0) -> Iterator[Peer]:
    """node-oidc-provider on 127.0.0.1 with ``mint`` refresh tokens; stopped on exit."""
    cache = install_peer()
    secret = secrets.token_urlsafe(32)
    ready_file, tokens_file, log_file = (workdir / "peer-ready.json",
                                         workdir / "peer-tokens.txt", workdir / "peer.log")
    env = {**os.environ, "BENCH_SERVICE_SECRET": secret, "NODE_ENV": "production"}
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            ["node", str(cache / "server.mjs"), "--port", "0", "--mint", str(mint),
             "--tokens-out", str(tokens_file), "--ready-file", str(ready_file)],
            cwd=cache, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=harness._die_with_parent)
    peer = Peer(process, {}, secret, log_file)
    try:
        deadline = time.monotonic() + timeout
        while not ready_file.exists():
            if process.poll() is not None:
                raise RuntimeError("node-oidc-provider exited during start-up:\n"
                                   + peer.log_tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"node-oidc-provider not ready in {timeout:.0f} s:\n"
                                   + peer.log_tail())
            time.sleep(0.05)
        peer.ready = json.loads(ready_file.read_text())
        peer.ready["tokens_file"] = str(tokens_file)
        yield peer
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def start_peer(args: argparse.Namespace, report: Report, stack: contextlib.ExitStack) -> Target:
    """Start the peer (once, for the whole run) and check it answers what we measure."""
    workdir = stack.enter_context(harness.workdir("refresh-peer"))
    refresh_runs = 2 * len(refresh_concurrencies(args))  # warm-up + measured, one token each
    mint = tokens_needed(max(refresh_concurrencies(args)), args) + refresh_runs + 8
    log(f"[peer] starting node-oidc-provider (minting {mint} refresh tokens) ...")
    peer = stack.enter_context(node_peer(workdir, mint))
    report.info["peer"] = {key: peer.ready[key] for key in ("node", "oidc_provider", "issuer")}
    log(f"[peer] oidc-provider {peer.ready['oidc_provider']} on node {peer.ready['node']} at "
        f"{peer.ready['issuer']}")
    pool = TokenPool(workdir / "chains.txt")
    pool.load(Path(peer.ready["tokens_file"]))
    target = Target(
        PEER, "memory", peer.ready["issuer"], "/token", "/jwks", peer.ready["public_client_id"],
        basic_authorization(peer.ready["service_client_id"], peer.secret), pool, workdir,
        pids=lambda: harness.process_tree(peer.process.pid), log_tail=peer.log_tail)
    report.info["peer"]["checks"] = smoke_check(target, args.tests, "RS256")
    return target


# -- authserver ----------------------------------------------------------------------------


def sign_in(server: harness.Server, client_id: str, count: int, parallel: int,
            patience: float = 180.0) -> list[str]:
    """``count`` fresh refresh tokens, one password-grant sign-in (family) each.

    A 503 (the server admits only so many argon2 checks at once) is retried after its
    Retry-After, as a client would; the 503s are counted in the log, never as results.
    """
    form = urlencode({"grant_type": "password", "username": harness.USERNAME,
                      "password": harness.PASSWORD, "client_id": client_id, "scope": SCOPE})
    deadline = time.monotonic() + patience
    refused = 0

    def one(_: int) -> str:
        nonlocal refused
        while True:
            status, body, headers = _request_with_headers(server.url, "POST", "/oauth/token",
                                                          form, FORM)
            if status == 200 and "refresh_token" in body:
                return str(body["refresh_token"])
            if status != 503 or time.monotonic() > deadline:
                raise RuntimeError(f"sign-in failed: HTTP {status} {body.get('error', '')}")
            refused += 1
            retry_after = headers.get("retry-after", "")
            time.sleep(min(5.0, float(retry_after)) if retry_after.isdigit() else 0.25)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        tokens = list(pool.map(one, range(count)))
    log(f"[{AUTHSERVER}] signed in {count} chains (password grant, argon2) in "
        f"{time.monotonic() - started:.1f} s" + (f" ({refused} answers 503, retried)"
                                                 if refused else ""))
    return tokens


def _database_pids(backend: str, admin_url: str, database_url: str) -> list[int]:
    if backend != "postgresql":
        return []
    try:
        return harness.postgres_backend_pids(admin_url, urlsplit(database_url).path.lstrip("/"))
    except Exception:  # CPU accounting is best effort; the benchmark itself goes on
        return []


def count_rows(backend: str, database_url: str) -> int | None:
    try:
        if backend == "sqlite":
            with contextlib.closing(sqlite3.connect(_sqlite_path(database_url))) as conn:
                return int(conn.execute("SELECT count(*) FROM refresh_tokens").fetchone()[0])
        import psycopg

        with psycopg.connect(database_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT count(*) FROM refresh_tokens").fetchone()
            return int(row[0]) if row else None
    except Exception:  # a figure for the report only
        return None


def _sqlite_path(database_url: str) -> str:
    return database_url.removeprefix("sqlite:///")


def insert_rows(backend: str, database_url: str, count: int, client_id: str) -> float:
    """``count`` refresh tokens, each in its own family, straight into the database.

    Like the server's rows: a family of the benchmark user and client (password grant,
    created now, 90-day session), one unrotated, unrevoked token in it with a random
    64-hex digest and a 14-day idle expiry. Generated by SQL: random digests, sorted, and
    each family's id taken from its token's digest (42 hex digits and "f": 43 characters
    like ours), so the family ids, the tokens' family ids and the digests all arrive in
    index order and 10^6 rows take seconds, not minutes. Then ANALYZE. Returns the seconds.
    """
    started = time.monotonic()
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    stamps = (now, now + dt.timedelta(days=90), now + dt.timedelta(days=14))
    if backend == "sqlite":
        _insert_rows_sqlite(_sqlite_path(database_url), count, client_id, *stamps)
    else:
        _insert_rows_postgres(database_url, count, client_id, *stamps)
    return time.monotonic() - started


_SQLITE_RANDOM_DIGESTS = (
    "CREATE TEMP TABLE bulk_digests AS WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL "
    "SELECT n + 1 FROM seq WHERE n < :count) "
    "SELECT lower(hex(randomblob(32))) AS digest FROM seq ORDER BY 1")
_SQLITE_FAMILIES = (
    "INSERT INTO token_families (id, user_id, client_id, scope, grant_type, auth_time, "
    "created_at, expires_at) SELECT substr(digest, 1, 42) || 'f', :user_id, :client_id, "
    ":scope, 'password', :now, :now, :expires FROM bulk_digests ORDER BY rowid")
_SQLITE_TOKENS = (
    "INSERT INTO refresh_tokens (family_id, token_digest, created_at, expires_at) "
    "SELECT substr(digest, 1, 42) || 'f', digest, :now, :expires FROM bulk_digests "
    "ORDER BY rowid")


def _insert_rows_sqlite(path: str, count: int, client_id: str, now: dt.datetime,
                        family_expiry: dt.datetime, token_expiry: dt.datetime) -> None:
    def stamp(value: dt.datetime) -> str:  # SQLAlchemy's SQLite DATETIME format
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")

    with contextlib.closing(sqlite3.connect(path, isolation_level=None, timeout=60)) as conn:
        conn.execute("PRAGMA cache_size = -1048576")  # this connection only: up to 1 GiB
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN IMMEDIATE")  # one transaction
        try:
            row = conn.execute("SELECT id FROM users WHERE username = ?",
                               (harness.USERNAME,)).fetchone()
            if row is None:
                raise RuntimeError("the benchmark user does not exist")
            conn.execute(_SQLITE_RANDOM_DIGESTS, {"count": count})
            conn.execute(_SQLITE_FAMILIES, {
                "user_id": int(row[0]), "client_id": client_id, "scope": SCOPE,
                "now": stamp(now), "expires": stamp(family_expiry)})
            conn.execute(_SQLITE_TOKENS, {"now": stamp(now), "expires": stamp(token_expiry)})
            conn.execute("DROP TABLE bulk_digests")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the server starts with a short WAL


_PG_FAMILIES = (
    "INSERT INTO token_families (id, user_id, client_id, scope, grant_type, auth_time, "
    "created_at, expires_at) SELECT left(digest, 42) || 'f', %(user_id)s, %(client_id)s, "
    "%(scope)s, 'password', %(now)s, %(now)s, %(expires)s FROM authserver_bench_bulk")
_PG_TOKENS = (
    "INSERT INTO refresh_tokens (family_id, token_digest, created_at, expires_at) "
    "SELECT left(digest, 42) || 'f', digest, %(now)s, %(token_expires)s "
    "FROM authserver_bench_bulk")


def _insert_rows_postgres(url: str, count: int, client_id: str, now: dt.datetime,
                          family_expiry: dt.datetime, token_expiry: dt.datetime) -> None:
    import psycopg

    def connect() -> psycopg.Connection[Any]:
        conn = psycopg.connect(url, connect_timeout=10)
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET work_mem = '256MB'")
        # The staging table was written in digest order: read it in that order, from its
        # first page (a second concurrent scan would otherwise join the first midway).
        conn.execute("SET synchronize_seqscans = off")
        return conn

    with connect() as conn:
        row = conn.execute("SELECT id FROM users WHERE username = %s",
                           (harness.USERNAME,)).fetchone()
        if row is None:
            raise RuntimeError("the benchmark user does not exist")
        superuser = conn.execute(
            "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        conn.execute("DROP TABLE IF EXISTS authserver_bench_bulk")
        conn.execute("CREATE UNLOGGED TABLE authserver_bench_bulk AS SELECT "
                     "encode(sha256(uuid_send(gen_random_uuid())), 'hex') AS digest "
                     "FROM generate_series(1, %(count)s) ORDER BY 1", {"count": count})
        conn.commit()
    values = {"user_id": int(row[0]), "client_id": client_id, "scope": SCOPE, "now": now,
              "expires": family_expiry, "token_expires": token_expiry}
    try:
        if superuser and superuser[0]:
            # The rows reference the real user, client and families by construction, so
            # skip the per-row foreign-key triggers (they double the time) and fill both
            # tables at once on two connections. One transaction each.
            errors: list[BaseException] = []

            def fill(statement: str) -> None:
                try:
                    with connect() as conn:
                        conn.execute("SET session_replication_role = replica")
                        conn.execute(statement, values)
                except BaseException as exc:  # re-raised below, in the caller's thread
                    errors.append(exc)

            with ThreadPoolExecutor(max_workers=2) as pool:
                list(pool.map(fill, (_PG_FAMILIES, _PG_TOKENS)))
            if errors:
                raise errors[0]
        else:
            with connect() as conn:  # families first: the tokens' foreign key is checked
                conn.execute(_PG_FAMILIES, values)
                conn.execute(_PG_TOKENS, values)
    finally:
        with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
            conn.execute("DROP TABLE IF EXISTS authserver_bench_bulk")
            conn.execute("ANALYZE token_families")
            conn.execute("ANALYZE refresh_tokens")


class AuthserverBackend:
    """authserver on one backend: its database and working directory live for the whole
    run; its server is started per level of existing rows (inserted while it is down)."""

    def __init__(self, backend: str, args: argparse.Namespace, report: Report,
                 stack: contextlib.ExitStack) -> None:
        self.backend, self.args, self.report = backend, args, report
        self.workdir = stack.enter_context(harness.workdir(f"refresh-{backend}"))
        if backend == "sqlite":
            self.database_url = f"sqlite:///{self.workdir / 'authserver.sqlite3'}"
        else:
            self.database_url = stack.enter_context(
                harness.postgres_database(args.postgres_url, "refresh"))
        stack.callback(self.stop)  # the server stops before its database is dropped
        self.pool = TokenPool(self.workdir / "chains.txt")
        self.client_id = ""
        self.service_authorization = ""
        self.server_stack: contextlib.ExitStack | None = None
        self.target: Target | None = None
        self.inserted = 0

    def start(self, concurrencies: Sequence[int], tests: Sequence[str], rows: int) -> Target:
        """Serve, register the clients (first time), sign in enough chains, smoke-check."""
        args = self.args
        log(f"[{AUTHSERVER}/{self.backend}] starting authserver serve ...")
        self.server_stack = contextlib.ExitStack()
        server = self.server_stack.enter_context(harness.server(
            self.workdir, self.database_url, workers=args.workers, threads=args.threads,
            alg=args.alg))
        try:
            if not self.client_id:
                self.client_id = harness.register(server.env, self.workdir, args.reuse_grace)
                service = json.loads(server.cli(
                    "clients", "create", "--name", "Benchmark service", "--grant-type",
                    "client_credentials", "--scope", SCOPE, "--json"))
                self.service_authorization = basic_authorization(
                    str(service["client_id"]), str(service["client_secret"]))
            self.report.info.setdefault("authserver", {
                "processes": len(server.pids()), "workers": server.workers,
                "threads": server.threads, "algorithms": server.algorithms,
                "extra_settings": server.extra_settings})
            log(f"[{AUTHSERVER}/{self.backend}] up: {len(server.pids())} processes (serve and "
                f"its descendants), signing algorithms {','.join(server.algorithms)}")
            client_id, parallel = self.client_id, args.sign_in_parallel
            target = Target(
                AUTHSERVER, self.backend, server.url, "/oauth/token", "/.well-known/jwks.json",
                client_id, self.service_authorization, self.pool, self.workdir,
                pids=server.pids,
                db_pids=lambda: _database_pids(self.backend, args.postgres_url,
                                               self.database_url),
                replenish=lambda n: sign_in(server, client_id, n, parallel),
                rows_in_table=lambda: count_rows(self.backend, self.database_url),
                log_tail=lambda: "server log (last lines):\n" + server.log_tail(30))
            # Every run drops one token (wrk's test request): sign in enough for a few runs.
            wanted = tokens_needed(max(concurrencies), args) + 2 * len(concurrencies) + 2
            if len(self.pool.tokens) < wanted:
                self.pool.add(sign_in(server, client_id, wanted - len(self.pool.tokens),
                                      parallel))
            checks = smoke_check(target, tests, args.alg)
            self.report.info.setdefault("authserver_checks", {})[
                f"{self.backend} +{rows}"] = checks
        except Exception:
            log(f"[{AUTHSERVER}/{self.backend}] server log (last lines):\n"
                f"{server.log_tail(30)}")
            self.stop()
            raise
        self.target = target
        return target

    def stop(self) -> None:
        if self.server_stack is not None:
            self.server_stack.close()
            self.server_stack = None
        self.target = None

    def insert(self, total: int) -> None:
        """Bulk-insert refresh tokens until ``total`` extra rows exist (server stopped)."""
        self.stop()
        delta = total - self.inserted
        log(f"[{AUTHSERVER}/{self.backend}] inserting {delta:,} refresh tokens (own family "
            "each) ...")
        seconds = insert_rows(self.backend, self.database_url, delta, self.client_id)
        self.inserted = total
        self.report.insert_seconds[f"{self.backend} +{delta:,}"] = round(seconds, 1)
        log(f"[{AUTHSERVER}/{self.backend}] inserted {delta:,} rows and analyzed in "
            f"{seconds:.1f} s")


def refresh_concurrencies(args: argparse.Namespace) -> list[int]:
    """The refresh runs' concurrencies: --concurrency first, then the scale curve's."""
    return list(dict.fromkeys([args.concurrency, *args.scale_concurrency]))


# -- reporting ---------------------------------------------------------------------------


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _ratio(run: Run, runs: Sequence[Run]) -> str:
    if run.server == PEER:
        return "1.00" if run.rps else "-"
    peer = [r for r in runs if r.server == PEER and r.test == run.test
            and r.concurrency == run.concurrency and r.rps]
    return f"{run.rps / peer[0].rps:.2f}" if peer else "-"


def _table(header: list[str], rows: list[list[str]], left: int) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = []
    for index, row in enumerate([header, *rows]):
        lines.append("  ".join(cell.ljust(w) if i < left else cell.rjust(w)
                               for i, (cell, w) in enumerate(zip(row, widths, strict=True))))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def comparison_table(report: Report, args: argparse.Namespace) -> list[str]:
    header = ["test", "server", "backend", "conc.", "req/s", "vs node", "p50 ms", "p99 ms",
              "errors", "server CPU ms/req", "db CPU ms/req", "wrk CPU ms/req"]
    runs = [r for r in report.runs if r.existing_rows == 0 and r.concurrency == args.concurrency]
    order = {test: i for i, test in enumerate(TESTS)}
    runs.sort(key=lambda r: (order[r.test], r.server != PEER))
    rows = [[TEST_TITLES[r.test], r.server, r.backend, str(r.concurrency), f"{r.rps:.0f}",
             _ratio(r, report.runs), _ms(r.p50_ms), _ms(r.p99_ms), str(r.errors),
             _ms(r.server_cpu_ms_per_req), _ms(r.db_cpu_ms_per_req),
             _ms(r.wrk_cpu_ms_per_req)] for r in runs]
    return _table(header, rows, left=3)


def scale_table(report: Report) -> list[str]:
    header = ["server", "backend", "extra rows", "rows in table", "conc.", "req/s", "vs node",
              "vs 0 rows", "p50 ms", "p99 ms", "errors", "server CPU ms/req", "db CPU ms/req"]
    runs = [r for r in report.runs if r.test == "refresh"]
    runs.sort(key=lambda r: (r.server != PEER, BACKENDS.index(r.backend)
                             if r.backend in BACKENDS else -1, r.existing_rows, r.concurrency))

    def flat(run: Run) -> str:  # req/s against the same server and concurrency, no rows added
        base = [r for r in runs if r.server == run.server and r.backend == run.backend
                and r.concurrency == run.concurrency and r.existing_rows == 0 and r.rps]
        return f"{run.rps / base[0].rps:.2f}" if base and run.server != PEER else "-"

    rows = [[r.server, r.backend, f"{r.existing_rows:,}" if r.server != PEER else "-",
             f"{r.rows_in_table:,}" if r.rows_in_table is not None else "-",
             str(r.concurrency), f"{r.rps:.0f}", _ratio(r, report.runs), flat(r),
             _ms(r.p50_ms), _ms(r.p99_ms), str(r.errors), _ms(r.server_cpu_ms_per_req),
             _ms(r.db_cpu_ms_per_req)] for r in runs]
    return _table(header, rows, left=2)


def notes(report: Report) -> list[str]:
    lines = []
    cores = os.cpu_count() or 1
    for r in report.runs:
        what = f"{r.server}/{r.backend} {TEST_TITLES[r.test]} c={r.concurrency}" + (
            f" +{r.existing_rows:,} rows" if r.existing_rows else "")
        if r.errors:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r.error_kinds.items()))
            lines.append(f"{what}: {r.errors} errors ({kinds})")
        if r.tokens_lost:
            lines.append(f"{what}: {r.tokens_lost} chains had an answer still in flight when "
                         "wrk stopped (tokens dropped; not an error)")
    for r in report.runs:
        if r.test != "refresh" or r.existing_rows or not r.server_cpu_ms_per_req:
            continue
        cpu = r.server_cpu_ms_per_req + (r.db_cpu_ms_per_req or 0)
        lines.append(f"{r.server}/{r.backend} refresh c={r.concurrency}: p90 {_ms(r.p90_ms)} "
                     f"ms, max {_ms(r.max_ms)} ms; CPU-bound ceiling on {cores} idle cores "
                     f"with a free client ~{cores * 1000 / cpu:.0f} req/s (server + db "
                     f"{cpu:.2f} ms/req); wrk used {r.wrk_cpu_percent or 0:.0f}% of a core")
    return lines


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True, check=False)
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wrk": (wrk.stdout + wrk.stderr).strip().splitlines()[0][:60] if wrk.stdout
        or wrk.stderr else None,
    }


def print_report(report: Report, args: argparse.Namespace, started: dt.datetime) -> None:
    info = report.info
    m = info["machine"]
    print()
    print(f"refresh benchmark: authserver vs node-oidc-provider, {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {m['cpu_count']} cores (os.cpu_count()), load average "
          f"{m['loadavg_at_start']} at start, {m['loadavg_at_end']} at end")
    print(f"load generator: {m['wrk']}, {args.wrk_threads} threads, one keep-alive "
          f"connection per chain (each request presents the token the previous answer "
          f"returned), warm-up {args.warmup:g} s, {args.duration:g} s measured per run")
    if "authserver" in info:
        a = info["authserver"]
        shape = (f"{a['workers']} workers x {a['threads']} threads"
                 if a["workers"] else "serve's defaults")
        print(f"authserver: authserver serve ({shape}; {a['processes']} processes), access "
              f"tokens {','.join(a['algorithms'])}, reuse grace {args.reuse_grace} s")
    if "peer" in info:
        p = info["peer"]
        print(f"peer: oidc-provider {p['oidc_provider']} on node {p['node']}, Map adapter, "
              "RS256 JWT access tokens, rotateRefreshToken")
    print()
    print("\n".join(comparison_table(report, args)))
    if args.scale_concurrency or args.existing_rows:
        print()
        print("refresh grant by concurrency and existing refresh-token rows")
        print("\n".join(scale_table(report)))
    if report.insert_seconds:
        print("bulk inserts (s): " + ", ".join(f"{k}: {v}" for k, v in
                                                report.insert_seconds.items()))
    for line in notes(report):
        print(line)
    for line in report.skipped:
        print(f"skipped: {line}")
    for line in report.failed:
        print(f"FAILED: {line}")


# -- main --------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text}") \
            from exc
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="authserver vs node-oidc-provider 9 under wrk: refresh chains, JWKS, "
                    "client_credentials.")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated: sqlite,postgresql (default: both; PostgreSQL "
                             "is skipped when it cannot be reached)")
    parser.add_argument("--tests", default=",".join(TESTS),
                        help="comma-separated: refresh,jwks,client_credentials (default: all)")
    parser.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure node-oidc-provider 9 (default: yes)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="wrk connections, one refresh chain each (default 16)")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of load before each measured run (default 2)")
    parser.add_argument("--scale-concurrency", type=_int_list, default=[],
                        help="also measure the refresh grant at these concurrencies, e.g. "
                             "1,16,64 (on every server)")
    parser.add_argument("--existing-rows", type=_int_list, default=[],
                        help="then, per backend, bulk-insert refresh tokens up to these totals "
                             "(e.g. 100000,1000000), ANALYZE, and measure the refresh grant "
                             "again at --scale-concurrency (or --concurrency)")
    parser.add_argument("--wrk-threads", type=int, default=2,
                        help="wrk threads (default 2; fewer when the connections would not "
                             "split evenly, e.g. 1 at concurrency 1)")
    parser.add_argument("--workers", type=int, default=None,
                        help="authserver serve --workers (default: serve's own default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="authserver serve --threads (default: serve's own default)")
    parser.add_argument("--reuse-grace", type=int, default=10,
                        help="the client's reuse grace in seconds (default 10, the server "
                             "default, so each rotation also seals the retry response; "
                             "0 turns that off)")
    parser.add_argument("--alg", choices=("RS256", "ES256", "EdDSA"), default="RS256",
                        help="authserver's signing algorithm (default RS256, the peer's)")
    parser.add_argument("--spares", type=int, default=None,
                        help="spare chains per run beyond one per connection, to continue "
                             "after an error (default: a quarter of the concurrency, at "
                             "least 2)")
    parser.add_argument("--sign-in-parallel", type=int, default=2,
                        help="concurrent password-grant sign-ins while preparing (default 2; "
                             "more trips SQLite's busy timeout: argon2 runs inside the write "
                             "transaction)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="wrk's per-request timeout in seconds; slower answers count as "
                             "errors (default 10)")
    parser.add_argument("--postgres-url", default=harness.DEFAULT_POSTGRES_URL,
                        help="PostgreSQL admin database; a benchmark database is created "
                             "and dropped next to it (default $AUTHSERVER_TEST_POSTGRES_URL "
                             "or postgresql://postgres@127.0.0.1:5432/test)")
    parser.add_argument("--save", action="store_true",
                        help="also write the results as JSON to benchmarks/results/")
    args = parser.parse_args(argv)
    args.backends = _choices(parser, "--backends", args.backends, BACKENDS)
    args.tests = _choices(parser, "--tests", args.tests, TESTS)
    args.existing_rows = sorted(set(args.existing_rows))
    checks = (
        (1 <= args.concurrency <= 1024, "--concurrency must be 1 to 1024"),
        (all(1 <= c <= 1024 for c in args.scale_concurrency),
         "--scale-concurrency values must be 1 to 1024"),
        (all(1 <= n <= 10_000_000 for n in args.existing_rows),
         "--existing-rows values must be 1 to 10000000"),
        (0 < args.duration <= 3600, "--duration must be more than 0 and at most 3600"),
        (0 <= args.warmup <= 600, "--warmup must be 0 to 600"),
        (1 <= args.wrk_threads <= 64, "--wrk-threads must be 1 to 64"),
        (args.workers is None or 1 <= args.workers <= 64, "--workers must be 1 to 64"),
        (args.threads is None or 1 <= args.threads <= 64, "--threads must be 1 to 64"),
        (0 <= args.reuse_grace <= 300, "--reuse-grace must be 0 to 300"),
        (args.spares is None or 0 <= args.spares <= 4096, "--spares must be 0 to 4096"),
        (1 <= args.sign_in_parallel <= 64, "--sign-in-parallel must be 1 to 64"),
        (0 < args.timeout <= 300, "--timeout must be more than 0 and at most 300"),
        (args.existing_rows == [] or "refresh" in args.tests,
         "--existing-rows measures the refresh grant: keep refresh in --tests"),
    )
    for ok, message in checks:
        if not ok:
            parser.error(message)
    return args


def _choices(parser: argparse.ArgumentParser, option: str, text: str,
             allowed: Sequence[str]) -> list[str]:
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    if not chosen or any(part not in allowed for part in chosen):
        parser.error(f"{option}: choose from {', '.join(allowed)}")
    return list(dict.fromkeys(chosen))


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("benchmark: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    harness.exit_on_sigterm()
    report = Report()
    report.info["machine"] = machine()
    started = dt.datetime.now(dt.UTC)
    with contextlib.ExitStack() as stack:  # every server lives until the end
        targets: list[Target] = []
        if args.peer:
            try:
                targets.append(start_peer(args, report, stack))
            except Exception as exc:  # reported; authserver is still measured
                report.failed.append(f"{PEER}: {_first_line(exc)}")
                log(f"[peer] failed: {exc}")
        else:
            report.skipped.append(f"{PEER}: --no-peer")
        backends: list[AuthserverBackend] = []
        for name in args.backends:
            reason = (harness.postgres_unreachable(args.postgres_url)
                      if name == "postgresql" else None)
            if reason:
                report.skipped.append(f"{AUTHSERVER}/postgresql: {reason}")
                continue
            try:
                backend = AuthserverBackend(name, args, report, stack)
                backends.append(backend)
                targets.append(backend.start(refresh_concurrencies(args), args.tests, rows=0))
            except Exception as exc:  # reported; the other servers are still measured
                report.failed.append(f"{AUTHSERVER}/{name}: {_first_line(exc)}")
                log(f"[{AUTHSERVER}/{name}] failed: {exc}")

        # Every server is up: each test (and concurrency) runs on all of them in turn, so
        # the ratios compare runs minutes apart at most on a machine whose load drifts.
        for test in args.tests:
            for concurrency in (refresh_concurrencies(args) if test == "refresh"
                                else [args.concurrency]):
                for target in targets:
                    measure_or_break(target, test, concurrency, args, report)

        for backend in backends:
            if backend.target is None or backend.target.broken:
                continue
            for rows in args.existing_rows:
                try:
                    backend.insert(rows)
                    concurrencies = args.scale_concurrency or [args.concurrency]
                    target = backend.start(concurrencies, ["refresh"], rows)
                except Exception as exc:  # reported; the next backend still runs
                    report.failed.append(f"{AUTHSERVER}/{backend.backend} +{rows:,} rows: "
                                         f"{_first_line(exc)}")
                    log(f"[{AUTHSERVER}/{backend.backend}] failed: {exc}")
                    break
                for concurrency in concurrencies:
                    measure_or_break(target, "refresh", concurrency, args, report, rows)
                backend.stop()
                if target.broken:
                    break
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    report.info["machine"]["loadavg_at_end"] = [round(x, 2) for x in load_end] if load_end \
        else None
    print_report(report, args, started)
    if args.save:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"refresh-{started:%Y%m%dT%H%M%SZ}.json"
        options = {k: v for k, v in vars(args).items() if k != "save"}
        path.write_text(json.dumps({"started": started.isoformat(), "info": report.info,
                                    "options": options, "skipped": report.skipped,
                                    "failed": report.failed,
                                    "bulk_insert_seconds": report.insert_seconds,
                                    "runs": [asdict(r) for r in report.runs]}, indent=2) + "\n")
        print(f"results written to {path.relative_to(harness.REPO)}")
    errors = sum(r.errors for r in report.runs)
    if errors:
        print(f"{errors} requests failed: see the errors column; the run is not clean.")
    return 1 if report.failed or errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: servers and wrk stopped, benchmark databases dropped",
              file=sys.stderr)
        sys.exit(130)
