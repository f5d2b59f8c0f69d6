"""The Authlib authorization server, wired to our client lookup and grants."""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from flask import has_request_context, request

from ..domain import refresh_lookup
from ..domain.clients import ClientCache, ClientRecord
from ..extensions import db
from ..ops.access_log import note_client
from ..services import services
from . import grants
from .client_auth import Fields, authenticate_client


def _note(client: ClientRecord) -> None:
    """The access log's client (the fast path, outside Flask, notes its own)."""
    if has_request_context():
        note_client(request.environ, client.client_id)


class AuthServer(AuthorizationServer):
    """Authlib's Flask server with our own client authentication and no token storage.

    Grants issue and store tokens through the domain, so ``save_token`` and the token
    generators are never used.
    """

    def __init__(self, clients: ClientCache) -> None:
        super().__init__()
        self.clients = clients
        self.register_grant(grants.AuthorizationCodeGrant)
        self.register_grant(grants.PasswordGrant)
        self.register_grant(grants.ClientCredentialsGrant)

    def query_client(self, client_id: str) -> ClientRecord | None:
        return self.clients.get(client_id)

    def authenticate_client(
        self, request: OAuth2Request, methods: Any, endpoint: str = "token"
    ) -> ClientRecord:
        client, method = self.authenticate_token_client(request.headers, request.form)
        request.auth_method = method
        return client

    def authenticate_token_client(self, headers: Fields, form: Fields
                                  ) -> tuple[ClientRecord, str]:
        """The client and its method, for every grant but the refresh: it reads the stored
        record, so no process mints a token for a client disabled elsewhere."""
        client, method = authenticate_client(headers, form, self.clients.reload,
                                             now=services().clock())
        _note(client)
        return client, method

    def authenticate_refresh_client(self, headers: Fields, form: Fields) -> ClientRecord:
        """The client of a refresh request. Only here does a public client trust the
        per-process cache (``authenticate_client`` uses it for method none only): a
        disabled or deleted client's families are revoked in the same transaction, so a
        stale record still fails. RFC 6749 §6: a public client may name no client, and
        is then the one the refresh token was issued to."""
        client, _ = authenticate_client(
            headers, form, self.clients.get, now=services().clock(),
            reload=self.clients.reload,
            implied_client_id=lambda: refresh_lookup.client_of(
                db.session(), form.get("refresh_token")))
        _note(client)
        return client

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        raise RuntimeError("tokens are stored by the domain, not by Authlib")

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None

