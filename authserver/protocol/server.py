"""The Authlib authorization server, wired to our client lookup and grants."""

from __future__ import annotations

from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.errors import InvalidClientError

from ..domain import refresh_families
from ..domain.clients import ClientCache, ClientRecord
from ..extensions import db
from ..services import services
from . import grants
from .client_auth import authenticate_client, parse_basic


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
        self.register_grant(grants.RefreshTokenGrant)

    def query_client(self, client_id: str) -> ClientRecord | None:
        return self.clients.get(client_id)

    def authenticate_client(
        self, request: OAuth2Request, methods: Any, endpoint: str = "token"
    ) -> ClientRecord:
        # Only a public client's refresh trusts the per-process cache: it sends no secret
        # that a rotation elsewhere could have withdrawn, and a disabled or deleted client's
        # families are revoked in the same transaction, so a stale record still fails. A
        # request with a secret, and every grant that starts a new sign-in, reads the stored
        # record: no process accepts a withdrawn secret or a client disabled elsewhere.
        refreshing = request.form.get("grant_type") == "refresh_token"
        cached = refreshing and not _sends_secret(request)
        client, method = authenticate_client(
            request.headers, request.form,
            self.clients.get if cached else self.clients.reload, now=services().clock(),
            reload=self.clients.reload if cached else None,
            implied_client_id=(lambda: refresh_families.client_of(
                db.session, request.form.get("refresh_token"))) if refreshing else None)
        request.auth_method = method
        return client

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        raise RuntimeError("tokens are stored by the domain, not by Authlib")

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        return None


def _sends_secret(request: OAuth2Request) -> bool:
    """A client secret in the body or in a Basic header (an empty Basic password is none)."""
    if request.form.get("client_secret"):
        return True
    header = request.headers.get("Authorization")
    if not header:
        return False
    try:
        return bool(parse_basic(header)[1])
    except InvalidClientError:
        return True  # malformed: authenticate_client reports it
