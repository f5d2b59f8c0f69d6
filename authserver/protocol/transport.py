"""What the token endpoint checks about the connection itself: the Host and the scheme."""

from __future__ import annotations

import functools

from authlib.common.security import is_secure_transport
from werkzeug.urls import uri_to_iri


@functools.lru_cache(maxsize=256)
def usable_host(host: str) -> bool:
    """Whether Werkzeug can route and build URLs on ``host``. A name that is no valid IDNA
    (``xn--a``, ``a..b``) makes the URL map refuse it (400) and every ``request.url``
    raise UnicodeError; a bracketed one that is no IPv6 address (``[:1]``), ValueError.
    Decided once per host value (building a URL costs more than a refresh's client
    authentication)."""
    try:
        host.lower().partition(":")[0].encode("idna")  # as werkzeug's Map.bind does
        uri_to_iri(f"http://{host}/")
    except (UnicodeError, ValueError):  # ValueError: a bracketed non-address, "[:1]"
        return False
    return True


def secure(scheme: str, host: str) -> bool:
    """RFC 6749 §3.2 (TLS) as Authlib decides it, which reads only the scheme and host:
    https, or loopback http; anything in development (``AUTHLIB_INSECURE_TRANSPORT``)."""
    return bool(is_secure_transport(f"{scheme}://{host}/"))
