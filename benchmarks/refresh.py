"""Refresh-grant throughput: requests/s and p50/p99 latency of ``POST /oauth/token``.

For each backend (SQLite, and PostgreSQL when reachable) this starts ``authserver serve``
(gunicorn) through the CLI in a temporary directory, creates a user and a public
first-party client, and signs in once per token chain with the password grant *before*
the clock starts (argon2 is deliberately slow). Then ``--concurrency`` client threads
each rotate their own chain for ``--duration`` seconds: every refresh presents the token
the previous one returned, exactly as a real client does. A non-200 answer is an error,
counted and shown apart, never as throughput; the chain then continues from a spare token.

It also reports the CPU the server (and, on PostgreSQL, the database backends) spent per
refresh, and the CPU the load generator itself used, because on a 2-core machine the
client competes with the server: ``server CPU ms/req`` predicts the ceiling
(``cores * 1000 / ms``) better than req/s does on a busy machine.

    .venv/bin/python benchmarks/refresh.py                    # 16 clients, 20 s, both backends
    .venv/bin/python benchmarks/refresh.py --duration 3 --backends sqlite
    .venv/bin/python benchmarks/refresh.py --workers 2 --threads 4 --save
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.client
import json
import multiprocessing
import os
import platform
import queue
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness

BACKENDS = ("sqlite", "postgresql")
TOKEN_PATH = "/oauth/token"
USER_AGENT = harness.USER_AGENT
MAX_REQUESTS_PER_CHAIN = 10_000_000  # a hard bound on every load loop, besides the clock
RESULTS_DIR = Path(__file__).resolve().parent / "results"


# -- the load generator ------------------------------------------------------------------


@dataclass(frozen=True)
class ClientPlan:
    """What one load-generator process does (picklable: it may run in a child process)."""

    host: str
    port: int
    client_id: str
    chains: list[str]  # one initial refresh token per concurrent chain
    spares: list[str]  # fresh tokens for a chain whose request failed
    start_at: float  # time.time() when requests begin (warm-up)
    measure_from: float  # requests started before this are warm-up, not counted
    stop_at: float  # no request starts after this
    timeout: float


@dataclass
class ClientResult:
    latencies: list[float] = field(default_factory=list)  # seconds, successful, measured
    errors: Counter[str] = field(default_factory=Counter)  # measured window
    warmup_requests: int = 0
    warmup_errors: Counter[str] = field(default_factory=Counter)
    chains_ended: int = 0  # chains that ran out of spare tokens
    cpu_user: float = 0.0  # this process's CPU during the measured window
    cpu_system: float = 0.0

    def merge(self, other: ClientResult) -> None:
        self.latencies.extend(other.latencies)
        self.errors.update(other.errors)
        self.warmup_requests += other.warmup_requests
        self.warmup_errors.update(other.warmup_errors)
        self.chains_ended += other.chains_ended
        self.cpu_user += other.cpu_user
        self.cpu_system += other.cpu_system


def _error_label(status: int, body: bytes) -> str:
    try:
        code = json.loads(body).get("error", "")
    except (ValueError, AttributeError):
        code = ""
    return f"HTTP {status} {code}".strip()


def _sleep_until(wall_time: float) -> None:
    delay = wall_time - time.time()
    if delay > 0:
        time.sleep(delay)


def _chain(plan: ClientPlan, token: str, spares: queue.SimpleQueue[str], lock: threading.Lock,
           result: ClientResult) -> None:
    """Rotate one refresh-token chain until ``stop_at`` (keep-alive when the server allows)."""
    conn = harness.LeanHTTP(plan.host, plan.port, timeout=plan.timeout)
    prefix = urlencode({"grant_type": "refresh_token", "client_id": plan.client_id})
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": USER_AGENT,
               "Accept": "application/json"}
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    warmup_errors: Counter[str] = Counter()
    warmup = 0
    ended = False
    _sleep_until(plan.start_at)
    try:
        for _ in range(MAX_REQUESTS_PER_CHAIN):
            if time.time() >= plan.stop_at:
                break
            measured = time.time() >= plan.measure_from
            body = f"{prefix}&{urlencode({'refresh_token': token})}".encode()
            started = time.perf_counter()
            label = None
            try:
                status, data = conn.request("POST", TOKEN_PATH, body, headers)
                elapsed = time.perf_counter() - started
                if status == 200:
                    token = json.loads(data)["refresh_token"]
                else:
                    label = _error_label(status, data)
            except (OSError, harness.ProtocolError) as exc:
                label = f"{type(exc).__name__}: {exc}"[:100]
            except (ValueError, KeyError, TypeError):
                label = "HTTP 200 without a refresh token"
            if label is None:
                if measured:
                    latencies.append(elapsed)
                else:
                    warmup += 1
                continue
            (errors if measured else warmup_errors)[label] += 1
            if not measured:
                warmup += 1
            try:  # the failed token's state is unknown: never present it again
                token = spares.get_nowait()
            except queue.Empty:
                ended = True
                break
    finally:
        conn.close()
        with lock:
            result.latencies.extend(latencies)
            result.errors.update(errors)
            result.warmup_errors.update(warmup_errors)
            result.warmup_requests += warmup
            result.chains_ended += int(ended)


def run_client(plan: ClientPlan, out: Any = None) -> ClientResult:
    """One load-generator process: a thread per chain; returns (or puts on ``out``) results."""
    result = ClientResult()
    lock = threading.Lock()
    spares: queue.SimpleQueue[str] = queue.SimpleQueue()
    for token in plan.spares:
        spares.put(token)
    threads = [threading.Thread(target=_chain, args=(plan, token, spares, lock, result),
                                daemon=True, name=f"chain-{i}")
               for i, token in enumerate(plan.chains)]
    for thread in threads:
        thread.start()
    _sleep_until(plan.measure_from)
    before = os.times()
    _sleep_until(plan.stop_at)
    after = os.times()
    result.cpu_user, result.cpu_system = after.user - before.user, after.system - before.system
    for thread in threads:
        thread.join(timeout=plan.timeout + 5)
    if out is not None:
        out.put(result)
    return result


def _child_main(plan: ClientPlan, out: Any) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        run_client(plan, out)


# -- set-up ------------------------------------------------------------------------------


def _post_form(host: str, port: int, form: dict[str, str], timeout: float) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", TOKEN_PATH, urlencode(form),
                     {"Content-Type": "application/x-www-form-urlencoded",
                      "User-Agent": USER_AGENT})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        body = json.loads(data)
    except ValueError:
        body = {}
    return response.status, body if isinstance(body, dict) else {}


def sign_in(server: harness.Server, client_id: str, count: int, parallel: int) -> list[str]:
    """``count`` fresh refresh tokens, one password-grant sign-in (family) each."""

    def one(_: int) -> str:
        status, body = _post_form(server.host, server.port, {
            "grant_type": "password", "username": harness.USERNAME, "password": harness.PASSWORD,
            "client_id": client_id, "scope": "read write"}, timeout=60)
        if status != 200 or "refresh_token" not in body:
            raise RuntimeError(f"sign-in failed: HTTP {status} {body.get('error', '')}")
        return str(body["refresh_token"])

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        return list(pool.map(one, range(count)))


# -- one backend -------------------------------------------------------------------------


@dataclass
class BackendResult:
    backend: str
    workers: int | None = None
    threads: int = 1
    worker_class: str = "sync"
    alg: str = ""
    concurrency: int = 0
    duration: float = 0.0
    requests: int = 0  # successful refreshes in the measured window
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)
    warmup_requests: int = 0
    warmup_errors: dict[str, int] = field(default_factory=dict)
    chains_ended: int = 0
    rps: float = 0.0
    p50_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    server_cpu_ms_per_req: float | None = None
    database_cpu_ms_per_req: float | None = None
    client_cpu_percent: float = 0.0  # of one core
    client_cpu_ms_per_req: float | None = None
    client_user_share: float | None = None  # user / (user + system) CPU of the client
    client_processes: int = 1
    skipped: str | None = None
    failed: str | None = None


def _database_pids(backend: str, admin_url: str, database_url: str) -> list[int]:
    if backend != "postgresql":
        return []
    try:
        return harness.postgres_backend_pids(admin_url, urlsplit(database_url).path.lstrip("/"))
    except Exception:  # CPU accounting is best effort; the benchmark itself goes on
        return []


def run_backend(backend: str, args: argparse.Namespace) -> BackendResult:
    result = BackendResult(backend, concurrency=args.concurrency, duration=args.duration,
                           client_processes=args.client_processes)
    if backend == "postgresql":
        reason = harness.postgres_unreachable(args.postgres_url)
        if reason:
            result.skipped = reason
            return result
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(harness.workdir(f"refresh-{backend}"))
        if backend == "sqlite":
            database_url = f"sqlite:///{workdir / 'authserver.sqlite3'}"
        else:
            database_url = stack.enter_context(
                harness.postgres_database(args.postgres_url, "refresh"))
        print(f"[{backend}] starting authserver serve ...", file=sys.stderr, flush=True)
        server = stack.enter_context(harness.server(workdir, database_url, workers=args.workers,
                                                    threads=args.threads, alg=args.alg))
        result.alg = ",".join(server.algorithms)
        result.workers = server.workers
        result.threads = server.threads
        result.worker_class = "gthread"  # authserver serve never uses sync workers
        try:
            client_id = harness.register(server.env, workdir, args.reuse_grace)
            spares = args.spares if args.spares is not None else max(2, args.concurrency // 4)
            print(f"[{backend}] {server.workers} workers up (gunicorn pid {server.process.pid}); "
                  f"signing in {args.concurrency} "
                  f"chains + {spares} spares (password grant, argon2) ...",
                  file=sys.stderr, flush=True)
            tokens = sign_in(server, client_id, args.concurrency + spares,
                             parallel=args.sign_in_parallel)
            _measure(backend, args, server, client_id, tokens, result, database_url)
        except Exception:
            print(f"[{backend}] server log (last lines):\n{server.log_tail(30)}",
                  file=sys.stderr, flush=True)
            raise
    return result


def _measure(backend: str, args: argparse.Namespace, server: harness.Server, client_id: str,
             tokens: list[str], result: BackendResult, database_url: str) -> None:
    n = args.client_processes
    chains, spares = tokens[: args.concurrency], tokens[args.concurrency:]
    start_at = time.time() + (1.5 if n > 1 else 0.2)  # child processes need a moment to start
    measure_from = start_at + args.warmup
    stop_at = measure_from + args.duration
    plans = [ClientPlan(server.host, server.port, client_id, chains[i::n], spares[i::n],
                        start_at, measure_from, stop_at, args.timeout) for i in range(n)]
    print(f"[{backend}] warm-up {args.warmup:g} s, then measuring {args.duration:g} s at "
          f"concurrency {args.concurrency} ...", file=sys.stderr, flush=True)
    merged = ClientResult()
    processes: list[Any] = []
    try:
        if n == 1:
            holder: list[ClientResult] = []
            runner = threading.Thread(target=lambda: holder.append(run_client(plans[0])),
                                      daemon=True, name="client")
            runner.start()
        else:
            ctx = multiprocessing.get_context("spawn")
            out = ctx.Queue()
            processes = [ctx.Process(target=_child_main, args=(plan, out), daemon=True)
                         for plan in plans]
            for process in processes:
                process.start()

        server_pids = server.pids()
        _sleep_until(measure_from)
        db_pids = _database_pids(backend, args.postgres_url, database_url)
        server_before = harness.cpu_snapshot(server_pids)
        db_before = harness.cpu_snapshot(db_pids)
        _sleep_until(stop_at)
        server_after = harness.cpu_snapshot(server.pids())
        db_after = harness.cpu_snapshot(
            _database_pids(backend, args.postgres_url, database_url) or db_pids)
        collect_timeout = args.timeout + 30

        if n == 1:
            runner.join(timeout=collect_timeout)
            if not holder:
                raise RuntimeError("the load generator did not finish")
            merged = holder[0]
        else:
            for _ in processes:
                merged.merge(out.get(timeout=collect_timeout))
            for process in processes:
                process.join(timeout=10)
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)

    latencies = sorted(merged.latencies)
    result.requests = len(latencies)
    result.errors = sum(merged.errors.values())
    result.error_kinds = dict(merged.errors)
    result.warmup_requests = merged.warmup_requests
    result.warmup_errors = dict(merged.warmup_errors)
    result.chains_ended = merged.chains_ended
    result.rps = result.requests / args.duration

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    result.p50_ms = ms(harness.percentile(latencies, 50))
    result.p90_ms = ms(harness.percentile(latencies, 90))
    result.p99_ms = ms(harness.percentile(latencies, 99))
    result.max_ms = ms(latencies[-1] if latencies else None)
    handled = result.requests + result.errors
    if handled and server_after:
        result.server_cpu_ms_per_req = (
            harness.cpu_used(server_before, server_after) * 1000 / handled)
    if handled and db_after:
        result.database_cpu_ms_per_req = harness.cpu_used(db_before, db_after) * 1000 / handled
    client_cpu = merged.cpu_user + merged.cpu_system
    result.client_cpu_percent = client_cpu / args.duration * 100
    if handled:
        result.client_cpu_ms_per_req = client_cpu * 1000 / handled
    if client_cpu:
        result.client_user_share = merged.cpu_user / client_cpu


# -- reporting ---------------------------------------------------------------------------

COLUMNS = (
    ("backend", "backend"), ("workers", "workers"), ("concurrency", "conc."),
    ("duration", "duration s"), ("requests", "requests"), ("errors", "errors"),
    ("rps", "req/s"), ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"),
    ("server_cpu_ms_per_req", "server CPU ms/req"), ("database_cpu_ms_per_req", "db CPU ms/req"),
    ("client_cpu_percent", "client CPU %"),
)


def _cell(result: BackendResult, key: str) -> str:
    if key == "workers":
        if result.workers is None:
            return "-"
        return f"{result.workers} x {result.threads} ({result.worker_class})"
    value = getattr(result, key)
    if value is None:
        return "-"
    if key in ("rps", "client_cpu_percent"):
        return f"{value:.0f}"
    if key == "duration":
        return f"{value:g}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(results: Sequence[BackendResult]) -> str:
    ran = [r for r in results if r.skipped is None and r.failed is None]
    rows = [[title for _, title in COLUMNS]] + [[_cell(r, key) for key, _ in COLUMNS]
                                                 for r in ran]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(w) if i == 0 else cell.rjust(w)
                 for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    for r in results:
        if r.skipped:
            lines.append(f"{r.backend}: skipped ({r.skipped})")
        if r.failed:
            lines.append(f"{r.backend}: FAILED ({r.failed})")
    return "\n".join(lines)


def notes(results: Sequence[BackendResult]) -> list[str]:
    lines = []
    for r in results:
        if r.skipped or r.failed:
            continue
        if r.errors:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r.error_kinds.items()))
            lines.append(f"{r.backend}: {r.errors} errors ({kinds})")
        if r.warmup_errors:
            kinds = ", ".join(f"{k}: {v}" for k, v in sorted(r.warmup_errors.items()))
            lines.append(f"{r.backend}: errors during warm-up ({kinds})")
        if r.chains_ended:
            lines.append(f"{r.backend}: {r.chains_ended} chains ran out of spare tokens and "
                         "stopped early (lower concurrency than asked)")
        if r.server_cpu_ms_per_req:
            ceiling = (os.cpu_count() or 1) * 1000 / (r.server_cpu_ms_per_req
                                                      + (r.database_cpu_ms_per_req or 0))
            lines.append(f"{r.backend}: p90 {r.p90_ms:.2f} ms, max {r.max_ms:.2f} ms; "
                         f"CPU-bound ceiling on {os.cpu_count()} idle cores with a free "
                         f"client ~{ceiling:.0f} req/s")
        if r.client_cpu_ms_per_req is not None and r.client_user_share is not None:
            lines.append(f"{r.backend}: load generator used {r.client_cpu_ms_per_req:.2f} ms "
                         f"CPU per request ({r.client_user_share:.0%} user, rest kernel: "
                         "on loopback the sender's kernel time includes TCP work for both "
                         "ends)")
    return lines


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load] if load else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Refresh-grant throughput and latency of authserver under gunicorn.")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated: sqlite,postgresql (default: both; PostgreSQL "
                             "is skipped when it cannot be reached)")
    parser.add_argument("--concurrency", type=int, default=16,
                        help="concurrent clients, one refresh-token chain each (default 16)")
    parser.add_argument("--duration", type=float, default=20.0,
                        help="measured seconds per backend (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of load before measuring starts (default 2)")
    parser.add_argument("--workers", type=int, default=None,
                        help="gunicorn workers (default: authserver serve's own default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads per gthread worker (default: serve's, 4)")
    parser.add_argument("--client-processes", type=int, default=1,
                        help="load-generator processes sharing the chains (default 1)")
    parser.add_argument("--reuse-grace", type=int, default=10,
                        help="the client's reuse grace in seconds (default 10, the server "
                             "default, so each rotation also seals the retry response; "
                             "0 turns that off)")
    parser.add_argument("--alg", choices=("RS256", "ES256", "EdDSA"), default=None,
                        help="signing-key algorithm (keys ensure --alg; default: the server's)")
    parser.add_argument("--spares", type=int, default=None,
                        help="spare sign-ins to continue chains after an error "
                             "(default: a quarter of --concurrency, at least 2)")
    parser.add_argument("--sign-in-parallel", type=int, default=2,
                        help="concurrent password-grant sign-ins while preparing (default 2; "
                             "more trips SQLite's busy timeout: argon2 runs inside the write "
                             "transaction)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="per-request timeout in seconds (default 30)")
    parser.add_argument("--postgres-url", default=harness.DEFAULT_POSTGRES_URL,
                        help="PostgreSQL admin database; a benchmark database is created "
                             "and dropped next to it (default $AUTHSERVER_TEST_POSTGRES_URL "
                             "or postgresql://postgres@127.0.0.1:5432/test)")
    parser.add_argument("--save", action="store_true",
                        help="also write the results as JSON to benchmarks/results/")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        parser.error(f"--backends: choose from {', '.join(BACKENDS)}")
    args.backends = backends
    checks = (
        (1 <= args.concurrency <= 512, "--concurrency must be 1 to 512"),
        (0 < args.duration <= 3600, "--duration must be more than 0 and at most 3600"),
        (0 <= args.warmup <= 600, "--warmup must be 0 to 600"),
        (args.workers is None or 1 <= args.workers <= 64, "--workers must be 1 to 64"),
        (args.threads is None or 1 <= args.threads <= 64, "--threads must be 1 to 64"),
        (1 <= args.client_processes <= args.concurrency,
         "--client-processes must be 1 to --concurrency"),
        (0 <= args.reuse_grace <= 300, "--reuse-grace must be 0 to 300"),
        (args.spares is None or 0 <= args.spares <= 4096, "--spares must be 0 to 4096"),
        (1 <= args.sign_in_parallel <= 64, "--sign-in-parallel must be 1 to 64"),
        (0 < args.timeout <= 300, "--timeout must be more than 0 and at most 300"),
    )
    for ok, message in checks:
        if not ok:
            parser.error(message)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    harness.exit_on_sigterm()
    info = machine()
    results: list[BackendResult] = []
    started = dt.datetime.now(dt.UTC)
    for backend in args.backends:
        try:
            results.append(run_backend(backend, args))
        except Exception as exc:  # reported in the table; the next backend still runs
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            failed = BackendResult(backend, concurrency=args.concurrency,
                                   duration=args.duration, failed=message)
            results.append(failed)
            print(f"[{backend}] failed: {exc}", file=sys.stderr, flush=True)
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    info["loadavg_at_end"] = [round(x, 2) for x in load_end] if load_end else None

    print()
    print(f"authserver refresh-grant benchmark, {started:%Y-%m-%d %H:%M} UTC")
    print(f"machine: {info['cpu_count']} cores (os.cpu_count()), Python {info['python']}, "
          f"load average {info['loadavg_at_start']} at start, {info['loadavg_at_end']} at end")
    print(f"client: {args.concurrency} chains in {args.client_processes} process(es), "
          "lean HTTP/1.1 client (keep-alive when the server allows it), "
          f"warm-up {args.warmup:g} s, reuse grace {args.reuse_grace} s")
    ran = [r for r in results if r.workers is not None]
    if ran:
        print(f"server: authserver serve (gunicorn), {ran[0].workers} workers x "
              f"{ran[0].threads} threads ({ran[0].worker_class})"
              + (" [serve's default]" if args.workers is None and args.threads is None else "")
              + f", access tokens signed with {ran[0].alg or '?'}")
    print()
    print(table(results))
    for line in notes(results):
        print(line)
    if args.save:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"refresh-{started:%Y%m%dT%H%M%SZ}.json"
        options = {k: v for k, v in vars(args).items() if k != "save"}
        path.write_text(json.dumps({"started": started.isoformat(), "machine": info,
                                    "options": options,
                                    "results": [asdict(r) for r in results]}, indent=2) + "\n")
        print(f"results written to {path.relative_to(harness.REPO)}")
    failed = any(r.failed for r in results)
    errors = sum(r.errors for r in results)
    if errors:
        print(f"{errors} requests failed: see the errors column; the run is not clean.")
    return 1 if failed or errors else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: servers stopped, benchmark databases dropped", file=sys.stderr)
        sys.exit(130)
