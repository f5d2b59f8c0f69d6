"""``require_token`` in a Flask API (RFC 6750 §3, RFC 9449 §7), and introspection mode.

The API is a tiny Flask app using only ``authserver.resource``; tokens are signed with a
test key (its JWKS served by a test double), and, for introspection, issued and revoked
by the real authorization server app.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from flask import Flask, g

from authserver.resource import (
    DPoPVerifier,
    HttpResponse,
    IntrospectionVerifier,
    InvalidSignature,
    TokenInactive,
    TokenVerifier,
    VerifierUnavailable,
    current_token,
    require_token,
)
from tests.support.oauth import basic
from tests.support.resource import (
    AUDIENCE,
    ISSUER,
    DPoPKey,
    FakeHttp,
    FlaskHttp,
    Signer,
    claims,
)

JWKS_URI = f"{ISSUER}/jwks"
API = "http://api.example"
DPOP_ALGS = "ES256 RS256 PS256 EdDSA"


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer("RS256")


@pytest.fixture
def http(signer) -> FakeHttp:
    fake = FakeHttp()
    fake.serve_jwks(JWKS_URI, lambda: [signer.jwk])
    return fake


@pytest.fixture
def api(http) -> Flask:
    verifier = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http=http)
    app = Flask("orders-api")

    @app.get("/orders")
    @require_token(verifier, scope="orders:read", realm="orders")
    def orders() -> dict[str, Any]:
        token = current_token()
        return {"sub": token.sub, "scope": sorted(token.scope), "same": token is g.access_token}

    @app.post("/orders")
    @require_token(verifier, scope=["orders:read", "orders:write"], realm="orders")
    def create_order() -> tuple[dict[str, str], int]:
        return {"by": current_token().sub}, 201

    return app


@pytest.fixture
def api_client(api):
    return api.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def challenge(response) -> str:
    values = response.headers.getlist("WWW-Authenticate")
    assert len(values) == 1, values
    return values[0]


def test_a_valid_token_reaches_the_view_with_its_claims(api_client, signer):
    token = signer.sign(claims(scope="orders:read profile"))
    response = api_client.get("/orders", headers=bearer(token))
    assert response.status_code == 200
    assert response.get_json() == {"sub": "user-1", "scope": ["orders:read", "profile"],
                                   "same": True}
    assert api_client.get("/orders", headers={"Authorization": f"bearer {token}"}).status_code \
        == 200  # the scheme is case-insensitive (RFC 7235 §2.1)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}],
                         ids=["no-credentials", "another-scheme"])
def test_without_a_token_the_answer_is_a_bare_challenge(api_client, headers):
    """RFC 6750 §3.1: no error code when the request has no authentication for us."""
    response = api_client.get("/orders", headers=headers)
    assert response.status_code == 401
    assert response.headers.getlist("WWW-Authenticate") == [
        'Bearer realm="orders"', f'DPoP realm="orders", algs="{DPOP_ALGS}"']
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    ("make", "description"),
    [
        pytest.param(lambda s: s.sign(claims(exp=int(time.time()) - 100)),
                     "the access token has expired", id="expired"),
        pytest.param(lambda s: s.sign(typ="JWT"),
                     "the token is not an access token (typ must be at+jwt)", id="typ-JWT"),
        pytest.param(lambda s: Signer("RS256", kid=s.kid).sign(),
                     "the access token's signature is invalid", id="forged"),
        pytest.param(lambda s: "garbage",
                     "the access token is not a compact JWS (three parts)", id="garbage"),
    ],
)
def test_an_invalid_token_is_401_invalid_token_with_a_description(api_client, signer, make,
                                                                  description):
    response = api_client.get("/orders", headers=bearer(make(signer)))
    assert response.status_code == 401
    assert challenge(response) == (f'Bearer realm="orders", error="invalid_token", '
                                   f'error_description="{description}"')
    assert response.get_json() == {"error": "invalid_token",
                                   "error_description": description}


def test_missing_scope_is_403_insufficient_scope_naming_the_scope(api_client, signer):
    token = signer.sign(claims(scope="orders:read"))
    response = api_client.post("/orders", headers=bearer(token))
    assert response.status_code == 403
    assert challenge(response) == (
        'Bearer realm="orders", error="insufficient_scope", '
        'error_description="the request needs scope orders:read orders:write", '
        'scope="orders:read orders:write"')
    writer = signer.sign(claims(scope="orders:read orders:write"))
    assert api_client.post("/orders", headers=bearer(writer)).status_code == 201


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer two words", 'Bearer "quoted"', "Bearer tok,en"],
)
def test_a_malformed_authorization_header_is_400_invalid_request(api_client, authorization):
    response = api_client.get("/orders", headers={"Authorization": authorization})
    assert response.status_code == 400
    assert 'error="invalid_request"' in challenge(response)


def test_two_authorization_headers_are_400(api_client, signer):
    token = signer.sign()
    response = api_client.get("/orders", headers=[("Authorization", f"Bearer {token}"),
                                              ("Authorization", f"Bearer {token}")])
    assert response.status_code == 400


def test_an_unreachable_authorization_server_is_503_not_401(api_client, http, signer):
    http.routes.clear()
    response = api_client.get("/orders", headers=bearer(signer.sign()))
    assert response.status_code == 503
    assert response.headers["Retry-After"] and "WWW-Authenticate" not in response.headers


def test_error_descriptions_are_safe_header_text():
    from authserver.resource import InvalidToken, challenges

    error = InvalidToken('evil "quote" \\ and \r\n newline')
    (value,) = challenges(error, realm="r", dpop_algs=None)
    assert "\r" not in value and "\n" not in value and '\\' not in value
    assert value.count('"') == 6


# -- DPoP-bound tokens (RFC 9449 §7.1) ---------------------------------------------------

@pytest.fixture
def dpop_key() -> DPoPKey:
    return DPoPKey()


@pytest.fixture
def bound(signer, dpop_key) -> str:
    return signer.sign(claims(scope="orders:read", cnf={"jkt": dpop_key.jkt}))


def dpop(token: str, proof: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def test_a_dpop_bound_token_with_a_valid_proof_is_accepted(api_client, bound, dpop_key):
    proof = dpop_key.proof("GET", f"{API}/orders", bound)
    response = api_client.get(f"{API}/orders?page=2", headers=dpop(bound, proof))
    assert response.status_code == 200, response.headers


def test_a_dpop_bound_token_used_as_a_bearer_token_is_refused(api_client, bound):
    response = api_client.get(f"{API}/orders", headers=bearer(bound))
    assert response.status_code == 401
    assert challenge(response).startswith('DPoP realm="orders", error="invalid_token"')
    assert f'algs="{DPOP_ALGS}"' in challenge(response)


def test_a_bearer_token_sent_with_the_dpop_scheme_is_refused(api_client, signer, dpop_key):
    token = signer.sign()
    response = api_client.get(f"{API}/orders",
                          headers=dpop(token, dpop_key.proof("GET", f"{API}/orders", token)))
    assert response.status_code == 401 and 'error="invalid_token"' in challenge(response)


@pytest.mark.parametrize(
    ("make_proof", "reason"),
    [
        pytest.param(lambda k, t: None, "exactly one DPoP header", id="no-proof"),
        pytest.param(lambda k, t: k.proof("POST", f"{API}/orders", t), "htm", id="wrong-method"),
        pytest.param(lambda k, t: k.proof("GET", f"{API}/other", t), "htu", id="wrong-url"),
        pytest.param(lambda k, t: k.proof("GET", f"{API}/orders"), "ath", id="no-ath"),
        pytest.param(lambda k, t: k.proof("GET", f"{API}/orders", t + "x"), "ath",
                     id="ath-of-another-token"),
        pytest.param(lambda k, t: DPoPKey().proof("GET", f"{API}/orders", t),
                     "not the key the token is bound to", id="another-key"),
        pytest.param(lambda k, t: k.proof("GET", f"{API}/orders", t,
                                          iat=int(time.time()) - 3600), "too old",
                     id="old-proof"),
        pytest.param(lambda k, t: k.proof("GET", f"{API}/orders", t).replace(".", ".x", 1),
                     "signature", id="broken-signature"),
        pytest.param(lambda k, t: "not-a-jws", "compact JWS", id="garbage"),
        pytest.param(lambda k, t: k.proof("GET", f"{API}/orders", t, iat=float("nan")),
                     "needs iat", id="nan-iat"),
    ],
)
def test_a_dpop_bound_token_needs_a_matching_proof(api_client, bound, dpop_key, make_proof,
                                                   reason):
    proof = make_proof(dpop_key, bound)
    headers = {"Authorization": f"DPoP {bound}"}
    if proof is not None:
        headers["DPoP"] = proof
    response = api_client.get(f"{API}/orders", headers=headers)
    assert response.status_code == 401
    value = challenge(response)
    assert value.startswith('DPoP realm="orders", error="invalid_dpop_proof"'), value
    assert reason in value and f'algs="{DPOP_ALGS}"' in value


def test_a_dpop_proof_cannot_be_replayed(api_client, bound, dpop_key):
    proof = dpop_key.proof("GET", f"{API}/orders", bound)
    assert api_client.get(f"{API}/orders", headers=dpop(bound, proof)).status_code == 200
    again = api_client.get(f"{API}/orders", headers=dpop(bound, proof))
    assert again.status_code == 401 and "already used" in challenge(again)


def test_dpop_can_be_refused_entirely(http, signer, bound, dpop_key):
    verifier = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http=http)
    app = Flask("bearer-only")
    app.get("/x")(require_token(verifier, accept_dpop=False)(lambda: "ok"))
    response = app.test_client().get(
        "/x", headers=dpop(bound, dpop_key.proof("GET", "http://localhost/x", bound)))
    assert response.status_code == 401
    assert app.test_client().get("/x").headers.getlist("WWW-Authenticate") == [
        'Bearer realm="api"']


def test_a_custom_dpop_verifier_pins_its_algorithms(http, signer, dpop_key):
    verifier = TokenVerifier(ISSUER, AUDIENCE, jwks_uri=JWKS_URI, http=http)
    app = Flask("eddsa-only")
    app.get("/x")(require_token(verifier, dpop=DPoPVerifier(["EdDSA"]))(lambda: "ok"))
    token = signer.sign(claims(cnf={"jkt": dpop_key.jkt}))
    response = app.test_client().get(
        "/x", headers=dpop(token, dpop_key.proof("GET", "http://localhost/x", token)))
    assert response.status_code == 401 and 'algs="EdDSA"' in challenge(response)


# -- introspection mode, against the authorization server --------------------------------

AS_ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def as_http(app) -> FlaskHttp:
    return FlaskHttp(app.test_client())


@pytest.fixture
def resource_server(oauth) -> tuple[str, str]:
    api, secret = oauth.create_client(name="Orders API", grant_types=["client_credentials"],
                                      allow_introspection=True)
    return api.client_id, secret


@pytest.fixture
def signed_in(oauth) -> dict[str, Any]:
    oauth.create_user()
    mobile = oauth.first_party_app()
    return {"client": mobile, **oauth.login_pair(mobile, scope="read")}


def test_introspection_sees_a_revocation_at_once_where_local_checks_cannot(
        oauth, as_http, resource_server, signed_in):
    # Without the status check (or within its list's ttl) a local check is signatures only.
    local = TokenVerifier(AS_ISSUER, AS_ISSUER, http=as_http, status=False)
    remote = IntrospectionVerifier(AS_ISSUER, AS_ISSUER, *resource_server, http=as_http)
    both = IntrospectionVerifier(AS_ISSUER, AS_ISSUER, *resource_server, http=as_http,
                                 local=local)
    token = signed_in["access_token"]
    for verifier in (local, remote, both):
        result = verifier.verify(token)
        assert result.scope == {"read"} and result.client_id == signed_in["client"].client_id
    assert f"{AS_ISSUER}/oauth/introspect" in as_http.urls

    revoked = oauth.client.post("/oauth/revoke", data={
        "token": signed_in["refresh_token"], "client_id": signed_in["client"].client_id})
    assert revoked.status_code == 200
    assert local.verify(token).sub  # a signature-only check accepts it until exp...
    for verifier in (remote, both):  # ...but introspection knows at once
        with pytest.raises(TokenInactive):
            verifier.verify(token)


def test_with_local_checks_a_forgery_never_costs_an_introspection(
        as_http, resource_server, signed_in):
    local = TokenVerifier(AS_ISSUER, AS_ISSUER, http=as_http)
    both = IntrospectionVerifier(AS_ISSUER, AS_ISSUER, *resource_server, http=as_http,
                                 local=local)
    header, payload, _ = signed_in["access_token"].split(".")
    forged = f"{header}.{payload}.{Signer('RS256').sign().split('.')[2]}"
    with pytest.raises(InvalidSignature):
        both.verify(forged)
    assert not any(url.endswith("/oauth/introspect") for url in as_http.urls)


def test_wrong_resource_server_credentials_are_503_not_the_callers_fault(
        as_http, resource_server, signed_in):
    client_id, _ = resource_server
    verifier = IntrospectionVerifier(AS_ISSUER, AS_ISSUER, client_id, "wrong-secret",
                                     http=as_http)
    with pytest.raises(VerifierUnavailable):
        verifier.verify(signed_in["access_token"])


def test_introspection_sends_client_secret_basic(resource_server):
    fake = FakeHttp()
    endpoint = f"{ISSUER}/oauth/introspect"
    fake.routes[endpoint] = lambda _h: HttpResponse(200, b'{"active": false}', {})
    client_id, secret = resource_server
    verifier = IntrospectionVerifier(ISSUER, AUDIENCE, client_id, secret,
                                     introspection_endpoint=endpoint, http=fake)
    with pytest.raises(TokenInactive):
        verifier.verify("some.access.token")
    method, url, headers = fake.requests[0]
    assert (method, url) == ("POST", endpoint)
    assert headers["Authorization"] == basic(client_id, secret)
    assert fake.posted == [{"token": "some.access.token", "token_type_hint": "access_token"}]
