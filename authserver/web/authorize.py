"""``/oauth/authorize`` (RFC 6749 §4.1.1, OIDC Core §3.1.2): sign-in, consent, then a code."""

from __future__ import annotations

from urllib.parse import urlencode

from flask import redirect, render_template, request, session
from werkzeug.wrappers import Response

from ..domain import authorization, codes, consents, scopes
from ..domain.authorization import (
    AuthorizationRequest,
    FatalAuthorizationError,
    RedirectAuthorizationError,
)
from ..extensions import db
from ..services import services
from . import bp
from .security import check_csrf, current_login

DECISION_FIELDS = ("decision", "csrf_token")


def _with_params(uri: str, params: dict[str, str]) -> str:
    """Add query parameters to a redirect URI, keeping the query it already has."""
    separator = "&" if "?" in uri else "?"
    return uri + separator + urlencode(params)


def _redirect_to_client(uri: str, params: dict[str, str | None]) -> Response:
    """A redirect back to the client, always naming the issuer (RFC 9207)."""
    clean = {k: v for k, v in params.items() if v is not None}
    clean["iss"] = services().settings.issuer
    response = redirect(_with_params(uri, clean), code=302 if request.method == "GET" else 303)
    response.headers["Cache-Control"] = "no-store"
    return response


def _error_redirect(error: RedirectAuthorizationError) -> Response:
    return _redirect_to_client(error.redirect_uri, {
        "error": error.error, "error_description": error.description, "state": error.state})


def _request_params() -> dict[str, list[str]]:
    source = request.args if request.method == "GET" else request.form
    return {k: source.getlist(k) for k in source if k not in DECISION_FIELDS}


def _needs_login(req: AuthorizationRequest) -> bool:
    """prompt=login and max_age (OIDC Core §3.1.2.1) ask for a fresh sign-in."""
    login = current_login()
    if login is None:
        return True
    fresh = session.get("fresh_login") == login[0].id
    if "login" in req.prompt and not fresh:
        return True
    if req.max_age is not None and not fresh:
        age = (services().clock() - login[0].auth_time).total_seconds()
        return age > req.max_age
    return False


@bp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int] | str:
    params = _request_params()
    try:
        req = authorization.parse(params, services().clients.get)
    except FatalAuthorizationError as exc:
        return render_template("error.html", title="This sign-in link is not valid",
                               message=exc.description), 400
    except RedirectAuthorizationError as exc:
        return _error_redirect(exc)

    deciding = request.method == "POST" and "decision" in request.form
    if deciding:
        check_csrf()
        login = current_login()
        if login is None:
            return _login_redirect(params)
        if request.form["decision"] != "allow":
            return _error_redirect(RedirectAuthorizationError(
                "access_denied", "the user denied the request", req.redirect_uri, req.state))
        consents.grant(db.session, login[1].id, req.client.client_id, req.scope)
        return _issue_code(req)

    if _needs_login(req):
        if "none" in req.prompt:
            return _error_redirect(RedirectAuthorizationError(
                "login_required", "the user is not signed in", req.redirect_uri, req.state))
        return _login_redirect(params)
    session.pop("fresh_login", None)
    login = current_login()
    assert login is not None
    if _needs_consent(req, login[1].id):
        if "none" in req.prompt:
            return _error_redirect(RedirectAuthorizationError(
                "consent_required", "the user has not consented", req.redirect_uri, req.state))
        return render_template(
            "consent.html", client=req.client, user=login[1],
            scopes=[(s, scopes.describe(s)) for s in req.scope], params=params,
        )
    return _issue_code(req)


def _needs_consent(req: AuthorizationRequest, user_id: int) -> bool:
    """First-party clients skip consent; others are asked for scopes not yet granted."""
    if req.client.first_party and "consent" not in req.prompt:
        return False
    if "consent" in req.prompt:
        return True
    return not consents.covers(db.session, user_id, req.client.client_id, req.scope)


def _login_redirect(params: dict[str, list[str]]) -> Response:
    query = urlencode([(k, v) for k, values in params.items() for v in values])
    return redirect("/login?" + urlencode({"next": "/oauth/authorize?" + query}), code=303)


def _issue_code(req: AuthorizationRequest) -> Response:
    login = current_login()
    assert login is not None
    code = codes.issue(db.session, req, user_id=login[1].id, login_session_id=login[0].id,
                       auth_time=login[0].auth_time, clock=services().clock)
    db.session.commit()
    return _redirect_to_client(req.redirect_uri, {"code": code, "state": req.state})
