"""The form requests clients send to the token, revocation and introspection endpoints:
RFC 6749 §3.2's body rules, and for RFC 7009 / RFC 7662 the authenticated client with its
``token`` parameter and the order in which to look the token up."""

from __future__ import annotations

import logging
from collections.abc import Callable

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge

from ..domain import credentials as creds
from ..domain.clients import ClientRecord
from ..http import error_response, request_is_secure
from ..ops.access_log import note_client
from ..services import services
from .client_auth import authenticate_client, parse_basic
from .errors import oauth_error

log = logging.getLogger(__name__)

MAX_PARAMETER_LENGTH = 4096
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
REFRESH, ACCESS = "refresh_token", "access_token"  # RFC 7009 §2.1 hint values


def check_token_request(long_parameters: tuple[str, ...] = ()) -> OAuth2Error | None:
    """RFC 6749 §3.2 and §5.2: form-encoded body, each parameter at most once.

    A body over ``MAX_CONTENT_LENGTH`` (or with more fields than Werkzeug parses) is a
    413 with the same JSON error body, never an HTML page. ``long_parameters`` are exempt
    from the per-parameter length limit (the body limit still holds).
    """
    if request.mimetype != FORM_CONTENT_TYPE:
        return oauth_error(InvalidRequestError,
                           f"the request body must be {FORM_CONTENT_TYPE}")
    if request.args:
        return oauth_error(InvalidRequestError,
                           "parameters must be sent in the request body, not the URL")
    try:
        form = request.form
    except RequestEntityTooLarge:
        return oauth_error(InvalidRequestError, "the request body is too large",
                           status_code=413)
    for key in form:
        values = form.getlist(key)
        if len(values) > 1:
            return oauth_error(InvalidRequestError, f"parameter {key!r} is repeated")
        if len(key) > 128 or (len(values[0]) > MAX_PARAMETER_LENGTH
                              and key not in long_parameters):
            return oauth_error(InvalidRequestError, f"parameter {key[:32]!r} is too long")
    return None


def authenticated_request(
        default_token: Callable[[ClientRecord], str | None] = lambda client: None,
) -> tuple[ClientRecord, str] | Response:
    """RFC 6749 §2.3 client authentication, then the required ``token`` parameter (RFC 7009
    §2.1, RFC 7662 §2.1), or the client's ``default_token`` when there is none."""
    if not request_is_secure():
        # RFC 7009 §2 and RFC 7662 §4: TLS, as at the token endpoint (the same rule: in
        # development, and for loopback addresses, plain http is allowed).
        log.warning("%s: request over plain http refused", request.path)
        return error_response(oauth_error(InvalidRequestError,
                                          f"{request.path} must be called over https"))
    # RFC 7009 §2.2 / RFC 7662 §2.2: an invalid token, however long, is answered as one
    # (200, or active: false), not as a malformed request.
    problem = check_token_request(long_parameters=("token",))
    if problem is not None:
        return error_response(problem)
    try:
        # The stored record, never the cache: a secret withdrawn, a client disabled or its
        # permission to introspect taken away in another process counts at once.
        client, _ = authenticate_client(request.headers, request.form,
                                        services().clients.reload)
        note_client(request.environ, client.client_id)
        token = request.form.get("token") or default_token(client)
        if not token:
            raise oauth_error(InvalidRequestError, "missing 'token' parameter")
    except OAuth2Error as error:
        return error_response(error)
    return client, token


def named_client_id() -> str | None:
    """The client a token, revocation or introspection request names: the user name of HTTP
    Basic authentication (RFC 6749 §2.3.1, form-urlencoded-decoded), else the ``client_id``
    form parameter; None when it names none (or the header or body cannot be read).
    Authentication is not checked here: callers use it before (CSRF, CORS)."""
    header = request.headers.get("Authorization", "")
    if header.strip()[:6].lower() == "basic ":
        try:
            return parse_basic(header)[0]
        except OAuth2Error:  # malformed: no client
            return None
    try:
        value = request.form.get("client_id")
    except RequestEntityTooLarge:
        return None
    return value if isinstance(value, str) else None


def lookup_order(hint: str | None, token: str) -> list[str]:
    """RFC 7009 §2.1 / RFC 7662 §2.1: the hint says where to look first, not where only;
    an unknown hint is ignored. A kind the token cannot be by its shape is skipped, so no
    lookup is spent on it: our refresh tokens carry a prefix, access tokens are JWS."""
    kinds = [ACCESS, REFRESH] if hint == ACCESS else [REFRESH, ACCESS]
    shaped = {REFRESH: token.startswith(creds.REFRESH_TOKEN_PREFIX),
              ACCESS: token.count(".") == 2}
    return [kind for kind in kinds if shaped[kind]]
