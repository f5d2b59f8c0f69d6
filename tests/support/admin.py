"""Helpers for the client-administration tests (registration API, CLI, admin pages)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import func, select

from authserver.domain import users
from authserver.extensions import db
from authserver.storage.models import AuditEvent, Client
from tests.support.oauth import PASSWORD, BrowserActions, OAuthActions, basic, form_fields

ADMIN_SCOPE = "admin:clients"
REDIRECT = "https://partner.example.com/cb"


def machine_token(oauth: OAuthActions, client_id: str, secret: str,
                  scope: str | None = None) -> str:
    """An access token from the client_credentials grant, over HTTP."""
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    response = oauth.token(data, {"Authorization": basic(client_id, secret)})
    assert response.status_code == 200, response.get_data(True)
    return response.get_json()["access_token"]


def admin_token(oauth: OAuthActions, name: str = "Provisioner") -> str:
    """An admin client (client_credentials, ``admin:clients``) and a token of it."""
    bot, secret = oauth.create_client(name=name, grant_types=["client_credentials"],
                                      scope=ADMIN_SCOPE)
    assert secret is not None
    return machine_token(oauth, bot.client_id, secret)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def client_rows(app: Flask) -> list[dict[str, Any]]:
    """Every client's stored registration (to show that nothing changed)."""
    with app.app_context():
        rows = db.session.scalars(select(Client).order_by(Client.id)).all()
        return [{c.name: getattr(row, c.name) for c in Client.__table__.columns} for row in rows]


def audit_events(app: Flask, event: str) -> list[AuditEvent]:
    with app.app_context():
        rows = db.session.scalars(select(AuditEvent).where(AuditEvent.event == event)
                                  .order_by(AuditEvent.id)).all()
        db.session.expunge_all()
        return list(rows)


def count_clients(app: Flask) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Client)) or 0


def signed_in_admin(app: Flask, oauth: OAuthActions, username: str = "root") -> BrowserActions:
    """A browser (Flask test client) signed in as a user with the admin role."""
    oauth.create_user(username)
    with app.app_context():
        users.set_admin(db.session, username, True)
        db.session.commit()
    browser = BrowserActions(app.test_client())
    response = browser.login(username, PASSWORD)
    assert response.status_code == 303, response.get_data(True)
    return browser


def page_fields(html: str) -> dict[str, str]:
    """The hidden fields of a page (CSRF and one-time tokens)."""
    return form_fields(html)
