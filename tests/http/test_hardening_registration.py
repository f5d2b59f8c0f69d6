"""Open registration (no admin token) may not choose what weakens the server's defaults:
longer or endless lifetimes, a weaker device binding, ``client_credentials``, the
privileged flags, a back-channel logout receiver at a private address in production. Each
is refused with ``invalid_client_metadata`` naming the field (docs/clients.md, "Open
registration"); an admin may set all of them, and a client keeps what an admin gave it."""

from __future__ import annotations

import pytest

from tests.http.test_registration import (
    MACHINE,
    WEB_APP,
    assert_registration_error,
    register,
    registered,
)
from tests.support.admin import admin_token, bearer, count_clients

# The database plays no part here: SQLite only.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

OPEN = {"open_registration": True}
PRODUCTION = {**OPEN, "env": "production", "issuer": "https://auth.example.com"}
DEFAULT_TTL = 900  # Settings.access_token_ttl
NATIVE = {"client_name": "Notes", "token_endpoint_auth_method": "none",
          "redirect_uris": ["com.example.notes:/callback"],
          "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}

REFUSED = [
    ({"access_token_ttl": DEFAULT_TTL + 1}, "access_token_ttl"),
    ({"access_token_ttl": 86_400}, "access_token_ttl"),
    ({"refresh_idle_ttl": 0}, "refresh_idle_ttl"),
    ({"refresh_idle_ttl": 14 * 86_400 + 1}, "refresh_idle_ttl"),
    ({"refresh_absolute_ttl": 0}, "refresh_absolute_ttl"),
    ({"refresh_absolute_ttl": 365 * 86_400}, "refresh_absolute_ttl"),
    ({"reuse_grace": 300}, "reuse_grace"),
    ({"bind_device_id": False}, "bind_device_id"),
    ({"bind_user_agent": False}, "bind_user_agent"),
    ({"on_binding_mismatch": "reject"}, "on_binding_mismatch"),
    ({"first_party": True}, "first_party"),
    ({"allow_introspection": True}, "allow_introspection"),
]


@pytest.mark.parametrize("settings_overrides", [OPEN])
def test_open_registration_may_not_weaken_the_defaults(oauth, app):
    for change, field in REFUSED:
        for base in (WEB_APP, NATIVE):
            response = register(oauth, None, {**base, **change})
            body = assert_registration_error(response, "invalid_client_metadata", field)
            assert "admin" in body["error_description"], body
    # No machine client: explicitly, nor by a confidential client with no grant types at
    # all (whose default would be client_credentials).
    for machine in (MACHINE, {"client_name": "Job", "grant_types": []}):
        response = register(oauth, None, {**machine, "scope": "openid"})
        assert_registration_error(response, "invalid_client_metadata", "grant_types")
    assert count_clients(oauth.app) == 0

    # What stays within the defaults, or is stricter, is accepted.
    stricter = {"access_token_ttl": 300, "refresh_idle_ttl": 3600,
                "refresh_absolute_ttl": 86_400, "reuse_grace": 0, "bind_ip": "/24",
                "require_device_id": True, "require_dpop": True}
    body = registered(oauth, None, {**NATIVE, **stricter})
    assert {k: body[k] for k in stricter} == stricter
    assert registered(oauth, None, {**WEB_APP, "access_token_ttl": DEFAULT_TTL})


@pytest.mark.parametrize("settings_overrides", [OPEN])
def test_an_admin_may_and_a_client_keeps_what_an_admin_gave_it(oauth, app):
    admin = admin_token(oauth)
    wide = {"access_token_ttl": 3600, "refresh_absolute_ttl": 0, "bind_user_agent": False}
    body = registered(oauth, admin, {**WEB_APP, **wide})
    cid, token = body["client_id"], body["registration_access_token"]
    url = f"/oauth/register/{cid}"
    kept = oauth.client.put(url, json={"client_id": cid, "client_name": "Renamed"},
                            headers=bearer(token))
    assert kept.status_code == 200, kept.get_json()
    assert {k: kept.get_json()[k] for k in wide} == wide
    # ... but may not widen further on its own.
    wider = oauth.client.put(url, json={"client_id": cid, "access_token_ttl": 7200},
                             headers=bearer(token))
    assert_registration_error(wider, "invalid_client_metadata", "access_token_ttl")
    # A client registered openly cannot lift its limits with its registration token.
    own = registered(oauth, None, NATIVE)
    cid, token = own["client_id"], own["registration_access_token"]
    response = oauth.client.put(f"/oauth/register/{cid}",
                                json={"client_id": cid, "bind_device_id": False},
                                headers=bearer(token))
    assert_registration_error(response, "invalid_client_metadata", "bind_device_id")
    response = oauth.client.put(
        f"/oauth/register/{cid}", headers=bearer(token),
        json={"client_id": cid, "grant_types": ["client_credentials"], "response_types": []})
    assert response.status_code == 400


@pytest.mark.parametrize("settings_overrides", [PRODUCTION])
def test_no_back_channel_logout_to_private_addresses_in_production(oauth, app):
    for uri in ("https://10.0.0.5/logout", "https://[::1]/logout", "https://localhost/l",
                "https://169.254.169.254/latest", "http://127.0.0.1:9000/logout",
                "https://app.localhost/logout"):
        response = register(oauth, None, {**WEB_APP, "backchannel_logout_uri": uri},
                            base_url="https://auth.example.com")
        assert_registration_error(response, "invalid_client_metadata",
                                  "backchannel_logout_uri")
    body = registered(oauth, None, {**WEB_APP,
                                    "backchannel_logout_uri": "https://app.example.com/bcl"})
    assert body["backchannel_logout_uri"] == "https://app.example.com/bcl"


@pytest.mark.parametrize("settings_overrides", [OPEN])
def test_development_allows_a_loopback_back_channel_receiver(oauth, app):
    body = registered(oauth, None, {**WEB_APP,
                                    "backchannel_logout_uri": "http://127.0.0.1:9000/bcl"})
    assert body["backchannel_logout_uri"] == "http://127.0.0.1:9000/bcl"
