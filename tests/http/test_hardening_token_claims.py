"""The server's own endpoints check an access token's ``aud``, ``nbf`` and ``iat`` as the
resource-server library's TokenVerifier does: UserInfo and the account API refuse it with
``invalid_token``, introspection answers ``active: false``."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from authserver.protocol.tokens import ACCESS_TOKEN_TYP
from tests.support.sessions import introspect

# The rules are the server's, not the database's: one backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

LEEWAY = 30  # protocol/access_tokens.LEEWAY, TokenVerifier's default


def _resigned(app, token: str, **changes: Any) -> str:
    """The token's claims changed as given (None drops one), signed by the server's key:
    only the claim checks can tell it apart."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    claims = {k: v for k, v in claims.items() if v is not None}
    with app.app_context():
        return app.extensions["authserver"].keys.active().sign(claims, ACCESS_TOKEN_TYP)


@pytest.fixture
def issued(oauth) -> tuple[str, int]:
    """An access token with openid and account scopes, and its iat."""
    oauth.create_user()
    app_client = oauth.first_party_app(scope="openid account")
    token = oauth.login_pair(app_client, scope="openid account")["access_token"]
    return token, jwt.decode(token, options={"verify_signature": False})["iat"]


@pytest.fixture
def resource(oauth) -> tuple[str, str]:
    record, secret = oauth.create_client(name="API", public=False,
                                         grant_types=["client_credentials"],
                                         allow_introspection=True)
    return record.client_id, secret


def _refused_everywhere(client, resource, token: str) -> None:
    userinfo = client.get("/oauth/userinfo", headers={"Authorization": f"Bearer {token}"})
    assert userinfo.status_code == 401, userinfo.get_data(True)
    assert 'error="invalid_token"' in userinfo.headers["WWW-Authenticate"]
    account = client.get("/account/api/sessions", headers={"Authorization": f"Bearer {token}"})
    assert account.status_code == 401 and account.get_json()["error"] == "invalid_token"
    assert introspect(client, *resource, token) == {"active": False}


def test_a_resigned_token_with_its_own_claims_passes(app, client, issued, resource):
    token, iat = issued
    same = _resigned(app, token, nbf=iat)
    assert client.get("/oauth/userinfo",
                      headers={"Authorization": f"Bearer {same}"}).status_code == 200
    assert client.get("/account/api/sessions",
                      headers={"Authorization": f"Bearer {same}"}).status_code == 200
    assert introspect(client, *resource, same)["active"] is True


@pytest.mark.parametrize("changes", [
    {"aud": "https://another-api.example"},
    {"aud": ["https://another-api.example", "https://third.example"]},
    {"aud": None},
    {"nbf": "+"},  # nbf beyond the leeway
    {"iat": "+"},  # issued in the future, beyond the leeway
    {"iat": None},
    {"nbf": "text"},
], ids=["aud-other", "aud-list-without-ours", "aud-missing", "nbf-future", "iat-future",
        "iat-missing", "nbf-not-a-number"])
def test_claims_the_verifier_refuses_are_refused_here(app, client, issued, resource, changes):
    token, iat = issued
    future = iat + LEEWAY + 60
    values = {k: (future if v == "+" else v) for k, v in changes.items()}
    if "nbf" in changes or "iat" in changes:
        values["exp"] = future + 600  # not expired either way
    _refused_everywhere(client, resource, _resigned(app, token, **values))


def test_our_audience_among_others_passes(app, client, issued):
    token, _ = issued
    ours = jwt.decode(token, options={"verify_signature": False})["aud"]
    listed = _resigned(app, token, aud=["https://other.example", ours])
    assert client.get("/oauth/userinfo",
                      headers={"Authorization": f"Bearer {listed}"}).status_code == 200
