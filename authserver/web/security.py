"""Browser-session helpers: CSRF tokens, the signed-in user, safe ``next`` targets."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import abort, g, make_response, render_template, request, session
from werkzeug.wrappers import Response

from ..domain import login_sessions
from ..domain.sessions import BrowserLifetime
from ..extensions import db
from ..http import FORM_ACTION_SELF, NO_STORE, PAGE_CSP, PAGE_HEADERS
from ..services import services
from ..storage.models import LoginSession, User

SESSION_KEY = "login"
# Set by a sign-in that an authorization request sent the person to: [sign-in id, digest of
# that request]. That one request may then pass prompt=login / max_age, once.
FRESH_LOGIN = "fresh_login"
AUTHORIZE_PATH = "/oauth/authorize"
# Earlier sign-ins of the same person in this browser, replaced by a re-authentication.
EARLIER_SIGN_INS = "earlier_logins"
MAX_EARLIER = 8

# Where a page's form may end up besides this server: the redirect URIs its answer may send
# the browser to (a CSP form-action covers the redirects after the POST too).
FORM_TARGETS = "form_targets"
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")
_HOST = re.compile(r"[a-z0-9.-]+")


def allow_form_target(uri: str) -> None:
    """Let this page's form lead to ``uri`` (already checked against the client's
    registration): a sign-out that returns to the application."""
    g.setdefault(FORM_TARGETS, []).append(uri)


def csp_source(uri: str) -> str | None:
    """The CSP source expression that allows ``uri``: its origin (any port for a loopback
    IP, RFC 8252 §7.3), or a private-use scheme alone; None when none can be written."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme):
        return None
    if scheme not in ("http", "https"):
        return f"{scheme}:"
    host = (parts.hostname or "").lower()
    if host == "::1":
        return "http:"  # CSP has no syntax for an IPv6 literal
    if not _HOST.fullmatch(host):
        return None
    if scheme == "http" and host == "127.0.0.1":
        return "http://127.0.0.1:*"
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def _authorize_client_id() -> str | None:
    """The client of the authorization request this page is part of: the consent page's
    own request, or the one a sign-in page will continue."""
    if request.path == AUTHORIZE_PATH:
        return request.values.get("client_id")
    if request.path == "/login":
        target = urlsplit(safe_next(request.values.get("next")))
        if target.path == AUTHORIZE_PATH:
            return parse_qs(target.query).get("client_id", [None])[0]
    return None


def _form_action() -> str:
    uris: list[str] = list(g.get(FORM_TARGETS, []))
    client_id = _authorize_client_id()
    if client_id:
        client = services().clients.get(client_id[:128])
        if client is not None:
            uris.extend(client.redirect_uris)
    sources = dict.fromkeys(s for s in map(csp_source, uris) if s is not None)
    return " ".join([FORM_ACTION_SELF, *sources])


def protect_pages(response: Response) -> Response:
    """The page headers (CSP, anti-framing) and no-store on every page (not on the static
    files): each blueprint of pages registers it as its ``after_request``. The CSP's
    ``form-action`` names this server and, on a page whose form ends at a client, that
    client's redirect URIs."""
    if response.mimetype == "text/html" and "Content-Security-Policy" not in response.headers:
        response.headers["Content-Security-Policy"] = f"{PAGE_CSP}; {_form_action()}"
    for name, value in PAGE_HEADERS.items():
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


def browser_lifetime() -> BrowserLifetime:
    """How long browser sign-ins last here (the settings; docs/design.md, "Operations")."""
    settings = services().settings
    return BrowserLifetime(settings.browser_session_idle_ttl,
                           settings.browser_session_max_ttl)


def current_login(*, touch: bool = True) -> tuple[LoginSession, User] | None:
    """The signed-in browser session and user, or None (cached per request). A sign-in
    past its idle or absolute lifetime is none; a live one's use is recorded when due
    (``touch``: about once a minute, never on every request)."""
    if "login" not in g:
        now, lifetime = services().clock(), browser_lifetime()
        found = login_sessions.current(db.session(), session.get(SESSION_KEY),
                                       lifetime=lifetime, now=now)
        if found is not None and touch and lifetime.due_for_touch(found[0], now):
            login_sessions.touch(db.session(), found[0].id, now)
        g.login = found
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
    previous = current_login(touch=False)  # inside the sign-in's transaction: no commit
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
