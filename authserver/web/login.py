"""``/login``, ``/logout`` (also the OIDC end-session endpoint) and the home page."""

from __future__ import annotations

from flask import redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..crypto import jose
from ..domain import audit, login_sessions, redirect_uris, refresh_families, users
from ..domain.clients import ClientRecord
from ..extensions import db
from ..services import services
from . import bp
from .security import check_csrf, current_login, safe_next, sign_in, sign_out

MAX_FIELD = 1024


@bp.get("/")
def home() -> str:
    login = current_login()
    return render_template("home.html", user=login[1] if login else None)


@bp.route("/login", methods=["GET", "POST"])
def login() -> str | BaseResponse | tuple[str, int]:
    next_url = safe_next(request.values.get("next"))
    if request.method == "GET":
        return render_template("login.html", next=next_url, error=None, username="")
    check_csrf()
    username = request.form.get("username", "").strip()[:MAX_FIELD]
    password = request.form.get("password", "")[:MAX_FIELD]
    user = users.authenticate(db.session, username, password) if username and password else None
    if user is None:
        audit.record(db.session, audit.SIGN_IN_FAILED, ip=request.remote_addr,
                     user_agent=request.user_agent.string[:200], via="login_page")
        db.session.commit()
        return render_template("login.html", next=next_url, username=username,
                               error="That username and password don't match."), 401
    row = login_sessions.start(db.session, user, user_agent=request.user_agent.string,
                               ip=request.remote_addr, now=services().clock())
    db.session.commit()
    sign_in(row)
    return redirect(next_url, code=303)


def _client_from_id_token_hint(hint: str) -> tuple[ClientRecord | None, dict | None]:
    """Validate ``id_token_hint``: our signature, our issuer; expiry does not matter."""
    svc = services()
    try:
        header = jose.unverified_header(hint)
        key = next((k for k in svc.keys.published() if k.kid == header.get("kid")), None)
        if key is None or header.get("alg") != key.alg:
            return None, None
        claims = jose.verify_jwt(hint, key.private, key.alg)
    except jose.InvalidJWT:
        return None, None
    if claims.get("iss") != svc.settings.issuer or not isinstance(claims.get("aud"), str):
        return None, None
    return svc.clients.get(claims["aud"]), claims


def _error_page(message: str) -> tuple[str, int]:
    return render_template("error.html", title="Sign-out request not valid",
                           message=message), 400


@bp.route("/logout", methods=["GET", "POST"])
def logout() -> str | BaseResponse | tuple[str, int]:
    """Sign out; with ``id_token_hint`` this is OIDC RP-Initiated Logout 1.0."""
    values = request.values
    hint = values.get("id_token_hint")
    post_logout = values.get("post_logout_redirect_uri")
    state = values.get("state")
    client, claims = (None, None)
    if hint:
        client, claims = _client_from_id_token_hint(hint[:8192])
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

    confirmed = request.method == "POST" or claims is not None
    if request.method == "POST":
        check_csrf()
    if not confirmed:
        login = current_login()
        return render_template("logout.html", user=login[1] if login else None,
                               post_logout_redirect_uri=post_logout, state=state,
                               client_id=client.client_id if client else None)

    now = services().clock()
    login = current_login()
    if login is not None:
        login_sessions.end(db.session, login[0].id, now)
    if claims is not None and isinstance(claims.get("sid"), str):
        refresh_families.revoke_family(db.session, claims["sid"][:43], reason="logout",
                                       now=now)
    db.session.commit()
    sign_out()
    if post_logout:
        separator = "&" if "?" in post_logout else "?"
        target = post_logout + (f"{separator}state={_quote(state)}" if state else "")
        return redirect(target, code=303)
    return render_template("signed_out.html")


def _quote(value: str | None) -> str:
    from urllib.parse import quote

    return quote(value or "", safe="")

