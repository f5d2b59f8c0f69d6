"""Redirect-URI matching (RFC 6749 §3.1.2.3, OAuth 2.1 exact match, RFC 8252 §7.3)."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

LOOPBACK_HOSTS = ("127.0.0.1", "[::1]", "::1")


def _without_port(uri: str) -> str | None:
    parts = urlsplit(uri)
    host = parts.hostname
    if host is None:
        return None
    netloc = f"[{host}]" if ":" in host else host
    if parts.username or parts.password:
        return None
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_loopback_redirect(uri: str) -> bool:
    """An ``http`` redirect to a loopback IP literal (RFC 8252 §7.3)."""
    try:
        parts = urlsplit(uri)
        return parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1")
    except ValueError:
        return False


def matches(requested: str, registered: Iterable[str]) -> bool:
    """Exact string match, except that a loopback redirect may use any port."""
    for candidate in registered:
        if requested == candidate:
            return True
        if is_loopback_redirect(candidate) and is_loopback_redirect(requested):
            try:
                if _without_port(requested) == _without_port(candidate):
                    return True
            except ValueError:
                continue
    return False
