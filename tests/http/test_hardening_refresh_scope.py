"""A scope taken from a client is not issued again on refresh: a refresh grants at most the
family's scope within what the client may have today, on the fast path and through the
Flask view alike (docs/clients.md, "Scopes on refresh")."""

from __future__ import annotations

import pytest

from authserver.protocol.token_fast_path import TokenFastPath
from tests.support.oauth import assert_oauth_error

# The rules are the server's, not the database's: one backend is enough.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture(params=["fast-path", "view"])
def way_in(request, monkeypatch) -> str:
    """The refresh answered before Flask, or by the Flask view (the fast path off)."""
    if request.param == "view":
        monkeypatch.setattr(TokenFastPath, "_form", lambda self, environ: None)
    return request.param


def test_a_removed_scope_is_not_issued_on_refresh(oauth, run, way_in):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read write")
    pair = oauth.login_pair(app_client, scope="read write")
    assert pair["scope"] == "read write"

    result = run("clients", "update", app_client.client_id, "--scope", "read")
    assert result.exit_code == 0, result.output
    refreshed = oauth.refresh(app_client, pair["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_data(True)
    body = refreshed.get_json()
    assert body["scope"] == "read"
    assert oauth.verify_access_token(body["access_token"])["scope"] == "read"
    # Asking for the removed scope by name is refused, and changes nothing.
    asked = oauth.refresh(app_client, body["refresh_token"], scope="read write")
    assert_oauth_error(asked, "invalid_scope")
    again = oauth.refresh(app_client, body["refresh_token"])
    assert again.status_code == 200 and again.get_json()["scope"] == "read"


def test_nothing_left_is_invalid_scope_and_changes_nothing(oauth, run, way_in):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="read write")
    pair = oauth.login_pair(app_client, scope="write")
    assert run("clients", "update", app_client.client_id, "--scope", "read").exit_code == 0
    refused = assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]),
                                 "invalid_scope")
    assert "sign in again" in refused["error_description"]
    # The token was not used up: given the scope back, the same token refreshes.
    assert run("clients", "update", app_client.client_id, "--scope", "read write"
               ).exit_code == 0
    back = oauth.refresh(app_client, pair["refresh_token"])
    assert back.status_code == 200 and back.get_json()["scope"] == "write"


def test_a_sign_in_without_scope_still_refreshes(oauth, way_in):
    oauth.create_user()
    app_client = oauth.first_party_app(scope="")
    pair = oauth.login_pair(app_client)
    refreshed = oauth.refresh(app_client, pair["refresh_token"])
    assert refreshed.status_code == 200, refreshed.get_data(True)
