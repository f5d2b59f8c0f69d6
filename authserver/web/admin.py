"""Admin pages at /admin: clients (register, edit, rotate the secret, disable, enable,
delete), their live sessions, users (search, profile, sessions, consents, deactivate,
reactivate, delete), and the audit trail.

Only for signed-in users with the admin role (``users create --admin``, ``users
grant-admin``): anyone else gets a 403 page, and an anonymous visitor the sign-in page.
Every form carries the CSRF token; forms that reveal a secret also carry a one-time token,
so a reload or a resubmitted form never creates a second client or shows a secret again.
Validation is the domain's, the same as the CLI's and the API's.
"""

from __future__ import annotations

import dataclasses
import secrets
from functools import wraps
from typing import Any
from urllib.parse import quote, urlencode

from flask import Blueprint, make_response, redirect, render_template, request, session
from werkzeug.wrappers import Response

from ..domain import audit_trail, client_admin, client_sessions, user_admin, user_agents
from ..domain import clients as domain_clients
from ..domain import users as domain_users
from ..domain.binding import IP_POLICIES, MISMATCH_ACTIONS
from ..domain.client_admin import Actor
from ..domain.client_metadata import (
    BOOL_FIELDS,
    CHOICE,
    CLIENT_FIELDS,
    LIST,
    REFRESH_TOKEN_DELIVERIES,
    SPEC_FIELDS,
    SUPPORTED_GRANT_TYPES,
    TTL_FIELDS,
    ClientSpec,
)
from ..domain.clients import ClientRecord
from ..domain.errors import NotFound, ValidationError
from ..extensions import db
from ..http import NO_STORE
from ..services import services
from .security import browser_lifetime, check_csrf, current_login, protect_pages

bp = Blueprint("admin", __name__)
bp.after_request(protect_pages)

ONCE_KEY = "admin_once"
MAX_ONCE = 20
# What a person sees for each registration field (errors name the field this way).
FIELD_LABELS = {f.name: f.label for f in CLIENT_FIELDS}
FORM_CHOICES = {"grant_choices": SUPPORTED_GRANT_TYPES, "ip_policies": IP_POLICIES,
                "actions": MISMATCH_ACTIONS, "deliveries": REFRESH_TOKEN_DELIVERIES,
                "labels": FIELD_LABELS}
# The form's one-per-line text areas, and its selects with the value a new client starts with.
TEXT_LISTS = tuple(f.name for f in CLIENT_FIELDS if f.kind == LIST and not f.choices)
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ClientSpec)}
CHOICES = {f.name: str(_DEFAULTS[f.name]) for f in CLIENT_FIELDS if f.kind == CHOICE}
SECURITY_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'; object-src 'none'",
}
DONE_MESSAGES = {
    "saved": "Saved.", "disabled": "The client was disabled and its sessions revoked.",
    "enabled": "The client was enabled.", "revoked": "The session was revoked.",
    "revoked-all": "Every session of this client was revoked.",
    "deleted": "The client was deleted and its sessions revoked.",
    "resubmitted": "That form was already submitted, so nothing was done again. A secret is "
                   "shown only once: if you did not copy it, rotate the secret.",
}


def _page(template: str, status: int = 200, **context: Any) -> Response:
    login = current_login()
    response = make_response(render_template(
        template, me=login[1] if login else None, **context), status)
    response.headers.update(SECURITY_HEADERS)
    return response


def _error_page(status: int, title: str, message: str) -> Response:
    return _page("admin/error.html", status, title=title, message=message)


def admin_required(view: Any) -> Any:
    """Signed in (else the sign-in page), admin (else 403), and CSRF on every POST."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        login = current_login()
        if login is None:
            target = request.full_path.rstrip("?") if request.method == "GET" else "/admin"
            return redirect("/login?" + urlencode({"next": target}), code=303)
        if not login[1].is_admin:
            return _error_page(403, "Admins only",
                               "Your account does not have the admin role. Ask an "
                               "administrator to run: authserver users grant-admin "
                               f"{login[1].username}")
        if request.method == "POST":
            check_csrf()  # aborts with the readable "This form has expired" page
        response = view(*args, **kwargs)
        if isinstance(response, Response):
            response.headers.update(SECURITY_HEADERS)
        return response

    return wrapper


def _actor() -> Actor:
    """The signed-in admin (admin_required ran first)."""
    user = current_login()[1]  # type: ignore[index]
    return Actor(f"admin user {user.username}", user.id)


# -- one-time form tokens ---------------------------------------------------------------
def _issue_once() -> str:
    token = secrets.token_urlsafe(16)
    session[ONCE_KEY] = [*session.get(ONCE_KEY, [])[-(MAX_ONCE - 1):], token]
    return token


def _consume_once() -> bool:
    token = request.form.get("once", "")
    issued = list(session.get(ONCE_KEY, []))
    if not token or token not in issued:
        return False
    issued.remove(token)
    session[ONCE_KEY] = issued
    return True


# -- the client form ---------------------------------------------------------------------
def _values_of(spec: ClientSpec) -> dict[str, Any]:
    """What the form shows for a registration."""
    values: dict[str, Any] = {
        "name": spec.name, "client_type": "public" if spec.public else "confidential",
        "grant_types": list(spec.grant_types), "scope": spec.scope,
        "backchannel_logout_uri": spec.backchannel_logout_uri or "",
    }
    for name in TEXT_LISTS:
        values[name] = "\n".join(getattr(spec, name))
    for name in CHOICES:
        values[name] = getattr(spec, name)
    for name in TTL_FIELDS:
        value = getattr(spec, name)
        values[name] = "" if value is None else str(value)
    for name in BOOL_FIELDS:
        values[name] = getattr(spec, name)
    return values


def _values_from_form() -> dict[str, Any]:
    """What was typed, as typed (shown again next to an error)."""
    form = request.form
    values: dict[str, Any] = {
        "name": form.get("name", ""), "grant_types": form.getlist("grant_types"),
        "client_type": "public" if form.get("client_type") == "public" else "confidential",
        "scope": form.get("scope", ""),
        "backchannel_logout_uri": form.get("backchannel_logout_uri", "").strip(),
    }
    for name in TEXT_LISTS:
        values[name] = form.get(name, "")
    for name, default in CHOICES.items():
        values[name] = form.get(name, default)
    for name in TTL_FIELDS:
        values[name] = form.get(name, "").strip()
    for name in BOOL_FIELDS:
        values[name] = form.get(name) == "on"
    return values


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _spec_from(values: dict[str, Any], public: bool) -> ClientSpec:
    """The form's values as a spec; a lifetime that is not a number names its field."""
    numbers: dict[str, int | None] = {}
    for name in TTL_FIELDS:
        raw = values[name]
        if raw == "" and name == "access_token_ttl":
            numbers[name] = None
            continue
        try:
            numbers[name] = int(raw)
        except ValueError:
            raise ValidationError("must be a whole number of seconds", name) from None
    flags = {name: values[name] for name in BOOL_FIELDS if name != "public"}
    lists = {name: _lines(values[name]) for name in TEXT_LISTS}
    choices = {name: values[name] for name in CHOICES}
    return ClientSpec(
        name=values["name"], public=public, scope=values["scope"],
        grant_types=list(values["grant_types"]),
        backchannel_logout_uri=values["backchannel_logout_uri"] or None,
        **lists, **choices, **numbers, **flags,  # type: ignore[arg-type]
    )


def _field_error(exc: ValidationError) -> dict[str, str]:
    """{field: message} for the form; an error without a known field goes on top."""
    field = exc.field if exc.field in FIELD_LABELS else "form"
    return {field: str(exc)}


def _render_new(values: dict[str, Any], errors: dict[str, str] | None = None,
                status: int = 200) -> Response:
    return _page("admin/new_client.html", status, v=values, errors=errors or {},
                 client=None, once=_issue_once(), **FORM_CHOICES)


def _render_client(record: ClientRecord, values: dict[str, Any] | None = None,
                   errors: dict[str, str] | None = None, status: int = 200) -> Response:
    live = client_sessions.list_for_client(db.session(), record.client_id, services().clock())
    return _page(
        "admin/client.html", status, client=record, sessions=live,
        v=values or _values_of(client_admin.spec_of(record)), errors=errors or {},
        once=_issue_once(), message=DONE_MESSAGES.get(request.args.get("done", "")),
        overlap=services().settings.client_secret_overlap, **FORM_CHOICES)


def _client_or_none(client_id: str) -> ClientRecord | None:
    return domain_clients.find_client(db.session(), client_id)


def _no_such_client() -> Response:
    return _error_page(404, "No such client",
                       "There is no client with that ID. It may have been deleted.")


# -- pages ------------------------------------------------------------------------------
@bp.get("/admin")
@admin_required
def admin_home() -> Response:
    return redirect("/admin/clients", code=303)


@bp.get("/admin/clients")
@admin_required
def admin_clients() -> Response:
    return _page("admin/clients.html",
                 clients=domain_clients.list_clients(db.session()),
                 live=client_sessions.count_live_by_client(db.session(), services().clock()),
                 message=DONE_MESSAGES.get(request.args.get("done", "")))


@bp.route("/admin/clients/new", methods=["GET", "POST"])
@admin_required
def admin_new_client() -> Response:
    if request.method == "GET":
        return _render_new(_values_of(ClientSpec(name="", grant_types=[])))
    if not _consume_once():
        return redirect("/admin/clients?done=resubmitted", code=303)
    values = _values_from_form()
    try:
        spec = _spec_from(values, public=values["client_type"] == "public")
        record, secret = client_admin.create_client(db.session(), spec, actor=_actor(),
                                                      now=services().clock())
    except ValidationError as exc:
        db.session.rollback()
        return _render_new(values, _field_error(exc), 400)
    return _page("admin/secret.html", client=record, secret=secret, created=True)


@bp.route("/admin/clients/<client_id>", methods=["GET", "POST"])
@admin_required
def admin_client(client_id: str) -> Response:
    record = _client_or_none(client_id)
    if record is None:
        return _no_such_client()
    if request.method == "GET":
        return _render_client(record)
    values = _values_from_form()
    values["client_type"] = "public" if record.public else "confidential"
    try:
        spec = _spec_from(values, public=record.public)
        changes = {name: getattr(spec, name) for name in SPEC_FIELDS
                   if name != "public"}
        client_admin.update_client(db.session(), client_id, actor=_actor(), **changes)
    except ValidationError as exc:
        db.session.rollback()
        return _render_client(record, values, _field_error(exc), 400)
    services().clients.forget([client_id])
    return redirect(f"/admin/clients/{client_id}?done=saved", code=303)


@bp.post("/admin/clients/<client_id>/secret")
@admin_required
def admin_rotate_secret(client_id: str) -> Response:
    record = _client_or_none(client_id)
    if record is None:
        return _no_such_client()
    if not _consume_once():
        return redirect(f"/admin/clients/{client_id}?done=resubmitted", code=303)
    overlap = services().settings.client_secret_overlap
    try:
        secret = client_admin.rotate_secret(db.session(), client_id, overlap, actor=_actor(),
                                              now=services().clock())
    except ValidationError as exc:
        db.session.rollback()
        return _error_page(400, "The secret was not rotated", str(exc))
    services().clients.forget([client_id])
    return _page("admin/secret.html", client=record, secret=secret, created=False,
                 overlap=overlap)


@bp.post("/admin/clients/<client_id>/<any(disable, enable):action>")
@admin_required
def admin_set_active(client_id: str, action: str) -> Response:
    if _client_or_none(client_id) is None:
        return _no_such_client()
    client_admin.set_active(db.session(), client_id, action == "enable", actor=_actor())
    services().clients.forget([client_id])
    return redirect(f"/admin/clients/{client_id}?done={action}d", code=303)


@bp.route("/admin/clients/<client_id>/delete", methods=["GET", "POST"])
@admin_required
def admin_delete_client(client_id: str) -> Response:
    record = _client_or_none(client_id)
    if record is None:
        return _no_such_client()
    if request.method == "GET":
        live = client_sessions.count_live_by_client(db.session(), services().clock())
        return _page("admin/delete.html", client=record, live=live.get(client_id, 0))
    client_admin.delete_client(db.session(), client_id, actor=_actor())
    services().clients.forget([client_id])
    return redirect("/admin/clients?done=deleted", code=303)


@bp.post("/admin/clients/<client_id>/sessions/<family_id>/revoke")
@admin_required
def admin_revoke_session(client_id: str, family_id: str) -> Response:
    if not client_sessions.belongs_to(db.session(), family_id, client_id):
        return _error_page(404, "No such session",
                           "That session does not belong to this client.")
    client_sessions.revoke(db.session(), family_id, reason="revoked_by_admin",
                           now=services().clock())
    return redirect(f"/admin/clients/{client_id}?done=revoked#sessions", code=303)


@bp.post("/admin/clients/<client_id>/sessions/revoke-all")
@admin_required
def admin_revoke_all_sessions(client_id: str) -> Response:
    if _client_or_none(client_id) is None:
        return _no_such_client()
    client_admin.revoke_client_families(db.session(), client_id, reason="revoked_by_admin")
    return redirect(f"/admin/clients/{client_id}?done=revoked-all#sessions", code=303)


def _printable(text: str) -> str:
    """A filter as typed, without control characters (which no stored value contains)."""
    return "".join(c for c in text if c.isprintable()).strip()


@bp.get("/admin/audit")
@admin_required
def admin_audit() -> Response:
    client_id = _printable(request.args.get("client", ""))[:64]
    username = _printable(request.args.get("user", ""))[:150]
    event = _printable(request.args.get("event", ""))[:64]
    before = request.args.get("before", "")
    page = audit_trail.search(db.session(), client_id=client_id or None,
                              username=username or None, event=event or None,
                              before=int(before) if before.isascii() and before.isdigit()
                              and len(before) <= 9 else None)
    filters = {k: v for k, v in (("client", client_id), ("user", username), ("event", event))
               if v}
    older = ("/admin/audit?" + urlencode({**filters, "before": page.older})
             if page.older else None)
    return _page("admin/audit.html", page=page, client=client_id, user=username, event=event,
                 events=audit_trail.known_events(), older=older, filtered=bool(filters))


# -- users -------------------------------------------------------------------------------
USER_MESSAGES = {
    "saved": "Saved.", "unchanged": "Nothing changed: those are the current values.",
    "deactivated": "The user was deactivated and signed out everywhere.",
    "reactivated": "The user may sign in again. Sessions revoked before stay revoked.",
    "already-active": "The user was already active.",
    "revoked": "The session was revoked.",
    "signed-out": "The user was signed out everywhere.",
    "consent-revoked": "The consent was revoked and the user's sessions at that client "
                       "ended; the app asks for consent again.",
    "deleted": "The user was deleted and every session of theirs ended.",
}
# What each confirmed action does, for its confirmation page: (title, what happens, button).
USER_CONFIRMATIONS = {
    "deactivate": ("Deactivate {name}?",
                   "Every device of theirs is signed out at once and they can no longer sign "
                   "in, until an admin reactivates them.", "Deactivate"),
    "sign-out": ("Sign {name} out everywhere?",
                 "Every session and browser sign-in of theirs ends at once: their apps' "
                 "refresh tokens stop working. They may sign in again.", "Sign out everywhere"),
    "delete": ("Delete {name}?",
               "Every session and browser sign-in ends, their consents and unused codes are "
               "removed and the account is gone: the name may be given to someone new. The "
               "audit trail keeps its events. This cannot be undone; to stop them only for a "
               "while, deactivate instead.", "Delete this user"),
}


def _by() -> dict[str, Any]:
    """Who asked, for the audit trail: the signed-in admin and where from."""
    user = current_login()[1]  # type: ignore[index]
    return {"via": "admin_page", "admin": user.username, "ip": request.remote_addr,
            "user_agent_family": user_agents.family(request.user_agent.string)}


def _no_such_user() -> Response:
    return _error_page(404, "No such user",
                       "There is no user with that name. They may have been deleted.")


def _user_url(username: str, done: str | None = None, anchor: str = "") -> str:
    url = f"/admin/users/{quote(username, safe='')}"
    return url + (f"?done={done}" if done else "") + anchor


def _is_me(username: str) -> bool:
    return current_login()[1].username == username  # type: ignore[index]


def _render_user(username: str, values: dict[str, str] | None = None,
                 errors: dict[str, str] | None = None, status: int = 200) -> Response:
    try:
        detail = user_admin.user_detail(db.session(), username, services().clock(),
                                        browser_lifetime=browser_lifetime())
    except NotFound:
        return _no_such_user()
    u = detail.user
    return _page("admin/user.html", status, detail=detail, u=u, is_me=_is_me(username),
                 v=values or {"email": u.email or "", "name": u.name or ""},
                 errors=errors or {}, message=USER_MESSAGES.get(request.args.get("done", "")))


@bp.get("/admin/users")
@admin_required
def admin_users() -> Response:
    search = _printable(request.args.get("q", ""))[:user_admin.MAX_SEARCH]
    return _page("admin/users.html", users=user_admin.list_users(db.session(), search),
                 q=search, message=USER_MESSAGES.get(request.args.get("done", "")))


@bp.route("/admin/users/<username>", methods=["GET", "POST"])
@admin_required
def admin_user(username: str) -> Response:
    if request.method == "GET":
        return _render_user(username)
    values = {"email": request.form.get("email", ""), "name": request.form.get("name", "")}
    try:
        changed = user_admin.update_user(db.session(), username, email=values["email"],
                                         name=values["name"], by=_by())
    except NotFound:
        return _no_such_user()
    except ValidationError as exc:
        db.session.rollback()
        field = exc.field if exc.field in ("email", "name") else "form"
        return _render_user(username, values, {field: str(exc)}, 400)
    return redirect(_user_url(username, "saved" if changed else "unchanged"), code=303)


@bp.post("/admin/users/<username>/reactivate")
@admin_required
def admin_reactivate_user(username: str) -> Response:
    try:
        done = user_admin.reactivate_user(db.session(), username, by=_by())
    except NotFound:
        return _no_such_user()
    return redirect(_user_url(username, "reactivated" if done else "already-active"), code=303)


@bp.route('/admin/users/<username>/<any(deactivate, "sign-out", delete):action>',
          methods=["GET", "POST"])
@admin_required
def admin_confirmed_user_action(username: str, action: str) -> Response:
    """Deactivate, sign out everywhere, delete: a confirmation page, then the change."""
    try:
        domain_users.find_user(db.session(), username)
    except NotFound:
        return _no_such_user()
    if action in ("deactivate", "delete") and _is_me(username):
        return _error_page(400, "Not your own account",
                           f"You cannot {action} the account you are signed in with here: "
                           "ask another admin, or use the command line.")
    if request.method == "GET":
        title, consequence, button = USER_CONFIRMATIONS[action]
        return _page("admin/confirm_user.html", username=username,
                     title=title.format(name=username), consequence=consequence,
                     button=button, action=action, cancel=_user_url(username))
    try:
        if action == "deactivate":
            domain_users.deactivate_user(db.session(), username, by=_by())
            return redirect(_user_url(username, "deactivated"), code=303)
        if action == "sign-out":
            user_admin.sign_out_everywhere(db.session(), username, by=_by())
            return redirect(_user_url(username, "signed-out", "#sessions"), code=303)
        user_admin.delete_user(db.session(), username, by=_by())
    except NotFound:  # deleted meanwhile
        return _no_such_user()
    return redirect("/admin/users?done=deleted", code=303)


@bp.post("/admin/users/<username>/sessions/<session_id>/revoke")
@admin_required
def admin_revoke_user_session(username: str, session_id: str) -> Response:
    try:
        user_admin.revoke_session(db.session(), username, session_id, by=_by())
    except NotFound:
        return _error_page(404, "No such session",
                           "That user has no such live session: it may have ended already.")
    return redirect(_user_url(username, "revoked", "#sessions"), code=303)


@bp.post("/admin/users/<username>/consents/<client_id>/revoke")
@admin_required
def admin_revoke_user_consent(username: str, client_id: str) -> Response:
    try:
        user_admin.revoke_consent(db.session(), username, client_id, by=_by())
    except NotFound:
        return _error_page(404, "No such consent",
                           "That user has no consent for that client: it may have been "
                           "revoked already.")
    return redirect(_user_url(username, "consent-revoked", "#consents"), code=303)
