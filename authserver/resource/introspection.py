"""Token introspection (RFC 7662) for APIs that need revocation to take effect at once.

Local verification cannot see that a session was signed out a second ago; the
authorization server's ``/oauth/introspect`` can (it answers ``active: false`` for every
token of a revoked session). The API authenticates as a confidential client registered
with ``--allow-introspection``.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterable
from urllib.parse import quote

from .claims import AccessTokenClaims, audiences
from .discovery import Metadata, check_endpoint
from .errors import (
    ExpiredToken,
    InvalidAudience,
    InvalidIssuer,
    MalformedToken,
    TokenInactive,
    VerifierUnavailable,
)
from .http import HttpClient, HttpError, UrllibClient
from .verifier import MAX_TOKEN_LENGTH, TokenVerifier


def basic_credentials(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: form-urlencode each part before base64."""
    raw = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class IntrospectionVerifier:
    """Asks the authorization server about every token; returns the same typed claims.

    With ``local`` (a :class:`TokenVerifier`), the signature and claims are checked locally
    first, so forged, expired or foreign tokens never cost a request, and the claims come
    from the JWT; introspection then only confirms the token is still active.
    """

    def __init__(self, issuer: str, audience: str | Iterable[str], client_id: str,
                 client_secret: str, *, introspection_endpoint: str | None = None,
                 local: TokenVerifier | None = None, leeway: int = 30, timeout: float = 5.0,
                 http: HttpClient | None = None, clock: Callable[[], float] = time.time
                 ) -> None:
        self.issuer = issuer
        self.audiences = frozenset([audience] if isinstance(audience, str) else audience)
        self.local = local
        self.leeway = leeway
        self._timeout = timeout
        self._clock = clock
        self._http = http or UrllibClient()
        self._authorization = basic_credentials(client_id, client_secret)
        self.metadata = local.metadata if local is not None else Metadata(
            issuer, self._http, timeout=timeout, retry=10.0)
        if introspection_endpoint is not None:
            check_endpoint(issuer, introspection_endpoint, "introspection_endpoint")
        self._endpoint = introspection_endpoint

    def endpoint(self) -> str:
        if self._endpoint is None:
            self._endpoint = self.metadata.endpoint("introspection_endpoint")
        return self._endpoint

    def verify(self, token: str) -> AccessTokenClaims:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise MalformedToken()
        local = self.local.verify(token) if self.local is not None else None
        answer = self._introspect(token)
        if answer.get("active") is not True:
            raise TokenInactive()
        if local is not None:
            return local
        if "iss" in answer and answer["iss"] != self.issuer:
            raise InvalidIssuer()
        if "aud" in answer and not self.audiences & set(audiences(answer["aud"])):
            raise InvalidAudience()
        claims = AccessTokenClaims.from_claims({"iss": self.issuer, **answer},
                                               require_jti=False)
        if self._clock() >= claims.exp + self.leeway:
            raise ExpiredToken()
        return claims

    def _introspect(self, token: str) -> dict:
        try:
            response = self._http.post(
                self.endpoint(), {"token": token, "token_type_hint": "access_token"},
                {"Authorization": self._authorization, "Accept": "application/json"},
                self._timeout)
            answer = response.json() if response.status == 200 else None
        except HttpError:
            raise VerifierUnavailable("token introspection failed") from None
        if not isinstance(answer, dict):
            # 401 means our own client credentials are wrong: still not the caller's fault.
            raise VerifierUnavailable(f"token introspection answered {response.status}")
        return answer
