"""``/login``, ``/logout`` (also the OIDC end-session endpoint) and the home page."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..crypto import jose
from ..domain import (
    audit,
    login_sessions,
    passwords,
    redirect_uris,
    refresh_families,
    sessions,
    users,
)
from ..domain.clients import ClientRecord
from ..extensions import db
from ..services import services
from ..storage.models import LoginSession, TokenFamily, User
from . import bp
from .security import (
    browser_sign_in_ids,
    check_csrf,
    current_login,
    safe_next,
    sign_in,
    sign_out,
)

MAX_FIELD = 1024
MAX_HINT = 256
MAX_ID_TOKEN = 8192


@bp.get("/")
def home() -> str:
    login = current_login()
    return render_template("home.html", user=login[1] if login else None)


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | BaseResponse | tuple[str, int] | tuple[str, int, dict[str, str]]:
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        hint = request.args.get("login_hint", "")[:MAX_HINT]  # OIDC Core §3.1.2.1
        return render_template("login.html", next=next_url, error=None, username=hint)
    check_csrf()
    username = request.form.get("username", "").strip()[:MAX_FIELD]
    password = request.form.get("password", "")[:MAX_FIELD]
    # Nothing above touched the database: the check holds no transaction while argon2
    # runs, and what follows is one short write transaction (users.check_sign_in).
    try:
        attempt = (users.check_sign_in(db.session(), username, password) if username and password
                   else users.SignInAttempt(None, None, "missing_credentials"))
    except passwords.Busy:
        return render_template("login.html", next=next_url, username=username,
                               error="Too many sign-ins right now. Try again in a moment."), \
            503, {"Retry-After": "1"}
    user = attempt.user
    if user is None:
        audit.record(db.session(), audit.SIGN_IN_FAILED, user_id=attempt.account_id,
                     cause=attempt.failure, ip=request.remote_addr,
                     user_agent=request.user_agent.string[:200], via="login_page")
        db.session.commit()
        return render_template("login.html", next=next_url, username=username,
                               error="That username and password don't match."), 401
    row = login_sessions.start(db.session(), user, user_agent=request.user_agent.string,
                               ip=request.remote_addr, now=services().clock())
    # Before the commit: sign_in reads the browser's previous sign-in, which after it
    # would begin another transaction (on SQLite: take the write lock again) to the end
    # of the request.
    sign_in(row, next_url)
    db.session.commit()
    return redirect(next_url, code=303)


def _client_from_id_token_hint(hint: str) -> tuple[ClientRecord | None, dict | None]:
    """Validate ``id_token_hint`` (RP-Initiated Logout 1.0 §2): an ID token we signed, for
    our issuer, naming one of our clients. Its expiry does not matter."""
    svc = services()
    try:
        header = jose.unverified_header(hint)
        key = next((k for k in svc.keys.published() if k.kid == header.get("kid")), None)
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
        return render_template("logout.html", user=login[1] if login else None,
                               post_logout_redirect_uri=post_logout, state=state,
                               client=client, id_token_hint=hint if claims else None)

    now = services().clock()
    if login is not None:
        sessions.end_browser_sign_in(db.session(), login[1].id, login[0].id, reason="logout",
                                     now=now)
    if claims is not None and isinstance(claims.get("sid"), str):
        refresh_families.revoke_family(db.session(), claims["sid"][:43], reason="logout",
                                       now=now)
    db.session.commit()
    sign_out()
    if post_logout:
        target = post_logout
        if state:
            target += ("&" if "?" in post_logout else "?") + urlencode({"state": state})
        return redirect(target, code=303)
    return render_template("signed_out.html")
