"""The user's account: signed-in devices (page and JSON API) and password change."""

from __future__ import annotations

from functools import wraps
from typing import Any
from urllib.parse import urlencode

from flask import Response, redirect, render_template, request
from werkzeug.wrappers import Response as BaseResponse

from ..domain import login_sessions, sessions, users
from ..domain.errors import ValidationError
from ..extensions import db
from ..protocol import access_tokens
from ..protocol.routes import json_response
from ..services import services
from ..storage.models import User
from . import bp
from .security import check_csrf, current_login, sign_out

ACCOUNT_SCOPE = "account"


def _login_required(view: Any) -> Any:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if current_login() is None:
            return redirect("/login?" + urlencode({"next": request.full_path.rstrip("?")}),
                            code=303)
        return view(*args, **kwargs)

    return wrapper


@bp.get("/account/sessions")
@_login_required
def sessions_page() -> str:
    login, user = current_login()  # type: ignore[misc]
    devices = sessions.list_for_user(db.session, user.id, services().clock())
    return render_template("sessions.html", user=user, devices=devices,
                           this_login=login.id, message=request.args.get("done"))


@bp.post("/account/sessions/<family_id>/sign-out")
@_login_required
def sign_out_device(family_id: str) -> BaseResponse:
    check_csrf()
    _, user = current_login()  # type: ignore[misc]
    sessions.sign_out(db.session, user.id, family_id[:43], reason="signed_out_by_user")
    db.session.commit()
    return redirect("/account/sessions?done=device", code=303)


@bp.post("/account/sessions/sign-out-others")
@_login_required
def sign_out_others() -> BaseResponse:
    check_csrf()
    login, user = current_login()  # type: ignore[misc]
    sessions.sign_out_all(db.session, user.id, reason="signed_out_other_devices",
                          keep_login_session=login.id)
    login_sessions.end_all(db.session, user.id, keep=login.id)
    db.session.commit()
    return redirect("/account/sessions?done=others", code=303)


@bp.post("/account/sessions/sign-out-everywhere")
@_login_required
def sign_out_everywhere() -> str:
    check_csrf()
    _, user = current_login()  # type: ignore[misc]
    sessions.sign_out_all(db.session, user.id, reason="signed_out_everywhere")
    login_sessions.end_all(db.session, user.id)
    db.session.commit()
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
        users.change_password(db.session, user, request.form.get("current_password", "")[:1024],
                              new, login_session_id=login.id)
    except ValidationError as exc:
        db.session.rollback()
        return render_template("password.html", error=str(exc).capitalize() + ".",
                               done=False), 400
    db.session.commit()
    return render_template("password.html", error=None, done=True)


# -- JSON API for first-party apps (RFC 6750 Bearer token with the "account" scope) -----
def _api_user() -> tuple[User, str | None] | Response:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _api_error(401, "invalid_request", "a Bearer access token is required")
    svc = services()
    try:
        verified = access_tokens.verify(token.strip(), keys=svc.keys, issuer=svc.settings.issuer,
                                        session=db.session, now=svc.clock())
    except access_tokens.InvalidAccessToken as exc:
        return _api_error(401, "invalid_token", str(exc))
    if ACCOUNT_SCOPE not in verified.scope or verified.user is None:
        return _api_error(403, "insufficient_scope", "the token lacks the account scope")
    sid = verified.claims.get("sid")
    return verified.user, sid if isinstance(sid, str) else None


def _api_error(status: int, error: str, description: str) -> Response:
    challenge = f'Bearer realm="account", error="{error}", error_description="{description}"'
    if error == "insufficient_scope":
        challenge += f', scope="{ACCOUNT_SCOPE}"'
    return json_response({"error": error, "error_description": description}, status,
                         {"WWW-Authenticate": challenge, "Cache-Control": "no-store"})


@bp.get("/account/api/sessions")
def api_sessions() -> Response:
    found = _api_user()
    if isinstance(found, Response):
        return found
    user, current = found
    devices = sessions.list_for_user(db.session, user.id, services().clock())
    return json_response({"sessions": [d.to_dict(current=d.id == current) for d in devices]},
                         200, {"Cache-Control": "no-store"})


@bp.delete("/account/api/sessions/<family_id>")
def api_sign_out(family_id: str) -> Response:
    found = _api_user()
    if isinstance(found, Response):
        return found
    user, _ = found
    if not sessions.sign_out(db.session, user.id, family_id[:43], reason="signed_out_by_user"):
        return json_response({"error": "not_found", "error_description": "no such session"},
                             404)
    db.session.commit()
    return Response(status=204)


@bp.delete("/account/api/sessions")
def api_sign_out_all() -> Response:
    """Sign out everywhere; with ``?keep_current=true`` every other device only."""
    found = _api_user()
    if isinstance(found, Response):
        return found
    user, current = found
    keep = current if request.args.get("keep_current") in ("1", "true") else None
    count = sessions.sign_out_all(db.session, user.id, keep_family=keep,
                                  reason="signed_out_everywhere" if keep is None
                                  else "signed_out_other_devices")
    if keep is None:
        login_sessions.end_all(db.session, user.id)
    db.session.commit()
    return json_response({"signed_out": count}, 200, {"Cache-Control": "no-store"})
