"""A real ``authserver serve`` process, started exactly as the README tells an operator."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

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


def start(workdir: Path, database_url: str, workers: int = 2) -> LiveServer:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AUTHSERVER_ISSUER": url,
        "AUTHSERVER_DATABASE_URL": database_url,
        "AUTHSERVER_KEYS_DIR": str(workdir / "keys"),
        "AUTHSERVER_SECRET_KEY": "live-test-secret-key-0123456789abcdef",
    }
    for step in (["db", "upgrade"], ["keys", "ensure"]):
        subprocess.run([AUTHSERVER, *step], env=env, check=True, capture_output=True,
                       timeout=120)
    log = open(workdir / "server.log", "wb")  # noqa: SIM115 - lives as long as the server
    process = subprocess.Popen(
        [AUTHSERVER, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = LiveServer(url, env, process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError((workdir / "server.log").read_text())
        try:
            if requests.get(f"{url}/.well-known/jwks.json", timeout=5).status_code == 200:
                return server
        except requests.RequestException:
            # Refused before gunicorn listens; a timeout while its workers still boot.
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("server did not start: " + (workdir / "server.log").read_text())
