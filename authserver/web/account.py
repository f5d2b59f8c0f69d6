"""The user's account: where they are signed in (page and JSON API) and password change."""

from __future__ import annotations

import datetime as dt
from functools import wraps
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..domain import sessions, user_agents, users
from ..domain.errors import ValidationError
from ..extensions import db
from ..http import NO_STORE, json_response
from ..protocol import bearer, dpop, refresh_cookie
from ..services import services
from ..storage.models import User
from .security import browser_lifetime, check_csrf, current_login, protect_pages, sign_out

bp = Blueprint("account", __name__)


@bp.after_request
def _expire_signed_out_cookies(response: BaseResponse) -> BaseResponse:
    """A browser app's refresh cookie whose session this page ended goes with it
    (docs/design.md, "Browser apps")."""
    return refresh_cookie.expire_dead(response, services().clock())
bp.after_request(protect_pages)

ACCOUNT_SCOPE = "account"
API_REALM = "account"
DONE_MESSAGES = {
    "device": "That device was signed out.",
    "others": "Every other device was signed out.",
    "gone": "That device was already signed out.",
}


def _login_required(view: Any) -> Any:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_login() is None:
            return redirect("/login?" + urlencode({"next": request.full_path.rstrip("?")}),
                            code=303)
        return view(*args, **kwargs)

    return wrapper


def _requester(via: str) -> dict[str, Any]:
    """Who asked, for the audit trail: where from, never a credential."""
    return {"via": via, "ip": request.remote_addr,
            "user_agent_family": user_agents.family(request.user_agent.string)}


@bp.app_template_filter("ago")
def ago(moment: dt.datetime) -> str:
    """"just now", "5 minutes ago", "3 days ago" (relative to the app's clock)."""
    seconds = max(0, int((services().clock() - moment).total_seconds()))
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def duration(total: int) -> str:
    """"1 day", "2 hours", "90 minutes": a lifetime in its largest whole unit."""
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if total >= size and total % size == 0:
            count = total // size
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{total} seconds"


# -- Pages ---------------------------------------------------------------------------
@bp.get("/account/sessions")
@_login_required
def sessions_page() -> str:
    login, user = current_login()  # type: ignore[misc]
    devices = sessions.list_for_user(db.session(), user.id, services().clock(),
                                     current_login_session=login.id,
                                     browser_lifetime=browser_lifetime())
    return render_template("sessions.html", user=user, devices=devices,
                           idle_for=duration(services().settings.browser_session_idle_ttl),
                           message=DONE_MESSAGES.get(request.args.get("done", "")))


@bp.post("/account/sessions/<device_id>/sign-out")
@_login_required
def sign_out_device(device_id: str) -> BaseResponse | str:
    check_csrf()
    login, user = current_login()  # type: ignore[misc]
    now = services().clock()
    devices = sessions.list_for_user(db.session(), user.id, now, current_login_session=login.id,
                                     browser_lifetime=browser_lifetime())
    device = sessions.find_device(devices, device_id[:64])
    if device is None:
        return redirect("/account/sessions?done=gone", code=303)
    sessions.sign_out_device(db.session(), user.id, device, reason="signed_out_by_user",
                             now=now, by=_requester("account_page"))
    if device.current:  # this browser signed itself out
        sign_out()
        return render_template("signed_out.html")
    return redirect("/account/sessions?done=device", code=303)


def _sign_out_all(reason: str, keep_this_browser: bool) -> None:
    """Sign every device of the signed-in user out (but this browser, if kept)."""
    check_csrf()
    login, user = current_login()  # type: ignore[misc]
    sessions.sign_out_all(db.session(), user.id, reason=reason,
                          keep_login_session=login.id if keep_this_browser else None,
                          now=services().clock(), by=_requester("account_page"))


@bp.post("/account/sessions/sign-out-others")
@_login_required
def sign_out_others() -> BaseResponse:
    _sign_out_all("signed_out_other_devices", keep_this_browser=True)
    return redirect("/account/sessions?done=others", code=303)


@bp.post("/account/sessions/sign-out-everywhere")
@_login_required
def sign_out_everywhere() -> str:
    _sign_out_all("signed_out_everywhere", keep_this_browser=False)
    sign_out()
    return render_template("signed_out.html")


@bp.route("/account/password", methods=["GET", "POST"])
@_login_required
def change_password() -> str | tuple[str, int]:
    login, user = current_login()  # type: ignore[misc]
    if request.method == "GET":
        return render_template("password.html", error=None, done=False)
    check_csrf()
    new, confirm = request.form.get("new_password", ""), request.form.get("confirm_password", "")
    if new != confirm:
        return render_template("password.html", error="The new passwords do not match.",
                               done=False), 400
    try:
        users.change_password(db.session(), user, request.form.get("current_password", "")[:1024],
                              new, login_session_id=login.id, by=_requester("account_page"))
    except ValidationError as exc:
        db.session.rollback()
        return render_template("password.html", error=str(exc).capitalize() + ".",
                               done=False), 400
    return render_template("password.html", error=None, done=True)


# -- JSON API for first-party apps (RFC 6750 / RFC 9449 token with the "account" scope) --
def _api_error(status: int, error: str | None, description: str, scheme: str = "Bearer"
               ) -> Response:
    """RFC 6750 §3: the challenge in ``WWW-Authenticate``; §3.1: no error code when the
    request carried no credentials at all. RFC 9449 §7.1 for the DPoP scheme."""
    challenge = f'{scheme} realm="{API_REALM}", scope="{ACCOUNT_SCOPE}"'
    if scheme == "DPoP":
        challenge += f', algs="{" ".join(dpop.ALGORITHMS)}"'
    if error is not None:
        challenge += f', error="{error}", error_description="{description}"'
    body = {"error": error or "invalid_token", "error_description": description}
    return json_response(body, status, {"WWW-Authenticate": challenge,
                                        **NO_STORE})


def _api_user() -> tuple[User, str | None] | Response:
    """The user (and ``sid``) of the request's access token, or the RFC 6750 error."""
    scheme, token = bearer.authorization(request.headers.get("Authorization", ""))
    if scheme is None:
        return _api_error(401, None, "an access token with the account scope is required")
    if not token or " " in token or len(token) > 8192:
        return _api_error(400, "invalid_request", "malformed Authorization header", scheme)
    try:
        verified = bearer.authenticate(token, scheme,
                                       not_bound="the token is not DPoP-bound: use Bearer")
    except bearer.BearerError as exc:
        rejected = _api_error(exc.status, exc.error, exc.description, exc.scheme)
        if exc.nonce is not None:
            rejected.headers["DPoP-Nonce"] = exc.nonce
        return rejected
    if verified.user is None:
        return _api_error(401, "invalid_token", "the token does not belong to a user", scheme)
    if ACCOUNT_SCOPE not in verified.scope:
        return _api_error(403, "insufficient_scope", "the token lacks the account scope",
                          scheme)
    sid = verified.claims.get("sid")
    return verified.user, sid if isinstance(sid, str) else None


@bp.get("/account/api/sessions")
def api_sessions() -> Response:
    """The devices signed in to the token's user; ``current`` marks the token's own."""
    found = _api_user()
    if isinstance(found, Response):
        return found
    user, sid = found
    devices = sessions.list_for_user(db.session(), user.id, services().clock(),
                                     current_family=sid, browser_lifetime=browser_lifetime())
    return json_response({"sessions": [d.to_dict() for d in devices]}, 200,
                         NO_STORE)


@bp.delete("/account/api/sessions/<device_id>")
def api_sign_out(device_id: str) -> Response:
    """Sign out one of the user's devices; 404 for anything else (another user's too)."""
    found = _api_user()
    if isinstance(found, Response):
        return found
    user, _ = found
    device = sessions.sign_out(db.session(), user.id, device_id, reason="signed_out_by_user",
                               now=services().clock(), by=_requester("account_api"))
    if device is None:
        return json_response({"error": "not_found", "error_description": "no such session"},
                             404, NO_STORE)
    return Response(status=204, headers=NO_STORE)


@bp.delete("/account/api/sessions")
def api_sign_out_all() -> Response:
    """Sign out everywhere; with ``?keep_current=true`` every other device only."""
    found = _api_user()
    if isinstance(found, Response):
        return found
    user, sid = found
    keep = request.args.get("keep_current", "false").lower()
    if keep not in ("1", "true", "0", "false"):
        return json_response({"error": "invalid_request",
                              "error_description": "keep_current must be true or false"},
                             400, NO_STORE)
    keep_current = keep in ("1", "true")
    count = sessions.sign_out_all(
        db.session(), user.id, keep_family=sid if keep_current else None,
        reason="signed_out_other_devices" if keep_current else "signed_out_everywhere",
        now=services().clock(), by=_requester("account_api"))
    return json_response({"signed_out": count}, 200, NO_STORE)
