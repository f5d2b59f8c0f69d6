"""The README walkthrough works verbatim against a real server process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from . import live_server

README = Path(__file__).resolve().parent.parent / "README.md"
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("live")]


def walkthrough() -> str:
    text = README.read_text()
    section = text.split("<!-- walkthrough:start -->")[1].split("<!-- walkthrough:end -->")[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    assert blocks, "README walkthrough has no bash block"
    return "\n".join(blocks)


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
