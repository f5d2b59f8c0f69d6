"""Browser-session helpers: CSRF tokens, the signed-in user, safe ``next`` targets."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import abort, g, make_response, render_template, request, session
from werkzeug.wrappers import Response

from ..domain import login_sessions
from ..extensions import db
from ..http import NO_STORE
from ..storage.models import LoginSession, User

SESSION_KEY = "login"
# Set by a sign-in that an authorization request sent the person to: [sign-in id, digest of
# that request]. That one request may then pass prompt=login / max_age, once.
FRESH_LOGIN = "fresh_login"
AUTHORIZE_PATH = "/oauth/authorize"
# Earlier sign-ins of the same person in this browser, replaced by a re-authentication.
EARLIER_SIGN_INS = "earlier_logins"
MAX_EARLIER = 8

# Pages that take a password or a decision must never be framed (clickjacking) or cached.
_PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def protect_pages(response: Response) -> Response:
    """Anti-framing and no-store on every page (not on the static files): each blueprint
    of pages registers it as its ``after_request``."""
    for name, value in _PAGE_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.endpoint != "web.static":
        for name, value in NO_STORE.items():
            response.headers.setdefault(name, value)
    return response


def csrf_token() -> str:
    """The form token of this browser session (created on first use)."""
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Abort with 400 unless the form carries this session's token (constant-time)."""
    sent = request.form.get("csrf_token", "")
    expected = session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        abort(make_response(render_template(
            "error.html", title="This form has expired",
            message="The form has expired or did not come from this site. Go back, reload "
                    "the page and try again."), 400))


def current_login() -> tuple[LoginSession, User] | None:
    """The signed-in browser session and user, or None (cached per request)."""
    if "login" not in g:
        g.login = login_sessions.current(db.session(), session.get(SESSION_KEY))
    return g.login


def authorization_request_digest(params: Mapping[str, list[str]]) -> str:
    """Names one authorization request whatever the order of its parameters."""
    pairs = sorted((k, v) for k, values in params.items() for v in values)
    return hashlib.sha256(urlencode(pairs).encode()).hexdigest()


def sign_in(login: LoginSession, next_url: str) -> None:
    """Bind the browser to a new sign-in; a fresh CSRF token defeats session fixation.

    When the sign-in page was shown for an authorization request (``next_url``), that
    request, and no other, counts the sign-in as fresh (``authorize._fresh``).

    A new sign-in of the same person in this browser (``prompt=login``, ``max_age``)
    remembers the ones it replaces, so that their application sign-ins still count as
    made in this browser (``browser_sign_in_ids``)."""
    previous = current_login()
    earlier: list[str] = []
    if previous is not None and previous[1].id == login.user_id:
        earlier = [*session.get(EARLIER_SIGN_INS, []), previous[0].id][-MAX_EARLIER:]
    session.clear()
    session[SESSION_KEY] = login.id
    if earlier:
        session[EARLIER_SIGN_INS] = earlier
    target = urlsplit(next_url)
    if target.path == AUTHORIZE_PATH:
        params = parse_qs(target.query, keep_blank_values=True)
        session[FRESH_LOGIN] = [login.id, authorization_request_digest(params)]
    session["csrf"] = secrets.token_urlsafe(32)
    g.pop("login", None)


def browser_sign_in_ids() -> set[str]:
    """The ids of this browser's sign-in and of those of the same person it replaced."""
    login = current_login()
    if login is None:
        return set()
    earlier = session.get(EARLIER_SIGN_INS, [])
    return {login[0].id, *(x for x in earlier if isinstance(x, str))}


def sign_out() -> None:
    session.clear()
    g.pop("login", None)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only local absolute paths: no scheme, no host, no ``//`` or backslash tricks."""
    if not target or len(target) > 4096:
        return default
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in target):
        return default
    return target
