"""Where a refresh grant spends its time: cProfile of the token endpoint, in process.

Sets up a database and a key through the CLI exactly as ``refresh.py`` does, then builds
the app in this process and rotates one refresh-token chain ``--requests`` times through
Flask's test client (the whole WSGI app: routing, Authlib, the domain, SQL, signing; not
gunicorn's HTTP parsing). Prints the wall time and SQL statements per refresh, then the
top functions by cumulative and by own time.

    .venv/bin/python benchmarks/profile_refresh.py                       # SQLite, 2000 refreshes
    .venv/bin/python benchmarks/profile_refresh.py --backend postgresql --reuse-grace 0
    .venv/bin/python benchmarks/profile_refresh.py --pstats /tmp/refresh.pstats   # for snakeviz
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import os
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="cProfile the refresh grant in process.")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--requests", type=int, default=2000,
                        help="profiled refreshes (default 2000)")
    parser.add_argument("--warmup", type=int, default=100,
                        help="refreshes before profiling starts (default 100)")
    parser.add_argument("--reuse-grace", type=int, default=10,
                        help="the client's reuse grace (default 10; 0 skips the sealed retry)")
    parser.add_argument("--timer", choices=("cpu", "wall"), default="cpu",
                        help="profile CPU time (default) or wall time (shows waiting on "
                             "PostgreSQL)")
    parser.add_argument("--limit", type=int, default=30, help="rows per table (default 30)")
    parser.add_argument("--pstats", type=Path, default=None,
                        help="also write the raw profile here")
    parser.add_argument("--postgres-url", default=harness.DEFAULT_POSTGRES_URL)
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 1_000_000:
        parser.error("--requests must be 1 to 1000000")
    if not 0 <= args.warmup <= 100_000:
        parser.error("--warmup must be 0 to 100000")
    if not 0 <= args.reuse_grace <= 300:
        parser.error("--reuse-grace must be 0 to 300")
    return args


class Chain:
    """One refresh-token chain through the Flask test client."""

    def __init__(self, client: Any, client_id: str, token: str) -> None:
        self.client = client
        self.client_id = client_id
        self.token = token

    def refresh(self) -> None:
        response = self.client.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": self.token,
            "client_id": self.client_id}, headers={"User-Agent": harness.USER_AGENT})
        if response.status_code != 200:
            raise RuntimeError(f"refresh failed: HTTP {response.status_code} "
                               f"{response.get_json()}")
        self.token = response.get_json()["refresh_token"]


_open_files: list[Any] = []


def stack_file(path: Path) -> Any:
    """A file kept open for the process's life (the libpq trace target)."""
    handle = open(path, "w")  # noqa: SIM115 - closed at exit by main()
    _open_files.append(handle)
    return handle


def _round_trips(trace_path: Path, start: int) -> int | None:
    """Frontend Sync and simple Query messages in the libpq trace after ``start``."""
    if not trace_path.exists():
        return None
    for handle in _open_files:
        handle.flush()
    with open(trace_path) as trace:
        trace.seek(start)
        return sum(1 for line in trace
                   if "\tF\t" in line and ("\tSync" in line or "\tQuery\t" in line))


def profile(args: argparse.Namespace, database_url: str, workdir: Path) -> None:
    env = harness.prepare(workdir, database_url, issuer="http://127.0.0.1:8000")
    client_id = harness.register(env, workdir, args.reuse_grace)
    os.environ.update({k: v for k, v in env.items() if k.startswith("AUTHSERVER_")})

    from sqlalchemy import event

    from authserver.app import create_app
    from authserver.extensions import db

    app = create_app()
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    trace_path = workdir / "libpq-trace.txt"
    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", count)
        if args.backend == "postgresql":
            # libpq's protocol trace counts every round trip, including the ones SQLAlchemy
            # never sees (psycopg's BEGIN, the pool's pre-ping).
            db.engine.dispose()
            trace = stack_file(trace_path)

            @event.listens_for(db.engine, "connect")
            def _trace(dbapi_connection: Any, _record: Any) -> None:
                dbapi_connection.pgconn.trace(trace.fileno())

    client = app.test_client()
    first = client.post("/oauth/token", data={
        "grant_type": "password", "username": harness.USERNAME, "password": harness.PASSWORD,
        "client_id": client_id, "scope": "read write"},
        headers={"User-Agent": harness.USER_AGENT})
    if first.status_code != 200:
        raise RuntimeError(f"sign-in failed: HTTP {first.status_code} {first.get_json()}")
    chain = Chain(client, client_id, first.get_json()["refresh_token"])
    for _ in range(args.warmup):
        chain.refresh()

    statements = 0
    trace_start = trace_path.stat().st_size if trace_path.exists() else 0
    # No profiler first: the real cost.
    plain_cpu = time.process_time()
    for _ in range(args.requests):
        chain.refresh()
    plain_cpu = time.process_time() - plain_cpu
    round_trips = _round_trips(trace_path, trace_start)
    timer = time.process_time if args.timer == "cpu" else time.perf_counter
    profiler = cProfile.Profile(timer)
    cpu, wall = time.process_time(), time.perf_counter()
    profiler.enable()
    for _ in range(args.requests):
        chain.refresh()
    profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    with app.app_context():
        db.engine.dispose()

    print(f"{args.backend}, reuse grace {args.reuse_grace} s, {args.requests} refreshes "
          f"in process (Flask test client, no gunicorn), load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")
    print(f"  without profiler: {plain_cpu / args.requests * 1000:.3f} ms CPU per refresh "
          f"(~{args.requests / plain_cpu:.0f} refreshes/s per core)")
    print(f"  with profiler:    {cpu / args.requests * 1000:.3f} ms CPU, "
          f"{wall / args.requests * 1000:.3f} ms wall per refresh")
    print(f"  SQL statements per refresh (as SQLAlchemy executes them): "
          f"{statements / (2 * args.requests):.2f}")
    if round_trips is not None:
        print(f"  PostgreSQL round trips per refresh (libpq trace, incl. BEGIN/COMMIT and "
              f"pool pre-ping): {round_trips / args.requests:.2f}")
    stats = pstats.Stats(profiler, stream=io.StringIO())
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        stats.stream = out  # type: ignore[attr-defined]
        stats.sort_stats(key).print_stats(args.limit)
        print(f"\n== top {args.limit} by {key} ({args.timer} time, profiled run) ==")
        print(out.getvalue().split("\n\n", 1)[-1].rstrip())
    if args.pstats:
        profiler.dump_stats(args.pstats)
        print(f"\nraw profile written to {args.pstats}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    harness.exit_on_sigterm()
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(harness.workdir("profile"))
        if args.backend == "sqlite":
            url = f"sqlite:///{workdir / 'authserver.sqlite3'}"
        else:
            reason = harness.postgres_unreachable(args.postgres_url)
            if reason:
                print(reason, file=sys.stderr)
                return 1
            url = stack.enter_context(harness.postgres_database(args.postgres_url, "profile"))
        try:
            profile(args, url, workdir)
        finally:
            for handle in _open_files:
                handle.close()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
