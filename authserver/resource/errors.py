"""Why a token was refused: one exception class per reason, all ``InvalidToken``.

Each carries what an RFC 6750 §3 / RFC 9449 §7.1 challenge needs: the ``error`` code, an
ASCII ``description`` safe to send to the client (never the token), and the HTTP status.
"""

from __future__ import annotations


class InvalidToken(Exception):
    """The request's access token was refused (RFC 6750 §3.1 ``invalid_token``)."""

    error: str | None = "invalid_token"
    status = 401
    scheme = "Bearer"  # the authentication scheme to challenge with (set by bearer.py)
    default_description = "the access token is invalid"

    def __init__(self, description: str | None = None) -> None:
        self.description = description or self.default_description
        super().__init__(self.description)


class MissingToken(InvalidToken):
    """No credentials at all: RFC 6750 §3.1 says answer without an error code."""

    error = None
    default_description = "an access token is required"


class InvalidRequest(InvalidToken):
    """A malformed request, e.g. two Authorization schemes (RFC 6750 §3.1, status 400)."""

    error = "invalid_request"
    status = 400
    default_description = "the request is malformed"


class MalformedToken(InvalidToken):
    default_description = "the access token is not a well-formed signed JWT"


class InvalidAlgorithm(InvalidToken):
    """``none``, HMAC, an algorithm not pinned, or one that does not fit the key."""

    default_description = "the access token's signing algorithm is not accepted"


class UnknownKey(InvalidToken):
    """No published key has the token's ``kid`` (after at most one rate-limited refetch)."""

    default_description = "the access token was signed by an unknown key"


class InvalidSignature(InvalidToken):
    default_description = "the access token's signature is invalid"


class ExpiredToken(InvalidToken):
    default_description = "the access token has expired"


class NotYetValid(InvalidToken):
    """``nbf`` or ``iat`` lies in the future (beyond the leeway)."""

    default_description = "the access token is not valid yet"


class InvalidClaims(InvalidToken):
    """A required claim is missing or has the wrong type or value."""

    default_description = "the access token's claims are not acceptable"


class InvalidIssuer(InvalidClaims):
    default_description = "the access token was issued by another server"


class InvalidAudience(InvalidClaims):
    default_description = "the access token is not meant for this API"


class InvalidTokenType(InvalidClaims):
    """The JWT is not an access token (RFC 9068 §4: ``typ`` must be ``at+jwt``)."""

    default_description = "the token is not an access token (typ must be at+jwt)"


class TokenInactive(InvalidToken):
    """Introspection answered ``active: false`` (revoked, expired or unknown)."""

    default_description = "the access token is not active"


class InsufficientScope(InvalidToken):
    """RFC 6750 §3.1: status 403 and the scope the request needs."""

    error = "insufficient_scope"
    status = 403
    default_description = "the access token lacks the scope this request needs"

    def __init__(self, description: str | None = None, scope: tuple[str, ...] = ()) -> None:
        super().__init__(description)
        self.scope = scope


class InvalidDPoPProof(InvalidToken):
    """RFC 9449 §7.1 ``invalid_dpop_proof``: missing, malformed or not matching."""

    error = "invalid_dpop_proof"
    default_description = "the DPoP proof is invalid"


class VerifierUnavailable(InvalidToken):
    """The authorization server's metadata, JWKS or introspection could not be fetched.

    Not the client's fault: the Flask decorator answers 503 (and the token is not checked).
    """

    error = "temporarily_unavailable"
    status = 503
    default_description = "the authorization server cannot be reached"


class TokenRevoked(InvalidToken):
    """The token's entry in its status list is not VALID (draft-ietf-oauth-status-list
    §7.1): INVALID (1, the session was revoked), SUSPENDED (2) or another value."""

    default_description = "the access token has been revoked"
    _REASONS = {1: "the access token has been revoked (status list: INVALID)",
                2: "the access token is suspended (status list: SUSPENDED)"}

    def __init__(self, token_status: int = 1, description: str | None = None) -> None:
        super().__init__(description or self._REASONS.get(
            token_status, f"the access token's status is {token_status}, not VALID"))
        self.token_status = token_status


class StatusUnavailable(VerifierUnavailable):
    """No usable status list for the token: it could not be fetched or verified, and the
    copy fetched before (if any) is older than its ``ttl`` plus the grace. Failing closed,
    the decorator answers 503 like any unreachable authorization server."""

    default_description = "status list unavailable"


class InvalidLogoutToken(InvalidToken):
    """A back-channel logout token was refused; the receiver answers 400 ``invalid_request``
    (OpenID Connect Back-Channel Logout 1.0 §2.8)."""

    error = "invalid_request"
    status = 400
    default_description = "the logout token is invalid"


class ReplayedLogoutToken(InvalidLogoutToken):
    """A logout token whose ``jti`` was seen before: the logout it asks for was done when
    it first came, so a receiver may answer 200 (delivery is at least once)."""

    default_description = "the logout token was already received (jti replayed)"
