"""Redirect-URI matching (RFC 6749 §3.1.2.3, OAuth 2.1 §2.3.1 exact match, RFC 8252 §7.3).

A requested redirect URI must be character-for-character one of the registered ones. The
only exception is RFC 8252 §7.3: a native app listening on the loopback interface gets an
ephemeral port from its OS, so for a registered ``http://127.0.0.1/...`` or
``http://[::1]/...`` URI any port is accepted, with everything else still identical.
``localhost`` gets no such exception (RFC 8252 §8.3: not recommended, DNS may lie).
Prefixes, substrings, fragments and user-info are never accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit

_LOOPBACK = re.compile(r"^http://(127\.0\.0\.1|\[::1\])(?::([0-9]{1,5}))?(?=[/?]|\Z)")


def _split_loopback(uri: str) -> tuple[str, str] | None:
    """``(host, rest)`` of a loopback-IP ``http`` URI, the port removed; else None.

    ``rest`` is the exact text after the authority (path and query), so two URIs that
    differ in anything but the port never compare equal.
    """
    match = _LOOPBACK.match(uri)
    if match is None:
        return None
    port = match.group(2)
    if port is not None and not 1 <= int(port) <= 65535:
        return None
    return match.group(1), uri[match.end():]


def is_loopback_redirect(uri: str) -> bool:
    """An ``http`` redirect to a loopback IP literal (RFC 8252 §7.3)."""
    return "#" not in uri and _split_loopback(uri) is not None


def is_native_redirect(uri: str) -> bool:
    """A redirect that any app on the device may be listening at: a loopback address
    (``localhost`` included) or a private-use scheme (RFC 8252 §8.6, §7.1). Only the
    person can tell that the app which receives the code is the one they meant."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return True
    if parts.scheme.lower() not in ("http", "https"):
        return True
    return parts.hostname in ("127.0.0.1", "::1", "localhost") or is_loopback_redirect(uri)


def matches(requested: str, registered: Iterable[str]) -> bool:
    """Exact string match, except that a loopback redirect may use any port."""
    if "#" in requested:  # RFC 6749 §3.1.2: the endpoint URI MUST NOT include a fragment
        return False
    loopback = _split_loopback(requested)
    for candidate in registered:
        if requested == candidate:
            return True
        if loopback is not None and "#" not in candidate and \
                _split_loopback(candidate) == loopback:
            return True
    return False
