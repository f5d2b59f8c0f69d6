"""``/oauth/authorize`` (RFC 6749 §4.1.1, OIDC Core §3.1.2): sign-in, consent, then a code.

Every response that goes back to the client carries ``iss`` (RFC 9207) and the request's
``state`` untouched. A request whose client or redirect URI cannot be trusted gets our
error page and is never redirected (RFC 6749 §4.1.2.1).
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from flask import Blueprint, redirect, render_template, request, session
from werkzeug.wrappers import Response

from ..domain import authorization, codes, consents, redirect_uris, scopes
from ..domain.authorization import (
    AuthorizationRequest,
    FatalAuthorizationError,
    RedirectAuthorizationError,
)
from ..extensions import db
from ..http import NO_STORE
from ..ops.access_log import note_client
from ..services import services
from ..storage.models import LoginSession
from ..web.security import (
    AUTHORIZE_PATH,
    FRESH_LOGIN,
    authorization_request_digest,
    check_csrf,
    current_login,
    protect_pages,
)

bp = Blueprint("authorize", __name__)
bp.after_request(protect_pages)  # the sign-in redirect and the consent page are pages

DECISION_FIELDS = ("decision", "csrf_token")
# How long after signing in a browser counts as "just signed in" for prompt=login and
# max_age: the sign-in page redirects straight back, so this only absorbs slow networks.
FRESH_SECONDS = 120
_FATAL_MESSAGES = {
    "invalid_client": "The application that sent you here is not registered with us, or "
                      "has been disabled.",
    "": "The application that sent you here made a mistake in its request, so we stopped "
        "before sending you anywhere else.",
}


def _with_params(uri: str, params: dict[str, str]) -> str:
    """Add query parameters to a redirect URI, keeping the query it already has (§3.1.2)."""
    separator = "&" if "?" in uri else "?"
    return uri + separator + urlencode(params)


def _redirect_to_client(uri: str, params: dict[str, str | None]) -> Response:
    """A redirect back to the client, always naming the issuer (RFC 9207 §2)."""
    clean = {k: v for k, v in params.items() if v is not None}
    clean["iss"] = services().settings.issuer
    response = redirect(_with_params(uri, clean), code=302 if request.method == "GET" else 303)
    response.headers.update(NO_STORE)
    return response


def _error_redirect(error: RedirectAuthorizationError) -> Response:
    """RFC 6749 §4.1.2.1: ``error``, ``error_description`` and ``state`` to the client."""
    return _redirect_to_client(error.redirect_uri, {
        "error": error.error, "error_description": error.description, "state": error.state})


def _deny(req: AuthorizationRequest, error: str, description: str) -> Response:
    return _error_redirect(RedirectAuthorizationError(error, description, req.redirect_uri,
                                                      req.state))


def _request_params() -> dict[str, list[str]]:
    """The authorization request: the query for GET, the form for POST (OIDC Core §3.1.2.1)."""
    source = request.args if request.method == "GET" else request.form
    return {k: source.getlist(k) for k in source if k not in DECISION_FIELDS}


def _fresh(login: LoginSession, params: dict[str, list[str]]) -> bool:
    """This browser signed in just now, on the sign-in page that this very request sent
    it to. A sign-in made for anything else never satisfies prompt=login or max_age."""
    marker = session.get(FRESH_LOGIN)
    if marker != [login.id, authorization_request_digest(params)]:
        return False
    return (services().clock() - login.auth_time).total_seconds() <= FRESH_SECONDS


def _needs_login(req: AuthorizationRequest, params: dict[str, list[str]]) -> bool:
    """No sign-in, or prompt=login / max_age (OIDC Core §3.1.2.1) ask for a fresh one."""
    login = current_login()
    if login is None:
        return True
    if _fresh(login[0], params):
        return False
    if "login" in req.prompt or req.max_age == 0:  # max_age=0 is prompt=login
        return True
    if req.max_age is not None:
        age = (services().clock() - login[0].auth_time).total_seconds()
        return age > req.max_age
    return False


def _needs_consent(req: AuthorizationRequest, user_id: int) -> bool:
    """First-party clients skip consent; others are asked for scopes not yet granted.

    ``prompt=consent`` always asks. Consent to ``offline_access`` is asked like any other
    scope and remembered (OIDC Core §11: the OP obtains consent to offline access).
    """
    if "consent" in req.prompt:
        return True
    if req.client.first_party:
        return False
    return not consents.covers(db.session(), user_id, req.client.client_id, req.scope)


def _needs_interaction(req: AuthorizationRequest) -> bool:
    """RFC 6749 §10.2: an authorization request is not granted again without the person,
    when nothing proves that it comes from the client it names. A code sent to a loopback
    or private-use-scheme redirect may be received by any app on the device (RFC 8252
    §8.6), so such a request always shows the consent page, as a confirmation if consent
    was given before, and ``prompt=none`` answers ``interaction_required``. An ``https``
    redirect is delivered only to the registered web origin: silent sign-in stays
    (docs/design.md, "Operations")."""
    return redirect_uris.is_native_redirect(req.redirect_uri)


def _authorize_url(params: dict[str, list[str]], drop: tuple[str, ...] = ()) -> str:
    query = urlencode([(k, v) for k, values in params.items() if k not in drop
                       for v in values])
    return f"{AUTHORIZE_PATH}?{query}"


def _login_redirect(params: dict[str, list[str]], req: AuthorizationRequest | None = None
                    ) -> Response:
    """To the sign-in page, which comes back here. ``prompt`` is kept: a fresh sign-in
    satisfies ``prompt=login`` (see ``_fresh``)."""
    target = {"next": _authorize_url(params)}
    if req is not None and req.login_hint:
        target["login_hint"] = req.login_hint
    response = redirect("/login?" + urlencode(target), code=303)
    response.headers.update(NO_STORE)
    return response


def _return_address(req: AuthorizationRequest) -> str:
    """Where the consent page says the person goes back to: a web site's host name, or the
    app on this device (loopback and private-use-scheme redirects, RFC 8252 §7)."""
    if redirect_uris.is_loopback_redirect(req.redirect_uri):
        return f"the {req.client.name} app on this device"
    host = urlsplit(req.redirect_uri).hostname
    return host if host else f"the {req.client.name} app"


@bp.route(AUTHORIZE_PATH, methods=["GET", "POST"])
def authorize() -> Response | tuple[str, int]:
    params = _request_params()
    try:
        # The stored record: a redirect URI removed or a client disabled counts at once.
        req = authorization.parse(params, services().clients.reload)
        note_client(request.environ, req.client.client_id)
    except FatalAuthorizationError as exc:
        return render_template("error.html", title="This sign-in link is not valid",
                               message=_FATAL_MESSAGES.get(exc.error, _FATAL_MESSAGES[""]),
                               detail=exc.description), 400
    except RedirectAuthorizationError as exc:
        return _error_redirect(exc)

    if request.method == "POST" and "decision" in request.form:
        return _decide(req, params)

    if _needs_login(req, params):
        if "none" in req.prompt:
            return _deny(req, "login_required", "the user is not signed in")
        return _login_redirect(params, req)
    session.pop(FRESH_LOGIN, None)
    login = current_login()
    assert login is not None  # _needs_login said so
    consent = _needs_consent(req, login[1].id)
    if consent or _needs_interaction(req):
        if "none" in req.prompt:
            if consent:
                return _deny(req, "consent_required", "the user has not consented")
            return _deny(req, "interaction_required", "the user must confirm sign-ins of "
                         "an app on their device: send the request without prompt=none")
        return render_template(
            "consent.html", client=req.client, user=login[1], confirm=not consent,
            scopes=[(s, scopes.describe(s)) for s in req.scope], params=params,
            return_to=_return_address(req),
            switch_url="/login?" + urlencode({"next": _authorize_url(params, ("prompt",))}),
        ), 200
    return _issue_code(req)


def _decide(req: AuthorizationRequest, params: dict[str, list[str]]) -> Response:
    """The consent form's answer (CSRF-checked; re-validated like a new request)."""
    check_csrf()
    login = current_login()
    if login is None:
        return _login_redirect(params, req)
    user_id, client_id = login[1].id, req.client.client_id
    if request.form["decision"] != "allow":
        consents.record_denial(db.session(), user_id, client_id, req.scope)
        return _deny(req, "access_denied", "the user denied the request")
    return _issue_code(req, grant_consent=True)


def _issue_code(req: AuthorizationRequest, *, grant_consent: bool = False) -> Response:
    login = current_login()
    assert login is not None
    code = codes.issue(db.session(), req, user_id=login[1].id, login_session_id=login[0].id,
                       auth_time=login[0].auth_time, grant_consent=grant_consent,
                       clock=services().clock)
    return _redirect_to_client(req.redirect_uri, {"code": code, "state": req.state})
