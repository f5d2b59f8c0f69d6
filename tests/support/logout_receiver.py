"""A Back-Channel Logout receiver for the tests: a real HTTP server on loopback (``http.server``
in a thread) that records every logout token POSTed to it, and the checks an RP makes on
one (OpenID Connect Back-Channel Logout 1.0 §2.6) with PyJWT.

Its paths behave differently: ``/ok`` answers 200; ``/empty`` 204; ``/flaky`` 500 twice,
then 200; ``/hang`` answers only after ``hang_seconds``; ``/redirect`` a 302 to ``/ok``;
``/slow`` 200 after ``slow_seconds``; ``/fail`` always 500. It counts deliveries of one
token (by ``jti``) that overlap in time, so a test can tell that two workers never sent the
same message at once.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt

EVENT = "http://schemas.openid.net/event/backchannel-logout"


@dataclass
class Delivery:
    path: str
    content_type: str
    token: str
    jti: str | None
    at: float


@dataclass
class Receiver:
    base: str
    hang_seconds: float = 30.0
    slow_seconds: float = 0.2
    deliveries: list[Delivery] = field(default_factory=list)
    hits: Counter[str] = field(default_factory=Counter)  # requests per path
    max_overlap: Counter[str] = field(default_factory=Counter)  # per jti
    _open: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)  # ends a /hang early

    def url(self, path: str) -> str:
        return self.base + path

    def tokens(self, path: str | None = None) -> list[str]:
        with self._lock:
            return [d.token for d in self.deliveries if path is None or d.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """The tokens received at ``path`` once there are ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tokens = self.tokens(path)
            if len(tokens) >= count:
                return tokens
            time.sleep(0.05)
        raise AssertionError(f"{len(self.tokens(path))} of {count} logout tokens at {path}")

    # -- the server side ----------------------------------------------------------------
    def _enter(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
            self.hits[delivery.path] += 1
            if delivery.jti:
                self._open[delivery.jti] += 1
                self.max_overlap[delivery.jti] = max(self.max_overlap[delivery.jti],
                                                     self._open[delivery.jti])

    def _leave(self, delivery: Delivery) -> None:
        with self._lock:
            if delivery.jti:
                self._open[delivery.jti] -= 1

    def answer(self, path: str) -> tuple[int, dict[str, str]]:
        if path == "/ok":
            return 200, {}
        if path == "/empty":
            return 204, {}
        if path == "/flaky":
            return (500, {}) if self.hits[path] <= 2 else (200, {})
        if path == "/hang":
            self.release.wait(self.hang_seconds)
            return 200, {}
        if path == "/slow":
            time.sleep(self.slow_seconds)
            return 200, {}
        if path == "/redirect":
            return 302, {"Location": self.url("/ok")}
        return 500, {}


def _jti(token: str) -> str | None:
    try:
        return jwt.decode(token, options={"verify_signature": False}).get("jti")
    except jwt.PyJWTError:
        return None


@contextlib.contextmanager
def running(**options: Any) -> Iterator[Receiver]:
    """A receiver on ``127.0.0.1`` and a free port, stopped at the end."""
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = holder["receiver"]
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode("ascii", "replace"))
            token = (form.get("logout_token") or [""])[0]
            delivery = Delivery(self.path, self.headers.get("Content-Type", ""), token,
                                _jti(token), time.monotonic())
            receiver._enter(delivery)
            try:
                status, headers = receiver.answer(self.path)
            finally:
                receiver._leave(delivery)
            self.send_response(status)
            for name, value in {**headers, "Cache-Control": "no-store",
                                "Content-Length": "0"}.items():
                self.send_header(name, value)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}", **options)
    holder["receiver"] = receiver
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.release.set()
        server.shutdown()
        server.server_close()


def verify(token: str, jwks: dict[str, Any] | jwt.PyJWKClient, *, issuer: str,
           client_id: str) -> dict[str, Any]:
    """What an RP checks (§2.6): the signature by a key of the JWKS (its algorithm only),
    ``typ: logout+jwt``, ``iss``, ``aud``, ``iat``/``exp``, the event, a ``sid`` or ``sub``,
    and no ``nonce``, allowing 10 s of clock skew. Returns the claims."""
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "logout+jwt", header
    if isinstance(jwks, jwt.PyJWKClient):
        key = jwks.get_signing_key_from_jwt(token)
    else:
        key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    claims = jwt.decode(token, key, algorithms=[header["alg"]], audience=client_id,
                        issuer=issuer, leeway=10, options={"require": ["iss", "aud", "iat", "exp",
                                                            "jti", "events"]})
    assert header["alg"] == key.algorithm_name
    assert claims["events"] == {EVENT: {}}, claims
    assert "nonce" not in claims, claims
    assert claims.get("sid") or claims.get("sub"), claims
    assert claims["exp"] - claims["iat"] <= 300, claims
    return claims
