"""OIDC UserInfo (OIDC Core §5.3), authorised by our JWT access token (RFC 6750)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from ..domain.claims import user_claims
from ..extensions import db
from ..http import json_response
from ..services import services
from . import access_tokens, dpop

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
    return json_response(body, status, {"WWW-Authenticate": challenge,
                                        "Cache-Control": "no-store"})


def _header_token() -> tuple[str | None, str]:
    """The access token of the ``Authorization`` header and its scheme (``Bearer`` or
    ``DPoP``), or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "dpop") and value.strip():
        return value.strip(), "DPoP" if scheme.lower() == "dpop" else "Bearer"
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
                             401, {"WWW-Authenticate": challenge, "Cache-Control": "no-store"})
    svc = services()
    try:
        verified = access_tokens.verify(token, keys=svc.keys, issuer=svc.settings.issuer,
                                        session=db.session(), now=svc.clock())
    except access_tokens.InvalidAccessToken as exc:
        return _bearer_error(401, "invalid_token", str(exc), scheme)
    bound_to = (verified.claims.get("cnf") or {}).get("jkt")
    if bound_to is not None or scheme == "DPoP":
        # RFC 9449 §7: a bound token needs the DPoP scheme and a proof by its key, with ath.
        if bound_to is None:
            return _bearer_error(401, "invalid_token",
                                 "the token is not DPoP-bound: use the Bearer scheme")
        if scheme != "DPoP":
            return _bearer_error(401, "invalid_token", "the token is DPoP-bound: use DPoP",
                                 "DPoP")
        # End the read transaction first: the replay cache writes on its own connection, and
        # on SQLite this request's open transaction would hold the write lock it needs.
        db.session.rollback()
        try:
            proof = dpop.validate(request.headers.getlist("DPoP"), method=request.method,
                                  urls=dpop.expected_urls(svc.settings.issuer, request.path),
                                  now=svc.clock(), replay=svc.replay, nonces=svc.nonces,
                                  access_token=token)
        except dpop.DPoPError as exc:
            rejected = _bearer_error(401, exc.error, exc.description, "DPoP")
            if svc.nonces is not None:  # RFC 9449 §9: the nonce to use next
                rejected.headers["DPoP-Nonce"] = svc.nonces.current(svc.clock())
            return rejected
        if proof.jkt != bound_to:
            return _bearer_error(401, "invalid_dpop_proof",
                                 "the proof key is not the token's key", "DPoP")
    if "openid" not in verified.scope or verified.user is None:
        return _bearer_error(403, "insufficient_scope", "the token lacks the openid scope")
    claims = user_claims(verified.user, verified.scope)
    return json_response(claims, 200, {"Cache-Control": "no-store"})
