"""``/login`` and the home page. (``/logout``, the OIDC end-session endpoint too, is
``protocol/logout.py``.)"""

from __future__ import annotations

import logging

from flask import Blueprint, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..domain import (
    attempt_limits,
    login_sessions,
    passwords,
)
from ..extensions import db
from ..protocol import rate_limits
from ..services import services
from .security import (
    check_csrf,
    current_login,
    protect_pages,
    safe_next,
    sign_in,
)

log = logging.getLogger(__name__)
bp = Blueprint("login", __name__)
bp.after_request(protect_pages)

MAX_FIELD = 1024
MAX_HINT = 256


def _limited_message(limited: attempt_limits.Limited) -> str:
    wait = limited.retry_after
    when = (f"{wait} second{'s' if wait != 1 else ''}" if wait < 120
            else f"{-(-wait // 60)} minutes")
    if limited.scope == attempt_limits.ACCOUNT:
        return (f"Too many wrong passwords for this username. For your security, wait "
                f"{when} before you try again.")
    if limited.scope == attempt_limits.ADDRESS:
        return f"Too many failed sign-ins from your network. Try again in {when}."
    return f"Too many failed sign-ins right now. Try again in {when}."


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
            clock=services().clock, guard=rate_limits.guard())
    except passwords.Busy:
        return render_template("login.html", next=next_url, username=username,
                               error="Too many sign-ins right now. Try again in a moment."), \
            503, {"Retry-After": "1"}
    except attempt_limits.Limited as limited:
        # The same page whether or not the account exists (docs/design.md, "Operations").
        return render_template("login.html", next=next_url, username=username,
                               error=_limited_message(limited)), \
            429, {"Retry-After": str(limited.retry_after)}
    except attempt_limits.LimitsUnavailable as exc:
        log.error("sign-in page: brute-force limits unavailable (%s)", exc)
        return render_template("login.html", next=next_url, username=username,
                               error="Signing in is unavailable for a moment. "
                                     "Try again shortly."), \
            503, {"Retry-After": str(rate_limits.UNAVAILABLE_RETRY_AFTER)}
    if attempt.user is None:
        return render_template("login.html", next=next_url, username=username,
                               error="That username and password don't match."), 401
    return redirect(next_url, code=303)
