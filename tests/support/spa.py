"""The single-page app of examples/spa/, served by a small static server on its own port.

The page is reachable twice: at ``http://127.0.0.1:PORT`` (the app's registered web origin,
same site as a server on ``http://127.0.0.1``, another origin) and at ``http://localhost:PORT``
(the same page on another site, registered nowhere). ``auth.js`` is the script the test hands
over (the README's example, verbatim), ``config.json`` the app's settings, which the test
fills in once it has registered the client for the page's origin.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "spa"
HTML, JAVASCRIPT, JSON = "text/html; charset=utf-8", "text/javascript", "application/json"


@dataclass
class Spa:
    """Where the page is (``url`` on its web origin, ``foreign_url`` on another site) and the
    settings its config.json serves: ``issuer``, ``clientId``, ``redirectUri``, ``scope``."""

    port: int
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.origin + "/"

    @property
    def foreign_url(self) -> str:
        return f"http://localhost:{self.port}/"


def content_security_policy(issuer: str) -> str:
    """What a browser app should be served with: scripts from its own origin only, requests
    to itself and the authorization server (the README's advice against XSS)."""
    return ("default-src 'none'; script-src 'self'; "
            f"connect-src 'self' {issuer}; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


@contextmanager
def serving(auth_js: str, issuer: str) -> Iterator[Spa]:
    """Serve index.html and app.js of examples/spa/, ``auth_js`` as auth.js and the
    ``Spa.config`` of the moment as config.json, until the block ends."""
    files = {
        "/": (HTML, (EXAMPLE / "index.html").read_bytes()),
        "/app.js": (JAVASCRIPT, (EXAMPLE / "app.js").read_bytes()),
        "/auth.js": (JAVASCRIPT, auth_js.encode()),
    }
    policy = content_security_policy(issuer)
    spa: Spa | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            found = (JSON, json.dumps(spa.config).encode()) if path == "/config.json" and spa \
                else files.get(path)
            if found is None:  # the browser's /favicon.ico
                self.send_error(404)
                return
            content_type, body = found
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", policy)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    spa = Spa(httpd.server_address[1])
    try:
        yield spa
    finally:
        httpd.shutdown()
        httpd.server_close()
