"""Client authentication at the token endpoint (RFC 6749 §2.3, RFC 7591 method names).

``client_secret_basic`` and ``client_secret_post`` for confidential clients, ``none`` for
public ones. A request that uses two methods is refused (§2.3); every failure is
``invalid_client`` with 401 and ``WWW-Authenticate`` (§5.2).

A parameter sent without a value counts as omitted (§3.2), and so does an empty password
in a Basic header: ``Basic base64("<client_id>:")`` is how requests-oauthlib (and other
libraries) send a public client's id by default, so it is method ``none``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from collections.abc import Callable
from typing import Protocol
from urllib.parse import unquote_plus

from authlib.oauth2.rfc6749.errors import InvalidClientError, InvalidRequestError

from ..domain.clients import ClientRecord
from . import rate_limits
from .errors import ClientAuthenticationFailed, oauth_error

FAILED = "client authentication failed"
# RFC 6749 Appendix A.1: client-id = *VSCHAR. Ours are short; nothing else is looked up
# (a NUL, for one, is not even a legal PostgreSQL string).
_CLIENT_ID = re.compile(r"[\x20-\x7e]{1,64}")


class Fields(Protocol):
    """Request headers or form fields: a dict, or Werkzeug's Headers or MultiDict."""

    def get(self, key: str, /) -> str | None: ...


def _fail(description: str = FAILED) -> InvalidClientError:
    return oauth_error(ClientAuthenticationFailed, description)


def parse_basic(header: str) -> tuple[str, str]:
    """(client_id, secret) from an HTTP Basic header, form-urldecoded per §2.3.1."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        raise _fail("the Authorization header must use the Basic scheme")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise _fail("malformed Basic authorization header") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        raise _fail("malformed Basic authorization header")
    return unquote_plus(client_id), unquote_plus(secret)


def authenticate_client(
    headers: Fields, form: Fields,
    lookup: Callable[[str], ClientRecord | None], now: dt.datetime | None = None,
    reload: Callable[[str], ClientRecord | None] | None = None,
    implied_client_id: Callable[[], str | None] | None = None,
) -> tuple[ClientRecord, str]:
    """Return the authenticated client and the method it used, or raise an OAuth error.

    ``now`` (the app's clock) decides whether a rotated-out secret is still in its overlap.
    When ``lookup`` is a cache, ``reload`` reads the stored record. The cache serves only
    method ``none`` (no secret that a rotation elsewhere could have withdrawn), and a
    failure against it is checked once more against the stored record (a client enabled
    by another process works at once); a secret is always checked against the stored one.

    ``implied_client_id`` names the client when the request names none (a refresh token
    knows its client). RFC 6749 §6 asks only confidential clients to authenticate on
    refresh, and some libraries (requests-oauthlib) send a public client's refresh bare;
    such a request is accepted as method ``none`` for a public client only.
    """
    auth = headers.get("Authorization")
    body_id = form.get("client_id") or None
    body_secret = form.get("client_secret") or None
    secret: str | None
    if auth:
        client_id, secret = parse_basic(auth)
        if body_secret is not None:
            raise oauth_error(InvalidRequestError,
                              "use exactly one client authentication method")
        if body_id is not None and body_id != client_id:
            raise oauth_error(InvalidRequestError,
                              "client_id does not match the Authorization header")
        method = "client_secret_basic"
        if not secret:
            secret, method = None, "none"
    elif body_secret is not None:
        if not body_id:
            raise _fail("client_secret_post requires client_id")
        client_id, secret, method = body_id, body_secret, "client_secret_post"
    elif body_id:
        client_id, secret, method = body_id, None, "none"
    else:
        implied = implied_client_id() if implied_client_id is not None else None
        if implied is None:
            raise _fail("client authentication is required")
        implied_client = lookup(implied)  # from the cache on this path: no second query
        if implied_client is None or not implied_client.public:
            raise _fail("client authentication is required")
        client_id, secret, method = implied, None, "none"

    try:
        return _authenticated(client_id, method, secret, lookup, reload, now), method
    except InvalidClientError:
        if secret is not None:
            # A failed client-secret check counts towards the brute-force limits, which
            # may answer 429 instead; a right secret never asks them (docs/design.md,
            # "Operations").
            rate_limits.secret_failed()
        raise


def _authenticated(client_id: str, method: str, secret: str | None,
                   lookup: Callable[[str], ClientRecord | None],
                   reload: Callable[[str], ClientRecord | None] | None,
                   now: dt.datetime | None) -> ClientRecord:
    if not _CLIENT_ID.fullmatch(client_id):
        raise _fail()
    stored = reload or lookup
    first = lookup if method == "none" else stored
    try:
        return _verified(first(client_id), method, secret, now)
    except InvalidClientError:
        if first is stored:
            raise
    return _verified(stored(client_id), method, secret, now)


def _verified(client: ClientRecord | None, method: str, secret: str | None,
              now: dt.datetime | None) -> ClientRecord:
    if client is None or not client.active:
        raise _fail()
    if not client.check_endpoint_auth_method(method, "token"):
        if client.public:
            raise _fail("a public client has no secret; authenticate with client_id only")
        raise _fail("this client must authenticate with its client secret")
    if secret is not None and not client.check_client_secret(secret, now):
        raise _fail()
    return client
