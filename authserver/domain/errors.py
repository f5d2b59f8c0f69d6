"""Domain errors. The protocol layer maps them to RFC 6749 error codes."""


class DomainError(Exception):
    """Base class; ``str(error)`` is a short ASCII text safe to show a client."""


class ValidationError(DomainError):
    """Bad input to a domain operation (for example client metadata). ``field`` names it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(DomainError):
    """The named user, client or family does not exist."""


class InvalidRefreshToken(DomainError):
    """Unknown, expired, revoked or another client's refresh token (RFC 6749 invalid_grant)."""


class RefreshTokenReused(InvalidRefreshToken):
    """An already-rotated token came back outside the grace window: the family is revoked."""


class ScopeNotGranted(DomainError):
    """The request asked for a scope the grant does not cover (RFC 6749 invalid_scope)."""
