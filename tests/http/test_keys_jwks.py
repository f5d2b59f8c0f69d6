"""The JWKS endpoint and discovery across the key lifecycle, over HTTP (Flask client)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import jwt
import pytest

from authserver.crypto.key_admin import KeyAdmin
from authserver.crypto.keystore import KeyStore
from authserver.crypto.lifecycle import KeyPolicy, KeyRecord
from authserver.protocol.tokens import AccessTokenIssuer
from authserver.resource import TokenVerifier
from tests.support.oauth import basic
from tests.support.resource import FlaskHttp

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"}
MAX_AGE = 120
ISSUER = "http://127.0.0.1:8000"


@pytest.fixture
def own_keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"jwks_max_age": MAX_AGE}


@pytest.fixture(autouse=True)
def own_key_store(app, own_keys: Path) -> KeyStore:
    """This module's app signs with keys in its own directory (the suite's is shared)."""
    svc = app.extensions["authserver"]
    svc.settings = dataclasses.replace(svc.settings, keys_dir=str(own_keys))
    svc.keys = KeyStore.from_settings(svc.settings)
    svc.tokens = AccessTokenIssuer(svc.settings, svc.keys)
    return svc.keys


def make_key(path: Path, alg: str, state: str) -> str:
    key = KeyAdmin(path).create(alg, state)
    if state == "retired":  # as if it signed until a minute ago
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        record = KeyRecord(key.kid, alg, "retired", now - dt.timedelta(days=1),
                           now - dt.timedelta(minutes=1))
        (path / f"{key.kid}.json").write_text(json.dumps(record.to_json()))
    return key.kid


@pytest.fixture
def three_keys(own_keys: Path) -> dict[str, str]:
    """An RSA active key, an EC next key and an Ed25519 retired key."""
    return {"RS256": make_key(own_keys, "RS256", "active"),
            "ES256": make_key(own_keys, "ES256", "next"),
            "EdDSA": make_key(own_keys, "EdDSA", "retired")}


def test_jwks_publishes_next_active_and_retired_public_keys_only(client, three_keys):
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    keys = {k["kid"]: k for k in response.get_json()["keys"]}
    assert set(keys) == set(three_keys.values())
    expected = {"RS256": ("RSA", {"n", "e"}), "ES256": ("EC", {"crv", "x", "y"}),
                "EdDSA": ("OKP", {"crv", "x"})}
    for alg, kid in three_keys.items():
        jwk = keys[kid]
        kty, members = expected[alg]
        assert jwk["kty"] == kty and jwk["alg"] == alg and jwk["use"] == "sig"
        assert not PRIVATE_MEMBERS & set(jwk), jwk
        assert set(jwk) == {"kty", "kid", "alg", "use"} | members
        jwt.PyJWK(jwk)  # a valid public JWK for PyJWT
    assert b'"d"' not in response.get_data()


def test_jwks_is_cacheable_for_less_than_the_prepublication_period(client, three_keys, app):
    response = client.get("/.well-known/jwks.json")
    cache_control = response.headers["Cache-Control"]
    assert "public" in cache_control and f"max-age={MAX_AGE}" in cache_control
    assert app.extensions["authserver"].keys.policy.prepublish > MAX_AGE
    assert KeyPolicy.for_jwks_max_age(MAX_AGE).prepublish > MAX_AGE
    etag = response.headers["ETag"]

    cached = client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.get_data() == b""
    assert cached.headers["ETag"] == etag
    assert f"max-age={MAX_AGE}" in cached.headers["Cache-Control"]
    other = client.get("/.well-known/jwks.json", headers={"If-None-Match": '"stale"'})
    assert other.status_code == 200


def test_the_etag_changes_when_a_key_is_added_and_not_when_one_is_promoted(
        client, app, own_keys, three_keys):
    keys: KeyStore = app.extensions["authserver"].keys
    first = client.get("/.well-known/jwks.json").headers["ETag"]
    rotated, _ = KeyAdmin.of(keys).rotate("RS256", force=True)
    keys.check_interval = 0
    second = client.get("/.well-known/jwks.json")
    assert second.headers["ETag"] != first and len(second.get_json()["keys"]) == 4
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=keys.policy.prepublish + 1)
    keys.clock = lambda: later  # the next keys are active and retired now
    assert keys.active().kid == rotated.kid
    assert client.get("/.well-known/jwks.json").headers["ETag"] == second.headers["ETag"]


def test_discovery_lists_the_published_algorithms_with_rs256_first(client, three_keys):
    data = client.get("/.well-known/openid-configuration").get_json()
    algs = data["id_token_signing_alg_values_supported"]
    assert algs[0] == "RS256" and set(algs) == {"RS256", "ES256", "EdDSA"}


def test_discovery_lists_rs256_even_without_an_rsa_key(client, own_keys):
    make_key(own_keys, "ES256", "active")
    data = client.get("/.well-known/openid-configuration").get_json()
    assert data["id_token_signing_alg_values_supported"] == ["RS256", "ES256"]


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc; see crypto/jose.py
@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_tokens_signed_with_each_algorithm_verify_with_the_resource_library(
        oauth, client, own_keys, alg):
    kid = make_key(own_keys, alg, "active")
    machine, secret = oauth.create_client(scope="reports", grant_types=["client_credentials"])
    response = oauth.token({"grant_type": "client_credentials"},
                           headers={"Authorization": basic(machine.client_id, secret)})
    token = response.get_json()["access_token"]
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "typ": "at+jwt", "kid": kid}
    verifier = TokenVerifier(ISSUER, ISSUER, http=FlaskHttp(client), algorithms=[alg])
    claims = verifier.verify(token)
    assert claims.client_id == machine.client_id and claims.scope == {"reports"}


def test_rotation_inside_one_process_never_fails_a_token(oauth, client, app, own_keys):
    """Tokens signed before, during and after a rotation all verify, with the verifier's
    cached JWKS, without an unknown-kid refetch: the next key was published first."""
    make_key(own_keys, "RS256", "active")
    keys: KeyStore = app.extensions["authserver"].keys
    keys.check_interval = 0
    machine, secret = oauth.create_client(scope="reports", grant_types=["client_credentials"])
    now = [dt.datetime.now(dt.UTC)]
    keys.clock = lambda: now[0]
    wall = [1_000_000.0]
    verifier = TokenVerifier(ISSUER, ISSUER, http=FlaskHttp(client),
                             timer=lambda: wall[0], min_refetch_interval=10)

    def issue() -> str:
        response = oauth.token({"grant_type": "client_credentials"},
                               headers={"Authorization": basic(machine.client_id, secret)})
        return response.get_json()["access_token"]

    def advance(seconds: int) -> None:
        now[0] += dt.timedelta(seconds=seconds)
        wall[0] += seconds

    tokens = [issue()]
    verifier.verify(tokens[0])
    new, _ = KeyAdmin.of(keys).rotate("ES256")
    for _ in range(int(keys.policy.prepublish / 30) + 2):  # the JWKS is refetched on expiry
        advance(30)
        tokens.append(issue())
        for token in tokens[-3:]:
            verifier.verify(token)
    kids = [jwt.get_unverified_header(t)["kid"] for t in tokens]
    assert kids[0] != new.kid and kids[-1] == new.kid
    assert verifier.keys.unknown_kid_refetches == 0
