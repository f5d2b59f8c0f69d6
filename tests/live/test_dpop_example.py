"""The docs' DPoP example (docs/clients.md), verbatim, against a real server process."""

from __future__ import annotations

import subprocess
import sys

from tests.support import live_server
from tests.support.docs import doc_blocks


def _readme_example() -> str:
    (block,) = doc_blocks("dpop-example", "python")
    return block


def test_readme_dpop_example_runs_against_a_real_server(tmp_path, monkeypatch):
    """The docs' worked example, verbatim, against a server started as the docs say,
    with server nonces on, so the example's nonce retry is exercised as well."""
    monkeypatch.setenv("AUTHSERVER_DPOP_NONCE", "true")
    server = live_server.start(tmp_path, f"sqlite:///{tmp_path / 'authserver.sqlite3'}")
    try:
        server.cli("users", "create", "alice", "--password-stdin", input="s3cret-passw0rd\n")
        app_client = server.create_client("--name", "Bank app", "--public", "--first-party",
                                          "--scope", "read write")
        script = _readme_example().replace("http://127.0.0.1:8000", server.url)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                env={**server.env, "CLIENT_ID": app_client["client_id"]},
                                timeout=60)
        audit = server.cli("audit", "list", "--event", "binding_mismatch", "--json")
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "sign-in: 200 DPoP", "refresh: 200 DPoP", "bound to this key: True",
        "another key: 400 invalid_grant"]
    assert "dpop_key" in audit
