"""OIDC UserInfo (OIDC Core §5.3), authorised by our JWT access token (RFC 6750)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..domain.claims import user_claims
from ..http import NO_STORE, json_response
from ..ops.access_log import note_client
from . import bearer, dpop

bp = Blueprint("userinfo", __name__)


def _bearer_error(status: int, error: str, description: str, scheme: str = "Bearer"
                  ) -> Response:
    """RFC 6750 §3 / RFC 9449 §7.1: the error in ``WWW-Authenticate`` (and a JSON body)."""
    challenge = f'{scheme} realm="userinfo", error="{error}", error_description="{description}"'
    if error == "insufficient_scope":
        challenge += ', scope="openid"'
    if scheme == "DPoP":
        challenge += f', algs="{" ".join(dpop.ALGORITHMS)}"'
    body = {"error": error, "error_description": description}
    return json_response(body, status, {"WWW-Authenticate": challenge, **NO_STORE})


def _header_token() -> tuple[str | None, str]:
    """The access token of the ``Authorization`` header and its scheme (``Bearer`` or
    ``DPoP``), or None."""
    scheme, token = bearer.authorization(request.headers.get("Authorization", ""))
    if scheme is not None and token:
        return token, scheme
    return None, "Bearer"


def _form_token() -> str | None:
    """RFC 6750 §2.2: the ``access_token`` form parameter of a POST."""
    if request.method == "POST" and request.mimetype == "application/x-www-form-urlencoded":
        return request.form.get("access_token")
    return None


@bp.route("/oauth/userinfo", methods=["GET", "POST"])
def userinfo() -> Response:
    token, scheme = _header_token()
    form_token = _form_token()
    if token and form_token:
        # RFC 6750 §2: a client MUST NOT use more than one method to send the token.
        return _bearer_error(400, "invalid_request", "the access token was sent twice")
    token = token or form_token
    if not token:
        # RFC 6750 §3.1: no error code in the challenge of a request without credentials;
        # RFC 9449 §7.1: offer the DPoP scheme too.
        challenge = f'Bearer realm="userinfo", DPoP algs="{" ".join(dpop.ALGORITHMS)}"'
        return json_response({"error": "invalid_token",
                              "error_description": "an access token is required"},
                             401, {"WWW-Authenticate": challenge, **NO_STORE})
    try:
        verified = bearer.authenticate(token, scheme)
    except bearer.BearerError as exc:
        rejected = _bearer_error(exc.status, exc.error, exc.description, exc.scheme)
        if exc.nonce is not None:  # RFC 9449 §9: the nonce to use next
            rejected.headers["DPoP-Nonce"] = exc.nonce
        return rejected
    if isinstance(verified.claims.get("client_id"), str):
        note_client(request.environ, verified.claims["client_id"])
    if "openid" not in verified.scope or verified.user is None:
        return _bearer_error(403, "insufficient_scope", "the token lacks the openid scope")
    claims = user_claims(verified.user, verified.scope)
    return json_response(claims, 200, NO_STORE)
