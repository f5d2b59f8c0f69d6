"""``TokenVerifier`` checks Token Status List entries (draft-ietf-oauth-status-list §8).

The status lists come from a fake list server signed with the issuer's test key: through
``FakeHttp`` (exact fetch counts, a fake monotonic timer), through a real loopback HTTP
server (``UrllibClient``), and behind ``require_token`` in a Flask API (its test client).
The encoder here is written from the draft, apart from the server's codec, so each side
checks the other. The figure against a real server is tests/live/test_status_list_live.py.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from flask import Flask

from authserver.domain import client_admin
from authserver.extensions import db
from authserver.resource import (
    HttpResponse,
    InvalidClaims,
    StatusUnavailable,
    TokenRevoked,
    TokenVerifier,
    VerifierUnavailable,
    current_token,
    decode_status_list,
    require_token,
)
from authserver.resource.status_list import StatusListError
from tests.support.oauth import basic
from tests.support.resource import (
    AUDIENCE,
    ISSUER,
    FakeHttp,
    FlaskHttp,
    Signer,
    Timer,
    claims,
)

JWKS_URI = f"{ISSUER}/jwks"
LIST_URI = f"{ISSUER}/oauth/status/1"


def pack(entries: Mapping[int, int], size: int, bits: int) -> bytes:
    """draft §4.1: entry i takes bits i*bits .. of the array, least significant first."""
    data = bytearray(size * bits // 8)
    for idx, value in entries.items():
        position = idx * bits
        data[position // 8] |= value << (position % 8)
    return bytes(data)


def lst(data: bytes) -> str:
    return base64.urlsafe_b64encode(zlib.compress(data)).rstrip(b"=").decode()


class ListServer:
    """One status list (``entries``: idx -> status), signed on each fetch like ours."""

    def __init__(self, signer: Signer, uri: str = LIST_URI, *, size: int = 1024,
                 bits: int = 1, ttl: int | None = 60) -> None:
        self.signer, self.uri, self.size, self.bits, self.ttl = signer, uri, size, bits, ttl
        self.entries: dict[int, int] = {}
        self.header: dict[str, Any] = {"typ": "statuslist+jwt"}
        self.overrides: dict[str, Any] = {}
        self.fail: int | None = None  # answer this HTTP status instead
        self.fetches = 0
        self.not_modified = 0
        self.lock = threading.Lock()
        self.delay = 0.0

    def claims(self) -> dict[str, Any]:
        now = int(time.time())
        payload: dict[str, Any] = {
            "sub": self.uri, "iat": now, "exp": now + 600, "ttl": self.ttl,
            "status_list": {"bits": self.bits, "lst": lst(pack(self.entries, self.size,
                                                               self.bits))}}
        payload.update(self.overrides)
        return {k: v for k, v in payload.items() if v is not None}

    def token(self) -> str:
        return self.signer.sign(self.claims(), **self.header)

    def answer(self, headers: Mapping[str, str]) -> HttpResponse:
        with self.lock:
            self.fetches += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            return HttpResponse(self.fail, b"down", {})
        # The ETag names the content; iat changes each second, so it is left out.
        content = json.dumps([self.entries, self.header, self.overrides, self.bits],
                             sort_keys=True, default=str)
        etag = f'"{abs(hash(content))}"'
        common = {"content-type": "application/statuslist+jwt", "etag": etag,
                  "cache-control": f"max-age={self.ttl or 60}"}
        if headers.get("If-None-Match") == etag:
            with self.lock:
                self.not_modified += 1
            return HttpResponse(304, b"", common)
        return HttpResponse(200, self.token().encode(), common)


def status_claim(idx: int, uri: str = LIST_URI) -> dict[str, Any]:
    return {"status": {"status_list": {"idx": idx, "uri": uri}}}


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer("ES256")


@pytest.fixture
def timer() -> Timer:
    return Timer()


@pytest.fixture
def lists(signer) -> ListServer:
    return ListServer(signer)


@pytest.fixture
def http(signer, lists) -> FakeHttp:
    fake = FakeHttp()
    fake.serve_jwks(JWKS_URI, lambda: [signer.jwk])
    fake.routes[LIST_URI] = lists.answer
    return fake


@pytest.fixture
def make_verifier(http, timer) -> Callable[..., TokenVerifier]:
    def make(**kwargs: Any) -> TokenVerifier:
        kwargs.setdefault("http", http)
        kwargs.setdefault("timer", timer)
        return TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, **kwargs)

    return make


@pytest.fixture
def verifier(make_verifier) -> TokenVerifier:
    return make_verifier()


def token(signer: Signer, idx: int, uri: str = LIST_URI, **extra: Any) -> str:
    return signer.sign(claims(**status_claim(idx, uri), **extra))


# -- the check itself ----------------------------------------------------------------------

def test_a_valid_entry_is_accepted_and_the_list_fetched_once(verifier, signer, lists, http):
    lists.entries = {3: 1}
    for idx in (0, 1, 2, 4, 1023):
        assert verifier.verify(token(signer, idx)).sub == "user-1"
    assert lists.fetches == 1
    (_, _, headers), = [r for r in http.requests if r[1] == LIST_URI]
    assert headers["Accept"] == "application/statuslist+jwt"


def test_an_invalid_entry_is_refused_as_revoked(verifier, signer, lists):
    lists.entries = {7: 1, 8: 1}
    with pytest.raises(TokenRevoked, match=r"revoked \(status list: INVALID\)") as refused:
        verifier.verify(token(signer, 7))
    assert refused.value.token_status == 1 and refused.value.status == 401
    assert refused.value.error == "invalid_token"
    assert verifier.verify(token(signer, 6)).sub == "user-1"
    assert verifier.verify(token(signer, 9)).sub == "user-1"


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_every_entry_width_is_read_least_significant_bit_first(make_verifier, signer,
                                                               lists, bits):
    lists.bits = bits
    top = (1 << bits) - 1
    lists.entries = {1: 1, 5: top, 6: 0, 9: 1} | ({2: 2} if bits > 1 else {})
    verifier = make_verifier()
    statuses: dict[int, int | None] = {}
    for idx in range(12):
        try:
            verifier.verify(token(signer, idx))
            statuses[idx] = 0
        except TokenRevoked as exc:
            statuses[idx] = exc.token_status
    assert statuses == {i: lists.entries.get(i, 0) for i in range(12)}


def test_suspended_and_other_values_are_refused_with_their_name(make_verifier, signer,
                                                               lists):
    lists.bits, lists.entries = 2, {4: 2, 5: 3}
    verifier = make_verifier()
    with pytest.raises(TokenRevoked, match=r"suspended \(status list: SUSPENDED\)"):
        verifier.verify(token(signer, 4))
    with pytest.raises(TokenRevoked, match="status is 3, not VALID"):
        verifier.verify(token(signer, 5))


def test_an_index_past_the_end_of_the_list_is_refused(verifier, signer):
    verifier.verify(token(signer, 1023))
    with pytest.raises(InvalidClaims, match="outside its list"):
        verifier.verify(token(signer, 1024))


@pytest.mark.parametrize("status", [
    pytest.param("revoked", id="not-an-object"),
    pytest.param({"status_list": "x"}, id="status_list-not-an-object"),
    pytest.param({"status_list": {"idx": -1, "uri": LIST_URI}}, id="negative-idx"),
    pytest.param({"status_list": {"idx": True, "uri": LIST_URI}}, id="boolean-idx"),
    pytest.param({"status_list": {"idx": 1.0, "uri": LIST_URI}}, id="float-idx"),
    pytest.param({"status_list": {"idx": "1", "uri": LIST_URI}}, id="string-idx"),
    pytest.param({"status_list": {"idx": 1}}, id="no-uri"),
    pytest.param({"status_list": {"idx": 1, "uri": 7}}, id="uri-not-a-string"),
])
def test_a_malformed_status_claim_is_refused_without_a_fetch(verifier, signer, lists, status):
    with pytest.raises(InvalidClaims):
        verifier.verify(signer.sign(claims(status=status)))
    assert lists.fetches == 0


def test_tokens_without_a_status_list_need_no_list(verifier, signer, lists):
    assert verifier.verify(signer.sign(claims())).sub == "user-1"
    # Another mechanism of the draft's registry (§14.3) is not ours to check.
    assert verifier.verify(signer.sign(claims(status={"other": {"x": 1}}))).sub == "user-1"
    assert lists.fetches == 0


def test_status_checking_can_be_turned_off(make_verifier, signer, lists):
    lists.entries = {7: 1}
    verifier = make_verifier(status=False)
    assert verifier.status_lists is None
    assert verifier.verify(token(signer, 7)).sub == "user-1"
    assert lists.fetches == 0


# -- caching: ttl, exp, revalidation, one fetch at a time -------------------------------------

def test_a_revocation_is_seen_once_the_ttl_has_passed(verifier, signer, lists, timer):
    lists.ttl = 10
    assert verifier.verify(token(signer, 7))
    lists.entries = {7: 1}  # revoked on the server
    timer.now += 9.9
    assert verifier.verify(token(signer, 7))  # the copy is still fresh
    assert lists.fetches == 1
    timer.now += 0.2
    with pytest.raises(TokenRevoked):
        verifier.verify(token(signer, 7))
    assert lists.fetches == 2
    assert verifier.verify(token(signer, 8))


def test_an_unchanged_list_is_revalidated_with_its_etag(verifier, signer, lists, timer):
    lists.ttl = 10
    verifier.verify(token(signer, 7))
    for _ in range(3):
        timer.now += 11
        verifier.verify(token(signer, 7))
    assert (lists.fetches, lists.not_modified) == (4, 3)
    assert verifier.status_lists.not_modified == 3
    lists.entries = {7: 1}
    timer.now += 11
    with pytest.raises(TokenRevoked):
        verifier.verify(token(signer, 7))


def test_without_a_ttl_claim_the_max_age_is_the_lifetime(verifier, signer, lists, timer):
    lists.ttl = None  # no ttl claim; the fake server then sends max-age=60
    verifier.verify(token(signer, 7))
    timer.now += 59
    verifier.verify(token(signer, 7))
    assert lists.fetches == 1
    timer.now += 2
    verifier.verify(token(signer, 7))
    assert lists.fetches == 2


def test_a_list_is_refetched_at_its_exp_and_not_used_past_it(make_verifier, signer, lists,
                                                             timer):
    lists.ttl = 300
    lists.overrides = {"exp": int(time.time()) + 5}
    verifier = make_verifier(leeway=0)
    verifier.verify(token(signer, 7))
    lists.entries = {7: 1}
    timer.now += 4
    verifier.verify(token(signer, 7))
    assert lists.fetches == 1
    timer.now += 2  # exp passed, ttl did not: refetched
    with pytest.raises(TokenRevoked):
        verifier.verify(token(signer, 7))
    assert lists.fetches == 2
    lists.fail = 500
    timer.now += 5  # that copy's exp passed too, and the server is down: no grace past exp
    with pytest.raises(StatusUnavailable, match="HTTP 500"):
        verifier.verify(token(signer, 8))


def test_concurrent_requests_share_one_fetch(make_verifier, signer, lists):
    verifier = make_verifier(timer=time.monotonic)
    lists.delay = 0.3
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def verify() -> None:
        barrier.wait()
        try:
            results.append(verifier.verify(token(signer, 7)).sub)
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=verify) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == ["user-1"] * 8
    assert lists.fetches == 1


# -- when the list cannot be had ------------------------------------------------------------

def test_the_last_good_list_serves_through_an_outage_then_it_fails_closed(
        verifier, signer, lists, timer):
    lists.ttl, lists.entries = 10, {7: 1}
    verifier.verify(token(signer, 8))
    lists.fail = 500
    timer.now += 10  # stale: a refetch is due, and fails
    assert verifier.verify(token(signer, 8)).sub == "user-1"
    with pytest.raises(TokenRevoked):  # the old copy still refuses what it refused
        verifier.verify(token(signer, 7))
    assert lists.fetches == 2
    # Retries at most once per 2 s, however many requests come.
    for _ in range(40):
        timer.now += 0.25
        verifier.verify(token(signer, 8))
    assert lists.fetches == 2 + 5
    timer.now += 60 - 10 + 0.1  # ttl + grace (60 s) after the good fetch have passed
    with pytest.raises(StatusUnavailable, match="status list unavailable: the status list "
                                                "answered HTTP 500") as refused:
        verifier.verify(token(signer, 8))
    assert refused.value.status == 503 and isinstance(refused.value, VerifierUnavailable)
    lists.fail = None
    timer.now += 2
    assert verifier.verify(token(signer, 8)).sub == "user-1"  # recovered


def test_failing_open_accepts_unchecked_once_the_grace_is_over(make_verifier, signer, lists,
                                                              timer):
    lists.ttl, lists.entries = 10, {7: 1}
    verifier = make_verifier(status_failure="open", status_grace=5)
    verifier.verify(token(signer, 8))
    lists.fail = 503
    timer.now += 14
    with pytest.raises(TokenRevoked):  # within ttl + grace: the old copy
        verifier.verify(token(signer, 7))
    timer.now += 2
    assert verifier.verify(token(signer, 7)).sub == "user-1"  # open: unchecked


def test_no_list_ever_fetched_fails_closed_and_retries_at_the_rate_limit(verifier, signer,
                                                                          lists, timer):
    lists.fail = 500
    for _ in range(5):
        with pytest.raises(StatusUnavailable):
            verifier.verify(token(signer, 1))
    assert lists.fetches == 1
    timer.now += 2
    lists.fail = None
    assert verifier.verify(token(signer, 1)).sub == "user-1"
    assert lists.fetches == 2


def test_the_failure_settings_are_checked(make_verifier):
    with pytest.raises(ValueError, match="closed' or 'open"):
        make_verifier(status_failure="sometimes")
    with pytest.raises(ValueError, match="grace"):
        make_verifier(status_grace=-1)


# -- lists that must not be believed ----------------------------------------------------------

def unsigned_list(server: ListServer, alg: str) -> str:
    header = {"alg": alg, "typ": "statuslist+jwt", "kid": server.signer.kid}
    parts = [json.dumps(header).encode(), json.dumps(server.claims()).encode()]
    return ".".join(base64.urlsafe_b64encode(p).rstrip(b"=").decode() for p in parts) + "."


FORGED: list[Any] = [
    pytest.param(lambda s: Signer("ES256", kid=s.signer.kid).sign(s.claims(),
                                                                  typ="statuslist+jwt"),
                 "signature is invalid", id="another-key-same-kid"),
    pytest.param(lambda s: Signer("ES256").sign(s.claims(), typ="statuslist+jwt"),
                 "unknown key", id="unknown-kid"),
    pytest.param(lambda s: unsigned_list(s, "none"), "algorithm is not accepted",
                 id="alg-none"),
    pytest.param(lambda s: jwt.encode(s.claims(), "s" * 32, algorithm="HS256",
                                      headers={"typ": "statuslist+jwt", "kid": s.signer.kid}),
                 "algorithm is not accepted", id="hs256"),
    pytest.param(lambda s: Signer("RS256", kid=s.signer.kid).sign(s.claims(),
                                                                  typ="statuslist+jwt"),
                 "does not fit its key", id="rs256-naming-the-ec-key"),
    pytest.param(lambda s: s.signer.sign(s.claims()), "typ is not statuslist", id="typ-at+jwt"),
    pytest.param(lambda s: s.signer.sign(s.claims(), typ="JWT"), "typ is not statuslist",
                 id="typ-JWT"),
    pytest.param(lambda s: s.signer.sign({**s.claims(), "sub": f"{ISSUER}/oauth/status/2"},
                                         typ="statuslist+jwt"), "sub is not its URI",
                 id="sub-of-another-list"),
    pytest.param(lambda s: s.signer.sign({**s.claims(), "iss": "https://evil.example"},
                                         typ="statuslist+jwt"), "another server",
                 id="another-issuer"),
    pytest.param(lambda s: s.signer.sign({**s.claims(), "exp": int(time.time()) - 60},
                                         typ="statuslist+jwt"), "has expired", id="expired"),
    pytest.param(lambda s: s.signer.sign({**s.claims(), "iat": int(time.time()) + 600},
                                         typ="statuslist+jwt"), "iat", id="iat-in-the-future"),
    pytest.param(lambda s: s.signer.sign({**s.claims(), "ttl": -5}, typ="statuslist+jwt"),
                 "ttl", id="negative-ttl"),
    pytest.param(lambda s: s.signer.sign({**s.claims(), "status_list": {
        "bits": 3, "lst": s.claims()["status_list"]["lst"]}}, typ="statuslist+jwt"),
                 "bits", id="bits-3"),
    pytest.param(lambda s: s.signer.sign({**s.claims(), "status_list": {
        "bits": 1, "lst": base64.urlsafe_b64encode(b"not zlib").rstrip(b"=").decode()}},
        typ="statuslist+jwt"), "does not inflate", id="not-zlib"),
    pytest.param(lambda s: "not a jwt", "not a compact JWS", id="not-a-jwt"),
    pytest.param(lambda s: "a.b!.c", "not a well-formed signed JWT", id="bad-base64url"),
]


@pytest.mark.parametrize(("forge", "reason"), FORGED)
def test_a_forged_or_broken_list_is_never_believed(verifier, signer, lists, http, timer,
                                                   forge, reason):
    lists.ttl, lists.entries = 10, {7: 1}
    with pytest.raises(TokenRevoked):
        verifier.verify(token(signer, 7))
    # The attacker (or a broken server) now answers an "all valid" list.
    forged_body = forge(ListServer(signer)).encode()
    http.routes[LIST_URI] = lambda _h: HttpResponse(200, forged_body, {})
    timer.now += 10
    with pytest.raises(TokenRevoked):  # the good copy is kept through the grace
        verifier.verify(token(signer, 7))
    timer.now += 61
    with pytest.raises(StatusUnavailable, match=reason):
        verifier.verify(token(signer, 7))


def test_a_decompression_bomb_stops_at_the_limit():
    bomb = base64.urlsafe_b64encode(zlib.compress(bytes(32 * 1024 * 1024))).rstrip(b"=")
    with pytest.raises(StatusListError, match="too large"):
        decode_status_list({"bits": 1, "lst": bomb.decode()})
    truncated = lst(bytes(100))[:-4]
    with pytest.raises(StatusListError):
        decode_status_list({"bits": 1, "lst": truncated})


# -- where a list may come from -----------------------------------------------------------------

@pytest.mark.parametrize("uri", [
    pytest.param("https://evil.example/oauth/status/1", id="another-host"),
    pytest.param("https://as.example.evil.example/oauth/status/1", id="issuer-as-prefix"),
    pytest.param("http://as.example/oauth/status/1", id="plain-http"),
    pytest.param("https://as.example:8443/oauth/status/1", id="another-port"),
    pytest.param("https://user@as.example/oauth/status/1", id="userinfo"),
    pytest.param("file:///etc/passwd", id="file"),
    pytest.param("/oauth/status/1", id="relative"),
])
def test_a_list_outside_the_allowed_uris_is_refused_without_a_request(verifier, signer, http,
                                                                        uri):
    with pytest.raises(InvalidClaims, match="not at an allowed URI"):
        verifier.verify(token(signer, 1, uri))
    assert [u for _, u, _ in http.requests if u != JWKS_URI] == []


def test_an_allow_list_admits_a_separate_status_host(make_verifier, signer, http):
    other = "https://status.example/lists/7"
    server = ListServer(signer, other)
    http.routes[other] = server.answer
    verifier = make_verifier(status_list_uris=["https://status.example/lists"])
    assert verifier.verify(token(signer, 1, other)).sub == "user-1"
    with pytest.raises(InvalidClaims):  # the issuer is no longer implied
        verifier.verify(token(signer, 1))
    with pytest.raises(InvalidClaims):  # "lists" is a path segment, not a string prefix
        verifier.verify(token(signer, 1, "https://status.example/listsX/7"))
    with pytest.raises(ValueError, match="https"):
        make_verifier(status_list_uris=["http://status.example/"])
    with pytest.raises(ValueError, match="list of URL prefixes"):
        make_verifier(status_list_uris="https://status.example/")


def test_a_list_signed_by_a_new_key_is_verified_after_one_jwks_refetch(
        verifier, signer, lists, http, timer):
    verifier.verify(token(signer, 1))
    new = Signer("ES256")
    http.serve_jwks(JWKS_URI, lambda: [signer.jwk, new.jwk])
    lists.signer, lists.entries = new, {1: 1}
    timer.now += 61
    with pytest.raises(TokenRevoked):
        verifier.verify(token(signer, 1))
    assert http.count(JWKS_URI) == 2


# -- over real HTTP, and behind require_token ------------------------------------------------------

@pytest.fixture
def loopback(signer) -> Iterator[tuple[str, ListServer]]:
    """A real HTTP server on 127.0.0.1: metadata, JWKS and one status list."""
    state: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer = state["issuer"]
            server: ListServer = state["list"]
            if self.path == "/.well-known/oauth-authorization-server":
                answer = HttpResponse(200, json.dumps({"issuer": issuer,
                                                       "jwks_uri": issuer + "/jwks"}).encode())
            elif self.path == "/jwks":
                answer = HttpResponse(200, json.dumps({"keys": [signer.jwk]}).encode())
            elif self.path == "/oauth/status/1":
                answer = server.answer({k: v for k, v in self.headers.items()})
            else:
                answer = HttpResponse(404, b"")
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            self.wfile.write(answer.body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state["issuer"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    state["list"] = ListServer(signer, state["issuer"] + "/oauth/status/1", ttl=1)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state["issuer"], state["list"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_over_http_a_revocation_is_refused_within_the_ttl(loopback, signer):
    issuer, lists = loopback
    verifier = TokenVerifier(issuer, AUDIENCE)  # the real HTTP client, real clocks
    revoked = signer.sign(claims(iss=issuer, **status_claim(5, lists.uri)))
    other = signer.sign(claims(iss=issuer, **status_claim(6, lists.uri)))
    assert verifier.verify(revoked).sub == "user-1"
    lists.entries = {5: 1}
    started = time.monotonic()
    while True:
        try:
            verifier.verify(revoked)
        except TokenRevoked:
            break
        assert time.monotonic() - started < 3, "the revocation was not seen within ttl + 2 s"
        time.sleep(0.05)
    assert verifier.verify(other).sub == "user-1"
    assert lists.fetches >= 2 and lists.fetches <= 2 + int(time.monotonic() - started) + 1


def test_require_token_refuses_a_revoked_token_and_answers_503_without_a_list(
        make_verifier, signer, lists, timer):
    app = Flask("orders-api")
    verifier = make_verifier(status_grace=0)

    @app.get("/orders")
    @require_token(verifier, scope="read")
    def orders() -> dict[str, str]:
        return {"customer": current_token().sub}

    client = app.test_client()
    lists.entries = {7: 1}
    answer = client.get("/orders", headers={"Authorization": f"Bearer {token(signer, 8)}"})
    assert answer.status_code == 200 and answer.json == {"customer": "user-1"}
    answer = client.get("/orders", headers={"Authorization": f"Bearer {token(signer, 7)}"})
    assert answer.status_code == 401
    assert answer.json == {"error": "invalid_token", "error_description":
                           "the access token has been revoked (status list: INVALID)"}
    assert 'error="invalid_token"' in answer.headers["WWW-Authenticate"]
    assert "revoked" in answer.headers["WWW-Authenticate"]
    lists.fail = 500
    timer.now += 61
    answer = client.get("/orders", headers={"Authorization": f"Bearer {token(signer, 8)}"})
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.json["error_description"].startswith("status list unavailable")


# -- against the server's own lists ------------------------------------------------------------

def test_the_servers_own_lists_through_its_test_client(app, oauth, clock):
    """A1's entries, A2's lists, this verifier: a revoked session and a disabled machine
    client are refused once the verifier's copy is ttl old, other sessions never."""
    settings = app.extensions["authserver"].settings
    oauth.create_user()
    mobile = oauth.first_party_app()
    phone, laptop = oauth.login_pair(mobile, scope="read"), oauth.login_pair(mobile, scope="read")
    machine, secret = oauth.create_client(name="Reports", grant_types=["client_credentials"],
                                          scope="read")
    granted = oauth.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                                headers={"Authorization": basic(machine.client_id, secret)})
    assert granted.status_code == 200, granted.get_data(True)
    machine_token = granted.get_json()["access_token"]

    as_http = FlaskHttp(app.test_client())
    timer = Timer()
    verifier = TokenVerifier(settings.issuer, settings.audience, http=as_http, timer=timer,
                             clock=lambda: clock().timestamp())
    for tokens in (phone["access_token"], laptop["access_token"], machine_token):
        assert verifier.verify(tokens).sub

    revoked = oauth.client.post("/oauth/revoke", data={"token": phone["refresh_token"],
                                                       "client_id": mobile.client_id})
    assert revoked.status_code == 200
    with app.app_context():
        client_admin.set_active(db.session, machine.client_id, False)
        db.session.commit()
    clock.advance(2)  # past the server's once-a-second version check
    assert verifier.verify(phone["access_token"]).sub  # the verifier's copy is younger than ttl
    timer.now += settings.status_list_ttl
    with pytest.raises(TokenRevoked):
        verifier.verify(phone["access_token"])
    with pytest.raises(TokenRevoked):
        verifier.verify(machine_token)
    assert verifier.verify(laptop["access_token"]).sub
    assert not any(url.endswith("/oauth/introspect") for url in as_http.urls)
