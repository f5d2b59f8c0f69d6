"""``LogoutTokenVerifier``: the receiving side of OpenID Connect Back-Channel Logout 1.0.

Each rule of §2.6 is one refusal here; the JWKS comes from ``FakeHttp`` (exact fetch
counts), and the Flask receiver of docs/resource-servers.md runs verbatim against a JWKS
served by a real HTTP server on loopback, driven through its test client.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest

from authserver.backchannel import logout_token
from authserver.domain.logout_outbox import Message
from authserver.resource import (
    InvalidLogoutToken,
    LogoutClaims,
    LogoutTokenVerifier,
    MemoryJtiStore,
    ReplayedLogoutToken,
    TokenVerifier,
    VerifierUnavailable,
)
from authserver.resource.logout import BACKCHANNEL_LOGOUT_EVENT
from tests.support.docs import doc_blocks
from tests.support.live_server import free_port
from tests.support.resource import AUDIENCE, ISSUER, FakeHttp, FlaskHttp, Signer, unsigned

JWKS_URI = f"{ISSUER}/jwks"
CLIENT_ID = "cl_orders"


def logout_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER, "aud": CLIENT_ID, "iat": now, "exp": now + 120,
        "jti": uuid.uuid4().hex, "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        "sid": "fam-1", "sub": "user-1"}
    payload.update(overrides)
    return {k: v for k, v in payload.items() if v is not None}


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer("RS256")


@pytest.fixture
def http(signer) -> FakeHttp:
    fake = FakeHttp()
    fake.serve_jwks(JWKS_URI, lambda: [signer.jwk])
    return fake


@pytest.fixture
def make_verifier(http) -> Callable[..., LogoutTokenVerifier]:
    def make(**kwargs: Any) -> LogoutTokenVerifier:
        kwargs.setdefault("http", http)
        return LogoutTokenVerifier(ISSUER, CLIENT_ID, JWKS_URI, **kwargs)

    return make


@pytest.fixture
def verifier(make_verifier) -> LogoutTokenVerifier:
    return make_verifier()


def sign(signer: Signer, payload: dict[str, Any] | None = None, **header: Any) -> str:
    header.setdefault("typ", "logout+jwt")
    return signer.sign(payload if payload is not None else logout_claims(), **header)


def test_a_valid_logout_token_gives_its_claims(verifier, signer):
    payload = logout_claims(aud=["someone-else", CLIENT_ID])
    result = verifier.verify(sign(signer, payload))
    assert isinstance(result, LogoutClaims)
    assert (result.sid, result.sub, result.jti) == ("fam-1", "user-1", payload["jti"])
    assert result.iss == ISSUER and result.aud == ("someone-else", CLIENT_ID)
    assert (result.iat, result.exp) == (payload["iat"], payload["exp"])
    assert result.raw["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}


@pytest.mark.parametrize("overrides", [
    pytest.param({"sub": None}, id="sid-only"),
    pytest.param({"sid": None}, id="sub-only"),
    pytest.param({"exp": None}, id="no-exp"),
    pytest.param({"events": {BACKCHANNEL_LOGOUT_EVENT: {"x": 1}, "other": 1}},
                 id="more-events"),
])
def test_the_optional_parts_may_be_absent(verifier, signer, overrides):
    payload = logout_claims(**overrides)  # now, not when the tests were collected
    assert verifier.verify(sign(signer, payload)).jti == payload["jti"]


def _hs256(signer: Signer) -> str:
    return jwt.encode(logout_claims(), "s" * 32, algorithm="HS256",
                      headers={"typ": "logout+jwt", "kid": signer.kid})


REFUSED: list[Any] = [
    pytest.param(lambda s: sign(s, typ=None), r"typ must be logout\+jwt", id="no-typ"),
    pytest.param(lambda s: sign(s, typ="JWT"), r"typ must be logout\+jwt", id="typ-JWT"),
    pytest.param(lambda s: sign(s, typ="at+jwt"), r"typ must be logout\+jwt",
                 id="an-access-token"),
    pytest.param(lambda s: unsigned({"alg": "none", "typ": "logout+jwt", "kid": s.kid},
                                    logout_claims()), "algorithm is not accepted",
                 id="alg-none"),
    pytest.param(_hs256, "algorithm is not accepted", id="hs256"),
    pytest.param(lambda s: sign(Signer("RS256", kid=s.kid)), "signature is invalid",
                 id="another-key-same-kid"),
    pytest.param(lambda s: sign(Signer("RS256")), "unknown key", id="unknown-kid"),
    pytest.param(lambda s: sign(s, logout_claims(iss="https://evil.example")),
                 "another server", id="another-issuer"),
    pytest.param(lambda s: sign(s, logout_claims(aud="someone-else")),
                 "not meant for this client", id="another-audience"),
    pytest.param(lambda s: sign(s, logout_claims(aud=None)), "aud", id="no-aud"),
    pytest.param(lambda s: sign(s, logout_claims(iat=None)), "no iat", id="no-iat"),
    pytest.param(lambda s: sign(s, logout_claims(iat=True)), "iat is not a number",
                 id="boolean-iat"),
    pytest.param(lambda s: sign(s, logout_claims(iat=int(time.time()) + 120)),
                 "in the future", id="iat-in-the-future"),
    pytest.param(lambda s: sign(s, logout_claims(iat=int(time.time()) - 400)), "too old",
                 id="iat-too-old"),
    pytest.param(lambda s: sign(s, logout_claims(exp=int(time.time()) - 60)), "expired",
                 id="expired"),
    pytest.param(lambda s: sign(s, logout_claims(events=None)), "events", id="no-events"),
    pytest.param(lambda s: sign(s, logout_claims(events={BACKCHANNEL_LOGOUT_EVENT: True})),
                 "events", id="event-not-an-object"),
    pytest.param(lambda s: sign(s, logout_claims(events=[BACKCHANNEL_LOGOUT_EVENT])),
                 "events", id="events-a-list"),
    pytest.param(lambda s: sign(s, logout_claims(
        events={"http://schemas.openid.net/event/other": {}})), "events", id="another-event"),
    pytest.param(lambda s: sign(s, logout_claims(nonce="n-0S6")), "must not contain a nonce",
                 id="nonce-an-id-token"),
    pytest.param(lambda s: sign(s, logout_claims(sid=None, sub=None)),
                 "neither a sid nor a sub", id="neither-sid-nor-sub"),
    pytest.param(lambda s: sign(s, logout_claims(sid=42)), "sid is not a string",
                 id="sid-not-a-string"),
    pytest.param(lambda s: sign(s, logout_claims(jti=None)), "no jti", id="no-jti"),
    pytest.param(lambda s: "not.a-token", "not a compact JWS", id="not-a-jwt"),
]


@pytest.mark.parametrize(("forge", "reason"), REFUSED)
def test_each_rule_refuses_with_its_reason(verifier, signer, forge, reason):
    with pytest.raises(InvalidLogoutToken, match=reason) as refused:
        verifier.verify(forge(signer))
    assert refused.value.status == 400 and refused.value.error == "invalid_request"
    assert "access token" not in refused.value.description


def test_require_sid_refuses_a_token_naming_only_the_user(make_verifier, signer):
    verifier = make_verifier(require_sid=True)
    with pytest.raises(InvalidLogoutToken, match="no sid"):
        verifier.verify(sign(signer, logout_claims(sid=None)))
    assert verifier.verify(sign(signer)).sid == "fam-1"


def test_a_replayed_jti_is_refused_but_a_refused_token_does_not_use_it_up(verifier, signer):
    payload = logout_claims()
    with pytest.raises(InvalidLogoutToken, match="not meant"):
        verifier.verify(sign(signer, {**payload, "aud": "someone-else"}))
    token = sign(signer, payload)
    assert verifier.verify(token).jti == payload["jti"]
    with pytest.raises(ReplayedLogoutToken, match="already received") as replayed:
        verifier.verify(token)
    assert isinstance(replayed.value, InvalidLogoutToken)
    with pytest.raises(ReplayedLogoutToken):  # the same jti in another signed token
        verifier.verify(sign(signer, {**payload, "sub": "user-2"}))


def test_remembering_after_the_logout_lets_a_failed_delivery_come_again(verifier, signer):
    token = sign(signer)
    claims = verifier.verify(token, remember=False)  # then ending the sessions failed: 500
    assert verifier.verify(token, remember=False).jti == claims.jti  # the server retries
    assert verifier.remember(claims)  # the sessions are ended this time
    with pytest.raises(ReplayedLogoutToken):
        verifier.verify(token, remember=False)
    with pytest.raises(ReplayedLogoutToken):
        verifier.verify(token)
    assert not verifier.remember(claims)


class SharedStore:
    """What a Redis ``SET key 1 NX EXAT`` would be: one store for every process."""

    def __init__(self) -> None:
        self.keys: dict[str, float] = {}

    def add(self, key: str, expires_at: float) -> bool:
        if self.keys.get(key, 0) > time.time():
            return False
        self.keys[key] = expires_at
        return True


def test_a_shared_store_catches_a_replay_to_another_process(make_verifier, signer):
    store = SharedStore()
    first, second = make_verifier(replay=store), make_verifier(replay=store)
    token = sign(signer)
    first.verify(token)
    with pytest.raises(ReplayedLogoutToken):
        second.verify(token)
    (key, expires_at), = store.keys.items()
    assert key.startswith(f"logout-token:{ISSUER}:")
    assert time.time() + 300 < expires_at <= time.time() + 331  # max_age + leeway


def test_the_memory_store_forgets_expired_ids_and_refuses_to_decide_when_full():
    now = [1000.0]
    store = MemoryJtiStore(max_entries=2, clock=lambda: now[0])
    assert store.add("a", 1010) and store.add("b", 1020)
    assert not store.add("a", 1010)
    with pytest.raises(VerifierUnavailable, match="too many"):
        store.add("c", 1030)  # full of live ids: neither forget one nor call c a replay
    now[0] = 1015
    assert store.add("c", 1030)  # "a" had expired: forgotten
    assert not store.add("b", 1020) and not store.add("c", 1030)
    now[0] = 1025
    assert store.add("b", 1050)


def test_the_jwks_cache_can_be_shared_with_the_token_verifier(http, signer):
    tokens = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http=http)
    logouts = LogoutTokenVerifier(ISSUER, CLIENT_ID, keys=tokens.keys)
    assert tokens.verify(signer.sign()).sub == "user-1"
    assert logouts.verify(sign(signer)).sid == "fam-1"
    assert http.count(JWKS_URI) == 1


def test_unreachable_keys_are_not_the_senders_fault(make_verifier, signer, http):
    http.routes.clear()
    with pytest.raises(VerifierUnavailable) as unavailable:
        make_verifier().verify(sign(signer))
    assert not isinstance(unavailable.value, InvalidLogoutToken)
    assert unavailable.value.status == 503


def test_the_settings_are_checked(http):
    with pytest.raises(ValueError, match="client_id"):
        LogoutTokenVerifier(ISSUER, "", http=http)
    with pytest.raises(ValueError, match="asymmetric"):
        LogoutTokenVerifier(ISSUER, CLIENT_ID, algorithms=["HS256"], http=http)


# -- the Flask receiver of docs/resource-servers.md, verbatim ------------------------------------

@pytest.fixture
def loopback_issuer(signer) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 publishing the issuer's metadata and JWKS."""
    issuer: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            documents = {"/.well-known/oauth-authorization-server":
                         {"issuer": issuer[0], "jwks_uri": issuer[0] + "/jwks"},
                         "/jwks": {"keys": [signer.jwk]}}
            body = json.dumps(documents.get(self.path, {})).encode()
            self.send_response(200 if self.path in documents else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    issuer.append(f"http://127.0.0.1:{httpd.server_address[1]}")
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield issuer[0]
    finally:
        httpd.shutdown()
        httpd.server_close()


def receiver(issuer: str) -> dict[str, Any]:
    (code,) = doc_blocks("logout-receiver-example", "python")
    namespace: dict[str, Any] = {"__name__": "logout_receiver"}
    exec(code.replace("https://auth.example.com", issuer), namespace)  # noqa: S102
    return namespace


def test_the_documented_flask_receiver(loopback_issuer, signer):
    example = receiver(loopback_issuer)
    client = example["app"].test_client()
    payload = logout_claims(iss=loopback_issuer, aud=CLIENT_ID, sid="fam-9")
    token = sign(signer, payload)

    answer = client.post("/backchannel-logout", data={"logout_token": token})
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    assert example["ended"] == {"sid:fam-9"}

    answer = client.post("/backchannel-logout", data={"logout_token": token})
    assert answer.status_code == 200  # a replay: already done, nothing ends twice
    assert example["ended"] == {"sid:fam-9"}

    only_user = sign(signer, logout_claims(iss=loopback_issuer, sid=None, sub="user-3"))
    assert client.post("/backchannel-logout", data={"logout_token": only_user}
                       ).status_code == 200
    assert example["ended"] == {"sid:fam-9", "sub:user-3"}

    id_token_like = sign(signer, logout_claims(iss=loopback_issuer, nonce="n"))
    answer = client.post("/backchannel-logout", data={"logout_token": id_token_like})
    assert answer.status_code == 400
    assert answer.json == {"error": "invalid_request",
                           "error_description": "a logout token must not contain a nonce"}
    assert client.post("/backchannel-logout", data={}).status_code == 400
    assert example["ended"] == {"sid:fam-9", "sub:user-3"}


def test_the_documented_receiver_answers_503_when_the_keys_are_unreachable(signer):
    issuer = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    example = receiver(issuer)
    token = sign(signer, logout_claims(iss=issuer))
    answer = example["app"].test_client().post("/backchannel-logout",
                                               data={"logout_token": token})
    assert answer.status_code == 503 and example["ended"] == set()


# -- the server's own logout tokens ------------------------------------------------------------

def test_the_servers_logout_tokens_pass_against_its_jwks(app):
    """What authserver.backchannel signs is what this verifier accepts, keys fetched from
    the server's JWKS (through its test client), for a message with and without a sid."""
    issuer = app.extensions["authserver"].settings.issuer
    key = app.extensions["authserver"].keys.active()
    as_http = FlaskHttp(app.test_client())
    verifier = LogoutTokenVerifier(issuer, "cl_app", http=as_http, require_sid=True)
    now = dt.datetime.now(dt.UTC)
    message = Message(id=7, client_id="cl_app", uri="https://rp.example/bcl", subject="u-1",
                      sid="fam-7", attempts=0, created_at=now)
    result = verifier.verify(logout_token.sign(key, issuer, message, now))
    assert (result.sid, result.sub, result.aud) == ("fam-7", "u-1", ("cl_app",))
    assert any(url.endswith("/.well-known/jwks.json") for url in as_http.urls)
    # A retry of the same message: the same jti, so a receiver sees the repeat.
    with pytest.raises(ReplayedLogoutToken):
        verifier.verify(logout_token.sign(key, issuer, message, now + dt.timedelta(seconds=4)))
    by_user = dataclasses.replace(message, id=8, sid=None)
    with pytest.raises(InvalidLogoutToken, match="no sid"):
        verifier.verify(logout_token.sign(key, issuer, by_user, now))
    assert LogoutTokenVerifier(issuer, "cl_app", http=as_http).verify(
        logout_token.sign(key, issuer, by_user, now)).sub == "u-1"
