"""``authserver.resource``: the verifier a resource server imports.

HTTP is a test double here (``FakeHttp``) so fetch counts and timing are exact; the
library against a real server process is in test_key_rotation_live.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from authserver.resource import (
    AccessTokenClaims,
    ExpiredToken,
    HttpResponse,
    InvalidAlgorithm,
    InvalidAudience,
    InvalidClaims,
    InvalidIssuer,
    InvalidSignature,
    InvalidToken,
    InvalidTokenType,
    MalformedToken,
    NotYetValid,
    TokenVerifier,
    UnknownKey,
    VerifierUnavailable,
)
from tests.support.resource import (
    AUDIENCE,
    ISSUER,
    FakeHttp,
    Signer,
    Timer,
    b64,
    claims,
    unsigned,
)

JWKS_URI = f"{ISSUER}/jwks"
METADATA_URI = f"{ISSUER}/.well-known/oauth-authorization-server"
OIDC_URI = f"{ISSUER}/.well-known/openid-configuration"


@pytest.fixture(scope="module")
def rsa_key() -> Signer:
    return Signer("RS256")


@pytest.fixture(scope="module")
def ec_key() -> Signer:
    return Signer("ES256")


@pytest.fixture(scope="module")
def ed_key() -> Signer:
    return Signer("EdDSA")


@pytest.fixture(scope="module")
def attacker(rsa_key) -> Signer:
    return Signer("RS256", kid=rsa_key.kid)


@pytest.fixture
def timer() -> Timer:
    return Timer()


@pytest.fixture
def published(rsa_key, ec_key, ed_key) -> list[dict]:
    return [rsa_key.jwk, ec_key.jwk, ed_key.jwk]


@pytest.fixture
def http(published) -> FakeHttp:
    fake = FakeHttp()
    fake.serve_json(METADATA_URI, {"issuer": ISSUER, "jwks_uri": JWKS_URI,
                                   "introspection_endpoint": f"{ISSUER}/oauth/introspect"})
    fake.serve_jwks(JWKS_URI, lambda: published, max_age=300)
    return fake


@pytest.fixture
def make_verifier(http, timer) -> Callable[..., TokenVerifier]:
    def make(**kwargs: Any) -> TokenVerifier:
        kwargs.setdefault("http", http)
        kwargs.setdefault("timer", timer)
        kwargs.setdefault("min_refetch_interval", 10)
        return TokenVerifier(ISSUER, AUDIENCE, **kwargs)

    return make


@pytest.fixture
def verifier(make_verifier) -> TokenVerifier:
    return make_verifier()


# -- what a valid token gives ------------------------------------------------------------

@pytest.mark.parametrize("key", ["rsa_key", "ec_key", "ed_key"])
def test_verify_returns_typed_claims(verifier, request, key):
    signer = request.getfixturevalue(key)
    payload = claims(scope="orders:read orders:write", auth_time=123,
                     cnf={"jkt": "thumb"})
    result = verifier.verify(signer.sign(payload))
    assert isinstance(result, AccessTokenClaims)
    assert result.sub == "user-1" and result.client_id == "app-1"
    assert result.scope == frozenset({"orders:read", "orders:write"})
    assert result.has_scope("orders:read") and not result.has_scope("admin")
    assert result.aud == (AUDIENCE,) and result.iss == ISSUER and result.sid == "fam-1"
    assert result.exp == payload["exp"] and result.iat == payload["iat"]
    assert result.jti == payload["jti"] and result.auth_time == 123
    assert result.cnf_jkt == "thumb" and result.dpop_bound
    assert result.raw["scope"] == "orders:read orders:write"
    with pytest.raises(TypeError):
        result.raw["sub"] = "mallory"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.sub = "mallory"  # type: ignore[misc]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"typ": "application/at+jwt"}, id="typ-media-type"),
        pytest.param({"typ": "AT+JWT"}, id="typ-case-insensitive"),
    ],
)
def test_rfc9068_typ_variants_are_accepted(verifier, rsa_key, change):
    assert verifier.verify(rsa_key.sign(**change)).sub == "user-1"


def test_an_audience_list_containing_ours_and_small_clock_skew_are_accepted(verifier,
                                                                             rsa_key):
    now = int(time.time())
    token = rsa_key.sign(claims(aud=["https://other.example", AUDIENCE], exp=now - 20,
                                iat=now + 20, nbf=now + 20))
    assert verifier.verify(token).aud == ("https://other.example", AUDIENCE)


def test_several_accepted_audiences(http, rsa_key):
    verifier = TokenVerifier(ISSUER, ["https://a.example", AUDIENCE], http=http)
    assert verifier.verify(rsa_key.sign()).sub == "user-1"


# -- the forged and broken tokens: each refused with its reason ------------------------------

def hs256_with_public_key(rsa_key: Signer) -> str:
    """The classic confusion attack: HMAC "signed" with the RSA public key as the secret."""
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": rsa_key.kid}).encode())
    payload = b64(json.dumps(claims()).encode())
    mac = hmac.new(rsa_key.public_pem, f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{b64(mac.digest())}"


def tampered(rsa_key: Signer) -> str:
    header, _, signature = rsa_key.sign().split(".")
    return ".".join([header, b64(json.dumps(claims(scope="admin")).encode()), signature])


def non_canonical(rsa_key: Signer) -> str:
    """The same signature bytes, spelt with unused low bits set in the last character."""
    header, payload, signature = rsa_key.sign().split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    twin = alphabet[alphabet.index(signature[-1]) + 1]  # 256 bytes: 4 unused bits
    return ".".join([header, payload, signature[:-1] + twin])




def now() -> int:
    """The time when a forgery is made (not at import: a long run would make it stale)."""
    return int(time.time())


FORGERIES: list[Any] = [
    pytest.param(lambda k, e, a: unsigned({"alg": "none", "typ": "at+jwt", "kid": k.kid},
                                          claims()), InvalidAlgorithm, id="alg-none"),
    pytest.param(lambda k, e, a: unsigned({"alg": "None", "typ": "at+jwt", "kid": k.kid},
                                          claims()), InvalidAlgorithm, id="alg-None"),
    pytest.param(lambda k, e, a: hs256_with_public_key(k), InvalidAlgorithm,
                 id="hs256-with-public-key"),
    pytest.param(lambda k, e, a: k.sign(alg="PS256"), InvalidAlgorithm,
                 id="algorithm-not-pinned"),
    pytest.param(lambda k, e, a: e.sign(kid=k.kid), InvalidAlgorithm,
                 id="es256-naming-the-rsa-key"),
    pytest.param(lambda k, e, a: Signer("RS256").sign(), UnknownKey, id="unknown-kid"),
    pytest.param(lambda k, e, a: k.sign(kid=None), UnknownKey, id="no-kid"),
    pytest.param(lambda k, e, a: Signer("RS256").sign(jwk=Signer("RS256").jwk),
                 UnknownKey, id="embedded-jwk-is-ignored"),
    pytest.param(lambda k, e, a: a.sign(), InvalidSignature, id="signed-by-another-key"),
    pytest.param(lambda k, e, a: tampered(k), InvalidSignature, id="tampered-payload"),
    pytest.param(lambda k, e, a: k.sign(claims(iss="https://evil.example")), InvalidIssuer,
                 id="wrong-issuer"),
    pytest.param(lambda k, e, a: k.sign(claims(iss=None)), InvalidIssuer, id="no-issuer"),
    pytest.param(lambda k, e, a: k.sign(claims(aud="https://other.example")),
                 InvalidAudience, id="wrong-audience"),
    pytest.param(lambda k, e, a: k.sign(claims(aud=None)), InvalidClaims, id="no-audience"),
    pytest.param(lambda k, e, a: k.sign(claims(exp=now() - 31, iat=now() - 900)), ExpiredToken,
                 id="expired"),
    pytest.param(lambda k, e, a: k.sign(claims(nbf=now() + 120)), NotYetValid,
                 id="not-yet-valid"),
    pytest.param(lambda k, e, a: k.sign(claims(iat=now() + 120)), NotYetValid,
                 id="issued-in-the-future"),
    pytest.param(lambda k, e, a: k.sign(typ="JWT"), InvalidTokenType, id="typ-JWT"),
    pytest.param(lambda k, e, a: k.sign(typ=None), InvalidTokenType, id="no-typ"),
    pytest.param(lambda k, e, a: k.sign(typ="dpop+jwt"), InvalidTokenType, id="typ-dpop"),
    pytest.param(lambda k, e, a: k.sign(claims(sub=None)), InvalidClaims, id="no-sub"),
    pytest.param(lambda k, e, a: k.sign(claims(client_id=None)), InvalidClaims,
                 id="no-client-id"),
    pytest.param(lambda k, e, a: k.sign(claims(jti=None)), InvalidClaims, id="no-jti"),
    pytest.param(lambda k, e, a: k.sign(claims(exp=None)), InvalidClaims, id="no-exp"),
    pytest.param(lambda k, e, a: k.sign(claims(exp=str(now() + 60))), InvalidClaims,
                 id="exp-a-string"),
    pytest.param(lambda k, e, a: k.sign(claims(exp=True)), InvalidClaims, id="exp-a-bool"),
    pytest.param(lambda k, e, a: k.sign(claims(scope=["read"])), InvalidClaims,
                 id="scope-a-list"),
    pytest.param(lambda k, e, a: k.sign(crit=["exp"]), MalformedToken, id="crit-header"),
    pytest.param(lambda k, e, a: k.sign()[:-10], InvalidSignature, id="truncated-signature"),
    pytest.param(lambda k, e, a: k.sign()[:60], MalformedToken, id="truncated"),
    pytest.param(lambda k, e, a: k.sign().rsplit(".", 1)[0] + ".", InvalidSignature,
                 id="no-signature"),
    pytest.param(lambda k, e, a: non_canonical(k), MalformedToken,
                 id="non-canonical-base64"),
    pytest.param(lambda k, e, a: "garbage", MalformedToken, id="garbage"),
    pytest.param(lambda k, e, a: "", MalformedToken, id="empty"),
    pytest.param(lambda k, e, a: "a.b.c.d.e", MalformedToken, id="jwe-shape"),
    pytest.param(lambda k, e, a: "é.é.é", MalformedToken, id="not-ascii"),
    pytest.param(lambda k, e, a: "x" * 20_000, MalformedToken, id="huge"),
    pytest.param(lambda k, e, a: unsigned({"alg": "RS256", "typ": "at+jwt", "kid": k.kid},
                                          [1, 2], b"sig") , InvalidSignature,
                 id="payload-not-an-object"),
]


@pytest.mark.parametrize(("forge", "expected"), FORGERIES)
def test_forged_and_broken_tokens_are_refused_with_their_reason(
        verifier, http, rsa_key, ec_key, attacker, forge, expected):
    token = forge(rsa_key, ec_key, attacker)
    with pytest.raises(expected) as info:
        verifier.verify(token)
    assert type(info.value) is expected
    assert isinstance(info.value, InvalidToken) and info.value.status == 401
    assert info.value.error == "invalid_token"
    assert "eyJ" not in info.value.description  # never echoes the token


@pytest.mark.parametrize("payload", [b"[1, 2]", b'{"exp": Infinity}', b'{"exp": NaN}'],
                         ids=["array", "infinity", "nan"])
def test_a_signed_payload_that_is_not_a_json_object_is_malformed(verifier, rsa_key, payload):
    header = b64(json.dumps({"alg": "RS256", "typ": "at+jwt", "kid": rsa_key.kid}).encode())
    body = b64(payload)
    signature = rsa_key.private.sign(f"{header}.{body}".encode(), *_pkcs1())
    with pytest.raises(MalformedToken):
        verifier.verify(f"{header}.{body}.{b64(signature)}")


def _pkcs1() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return padding.PKCS1v15(), hashes.SHA256()


def test_the_jku_header_is_never_fetched(verifier, http, rsa_key):
    token = Signer("RS256").sign(jku="https://evil.example/jwks")
    with pytest.raises(UnknownKey):
        verifier.verify(token)
    assert all("evil" not in url for _, url, _ in http.requests)


@pytest.mark.parametrize("algorithms", [("none",), ("HS256",), ("RS256", "HS256"), (),
                                        ("XYZ",)])
def test_the_verifier_refuses_to_accept_symmetric_or_unknown_algorithms(algorithms):
    with pytest.raises(ValueError):
        TokenVerifier(ISSUER, AUDIENCE, algorithms=algorithms)


@pytest.mark.parametrize(("issuer", "audience"), [("auth.example", AUDIENCE),
                                                  ("ftp://auth.example", AUDIENCE),
                                                  (ISSUER, ""), (ISSUER, [])])
def test_the_verifier_refuses_a_bad_issuer_or_audience(issuer, audience):
    with pytest.raises(ValueError):
        TokenVerifier(issuer, audience)


def test_pinning_one_algorithm_refuses_the_others(make_verifier, ec_key, rsa_key):
    only_es256 = make_verifier(algorithms=["ES256"])
    assert only_es256.verify(ec_key.sign()).sub == "user-1"
    with pytest.raises(InvalidAlgorithm):
        only_es256.verify(rsa_key.sign())


# -- discovery ---------------------------------------------------------------------------

def test_jwks_uri_is_discovered_from_rfc8414_metadata_once(verifier, http, rsa_key):
    for _ in range(5):
        verifier.verify(rsa_key.sign())
    assert http.count(METADATA_URI) == 1 and http.count(JWKS_URI) == 1
    assert http.count(OIDC_URI) == 0


def test_discovery_falls_back_to_openid_configuration(http, make_verifier, rsa_key):
    del http.routes[METADATA_URI]
    http.serve_json(OIDC_URI, {"issuer": ISSUER, "jwks_uri": JWKS_URI})
    assert make_verifier().verify(rsa_key.sign()).sub == "user-1"
    assert http.count(METADATA_URI) == 1 and http.count(OIDC_URI) == 1


def test_rfc8414_well_known_goes_before_the_issuer_path():
    from authserver.resource.discovery import metadata_urls

    assert metadata_urls("https://as.example/tenant1") == [
        "https://as.example/.well-known/oauth-authorization-server/tenant1",
        "https://as.example/tenant1/.well-known/openid-configuration"]


@pytest.mark.parametrize(
    "document",
    [
        pytest.param({"issuer": "https://evil.example", "jwks_uri": JWKS_URI},
                     id="another-issuer"),
        pytest.param({"issuer": ISSUER, "jwks_uri": "http://as.example/jwks"},
                     id="plain-http-jwks"),
        pytest.param({"issuer": ISSUER}, id="no-jwks-uri"),
        pytest.param({"issuer": ISSUER, "jwks_uri": "/jwks"}, id="relative-jwks-uri"),
    ],
)
def test_bad_metadata_makes_the_verifier_unavailable(http, make_verifier, rsa_key,
                                                     document):
    http.serve_json(METADATA_URI, document)
    with pytest.raises(VerifierUnavailable) as info:
        make_verifier().verify(rsa_key.sign())
    assert info.value.status == 503


def test_an_unreachable_server_is_not_asked_again_for_every_token(http, make_verifier,
                                                                  timer, rsa_key):
    http.routes.clear()
    verifier = make_verifier()
    for _ in range(20):
        with pytest.raises(VerifierUnavailable):
            verifier.verify(rsa_key.sign())
    assert len(http.requests) == 2  # RFC 8414 then OIDC, once
    timer.now += 10
    with pytest.raises(VerifierUnavailable):
        verifier.verify(rsa_key.sign())
    assert len(http.requests) == 4


def test_an_explicit_jwks_uri_skips_discovery(http, make_verifier, rsa_key):
    make_verifier(jwks_uri=JWKS_URI).verify(rsa_key.sign())
    assert http.count(METADATA_URI) == 0 and http.count(JWKS_URI) == 1


# -- caching -----------------------------------------------------------------------------

def test_the_jwks_is_cached_for_max_age_then_revalidated_with_its_etag(
        verifier, http, timer, rsa_key):
    for _ in range(50):
        verifier.verify(rsa_key.sign())
    assert http.count(JWKS_URI) == 1
    timer.now += 299
    verifier.verify(rsa_key.sign())
    assert http.count(JWKS_URI) == 1
    timer.now += 1
    verifier.verify(rsa_key.sign())
    assert http.count(JWKS_URI) == 2
    revalidation = [h for m, u, h in http.requests if u == JWKS_URI][-1]
    assert revalidation["If-None-Match"].startswith('"')
    verifier.verify(rsa_key.sign())
    assert http.count(JWKS_URI) == 2  # the 304 renewed the copy


@pytest.mark.parametrize(
    ("cache_control", "age", "lifetime"),
    [
        pytest.param("public, max-age=60", None, 60, id="max-age"),
        pytest.param("max-age=60", "45", 15, id="minus-age"),
        pytest.param("no-store", None, 1, id="no-store-floored-at-one-second"),
        pytest.param("max-age=0", None, 1, id="zero-floored-at-one-second"),
        pytest.param("max-age=2", None, 2, id="short"),
        pytest.param("", None, 300, id="default"),
        pytest.param("max-age=999999999", None, 86_400, id="capped"),
    ],
)
def test_the_cache_lifetime_honours_cache_control(http, make_verifier, timer, rsa_key,
                                                  published, cache_control, age, lifetime):
    body = json.dumps({"keys": published}).encode()
    headers = {"cache-control": cache_control, **({"age": age} if age else {})}
    http.routes[JWKS_URI] = lambda _h: HttpResponse(200, body, headers)
    verifier = make_verifier(jwks_uri=JWKS_URI)
    verifier.verify(rsa_key.sign())
    timer.now += lifetime - 0.5
    verifier.verify(rsa_key.sign())
    assert http.count(JWKS_URI) == 1
    timer.now += 1
    verifier.verify(rsa_key.sign())
    assert http.count(JWKS_URI) == 2


def test_unknown_kids_cause_at_most_one_refetch_per_interval(verifier, http, timer,
                                                             rsa_key):
    verifier.verify(rsa_key.sign())
    with pytest.raises(UnknownKey):  # the keys were fetched just now: no refetch
        verifier.verify(Signer("RS256").sign())
    assert http.count(JWKS_URI) == 1
    timer.now += 10
    strangers = [Signer("RS256") for _ in range(3)]
    for _ in range(30):
        for stranger in strangers:
            with pytest.raises(UnknownKey):
                verifier.verify(stranger.sign())
    assert http.count(JWKS_URI) == 2
    assert verifier.keys.unknown_kid_refetches == 1
    timer.now += 10
    with pytest.raises(UnknownKey):
        verifier.verify(strangers[0].sign())
    assert http.count(JWKS_URI) == 3
    verifier.verify(rsa_key.sign())  # known keys never wait
    assert http.count(JWKS_URI) == 3


def test_a_key_published_after_the_last_fetch_is_found_by_one_refetch(
        verifier, http, timer, rsa_key, published):
    verifier.verify(rsa_key.sign())
    newcomer = Signer("ES256")
    published.append(newcomer.jwk)
    timer.now += 10
    assert verifier.verify(newcomer.sign()).sub == "user-1"
    assert http.count(JWKS_URI) == 2


def run_together(count: int, target: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except Exception as exc:  # collected and asserted by the caller
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_no_thundering_herd_when_the_cache_expires(verifier, http, timer, rsa_key):
    token = rsa_key.sign()
    verifier.verify(token)
    timer.now += 301
    http.delay = 0.2
    results = run_together(16, lambda: verifier.verify(token))
    assert all(isinstance(r, AccessTokenClaims) for r in results), results
    assert http.count(JWKS_URI) == 2


def test_no_thundering_herd_on_an_unknown_kid(verifier, http, timer, rsa_key):
    verifier.verify(rsa_key.sign())
    timer.now += 10
    http.delay = 0.2
    forged = Signer("RS256").sign()
    results = run_together(16, lambda: verifier.verify(forged))
    assert all(isinstance(r, UnknownKey) for r in results), results
    assert http.count(JWKS_URI) == 2


def test_keys_fetched_before_keep_working_while_the_server_is_down(
        verifier, http, timer, rsa_key):
    verifier.verify(rsa_key.sign())
    http.routes[JWKS_URI] = lambda _h: HttpResponse(500, b"down", {})
    timer.now += 301
    for _ in range(10):
        verifier.verify(rsa_key.sign())
    assert http.count(JWKS_URI) == 2 and verifier.keys.failures == 1
    timer.now += 10
    verifier.verify(rsa_key.sign())
    assert http.count(JWKS_URI) == 3


# -- which published keys are usable -----------------------------------------------------

def test_only_public_signature_keys_fitting_their_algorithm_are_admitted(
        http, make_verifier, rsa_key, caplog):
    small = rsa.generate_private_key(65537, 1024)  # noqa: S505 - the point of the test
    small_jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(small.public_key())),
                 "kid": "small", "alg": "RS256"}
    leaked = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.private)),
              "kid": "leaked", "alg": "RS256"}
    secret = {"kty": "oct", "k": b64(b"0" * 32), "kid": "secret", "alg": "HS256"}
    encryption = {**rsa_key.jwk, "kid": "enc", "use": "enc"}
    mislabelled = {**rsa_key.jwk, "kid": "mislabelled", "alg": "ES256"}
    http.serve_jwks(JWKS_URI, lambda: [small_jwk, leaked, secret, encryption, mislabelled,
                                       {"kty": "RSA"}, "junk", rsa_key.jwk])
    verifier = make_verifier(min_refetch_interval=0)
    assert verifier.verify(rsa_key.sign()).sub == "user-1"
    assert set(verifier.keys._keys) == {rsa_key.kid}  # type: ignore[arg-type]
    assert "private key material" in caplog.text
    for kid in ("small", "leaked", "secret", "enc", "mislabelled"):
        with pytest.raises(UnknownKey):
            verifier.verify(rsa_key.sign(kid=kid))


# -- the library stands alone ----------------------------------------------------------------

def test_the_library_imports_and_verifies_without_flask_sqlalchemy_or_the_server(rsa_key):
    token = rsa_key.sign()
    script = f"""
import json, sys
for name in ("flask", "werkzeug", "sqlalchemy", "flask_sqlalchemy", "authlib", "joserfc",
             "requests", "gunicorn", "authserver.app", "authserver.config",
             "authserver.crypto", "authserver.protocol", "authserver.storage"):
    sys.modules[name] = None  # importing any of them now fails
from authserver.resource import HttpResponse, TokenVerifier, require_token

class Http:
    def get(self, url, headers, timeout):
        return HttpResponse(200, json.dumps({{"keys": [{json.dumps(rsa_key.jwk)}]}}).encode())

verifier = TokenVerifier({ISSUER!r}, {AUDIENCE!r}, jwks_uri={JWKS_URI!r}, http=Http())
print(verifier.verify({token!r}).sub)
loaded = sorted(m for m in sys.modules if sys.modules[m] is not None)
print(json.dumps([m for m in loaded if m.split(".")[0] in
                  ("flask", "werkzeug", "sqlalchemy", "authlib", "joserfc", "requests")
                  or m.startswith(("authserver.crypto", "authserver.app"))]))
"""
    result = subprocess.run([sys.executable, "-I", "-c", script], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "user-1" and json.loads(lines[1]) == []


def test_importing_the_package_imports_nothing_of_the_server():
    result = subprocess.run(
        [sys.executable, "-I", "-c", "import sys, authserver; print(sorted(m for m in "
         "sys.modules if m.startswith(('authserver.', 'flask', 'sqlalchemy'))))"],
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr


def test_token_text_never_reaches_error_messages(verifier, rsa_key):
    token = rsa_key.sign(claims(iss="https://evil.example"))
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    assert token not in str(info.value) and token.split(".")[1] not in repr(info.value)
