"""Building RFC 6749 §5.2 errors whose descriptions are always legal ASCII."""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import InvalidClientError, OAuth2Error

_ALLOWED = {chr(c) for c in [0x20, 0x21, *range(0x23, 0x5C), *range(0x5D, 0x7F)]}


def safe_description(text: str) -> str:
    """RFC 6749 §5.2 limits error_description to %x20-21 / %x23-5B / %x5D-7E."""
    return "".join(ch if ch in _ALLOWED else "?" for ch in text)[:200]


def oauth_error(cls: type[OAuth2Error], description: str, **kwargs: object) -> OAuth2Error:
    return cls(description=safe_description(description), **kwargs)


class InvalidDPoPProofError(OAuth2Error):
    """RFC 9449 §5: the DPoP proof is missing or invalid."""

    error = "invalid_dpop_proof"


class ClientAuthenticationFailed(InvalidClientError):
    """RFC 6749 §5.2 ``invalid_client`` with 401 and a Basic challenge that carries the
    ``realm`` RFC 7617 §2 requires (Authlib's has none)."""

    status_code = 401

    def get_headers(self) -> list[tuple[str, str]]:
        headers = [h for h in super().get_headers() if h[0] != "WWW-Authenticate"]
        description = self.get_error_description().replace('"', "|")
        headers.append(("WWW-Authenticate", f'Basic realm="authserver", error="{self.error}", '
                                             f'error_description="{description}"'))
        return headers
