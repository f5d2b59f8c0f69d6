"""``/login`` and the home page. (``/logout``, the OIDC end-session endpoint too, is
``protocol/logout.py``.)"""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..domain import (
    login_sessions,
    passwords,
)
from ..extensions import db
from ..services import services
from .security import (
    check_csrf,
    current_login,
    protect_pages,
    safe_next,
    sign_in,
)

bp = Blueprint("login", __name__)
bp.after_request(protect_pages)

MAX_FIELD = 1024
MAX_HINT = 256


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
    # runs, and what follows is one short write transaction (login_sessions.sign_in).
    # The browser is bound to the new sign-in before the commit (``sign_in`` reads the
    # browser's previous one).
    try:
        attempt = login_sessions.sign_in(
            db.session(), username, password, user_agent=request.user_agent.string,
            ip=request.remote_addr, bind=lambda row: sign_in(row, next_url),
            clock=services().clock)
    except passwords.Busy:
        return render_template("login.html", next=next_url, username=username,
                               error="Too many sign-ins right now. Try again in a moment."), \
            503, {"Retry-After": "1"}
    if attempt.user is None:
        return render_template("login.html", next=next_url, username=username,
                               error="That username and password don't match."), 401
    return redirect(next_url, code=303)
