"""The README walkthrough works verbatim against a real server process, and so do the
blocks of docs/*.md marked ``<!-- continues the walkthrough -->``, run after it in the same
shell (they use its user, its client and its files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import live_server
from tests.support.docs import doc_blocks, doc_blocks_noted

pytestmark = pytest.mark.xdist_group("live")


CONTINUES = "continues the walkthrough"


def walkthrough() -> str:
    continued = doc_blocks_noted(CONTINUES)
    assert all(block.language == "bash" for block in continued), continued
    return "\n".join(doc_blocks("walkthrough", "bash") + [block.code for block in continued])


def test_readme_walkthrough_runs_verbatim(tmp_path):
    server = live_server.start(tmp_path, f"sqlite:///{tmp_path / 'authserver.sqlite3'}")
    try:
        bin_dir = str(Path(sys.executable).parent)
        script = (walkthrough().replace("http://127.0.0.1:8000", server.url)
                  .replace(".venv/bin/", bin_dir + "/"))
        workdir = tmp_path / "newcomer"
        workdir.mkdir()
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=workdir,
                                env=server.env, capture_output=True, text=True, timeout=120)
    finally:
        server.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "identical retry" in out
    assert out.count('"error": "invalid_grant"') == 2, out
    assert "verified: {'sub':" in out
    # The continuations: revocation (docs/clients.md), introspection (docs/resource-servers.md),
    # the audit trail (docs/admins.md).
    assert "\n200\n" in out, out
    assert '"active": true' in out, out
    assert '"event": "family_revoked"' in out or '"event":"family_revoked"' in out, out
