"""The token request for an authorization code (RFC 6749 §4.1.3, RFC 7636 §4.5-4.6).

A code is 256 random bits, stored only as a digest, lives 60 s, is bound to its client,
redirect URI and PKCE challenge, and is consumed exactly once; a replayed code revokes
the tokens issued from it (§4.1.2).
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from authserver.domain import users
from authserver.extensions import db
from authserver.storage.models import AuditEvent, AuthorizationCode, TokenFamily
from tests.support.authorize import REDIRECT, exchange, get_code, start
from tests.support.oauth import assert_oauth_error, basic, redirect_params

RACERS = 8


def fresh_code(person, client, **extra):
    """Another code for a signed-in person who already consented."""
    params, verifier = start(client, **extra)
    return redirect_params(person.authorize(**params))["code"], verifier


def test_codes_are_256_bit_single_use_digests_with_a_60_second_life(oauth, person, spa, app):
    code, verifier = get_code(person, spa)
    assert len(code) >= 43  # 32 random bytes, base64url
    with app.app_context():
        row = db.session.scalars(select(AuthorizationCode)).one()
        assert row.code_digest == hashlib.sha256(code.encode()).hexdigest()
        stored = [str(getattr(row, c.key)) for c in AuthorizationCode.__table__.columns]
        assert not any(code in value for value in stored)
        assert (row.expires_at - row.created_at).total_seconds() == 60
    assert exchange(oauth, spa, code, verifier).status_code == 200


def test_exchange_failures_are_invalid_grant(oauth, person, spa, clock, subtests):
    """Each case spends a fresh code; none of them issues anything."""
    get_code(person, spa)  # signs in and consents once
    other, _ = oauth.create_client(name="Other app", public=True, redirect_uris=[REDIRECT],
                                   scope="openid profile email offline_access read")
    cases = {
        "wrong-verifier": {"code_verifier": secrets.token_urlsafe(48)},
        "missing-verifier": {"code_verifier": None},
        "malformed-verifier": {"code_verifier": "short"},
        "challenge-as-verifier": {"code_verifier": "<challenge>"},
        "wrong-redirect_uri": {"redirect_uri": REDIRECT + "/other"},
        "missing-redirect_uri": {"redirect_uri": None},
        "wrong-client": {"client_id": other.client_id},
        "unknown-code": {"code": secrets.token_urlsafe(32)},
        "expired": {},
    }
    for case, changes in cases.items():
        with subtests.test(case):
            params, verifier = start(spa)
            code = redirect_params(person.authorize(**params))["code"]
            data = {"grant_type": "authorization_code", "code": code,
                    "redirect_uri": REDIRECT, "code_verifier": verifier,
                    "client_id": spa.client_id}
            for name, value in changes.items():
                if value is None:
                    data.pop(name)
                else:
                    data[name] = params["code_challenge"] if value == "<challenge>" else value
            if case == "expired":
                clock.advance(61)
            assert_oauth_error(oauth.token(data), "invalid_grant")
    with oauth.app.app_context():
        assert db.session.scalars(select(TokenFamily)).all() == []


def test_a_failed_exchange_burns_the_code(oauth, person, spa):
    code, verifier = get_code(person, spa)
    assert_oauth_error(exchange(oauth, spa, code, "w" * 43), "invalid_grant")
    assert_oauth_error(exchange(oauth, spa, code, verifier), "invalid_grant")


def test_another_client_cannot_burn_a_code(oauth, person, spa):
    other, _ = oauth.create_client(name="Other app", public=True, redirect_uris=[REDIRECT])
    code, verifier = get_code(person, spa)
    assert_oauth_error(exchange(oauth, other, code, verifier), "invalid_grant")
    assert exchange(oauth, spa, code, verifier).status_code == 200


def test_a_verifier_without_a_challenge_is_refused(oauth, person):
    """RFC 9700 §2.1.1: PKCE downgrade. A confidential client that sent no challenge
    must not have a code_verifier accepted."""
    oauth.create_user()
    web, secret = oauth.create_client(name="Portal", redirect_uris=[REDIRECT], scope="read")
    code, _ = get_code(person, web, scope="read", nonce=None, code_challenge=None,
                       code_challenge_method=None)
    response = oauth.token({"grant_type": "authorization_code", "code": code,
                            "redirect_uri": REDIRECT, "code_verifier": "v" * 43},
                           headers={"Authorization": basic(web.client_id, secret)})
    assert_oauth_error(response, "invalid_grant")


def test_a_confidential_client_must_authenticate(oauth, person):
    oauth.create_user()
    web, secret = oauth.create_client(name="Portal", redirect_uris=[REDIRECT], scope="read")
    params, verifier = start(web, scope="read", nonce=None)
    from tests.support.authorize import sign_in_and_consent

    code = redirect_params(sign_in_and_consent(person, params))["code"]
    assert_oauth_error(exchange(oauth, web, code, verifier), "invalid_client", 401)
    wrong = oauth.token({"grant_type": "authorization_code", "code": code,
                         "redirect_uri": REDIRECT, "code_verifier": verifier},
                        headers={"Authorization": basic(web.client_id, "not-the-secret")})
    assert_oauth_error(wrong, "invalid_client", 401)
    good = oauth.token({"grant_type": "authorization_code", "code": code,
                        "redirect_uri": REDIRECT, "code_verifier": verifier},
                       headers={"Authorization": basic(web.client_id, secret)})
    assert good.status_code == 200, good.get_json()


def test_missing_code_and_repeated_parameters_are_invalid_request(oauth, person, spa):
    assert_oauth_error(oauth.token({"grant_type": "authorization_code",
                                    "client_id": spa.client_id}), "invalid_request")
    code, verifier = get_code(person, spa)
    repeated = oauth.client.post(
        "/oauth/token", data=f"grant_type=authorization_code&code={code}&code={code}"
        f"&client_id={spa.client_id}&code_verifier={verifier}",
        content_type="application/x-www-form-urlencoded")
    assert_oauth_error(repeated, "invalid_request")


def test_a_replayed_code_revokes_what_it_issued(oauth, person, spa, app):
    """RFC 6749 §4.1.2: "If an authorization code is used more than once, the authorization
    server MUST deny the request and SHOULD revoke (when possible) all tokens previously
    issued based on that authorization code." """
    code, verifier = get_code(person, spa)
    body = exchange(oauth, spa, code, verifier).get_json()
    sid = oauth.verify_access_token(body["access_token"])["sid"]
    assert_oauth_error(exchange(oauth, spa, code, verifier), "invalid_grant")
    with app.app_context():
        family = db.session.get(TokenFamily, sid)
        assert family.revoke_reason == "code_replay"
        events = db.session.scalars(select(AuditEvent.event)
                                    .where(AuditEvent.family_id == sid)).all()
        assert "authorization_code_replay" in events
    # The refresh token from the first exchange is refused, its access token is dead.
    assert_oauth_error(oauth.refresh(spa, body["refresh_token"]), "invalid_grant")
    info = oauth.client.get("/oauth/userinfo",
                            headers={"Authorization": f"Bearer {body['access_token']}"})
    assert info.status_code == 401


def test_a_code_dies_with_the_sign_in_it_came_from(oauth, person, spa):
    code, verifier = get_code(person, spa)
    page = person.client.get("/logout")
    from tests.support.oauth import form_fields

    person.client.post("/logout", data=form_fields(page.get_data(as_text=True)))
    assert_oauth_error(exchange(oauth, spa, code, verifier), "invalid_grant")


def test_a_code_of_a_deactivated_user_is_refused(oauth, person, spa, app):
    code, verifier = get_code(person, spa)
    with app.app_context():
        users.deactivate_user(db.session, "alice")
        db.session.commit()
    assert_oauth_error(exchange(oauth, spa, code, verifier), "invalid_grant")


def test_a_client_without_the_code_grant_is_refused_at_the_token_endpoint(oauth, person, app):
    oauth.create_user()
    client, _ = oauth.create_client(name="Was a web app", public=True,
                                    redirect_uris=[REDIRECT], scope="read")
    code, verifier = get_code(person, client, scope="read", nonce=None)
    from authserver.domain import client_admin

    with app.app_context():
        client_admin.update_client(db.session, client.client_id, grant_types=["refresh_token",
                                                                         "password"],
                              first_party=True)
        db.session.commit()
    assert_oauth_error(exchange(oauth, client, code, verifier), "unauthorized_client")


@pytest.fixture
def settings_overrides():
    return {"db_pool_size": RACERS + 2}


def test_concurrent_exchanges_of_one_code_succeed_exactly_once(oauth, person, spa, app):
    code, verifier = get_code(person, spa)
    barrier = threading.Barrier(RACERS)

    def one(_):
        client = app.test_client()
        barrier.wait()
        response = exchange(oauth, spa, code, verifier, via=client)
        return response.status_code, response.get_json()

    with ThreadPoolExecutor(RACERS) as pool:
        results = list(pool.map(one, range(RACERS)))
    winners = [body for status, body in results if status == 200]
    assert len(winners) == 1, results
    assert all(status == 400 and body["error"] == "invalid_grant"
               for status, body in results if status != 200), results
    with app.app_context():
        families = db.session.scalars(select(TokenFamily)).all()
    # One family was ever issued; the losing presentations were replays, so it is revoked.
    assert len(families) == 1 and families[0].revoke_reason == "code_replay"
