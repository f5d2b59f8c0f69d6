"""A real ``authserver serve`` process, started exactly as docs/operators.md tells an operator."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.databases import backend_database
from tests.support.oauth import PASSWORD

AUTHSERVER = str(Path(sys.executable).with_name("authserver"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]
    log_path: Path | None = None

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def log(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def worker_pids(self) -> list[int]:
        """The worker processes: the children of the ``authserver serve`` process."""
        pids: list[int] = []
        for children in Path(f"/proc/{self.process.pid}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(pid) for pid in children.read_text().split()]
        return sorted(pids)

    def cli(self, *args: str, input: str | None = None) -> str:
        result = subprocess.run([AUTHSERVER, *args], env=self.env, input=input,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def create_client(self, *args: str) -> dict:
        return json.loads(self.cli("clients", "create", *args, "--json"))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(workdir: Path, database_url: str, workers: int = 2, *,
          serve_args: tuple[str, ...] = (), extra_env: dict[str, str] | None = None,
          log_name: str = "server.log", prepare: bool = True) -> LiveServer:
    """Migrate, ensure a key and ``authserver serve``; returns once the JWKS answers.

    ``serve_args`` are more ``serve`` options; ``extra_env`` is set for ``serve`` only;
    ``prepare=False`` skips the migration and key (another server already did them).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AUTHSERVER_ISSUER": url,
        "AUTHSERVER_DATABASE_URL": database_url,
        "AUTHSERVER_KEYS_DIR": str(workdir / "keys"),
        "AUTHSERVER_SECRET_KEY": "live-test-secret-key-0123456789abcdef",
    }
    for step in (["db", "upgrade"], ["keys", "ensure"]) if prepare else ():
        subprocess.run([AUTHSERVER, *step], env=env, check=True, capture_output=True,
                       timeout=120)
    log_path = workdir / log_name
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [AUTHSERVER, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), *serve_args],
        env={**env, **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = LiveServer(url, env, process, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(log_path.read_text())
        try:
            if requests.get(f"{url}/.well-known/jwks.json", timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            # Refused before serve listens (it binds after its checks); reset or a
            # timeout while the workers still build their apps.
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("server did not start: " + log_path.read_text())


@contextlib.contextmanager
def running(workdir: Path, database_url: str | None = None, *,
            users: Sequence[Sequence[str]] = (), **options: Any) -> Iterator[LiveServer]:
    """``start`` a server (on a SQLite file in ``workdir`` unless ``database_url``), create
    ``users`` (each: its ``users create`` arguments; the tests' password) and stop it at the end."""
    srv = start(workdir, database_url or f"sqlite:///{workdir / 'authserver.sqlite3'}", **options)
    try:
        for user in users:
            srv.cli("users", "create", *user, "--password-stdin", input=PASSWORD + "\n")
        yield srv
    finally:
        srv.stop()


def alice_on_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                     purpose: str) -> Iterator[LiveServer]:
    """A real ``authserver serve`` on the fixture's backend with the user ``alice``, for a
    module-scoped fixture parametrised with ``"sqlite"`` / ``"postgresql"``."""
    workdir = tmp_path_factory.mktemp(purpose)
    with running(workdir, backend_database(request, workdir, purpose), users=[("alice",)]) as srv:
        yield srv
