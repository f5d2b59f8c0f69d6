"""The refresh token of a browser app, in an HttpOnly cookie instead of the JSON body
(docs/design.md, "Browser apps").

A client registered with ``refresh_token_delivery: cookie`` gets its refresh token in
``__Host-refresh-<client_id>``, ``Secure; HttpOnly; SameSite=Strict; Path=/``, and sends it
back only there. Every token-endpoint and revocation request of such a client carries
``Origin`` (one of its web origins) and ``X-CSRF: 1``: the cookie comes with any request the
browser makes, so the request must prove it comes from the app's own code (RFC 10017).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from flask import Response, current_app, request
from werkzeug.wrappers import Response as BaseResponse

from ..domain import credentials as creds
from ..domain import refresh_lookup, sessions
from ..domain.clients import ClientRecord
from ..extensions import db
from ..services import services
from .client_requests import named_client_id
from .errors import oauth_error

COOKIE_PREFIX = "__Host-refresh-"
CSRF_HEADER = "X-CSRF"
# RFC 6265bis §5.5: browsers keep a cookie at most 400 days; a token that never expires
# gets that, and the next refresh (which rotates) sets it again.
LONGEST_COOKIE = 400 * 86_400
_COOKIE_SAFE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def cookie_name(client_id: str) -> str:
    """One cookie per client, so that two apps on one server never clobber each other's.
    Our client ids are cookie-name characters already; any other is named by its digest."""
    if _COOKIE_SAFE.fullmatch(client_id):
        return COOKIE_PREFIX + client_id
    return COOKIE_PREFIX + hashlib.sha256(client_id.encode()).hexdigest()[:32]


def cookie_client() -> ClientRecord | None:
    """The active cookie-delivery client the current token or revocation request names (by
    ``client_id``, or as the user of Basic authentication), or None."""
    client_id = named_client_id()
    if not client_id:
        return None
    client = services().clients.get(client_id)
    return client if client is not None and client.active and client.cookie_delivery else None


def check_csrf(client: ClientRecord) -> OAuth2Error | None:
    """The current request has ``Origin`` (one of the client's web origins) and
    ``X-CSRF: 1``; else the ``invalid_request`` to answer (before anything changes)."""
    origin = request.headers.get("Origin")
    if not origin or origin not in client.web_origins:
        return oauth_error(InvalidRequestError, "this client's requests must come from one "
                           "of its registered web origins (the Origin header)")
    if request.headers.get(CSRF_HEADER) != "1":
        return oauth_error(InvalidRequestError,
                           f"this client's requests must carry the header {CSRF_HEADER}: 1")
    return None


def presented(client: ClientRecord) -> str | None:
    """The refresh token in the client's cookie on the current request, or None."""
    return request.cookies.get(cookie_name(client.client_id)) or None


def deliver(response: Response, client: ClientRecord, now: dt.datetime) -> None:
    """Move the refresh token of a successful token response from its JSON into the
    client's cookie, with ``Max-Age`` up to the token's own expiry (idle or absolute).

    A new sign-in overwrites the cookie of an earlier one in this browser; nobody could use
    that earlier session again, so it is revoked rather than left to expire unseen."""
    if response.status_code != 200:
        return
    body: Any = response.get_json(silent=True)
    if not isinstance(body, dict) or "refresh_token" not in body:
        return
    token = body.pop("refresh_token")
    response.set_data(current_app.json.dumps(body))
    info = refresh_lookup.find_refresh_token(db.session(), token, now)
    expires = info.expires_at if info is not None else None
    max_age = LONGEST_COOKIE if expires is None else round((expires - now).total_seconds())
    _set(response, client.client_id, token, max(0, min(max_age, LONGEST_COOKIE)))
    if info is not None:
        _revoke_overwritten(client, info.family_id, now)


def _revoke_overwritten(client: ClientRecord, family_id: str, now: dt.datetime) -> None:
    earlier = presented(client)
    if earlier is None or not earlier.startswith(creds.REFRESH_TOKEN_PREFIX) \
            or len(earlier) > 256:
        return
    old = refresh_lookup.find_refresh_token(db.session(), earlier, now)
    if old is None or old.family_id == family_id or old.client_id != client.client_id:
        return  # a refresh rotates within its family: the parent is not another session
    if old.active:
        sessions.revoke_for_client(  # commits
            db.session(), old.family_id, client.client_id, reason="replaced_by_new_sign_in",
            now=now, by={"via": "token_endpoint", "ip": request.remote_addr})


def expire_dead(response: BaseResponse, now: dt.datetime) -> BaseResponse:
    """Expire each of our refresh cookies on the current request whose token is no longer
    active (after a sign-out page or RP-initiated logout revoked it)."""
    for name, value in request.cookies.items():
        if not name.startswith(COOKIE_PREFIX):
            continue
        info = None
        if value.startswith(creds.REFRESH_TOKEN_PREFIX) and len(value) <= 256:
            info = refresh_lookup.find_refresh_token(db.session(), value, now)
        if info is None or not info.active:
            response.set_cookie(name, "", max_age=0, expires=0, path="/", secure=True,
                                httponly=True, samesite="Strict")
    return response


def _set(response: BaseResponse, client_id: str, value: str, max_age: int) -> None:
    # No Domain: a __Host- cookie must be host-only (RFC 6265bis §4.1.3.2).
    response.set_cookie(cookie_name(client_id), value, max_age=max_age,
                        expires=0 if max_age == 0 else None, path="/", secure=True,
                        httponly=True, samesite="Strict")
