"""Key rotation is invisible to resource servers: proof against a real server process.

A real ``authserver serve`` (two gunicorn workers sharing ``keys/``, JWKS max-age 2 s so
a next key is promoted after 7 s) issues tokens continuously to two clients while an
operator runs ``authserver keys rotate`` twice. The ten-line Flask API of docs/resource-servers.md
(``authserver.resource`` only), served over HTTP in a thread, verifies every token as it comes,
and every earlier token again at the end: zero failures, with the JWKS cache alone
(no unknown-kid refetch). Then a table of forged tokens, each refused for its reason.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from werkzeug.serving import make_server

from authserver.crypto.keystore import KeyStore
from authserver.resource import (
    ExpiredToken,
    InvalidAlgorithm,
    InvalidAudience,
    InvalidIssuer,
    InvalidSignature,
    InvalidToken,
    InvalidTokenType,
    MalformedToken,
    NotYetValid,
    TokenVerifier,
    UnknownKey,
)
from tests.support import live_server
from tests.support.docs import doc_blocks
from tests.support.oauth import PASSWORD, basic
from tests.support.resource import Signer

JWKS_MAX_AGE = 2
PROMOTION_TIMEOUT = 90


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[live_server.LiveServer]:
    workdir = tmp_path_factory.mktemp("rotation")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTHSERVER_JWKS_MAX_AGE", str(JWKS_MAX_AGE))
        srv = live_server.start(workdir, f"sqlite:///{workdir / 'authserver.sqlite3'}",
                                workers=2)
    srv.keys_dir = workdir / "keys"  # type: ignore[attr-defined]
    try:
        srv.cli("users", "create", "alice", "--password-stdin", input=PASSWORD + "\n")
        yield srv
    finally:
        srv.stop()


@dataclass
class ResourceServer:
    url: str
    verifier: TokenVerifier

    def call(self, token: str) -> requests.Response:
        return requests.get(f"{self.url}/orders", timeout=10,
                            headers={"Authorization": f"Bearer {token}"})




def readme_example(issuer: str) -> dict[str, Any]:
    """Run the example of docs/resource-servers.md against ``issuer``."""
    (code,) = doc_blocks("resource-example", "python")
    namespace: dict[str, Any] = {"__name__": "orders_api"}
    exec(code.replace("https://auth.example.com", issuer), namespace)  # noqa: S102
    return namespace


@pytest.fixture(scope="module")
def api(server) -> Iterator[ResourceServer]:
    """The ten-line Flask API of docs/resource-servers.md, served over real HTTP."""
    example = readme_example(server.url)
    http = make_server("127.0.0.1", 0, example["app"], threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield ResourceServer(f"http://127.0.0.1:{http.server_port}", example["verifier"])
    finally:
        http.shutdown()
        thread.join(timeout=10)


@dataclass
class Traffic:
    """Tokens issued and verified continuously by two clients until stopped."""

    server: live_server.LiveServer
    api: ResourceServer
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # (request started, response received, kid, token)
    issued: list[tuple[float, float, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def record(self, started: float, token: str) -> None:
        kid = jwt.get_unverified_header(token)["kid"]
        with self.lock:
            self.issued.append((started, time.monotonic(), kid, token))
        answer = self.api.call(token)
        if answer.status_code != 200:
            with self.lock:
                self.failures.append(f"{kid}: {answer.status_code} "
                                     f"{answer.headers.get('WWW-Authenticate')}")

    def kids(self) -> list[str]:
        with self.lock:
            return [kid for _, _, kid, _ in self.issued]

    def first_seen(self, kid: str) -> float:
        with self.lock:
            return min(received for _, received, k, _ in self.issued if k == kid)

    def run(self, loop: Callable[[], None]) -> threading.Thread:
        def guarded() -> None:
            try:
                loop()
            except Exception as exc:  # reported by the test, never swallowed
                with self.lock:
                    self.failures.append(f"client loop died: {exc!r}")

        thread = threading.Thread(target=guarded, daemon=True)
        thread.start()
        return thread


def refreshing_app(traffic: Traffic, client_id: str) -> Callable[[], None]:
    """A mobile app: signs in once, then refreshes (rotating refresh tokens) in a loop."""

    def loop() -> None:
        token_url = f"{traffic.server.url}/oauth/token"
        pair = requests.post(token_url, timeout=30, data={
            "grant_type": "password", "username": "alice", "password": PASSWORD,
            "client_id": client_id, "scope": "orders:read"}).json()
        while not traffic.stop.is_set():
            started = time.monotonic()
            response = requests.post(token_url, timeout=30, data={
                "grant_type": "refresh_token", "refresh_token": pair["refresh_token"],
                "client_id": client_id})
            if response.status_code != 200:
                raise AssertionError(f"refresh failed: {response.text}")
            pair = response.json()
            traffic.record(started, pair["access_token"])

    return loop


def machine(traffic: Traffic, client: dict[str, str]) -> Callable[[], None]:
    """A back end using client_credentials for every call."""

    def loop() -> None:
        while not traffic.stop.is_set():
            started = time.monotonic()
            response = requests.post(
                f"{traffic.server.url}/oauth/token", data={"grant_type": "client_credentials"},
                headers={"Authorization": basic(client["client_id"], client["client_secret"])},
                timeout=30)
            if response.status_code != 200:
                raise AssertionError(f"client_credentials failed: {response.text}")
            traffic.record(started, response.json()["access_token"])

    return loop


def wait_for(condition: Callable[[], bool], what: str, timeout: float = PROMOTION_TIMEOUT
             ) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def rotate(server, *args: str) -> str:
    out = server.cli("keys", "rotate", *args)
    match = re.match(r"created next (\S+) key (\S+);", out)
    assert match, out
    return match.group(2)


def test_tokens_verify_without_a_single_failure_while_keys_rotate_twice(server, api):
    mobile = server.create_client("--name", "Shop app", "--public", "--first-party",
                                  "--scope", "orders:read orders:write")
    backend = server.create_client("--name", "Reports", "--grant-type", "client_credentials",
                                   "--scope", "orders:read")
    traffic = Traffic(server, api)
    threads = [traffic.run(refreshing_app(traffic, mobile["client_id"])),
               traffic.run(machine(traffic, backend))]
    try:
        wait_for(lambda: len(traffic.kids()) >= 10, "the first tokens")
        original = traffic.kids()[0]

        second = rotate(server)
        wait_for(lambda: second in traffic.kids() or bool(traffic.failures),
                 "the second key to sign")
        third = rotate(server, "--alg", "ES256")
        wait_for(lambda: third in traffic.kids() or bool(traffic.failures),
                 "the third key to sign")
        seen = len(traffic.kids())
        wait_for(lambda: len(traffic.kids()) >= seen + 10, "tokens after the rotations")
    finally:
        traffic.stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert traffic.failures == []
    kids = traffic.kids()
    assert {original, second, third} <= set(kids)
    # Both worker processes switched at the same instant: once a token from the new key
    # came back, no request started afterwards was signed with an older key.
    for new, old in ((second, {original}), (third, {original, second})):
        switched = traffic.first_seen(new)
        late = [kid for started, _, kid, _ in traffic.issued if started > switched
                and kid in old]
        assert late == [], f"{len(late)} tokens from a replaced key after the switch"
    # The API's cached JWKS already held every key before it signed anything.
    assert api.verifier.keys.unknown_kid_refetches == 0

    # Every token issued during the test, by every key, is still accepted now (all of them
    # by the verifier, the first few of each key over HTTP too).
    for *_, token in traffic.issued:
        assert api.verifier.verify(token).jti
    sample = [token for kid in (original, second, third)
              for token in [t for _, _, k, t in traffic.issued if k == kid][:5]]
    assert [api.call(token).status_code for token in sample] == [200] * len(sample)

    listed = {k["kid"]: k for k in json.loads(server.cli("keys", "list", "--json"))}
    assert {kid: k["state"] for kid, k in listed.items()} == {
        original: "retired", second: "retired", third: "active"}
    assert listed[third]["alg"] == "ES256"
    assert server.cli("keys", "prune").startswith("nothing to prune; 2 retired key(s)")
    published = {k["kid"] for k in requests.get(f"{server.url}/.well-known/jwks.json",
                                                 timeout=10).json()["keys"]}
    assert published == {original, second, third}


# -- forged tokens against the live server's keys -------------------------------------------

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], payload: dict[str, Any]) -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}."


@pytest.fixture(scope="module")
def real(server) -> dict[str, Any]:
    """What a forger would need: the server's active key (for claim forgeries, as if it
    leaked to a test), its public JWK, and a valid set of claims."""
    key = KeyStore(server.keys_dir).active()
    now = int(time.time())
    return {"key": key, "jwk": key.public_jwk(),
            "claims": {"iss": server.url, "aud": server.url, "sub": "alice",
                       "client_id": "app", "scope": "orders:read", "iat": now, "exp": now + 300,
                       "jti": "forged"}}


def _hs256_with_public_key(real: dict[str, Any]) -> str:
    pem = jwt.PyJWK(real["jwk"]).key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt",
                             "kid": real["key"].kid}).encode())
    payload = b64(json.dumps(real["claims"]).encode())
    mac = hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(mac)}"


def _signed(real: dict[str, Any], typ: str = "at+jwt", **changes: Any) -> str:
    return real["key"].sign({**real["claims"], **changes}, typ)


def _stranger(real: dict[str, Any], kid: str | None) -> str:
    signer = Signer(real["key"].alg, kid=kid)
    return signer.sign(dict(real["claims"]))


FORGERIES = [
    pytest.param(lambda r: _unsigned({"alg": "none", "typ": "at+jwt", "kid": r["key"].kid},
                                     r["claims"]), InvalidAlgorithm, id="alg-none"),
    pytest.param(_hs256_with_public_key, InvalidAlgorithm, id="hs256-with-public-key"),
    pytest.param(lambda r: _stranger(r, None), UnknownKey, id="wrong-kid"),
    pytest.param(lambda r: _signed(r, iss="https://evil.example"), InvalidIssuer,
                 id="wrong-issuer"),
    pytest.param(lambda r: _signed(r, aud="https://other-api.example"), InvalidAudience,
                 id="wrong-audience"),
    pytest.param(lambda r: _signed(r, iat=int(time.time()) - 4000,
                                   exp=int(time.time()) - 3000), ExpiredToken, id="expired"),
    pytest.param(lambda r: _signed(r, nbf=int(time.time()) + 3000), NotYetValid,
                 id="not-yet-valid"),
    pytest.param(lambda r: _signed(r, typ="JWT"), InvalidTokenType, id="typ-JWT"),
    pytest.param(lambda r: _stranger(r, r["key"].kid), InvalidSignature,
                 id="signed-by-an-unknown-key"),
    pytest.param(lambda r: _signed(r).rsplit(".", 1)[0] + "." + _signed(r).split(".")[2][:40],
                 InvalidSignature, id="truncated-signature"),
    pytest.param(lambda r: _signed(r)[:80], MalformedToken, id="truncated"),
    pytest.param(lambda r: "garbage", MalformedToken, id="garbage"),
]


@pytest.mark.parametrize(("forge", "expected"), FORGERIES)
def test_forged_tokens_are_refused_with_the_right_exception(server, api, real, forge,
                                                           expected):
    token = forge(real)
    with pytest.raises(expected) as info:
        api.verifier.verify(token)
    assert type(info.value) is expected
    answer = api.call(token)  # and over HTTP, by the decorator
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == (
        f'Bearer realm="api", error="invalid_token", '
        f'error_description="{info.value.description}"')


def test_forgeries_never_make_the_api_hammer_the_server(api, real):
    """Unknown kids cost at most one JWKS fetch per min_refetch_interval (10 s)."""
    forgeries = [_stranger(real, None) for _ in range(5)] + ["garbage"]
    refetches = api.verifier.keys.unknown_kid_refetches
    started = time.monotonic()
    for _ in range(40):
        for token in forgeries:
            with pytest.raises(InvalidToken):
                api.verifier.verify(token)
    elapsed = time.monotonic() - started
    interval = api.verifier.keys.min_refetch_interval
    assert api.verifier.keys.unknown_kid_refetches - refetches <= 1 + int(elapsed / interval)


def test_the_keys_directory_is_private(server):
    keys_dir = Path(server.keys_dir)
    assert keys_dir.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in keys_dir.glob("*.pem"))
