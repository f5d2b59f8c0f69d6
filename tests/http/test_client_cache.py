"""The per-process client cache never lets one process act on a change another one made.

Two apps on one database stand for two server processes. Each caches client records for
a minute here; the one that did not make the change must still refuse a disabled or
deleted client's new sign-ins at once, and accept a rotated secret at once.
"""

from __future__ import annotations

import pytest
from flask import Flask

from authserver.app import create_app
from authserver.domain import client_admin
from authserver.extensions import db
from tests.support.databases import app_settings
from tests.support.oauth import OAuthActions, assert_oauth_error, basic


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"client_cache_seconds": 60}


@pytest.fixture
def other_process(app: Flask, database_url, keys_dir):
    other = create_app(app_settings(database_url, keys_dir, client_cache_seconds=60))
    other.config["TESTING"] = True
    yield other
    with other.app_context():
        db.session.remove()
        db.engine.dispose()


def _client_credentials(oauth: OAuthActions, client_id: str, secret: str):
    return oauth.client.post("/oauth/token", data={"grant_type": "client_credentials"},
                             headers={"Authorization": basic(client_id, secret)})


def test_a_client_disabled_elsewhere_gets_no_new_token(oauth, other_process):
    machine, secret = oauth.create_client(name="machine", grant_types=["client_credentials"])
    assert _client_credentials(oauth, machine.client_id, secret).status_code == 200  # cached
    with other_process.app_context():
        client_admin.set_active(db.session, machine.client_id, False)
        db.session.commit()
    assert_oauth_error(_client_credentials(oauth, machine.client_id, secret), "invalid_client",
                       401)
    with other_process.app_context():
        client_admin.set_active(db.session, machine.client_id, True)
        db.session.commit()
    assert _client_credentials(oauth, machine.client_id, secret).status_code == 200


def test_a_client_deleted_elsewhere_gets_no_new_token(oauth, other_process):
    machine, secret = oauth.create_client(name="machine", grant_types=["client_credentials"])
    assert _client_credentials(oauth, machine.client_id, secret).status_code == 200
    with other_process.app_context():
        client_admin.delete_client(db.session, machine.client_id)
        db.session.commit()
    assert_oauth_error(_client_credentials(oauth, machine.client_id, secret), "invalid_client",
                       401)


def test_a_secret_rotated_elsewhere_works_at_once_and_the_old_one_overlaps(oauth,
                                                                          other_process):
    oauth.create_user()
    web, old = oauth.create_client(name="web", first_party=True, scope="read")
    pair = oauth.login_pair(web, secret=old)
    with other_process.app_context():
        new = client_admin.rotate_secret(db.session, web.client_id, 3600)
        db.session.commit()
    # A refresh (the cached path) authenticates with the new secret, and with the old one.
    for secret in (new, old):
        response = oauth.client.post("/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": pair["refresh_token"]},
            headers={"Authorization": basic(web.client_id, secret)})
        assert response.status_code == 200, response.get_json()
        pair = response.get_json()


def test_a_refresh_of_a_client_disabled_elsewhere_is_refused(oauth, other_process):
    oauth.create_user()
    app_client = oauth.first_party_app()
    pair = oauth.login_pair(app_client)
    with other_process.app_context():
        client_admin.set_active(db.session, app_client.client_id, False)
        db.session.commit()
    assert_oauth_error(oauth.refresh(app_client, pair["refresh_token"]), "invalid_grant")


def test_a_secret_withdrawn_elsewhere_fails_at_once_on_refresh(oauth, other_process):
    """An emergency rotation (no overlap) is the answer to a leaked secret."""
    oauth.create_user()
    web, old = oauth.create_client(name="web", first_party=True, scope="read")
    pair = oauth.login_pair(web, secret=old)
    warm = oauth.refresh(web, pair["refresh_token"], secret=old)  # caches the record, if any
    assert warm.status_code == 200
    with other_process.app_context():
        client_admin.rotate_secret(db.session, web.client_id, 0)
        db.session.commit()
    refused = oauth.refresh(web, warm.get_json()["refresh_token"], secret=old)
    assert_oauth_error(refused, "invalid_client", 401)


def test_a_client_disabled_elsewhere_cannot_introspect_or_revoke(oauth, other_process):
    api, secret = oauth.create_client(name="api", grant_types=["client_credentials"],
                                      allow_introspection=True)
    headers = {"Authorization": basic(api.client_id, secret)}
    assert oauth.client.post("/oauth/introspect", data={"token": "x"},
                             headers=headers).status_code == 200
    with other_process.app_context():
        client_admin.set_active(db.session, api.client_id, False)
        db.session.commit()
    for path in ("/oauth/introspect", "/oauth/revoke"):
        response = oauth.client.post(path, data={"token": "x"}, headers=headers)
        assert_oauth_error(response, "invalid_client", 401)


def test_a_forget_during_a_reload_keeps_the_stale_record_out():
    """Two threads of one process: a reload that read the row before an admin's change
    must not put its copy back after that change's forget()."""
    from authserver.domain.clients import ClientCache

    cache: ClientCache

    def load(client_id: str):
        cache.forget([client_id])  # the admin's commit and forget() land mid-read
        return "stale record"

    cache = ClientCache(load, ttl=60)  # type: ignore[arg-type]
    assert cache.reload("cl_x") == "stale record"
    assert "cl_x" not in cache._entries
