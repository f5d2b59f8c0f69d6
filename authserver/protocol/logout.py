"""``/logout``: signing out, and OIDC RP-Initiated Logout 1.0 (the end-session endpoint)."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..crypto import jose
from ..domain import redirect_uris, sessions
from ..domain.clients import ClientRecord
from ..extensions import db
from ..services import services
from ..storage.models import LoginSession, TokenFamily, User
from ..web.security import (
    allow_form_target,
    browser_sign_in_ids,
    check_csrf,
    current_login,
    protect_pages,
    sign_out,
)
from . import refresh_cookie

bp = Blueprint("logout", __name__)


@bp.after_request
def _expire_signed_out_cookies(response: BaseResponse) -> BaseResponse:
    """A browser app's refresh cookie whose session this page ended goes with it
    (docs/design.md, "Browser apps")."""
    return refresh_cookie.expire_dead(response, services().clock())
bp.after_request(protect_pages)  # the confirmation and signed-out pages are pages

MAX_ID_TOKEN = 8192


def _client_from_id_token_hint(hint: str) -> tuple[ClientRecord | None, dict | None]:
    """Validate ``id_token_hint`` (RP-Initiated Logout 1.0 §2): an ID token we signed, for
    our issuer, naming one of our clients. Its expiry does not matter."""
    svc = services()
    try:
        header = jose.unverified_header(hint)
        key = svc.keys.published_key(header.get("kid"))
        if key is None or header.get("alg") != key.alg or header.get("typ") != "JWT":
            return None, None  # unknown key, another algorithm, or an access token
        claims = jose.verify_jwt(hint, key.private, key.alg)
    except jose.InvalidJWT:
        return None, None
    audience = claims.get("aud")
    if claims.get("iss") != svc.settings.issuer or not isinstance(audience, str) \
            or not isinstance(claims.get("sub"), str) or len(audience) > 64:
        return None, None
    return svc.clients.get(audience), claims


def _hint_names_this_browser(claims: dict | None,
                             login: tuple[LoginSession, User] | None) -> bool:
    """The ID token is of an application sign-in made in this browser by the person signed
    in here. Only then may a plain GET sign out without asking (RP-Initiated Logout 1.0
    §2: the OP MUST ask when the hint does not belong to the current OP session). A hint
    alone, which travels in URLs, never ends a session without a click."""
    if claims is None or login is None or login[1].subject != claims.get("sub"):
        return False
    sid = claims.get("sid")
    if not isinstance(sid, str):
        return False
    family = db.session.get(TokenFamily, sid[:43])
    return family is not None and family.login_session_id in browser_sign_in_ids()


def _error_page(message: str) -> tuple[str, int]:
    return render_template("error.html", title="Sign-out request not valid",
                           message=message), 400


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> str | BaseResponse | tuple[str, int]:
    """Sign out; with ``id_token_hint`` this is OIDC RP-Initiated Logout 1.0.

    The browser's sign-in ends, and the application sign-in named by the hint's ``sid`` is
    revoked with its refresh tokens. The user is asked to confirm unless a valid hint
    shows the request comes from an application of the user signed in here (§2: the OP
    MUST ask when there is no hint or it belongs to someone else).
    """
    values = request.values
    hint = values.get("id_token_hint")
    post_logout = values.get("post_logout_redirect_uri")
    state = values.get("state")
    client, claims = (None, None)
    if hint:
        client, claims = _client_from_id_token_hint(hint[:MAX_ID_TOKEN])
        if client is None:
            return _error_page("The application sent an invalid sign-out request.")
        if values.get("client_id") and values.get("client_id") != client.client_id:
            return _error_page("The sign-out request names two different applications.")
    elif post_logout:
        client = services().clients.get(values.get("client_id", "")[:64])
        if client is None:
            return _error_page("The sign-out request does not say which application sent it.")
    if post_logout and (client is None or not redirect_uris.matches(
            post_logout, client.post_logout_redirect_uris)):
        return _error_page("The application asked to return to an address it has not "
                           "registered.")

    login = current_login()
    if request.method == "POST":
        check_csrf()
    elif not _hint_names_this_browser(claims, login):
        if post_logout:
            allow_form_target(post_logout)  # the confirmation's POST returns there
        return render_template("logout.html", user=login[1] if login else None,
                               post_logout_redirect_uri=post_logout, state=state,
                               client=client, id_token_hint=hint if claims else None)

    sid = claims.get("sid") if claims is not None else None
    sessions.sign_out_browser(
        db.session(), login[1].id if login else None, login[0].id if login else None,
        sid[:43] if isinstance(sid, str) else None, reason="logout", now=services().clock())
    sign_out()
    if post_logout:
        target = post_logout
        if state:
            target += ("&" if "?" in post_logout else "?") + urlencode({"state": state})
        return redirect(target, code=303)
    return render_template("signed_out.html")
