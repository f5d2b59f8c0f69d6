"""JWT access tokens per RFC 9068, signed with the active key."""

from __future__ import annotations

import datetime as dt
from typing import Any

from ..config import Settings
from ..crypto import jose
from ..crypto.keystore import KeyStore
from ..domain import credentials as creds
from ..domain import scopes
from ..domain.clients import ClientRecord
from ..domain.refresh_families import Grant
from ..domain.token_status import Entry

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - RFC 9068 §2.1 media type


class AccessTokenIssuer:
    """Builds and signs access tokens; keys come from the cached key store."""

    def __init__(self, settings: Settings, keys: KeyStore) -> None:
        self.settings = settings
        self.keys = keys

    def ttl(self, client: ClientRecord) -> int:
        return client.access_token_ttl or self.settings.access_token_ttl

    def issue(
        self,
        *,
        client: ClientRecord,
        subject: str,
        issued_at: dt.datetime,
        scope: list[str],
        family_id: str | None = None,
        auth_time: dt.datetime | None = None,
        jkt: str | None = None,
        status: Entry | None = None,
    ) -> dict[str, Any]:
        """The access-token part of a token response (RFC 6749 §5.1).

        With ``jkt`` the token is DPoP-bound: ``cnf.jkt`` (RFC 9449 §6.1) and
        ``token_type: DPoP`` (§5). With ``status`` it carries its Token Status List entry
        (draft-ietf-oauth-status-list §6.1; docs/design.md, "Revocation that reaches APIs").
        """
        now = int(issued_at.timestamp())
        ttl = self.ttl(client)
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": subject,
            "aud": self.settings.audience,
            "client_id": client.client_id,
            "scope": scopes.render(scope),
            "iat": now,
            "exp": now + ttl,
            "jti": creds.new_jti(),
        }
        if family_id is not None:
            claims["sid"] = family_id
        if auth_time is not None:
            claims["auth_time"] = int(auth_time.timestamp())
        if jkt is not None:
            claims["cnf"] = {"jkt": jkt}
        if status is not None:
            claims["status"] = {"status_list": {"idx": status.idx,
                                                "uri": self.status_list_uri(status.list_id)}}
        token = self.keys.active().sign(claims, ACCESS_TOKEN_TYP)
        token_type = "DPoP" if jkt is not None else "Bearer"
        return {"access_token": token, "token_type": token_type, "expires_in": ttl}

    def status_list_uri(self, list_id: int) -> str:
        """Where the status list ``list_id`` is served (``protocol/status_lists.py``)."""
        return f"{self.settings.issuer}/oauth/status/{list_id}"

    def for_grant(self, grant: Grant) -> dict[str, Any]:
        """Adapter for ``refresh_families``: tokens for a user's sign-in (family).

        With the ``openid`` scope the response also carries an ID token (OIDC Core §3.1.3.3;
        on refresh §12.2: same ``auth_time``, no ``nonce``).
        """
        body = self.issue(client=grant.client, subject=grant.subject,
                          issued_at=grant.issued_at, scope=grant.scope,
                          family_id=grant.family_id, auth_time=grant.auth_time,
                          jkt=grant.jkt, status=grant.status)
        if "openid" in grant.scope:
            body["id_token"] = self.id_token(grant, body["access_token"])
        return body

    def id_token(self, grant: Grant, access_token: str) -> str:
        """An OIDC ID token for ``grant``, bound to ``access_token`` by ``at_hash``."""
        key = self.keys.active()
        now = int(grant.issued_at.timestamp())
        claims: dict[str, Any] = {
            "iss": self.settings.issuer,
            "sub": grant.subject,
            "aud": grant.client.client_id,
            "exp": now + self.ttl(grant.client),
            "iat": now,
            "auth_time": int(grant.auth_time.timestamp()),
            "at_hash": jose.left_half_hash(access_token, key.alg),
            "sid": grant.family_id,
        }
        if grant.nonce is not None:
            claims["nonce"] = grant.nonce
        return key.sign(claims, "JWT")
