"""Metrics under ``authserver serve --workers 2`` (docs/design.md, "Health and metrics"):
every worker's counts add up in one scrape, whichever worker or the loopback metrics port
answers it; the shared directory is private and goes with the server; a busy metrics port
stops ``serve`` at once with one line."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import live_server

TOKEN = "live-metrics-token-0123456789-abcdefghij"
REQUESTS = 24


def _healthz_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "authserver_request_duration_seconds_count" \
                    and sample.labels == {"endpoint": "health.healthz"}:
                return sample.value
    return 0.0


def test_two_workers_count_into_one_scrape_and_the_loopback_port(tmp_path: Path):
    metrics_port = live_server.free_port()
    env = {"AUTHSERVER_METRICS_TOKEN": TOKEN, "AUTHSERVER_METRICS_PORT": str(metrics_port)}
    with live_server.running(tmp_path, extra_env=env) as server:
        assert len(server.worker_pids()) == 2
        # The workers' counts are files they map from serve's private directory.
        maps = Path(f"/proc/{server.worker_pids()[0]}/maps").read_text()
        directory = next(os.path.dirname(line.split()[-1]) for line in maps.splitlines()
                         if "/authserver-metrics-" in line)
        assert os.stat(directory).st_mode & 0o777 == 0o700

        for _ in range(REQUESTS):  # a new connection each: the kernel spreads them
            assert requests.get(f"{server.url}/healthz", timeout=5,
                                headers={"Connection": "close"}).status_code == 200
        assert requests.get(f"{server.url}/metrics", timeout=5).status_code == 401
        for _ in range(4):  # whichever worker answers, it shows both workers' counts
            scraped = requests.get(f"{server.url}/metrics", timeout=5,
                                   headers={"Authorization": f"Bearer {TOKEN}",
                                            "Connection": "close"})
            assert scraped.status_code == 200
            assert _healthz_count(scraped.text) == REQUESTS
        loopback = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert loopback.status_code == 200 and _healthz_count(loopback.text) == REQUESTS
        assert "authserver_active_key_age_seconds" in loopback.text

        # A second server whose metrics port is taken stops at once, with one line.
        port = live_server.free_port()
        second = subprocess.run(
            [live_server.AUTHSERVER, "serve", "--port", str(port), "--workers", "1"],
            env={**server.env, **env, "AUTHSERVER_ISSUER": f"http://127.0.0.1:{port}"},
            capture_output=True, text=True, timeout=30)
        assert second.returncode != 0
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and f"127.0.0.1:{metrics_port}" in lines[0], second.stderr
        assert "serving" not in second.stderr
    assert not os.path.exists(directory)  # the server took its directory with it
