"""DPoP (RFC 9449): proofs at the token endpoint, bound families, nonces, ath, replay caches.

Every proof is made by jwcrypto (tests/support/dpop.py), not by the server's own JOSE
code, and every expected thumbprint is jwcrypto's RFC 7638 computation.
"""

from __future__ import annotations

import secrets
import uuid

import pytest
import redis
from sqlalchemy import func, select

from authserver.domain import pkce
from authserver.extensions import db
from authserver.storage.models import DPoPProofJti
from authserver.storage.replay_cache import DatabaseReplayCache, RedisReplayCache
from tests.support.dpop import ISSUER, TOKEN_URL, USERINFO_URL, ProofKey, ath, hmac_key
from tests.support.oauth import PASSWORD, BrowserActions, assert_oauth_error, redirect_params
from tests.support.rows import events, families
from tests.support.statements import statements_of

REDIS_URL = "redis://127.0.0.1:6379/0"
ALGORITHMS = ["ES256", "RS256", "PS256", "EdDSA"]


# -- helpers ---------------------------------------------------------------------------
def sign_in(oauth, app_client, proof=None, *, proofs=None, scope=None, secret=None):
    data = {"grant_type": "password", "username": "alice", "password": PASSWORD,
            "client_id": app_client.client_id}
    if scope:
        data["scope"] = scope
    return _post(oauth, data, proof, proofs, app_client, secret)


def refresh(oauth, app_client, token, proof=None, *, proofs=None, secret=None):
    data = {"grant_type": "refresh_token", "refresh_token": token,
            "client_id": app_client.client_id}
    return _post(oauth, data, proof, proofs, app_client, secret)


def _post(oauth, data, proof, proofs, app_client, secret):
    headers = [("DPoP", value) for value in (proofs or ([proof] if proof else []))]
    if secret is not None:
        from tests.support.oauth import basic

        data.pop("client_id", None)
        headers.append(("Authorization", basic(app_client.client_id, secret)))
    return oauth.client.post("/oauth/token", data=data, headers=headers)


def jti_rows(app):
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(DPoPProofJti))


def now(clock) -> int:
    return int(clock.now.timestamp())


@pytest.fixture
def app_client(oauth):
    """A public first-party app (a mobile app): its sign-ins with a proof are DPoP-bound."""
    oauth.create_user()
    return oauth.first_party_app(scope="openid read account")


@pytest.fixture
def key():
    return ProofKey("ES256")


@pytest.fixture
def bound(oauth, app_client, key, clock):
    """A family bound to ``key``: the first token response."""
    response = sign_in(oauth, app_client, key.proof(iat=now(clock)))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


# -- metadata --------------------------------------------------------------------------
def test_metadata_advertises_the_pinned_algorithms(client):
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        metadata = client.get(path).get_json()
        assert metadata["dpop_signing_alg_values_supported"] == ALGORITHMS


# -- binding at sign-in and refresh ----------------------------------------------------
@pytest.mark.parametrize("alg", ALGORITHMS)
def test_sign_in_with_a_proof_binds_the_family_to_the_key(oauth, app, app_client, alg):
    key = ProofKey(alg)
    response = sign_in(oauth, app_client, key.proof())
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "DPoP"  # RFC 9449 §5
    claims = oauth.verify_access_token(body["access_token"])
    assert claims["cnf"] == {"jkt": key.jkt}  # RFC 9449 §6.1, thumbprint per RFC 7638
    (family,) = families(app)
    assert family.dpop_jkt == key.jkt
    assert events(app, "family_created")[0].detail["dpop_bound"] is True

    again = refresh(oauth, app_client, body["refresh_token"], key.proof())
    assert again.status_code == 200, again.get_json()
    assert again.get_json()["token_type"] == "DPoP"
    assert oauth.verify_access_token(again.get_json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_sign_in_without_a_proof_gives_bearer_tokens(oauth, app, app_client):
    body = sign_in(oauth, app_client).get_json()
    assert body["token_type"] == "Bearer"
    assert "cnf" not in oauth.verify_access_token(body["access_token"])
    assert families(app)[0].dpop_jkt is None


def test_the_first_refresh_with_a_proof_binds_an_unbound_family(oauth, app, app_client, key):
    """RFC 9449 §5: a public client's refresh token issued in answer to a proof is bound to
    its key, also when the sign-in carried none. The stolen token is then useless without
    the key, and another key is a binding mismatch."""
    first = sign_in(oauth, app_client).get_json()
    upgraded = refresh(oauth, app_client, first["refresh_token"], key.proof())
    assert upgraded.status_code == 200, upgraded.get_json()
    body = upgraded.get_json()
    assert body["token_type"] == "DPoP"
    assert oauth.verify_access_token(body["access_token"])["cnf"] == {"jkt": key.jkt}
    (family,) = families(app)
    assert family.dpop_jkt == key.jkt
    (bound_event,) = events(app, "family_bound_to_dpop_key")
    assert bound_event.detail["device"]["dpop_jkt"] == key.jkt

    assert_oauth_error(refresh(oauth, app_client, body["refresh_token"]), "invalid_grant")
    assert families(app)[0].revoke_reason == "binding_mismatch"


def test_a_confidential_clients_family_stays_unbound_on_refresh(oauth, app, key):
    oauth.create_user()
    web, secret = oauth.create_client(name="web", first_party=True, scope="read")
    first = sign_in(oauth, web, secret=secret).get_json()
    again = refresh(oauth, web, first["refresh_token"], key.proof(), secret=secret)
    assert again.status_code == 200 and again.get_json()["token_type"] == "DPoP"
    assert families(app)[0].dpop_jkt is None
    third = refresh(oauth, web, again.get_json()["refresh_token"], secret=secret)
    assert third.status_code == 200 and third.get_json()["token_type"] == "Bearer"


def test_missing_proof_on_a_bound_family_is_refused_and_revokes_it(oauth, app, app_client, key,
                                                                   bound):
    assert_oauth_error(refresh(oauth, app_client, bound["refresh_token"]), "invalid_grant")
    (family,) = families(app)
    assert family.revoke_reason == "binding_mismatch"
    (mismatch,) = events(app, "binding_mismatch")
    assert mismatch.detail["mismatched"] == ["dpop_key"]
    assert mismatch.detail["bound"]["dpop_jkt"] == key.jkt
    assert mismatch.detail["presented"]["dpop_jkt"] is None
    # The session is over: even a correct proof no longer refreshes it.
    assert_oauth_error(refresh(oauth, app_client, bound["refresh_token"], key.proof()),
                       "invalid_grant")


def test_stolen_refresh_token_with_another_key_is_refused_and_revokes(oauth, app, app_client,
                                                                      key, bound):
    """The attacker has the refresh token, not the private key: their own key fails."""
    legit = refresh(oauth, app_client, bound["refresh_token"], key.proof()).get_json()
    thief = ProofKey("ES256")

    stolen = refresh(oauth, app_client, legit["refresh_token"], thief.proof())

    assert_oauth_error(stolen, "invalid_grant")
    (family,) = families(app)
    assert family.revoked_at is not None and family.revoke_reason == "binding_mismatch"
    (mismatch,) = events(app, "binding_mismatch")
    assert mismatch.detail["action"] == "revoke"
    assert mismatch.detail["bound"]["dpop_jkt"] == key.jkt
    assert mismatch.detail["presented"]["dpop_jkt"] == thief.jkt
    # The rightful device is signed out too: it must sign in again.
    assert_oauth_error(refresh(oauth, app_client, legit["refresh_token"], key.proof()),
                       "invalid_grant")


def test_reject_policy_refuses_another_key_but_keeps_the_session(oauth, app):
    oauth.create_user()
    app_client = oauth.first_party_app(on_binding_mismatch="reject")
    key = ProofKey()
    body = sign_in(oauth, app_client, key.proof()).get_json()

    assert_oauth_error(refresh(oauth, app_client, body["refresh_token"], ProofKey().proof()),
                       "invalid_grant")
    assert_oauth_error(refresh(oauth, app_client, body["refresh_token"]), "invalid_grant")

    assert families(app)[0].revoked_at is None
    assert [e.detail["action"] for e in events(app, "binding_mismatch")] == ["reject", "reject"]
    assert refresh(oauth, app_client, body["refresh_token"], key.proof()).status_code == 200


def test_an_invalid_proof_on_a_bound_family_changes_nothing(oauth, app, app_client, key, bound):
    forged = key.proof(signer=ProofKey().key)  # the right public key, signed by another
    assert_oauth_error(refresh(oauth, app_client, bound["refresh_token"], forged),
                       "invalid_dpop_proof")
    assert families(app)[0].revoked_at is None
    assert refresh(oauth, app_client, bound["refresh_token"], key.proof()).status_code == 200


def test_grace_retry_needs_the_same_key(oauth, app):
    """docs/design.md, "Rotation" 2-3: an identical retry only from the same binding, else reuse."""
    oauth.create_user()
    app_client = oauth.first_party_app(reuse_grace=30)
    key = ProofKey()
    first = sign_in(oauth, app_client, key.proof()).get_json()
    rotated = refresh(oauth, app_client, first["refresh_token"], key.proof())
    assert rotated.status_code == 200

    retry = refresh(oauth, app_client, first["refresh_token"], key.proof())
    assert retry.status_code == 200 and retry.get_json() == rotated.get_json()
    assert len(events(app, "rotation_retry")) == 1

    thief = ProofKey()
    assert_oauth_error(refresh(oauth, app_client, first["refresh_token"], thief.proof()),
                       "invalid_grant")
    family = families(app)[0]
    assert family.revoke_reason == "reuse_detected"
    (reuse,) = events(app, "refresh_token_reuse")
    assert reuse.detail["mismatched"] == ["dpop_key"]
    assert reuse.detail["presented"]["dpop_jkt"] == thief.jkt
    assert_oauth_error(refresh(oauth, app_client, rotated.get_json()["refresh_token"],
                               key.proof()), "invalid_grant")


def test_a_client_can_require_dpop(oauth, app):
    oauth.create_user()
    app_client = oauth.first_party_app(require_dpop=True)
    body = assert_oauth_error(sign_in(oauth, app_client), "invalid_dpop_proof")
    assert "DPoP" in body["error_description"]
    assert families(app) == []

    key = ProofKey()
    pair = sign_in(oauth, app_client, key.proof()).get_json()
    assert pair["token_type"] == "DPoP"
    # Refused before the token is even looked at: the session survives the bad request.
    assert_oauth_error(refresh(oauth, app_client, pair["refresh_token"]), "invalid_dpop_proof")
    assert refresh(oauth, app_client, pair["refresh_token"], key.proof()).status_code == 200


def test_confidential_clients_get_bound_access_tokens_but_unbound_refresh_tokens(oauth, app):
    """RFC 9449 §5: a confidential client's refresh token is already sender-constrained by
    client authentication, so only its access tokens are bound."""
    oauth.create_user()
    record, secret = oauth.create_client(first_party=True, scope="read")
    key = ProofKey()
    body = sign_in(oauth, record, key.proof(), secret=secret).get_json()
    assert body["token_type"] == "DPoP"
    assert oauth.verify_access_token(body["access_token"])["cnf"] == {"jkt": key.jkt}
    assert families(app)[0].dpop_jkt is None

    plain = refresh(oauth, record, body["refresh_token"], secret=secret)
    assert plain.status_code == 200 and plain.get_json()["token_type"] == "Bearer"
    other = ProofKey()
    rebound = refresh(oauth, record, plain.get_json()["refresh_token"], other.proof(),
                      secret=secret).get_json()
    assert oauth.verify_access_token(rebound["access_token"])["cnf"] == {"jkt": other.jkt}


def test_client_credentials_with_a_proof(oauth):
    record, secret = oauth.create_client(grant_types=["client_credentials"], scope="read")
    key = ProofKey("PS256")
    response = _post(oauth, {"grant_type": "client_credentials"}, key.proof(), None, record,
                     secret)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "DPoP" and "refresh_token" not in body
    assert oauth.verify_access_token(body["access_token"])["cnf"] == {"jkt": key.jkt}


def test_authorization_code_exchange_with_a_proof_binds_the_family(oauth, app):
    """A public client (an SPA) signing in through the browser: RFC 9449 §5 at the code
    exchange binds the family, like the password grant does."""
    redirect = "https://spa.example.com/cb"
    oauth.create_user()
    spa, _ = oauth.create_client(name="SPA", public=True, redirect_uris=[redirect],
                                 scope="openid offline_access")
    browser = BrowserActions(app.test_client())
    verifier = secrets.token_urlsafe(48)
    first = browser.authorize(response_type="code", client_id=spa.client_id,
                              redirect_uri=redirect, scope="openid offline_access",
                              state="s", nonce="n-1", code_challenge=pkce.s256(verifier),
                              code_challenge_method="S256")
    assert first.status_code == 303, first.get_data(as_text=True)
    logged_in = browser.login(next_url=redirect_params(first)["next"])
    consent = browser.client.get(logged_in.headers["Location"])
    code = redirect_params(browser.decide(consent))["code"]

    key = ProofKey("EdDSA")
    response = _post(oauth, {"grant_type": "authorization_code", "code": code,
                             "redirect_uri": redirect, "code_verifier": verifier,
                             "client_id": spa.client_id}, key.proof(), None, spa, None)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "DPoP"
    assert families(app)[0].dpop_jkt == key.jkt
    assert_oauth_error(refresh(oauth, spa, body["refresh_token"]), "invalid_grant")


# -- proof validation (RFC 9449 §4.3) --------------------------------------------------
def _rsa_public_pem_as_hmac_secret(key, t):
    rsa = ProofKey("RS256")
    secret = rsa.key.export_to_pem(private_key=False)
    return [rsa.proof(alg="HS256", signer=hmac_key(secret), iat=t)]


INVALID_PROOFS = {  # case: (proof headers from (key, now), what the description says)
    "not-a-jws": (lambda key, t: ["not-a-jwt"], "not a JWS"),
    "two-dpop-headers": (lambda key, t: [key.proof(iat=t), key.proof(iat=t)],
                         "exactly one DPoP header"),
    "blank": (lambda key, t: [" "], "empty or too long"),
    "too-long": (lambda key, t: [key.proof(iat=t, padding="x" * 9000)], "empty or too long"),
    "typ-jwt": (lambda key, t: [key.proof(iat=t, header={"typ": "JWT"})], "typ dpop+jwt"),
    "typ-missing": (lambda key, t: [key.proof(iat=t, header={"typ": None})], "typ dpop+jwt"),
    "alg-none": (lambda key, t: [key.unsigned(iat=t)], "algorithm is not allowed"),
    "alg-hs256": (lambda key, t: [key.proof(iat=t, alg="HS256",
                                            signer=hmac_key(secrets.token_bytes(32)))],
                  "algorithm is not allowed"),
    "hs256-with-public-key-as-secret": (_rsa_public_pem_as_hmac_secret,
                                        "algorithm is not allowed"),
    "alg-es512-not-pinned": (lambda key, t: [ProofKey("ES512", kty="EC", crv="P-521")
                                             .proof(iat=t)], "algorithm is not allowed"),
    "rsa-1024": (lambda key, t: [ProofKey("RS256", kty="RSA", size=1024).proof(iat=t)],
                 "too small"),
    "no-jwk": (lambda key, t: [key.proof(iat=t, header={"jwk": None})], "public key in jwk"),
    "private-key-in-jwk": (lambda key, t: [key.proof(
        iat=t, header={"jwk": key.key.export_private(as_dict=True)})], "private key material"),
    "jwk-does-not-fit-alg": (lambda key, t: [key.proof(
        iat=t, header={"jwk": ProofKey("RS256").public_jwk})], "does not fit"),
    "signed-by-another-key": (lambda key, t: [key.proof(iat=t, signer=ProofKey().key)],
                              "bad signature"),
    "wrong-htm": (lambda key, t: [key.proof(iat=t, htm="GET")], "htm does not match"),
    "lowercase-htm": (lambda key, t: [key.proof(iat=t, htm="post")], "htm does not match"),
    "no-htm": (lambda key, t: [key.proof(iat=t, drop=("htm",))], "htm does not match"),
    "wrong-htu-path": (lambda key, t: [key.proof(iat=t, htu=ISSUER + "/oauth/revoke")],
                       "htu does not match"),
    "wrong-htu-host": (lambda key, t: [key.proof(iat=t, htu="https://evil.example/oauth/token")],
                       "htu does not match"),
    "wrong-htu-scheme": (lambda key, t: [key.proof(
        iat=t, htu="https://127.0.0.1:8000/oauth/token")], "htu does not match"),
    # The test client sends Host: localhost. The Host header is the client's to choose, so
    # only the issuer's URL counts: a proof made for another server must not pass here.
    "htu-of-the-host-header": (lambda key, t: [key.proof(
        iat=t, htu="http://localhost/oauth/token")], "htu does not match"),
    "no-htu": (lambda key, t: [key.proof(iat=t, drop=("htu",))], "htu does not match"),
    "stale-iat": (lambda key, t: [key.proof(iat=t - 301)], "too old or from the future"),
    "future-iat": (lambda key, t: [key.proof(iat=t + 61)], "too old or from the future"),
    "iat-huge": (lambda key, t: [key.proof(iat=10**400)], "too old or from the future"),
    "iat-string": (lambda key, t: [key.proof(iat=str(t))], "needs iat"),
    "iat-nan": (lambda key, t: [key.proof(iat=float("nan"))], "needs iat"),
    "no-iat": (lambda key, t: [key.proof(drop=("iat",))], "needs iat"),
    "no-jti": (lambda key, t: [key.proof(iat=t, drop=("jti",))], "needs a jti"),
    "jti-too-long": (lambda key, t: [key.proof(iat=t, jti="j" * 257)], "needs a jti"),
}


@pytest.mark.parametrize("case", list(INVALID_PROOFS), ids=list(INVALID_PROOFS))
def test_invalid_proofs_are_refused_and_change_nothing(oauth, app, app_client, clock, case):
    build, expected = INVALID_PROOFS[case]
    response = sign_in(oauth, app_client, proofs=build(ProofKey(), now(clock)))
    body = assert_oauth_error(response, "invalid_dpop_proof")  # RFC 9449 §5: 400
    assert expected in body["error_description"], body
    assert response.headers["Cache-Control"] == "no-store"
    assert families(app) == []
    assert events(app, "sign_in_succeeded") == []


def test_a_deeply_nested_signed_payload_is_refused_not_a_500(oauth, app_client, key, clock):
    from jwcrypto import jws

    signer = jws.JWS(("[" * 3000 + "]" * 3000).encode())
    signer.add_signature(key.key, protected={"typ": "dpop+jwt", "alg": "ES256",
                                             "jwk": key.public_jwk})
    assert_oauth_error(sign_in(oauth, app_client, signer.serialize(compact=True)),
                       "invalid_dpop_proof")


@pytest.mark.parametrize("htu", [
    TOKEN_URL + "?foo=bar#fragment",
    TOKEN_URL + "#only-a-fragment",
    "HTTP://127.0.0.1:8000/oauth/token",
    "http://127.0.0.1:8000/oauth/%74oken",
    "http://127.0.0.1:8000/oauth/./token",
    "http://127.0.0.1:8000/x/../oauth/token",
], ids=["query-and-fragment", "fragment", "scheme-case", "percent-encoded", "dot", "dot-dot"])
def test_htu_is_compared_without_query_and_fragment_normalised(oauth, app_client, key, htu):
    """RFC 9449 §4.3 (9) and RFC 3986 §6.2.2: these all name the token endpoint."""
    response = sign_in(oauth, app_client, key.proof(htu=htu))
    assert response.status_code == 200, response.get_json()


def test_iat_window_edges(oauth, app_client, key, clock):
    assert sign_in(oauth, app_client, key.proof(iat=now(clock) - 299)).status_code == 200
    assert sign_in(oauth, app_client, key.proof(iat=now(clock) + 59)).status_code == 200
    assert_oauth_error(sign_in(oauth, app_client, key.proof(iat=now(clock) - 301)),
                       "invalid_dpop_proof")


def test_a_replayed_proof_is_refused(oauth, app, app_client, key, bound):
    proof = key.proof()
    assert refresh(oauth, app_client, bound["refresh_token"], proof).status_code == 200
    replay = sign_in(oauth, app_client, proof)
    body = assert_oauth_error(replay, "invalid_dpop_proof")
    assert "already used" in body["error_description"]
    assert len(families(app)) == 1
    # The same jti under another key is another proof (the cache key is key + jti).
    jti = key.claims()["jti"]
    assert sign_in(oauth, app_client, key.proof(jti=jti)).status_code == 200
    assert sign_in(oauth, app_client, ProofKey().proof(jti=jti)).status_code == 200


def test_the_database_replay_cache_is_pruned(oauth, app, app_client, key, clock):
    replay = app.extensions["authserver"].replay
    assert isinstance(replay, DatabaseReplayCache)
    replay.PRUNE_EVERY = 2
    replay._inserts = 0
    clock.advance(-1000)  # a proof accepted 1000 s ago has long expired
    assert sign_in(oauth, app_client, key.proof(iat=now(clock))).status_code == 200
    assert jti_rows(app) == 1
    clock.advance(1000)
    assert sign_in(oauth, app_client, key.proof(iat=now(clock))).status_code == 200
    assert jti_rows(app) == 1, "the expired row goes, the fresh one stays"


# -- nonces (RFC 9449 §8) --------------------------------------------------------------
@pytest.mark.parametrize("settings_overrides", [{"dpop_nonce": True}], ids=["nonce-on"])
def test_nonce_flow(oauth, app, app_client, key, clock):
    first = sign_in(oauth, app_client, key.proof(iat=now(clock)))
    body = assert_oauth_error(first, "use_dpop_nonce")
    assert body["error_description"]
    nonce = first.headers["DPoP-Nonce"]
    assert families(app) == []

    assert_oauth_error(sign_in(oauth, app_client, key.proof(iat=now(clock), nonce="x" * 24)),
                       "use_dpop_nonce")
    retry = sign_in(oauth, app_client, key.proof(iat=now(clock), nonce=nonce))
    assert retry.status_code == 200, retry.get_json()
    assert retry.headers["DPoP-Nonce"]
    refresh_token = retry.get_json()["refresh_token"]

    # Nonces live for one to two windows (300 s); an old one gets a fresh one back.
    clock.advance(601)
    stale = refresh(oauth, app_client, refresh_token,
                    key.proof(iat=now(clock), nonce=nonce))
    assert_oauth_error(stale, "use_dpop_nonce")
    fresh = stale.headers["DPoP-Nonce"]
    assert fresh != nonce
    assert families(app)[0].revoked_at is None, "a missing nonce is not a binding mismatch"
    again = refresh(oauth, app_client, refresh_token, key.proof(iat=now(clock), nonce=fresh))
    assert again.status_code == 200, again.get_json()


def test_no_nonce_is_asked_for_when_switched_off(oauth, app_client, key):
    response = sign_in(oauth, app_client, key.proof())
    assert response.status_code == 200 and "DPoP-Nonce" not in response.headers


# -- ath and the protected resource (RFC 9449 §7) --------------------------------------
def _userinfo(client, token, proof=None, scheme="DPoP"):
    headers = [("Authorization", f"{scheme} {token}")]
    if proof is not None:
        headers.append(("DPoP", proof))
    return client.get("/oauth/userinfo", headers=headers)


def test_userinfo_needs_a_proof_with_ath(oauth, client, app_client, key, bound):
    token = bound["access_token"]
    good = _userinfo(client, token, key.proof(htm="GET", htu=USERINFO_URL, ath=ath(token)))
    assert good.status_code == 200, good.get_json()
    assert good.get_json()["sub"] == oauth.verify_access_token(token)["sub"]

    other = sign_in(oauth, app_client, key.proof()).get_json()["access_token"]
    cases = {
        "no-ath": key.proof(htm="GET", htu=USERINFO_URL),
        "ath-of-another-token": key.proof(htm="GET", htu=USERINFO_URL, ath=ath(other)),
        "ath-not-a-string": key.proof(htm="GET", htu=USERINFO_URL, ath=12),
        "ath-non-ascii": key.proof(htm="GET", htu=USERINFO_URL, ath="\u00e9" * 43),
        "another-key": ProofKey().proof(htm="GET", htu=USERINFO_URL, ath=ath(token)),
        "token-endpoint-htu": key.proof(htm="GET", ath=ath(token)),
        "no-proof": None,
    }
    for name, proof in cases.items():
        response = _userinfo(client, token, proof)
        assert response.status_code == 401, name
        assert response.headers["WWW-Authenticate"].startswith("DPoP "), name
        assert response.get_json()["error"] == "invalid_dpop_proof", name

    as_bearer = _userinfo(client, token, key.proof(htm="GET", htu=USERINFO_URL, ath=ath(token)),
                          scheme="Bearer")
    assert as_bearer.status_code == 401 and as_bearer.get_json()["error"] == "invalid_token"


@pytest.mark.parametrize("settings_overrides", [{"dpop_nonce": True}], ids=["nonce-on"])
def test_userinfo_asks_for_a_nonce(oauth, client, app_client, key):
    first = sign_in(oauth, app_client, key.proof())
    pair = sign_in(oauth, app_client, key.proof(nonce=first.headers["DPoP-Nonce"])).get_json()
    token = pair["access_token"]
    response = _userinfo(client, token, key.proof(htm="GET", htu=USERINFO_URL, ath=ath(token)))
    assert response.status_code == 401
    assert 'error="use_dpop_nonce"' in response.headers["WWW-Authenticate"]
    nonce = response.headers["DPoP-Nonce"]
    ok = _userinfo(client, token, key.proof(htm="GET", htu=USERINFO_URL, ath=ath(token),
                                            nonce=nonce))
    assert ok.status_code == 200, ok.get_json()


# -- Redis replay cache ----------------------------------------------------------------
@pytest.fixture
def redis_prefix():
    prefix = f"authserver-test:{uuid.uuid4().hex}:"
    yield prefix
    connection = redis.Redis.from_url(REDIS_URL)
    for name in connection.scan_iter(prefix + "*"):
        connection.delete(name)
    connection.close()


@pytest.mark.parametrize("settings_overrides", [{"redis_url": REDIS_URL}], ids=["redis"])
def test_redis_replay_cache(oauth, app, app_client, key, redis_prefix, bound):
    svc = app.extensions["authserver"]
    assert isinstance(svc.replay, RedisReplayCache), "AUTHSERVER_REDIS_URL selects Redis"
    svc.replay = RedisReplayCache(REDIS_URL, prefix=redis_prefix)  # isolated from other runs

    proof = key.proof()
    assert refresh(oauth, app_client, bound["refresh_token"], proof).status_code == 200
    assert_oauth_error(sign_in(oauth, app_client, proof), "invalid_dpop_proof")
    # Another server process sharing the Redis sees the same jti.
    other_process = RedisReplayCache(REDIS_URL, prefix=redis_prefix)
    svc.replay = other_process
    assert_oauth_error(sign_in(oauth, app_client, proof), "invalid_dpop_proof")

    connection = redis.Redis.from_url(REDIS_URL)
    names = list(connection.scan_iter(redis_prefix + "*"))
    assert len(names) == 1
    assert 0 < connection.ttl(names[0]) <= 361  # kept only while the proof could be accepted
    connection.close()


def test_redis_unavailable_fails_closed_with_503(oauth, app, app_client, key):
    app.extensions["authserver"].replay = RedisReplayCache("redis://127.0.0.1:1/0")
    response = sign_in(oauth, app_client, key.proof())
    body = assert_oauth_error(response, "temporarily_unavailable", status=503)
    assert body["error_description"] == "try again later"
    assert families(app) == []


# -- the statement budget --------------------------------------------------------------
@pytest.mark.parametrize("settings_overrides", [{"redis_url": REDIS_URL}], ids=["redis"])
def test_a_dpop_refresh_with_redis_costs_three_statements(oauth, app, app_client, key,
                                                          redis_prefix):
    svc = app.extensions["authserver"]
    svc.replay = RedisReplayCache(REDIS_URL, prefix=redis_prefix)
    svc.clients.ttl = 60  # production path: the client is cached
    token = sign_in(oauth, app_client, key.proof()).get_json()["refresh_token"]
    token = refresh(oauth, app_client, token, key.proof()).get_json()["refresh_token"]
    statements = statements_of(app, lambda: refresh(oauth, app_client, token, key.proof()))
    assert len(statements) <= 3, statements


def test_a_dpop_refresh_with_the_database_cache_adds_only_the_jti_insert(oauth, app,
                                                                         app_client, key):
    app.extensions["authserver"].clients.ttl = 60
    token = sign_in(oauth, app_client, key.proof()).get_json()["refresh_token"]
    token = refresh(oauth, app_client, token, key.proof()).get_json()["refresh_token"]
    statements = statements_of(app, lambda: refresh(oauth, app_client, token, key.proof()))
    assert len(statements) <= 4, statements
    assert sum("dpop_proof_jtis" in s for s in statements) == 1
