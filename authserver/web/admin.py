"""Admin pages at /admin: clients (create, edit, disable, delete, secrets), their live
sessions, and the audit trail. Only for users with the admin role; every form has CSRF."""

from __future__ import annotations

from functools import wraps
from typing import Any
from urllib.parse import urlencode

from flask import abort, redirect, render_template, request
from sqlalchemy import select
from werkzeug.wrappers import Response

from ..domain import clients as domain_clients
from ..domain import refresh_families, user_agents
from ..domain.binding import IP_POLICIES, MISMATCH_ACTIONS
from ..domain.clients import SUPPORTED_GRANT_TYPES, ClientSpec
from ..domain.errors import ValidationError
from ..extensions import db
from ..services import services
from ..storage.models import AuditEvent, TokenFamily, User
from . import bp
from .security import check_csrf, current_login

INT_FIELDS = ("access_token_ttl", "refresh_idle_ttl", "refresh_absolute_ttl", "reuse_grace")
BOOL_FIELDS = ("first_party", "bind_device_id", "bind_user_agent", "require_device_id",
               "require_dpop", "allow_introspection")


def admin_required(view: Any) -> Any:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        login = current_login()
        if login is None:
            return redirect("/login?" + urlencode({"next": request.full_path.rstrip("?")}),
                            code=303)
        if not login[1].is_admin:
            abort(403, description="Your account does not have the admin role.")
        if request.method == "POST":
            check_csrf()
        return view(*args, **kwargs)

    return wrapper


def _form_spec(public: bool) -> ClientSpec:
    """Read the client form into a spec; raise ValidationError naming the field."""
    form = request.form
    values: dict[str, Any] = {
        "name": form.get("name", ""), "public": public, "scope": form.get("scope", ""),
        "grant_types": form.getlist("grant_types"),
        "redirect_uris": [u.strip() for u in form.get("redirect_uris", "").splitlines()
                          if u.strip()],
        "post_logout_redirect_uris": [
            u.strip() for u in form.get("post_logout_redirect_uris", "").splitlines()
            if u.strip()],
        "bind_ip": form.get("bind_ip", "off"),
        "on_binding_mismatch": form.get("on_binding_mismatch", "revoke"),
    }
    for name in BOOL_FIELDS:
        values[name] = form.get(name) == "on"
    for name in INT_FIELDS:
        raw = form.get(name, "").strip()
        if raw == "" and name == "access_token_ttl":
            values[name] = None
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            raise ValidationError(f"{name} must be a whole number of seconds", name) from None
    return ClientSpec(**values)


FORM_CHOICES = {"grant_types": SUPPORTED_GRANT_TYPES, "ip_policies": IP_POLICIES,
                "actions": MISMATCH_ACTIONS}


def _render_new(spec: ClientSpec, error: str | None = None, status: int = 200
                ) -> tuple[str, int]:
    return render_template("admin/new_client.html", spec=spec, client_id=None, error=error,
                           **FORM_CHOICES), status


def _render_client(record: domain_clients.ClientRecord, *, spec: ClientSpec | None = None,
                   error: str | None = None, saved: bool = False, status: int = 200
                   ) -> tuple[str, int]:
    live = db.session.execute(
        select(TokenFamily, User.username).join(User, User.id == TokenFamily.user_id)
        .where(TokenFamily.client_id == record.client_id, TokenFamily.revoked_at.is_(None))
        .order_by(TokenFamily.created_at.desc()).limit(200)
    ).all()
    families = [(f, name, f.ua_family or user_agents.family(f.user_agent)) for f, name in live]
    return render_template(
        "admin/client.html", client=record, families=families, saved=saved, error=error,
        spec=spec or domain_clients.spec_of(record), client_id=record.client_id,
        **FORM_CHOICES), status


def _describe(exc: ValidationError) -> str:
    return f"{exc.field}: {exc}" if exc.field else str(exc)


@bp.get("/admin")
@admin_required
def admin_home() -> Response:
    return redirect("/admin/clients")


@bp.get("/admin/clients")
@admin_required
def admin_clients() -> str:
    return render_template("admin/clients.html",
                           clients=domain_clients.list_clients(db.session),
                           message=request.args.get("done"))


@bp.route("/admin/clients/new", methods=["GET", "POST"])
@admin_required
def admin_new_client() -> tuple[str, int] | str:
    if request.method == "GET":
        return _render_new(ClientSpec(name=""))
    public = request.form.get("client_type") == "public"
    spec = ClientSpec(name=request.form.get("name", ""), public=public)
    try:
        spec = _form_spec(public)
        record, secret = domain_clients.create_client(db.session, spec)
    except ValidationError as exc:
        db.session.rollback()
        return _render_new(spec, _describe(exc), 400)
    db.session.commit()
    return render_template("admin/secret.html", client=record, secret=secret, created=True)


def _client_or_404(client_id: str) -> domain_clients.ClientRecord:
    record = domain_clients.find_client(db.session, client_id[:64])
    if record is None:
        abort(404, description="There is no such client.")
    return record


@bp.route("/admin/clients/<client_id>", methods=["GET", "POST"])
@admin_required
def admin_client(client_id: str) -> tuple[str, int] | str:
    record = _client_or_404(client_id)
    if request.method == "GET":
        return _render_client(record)
    spec = domain_clients.spec_of(record)
    try:
        spec = _form_spec(record.public)
        changes = {name: getattr(spec, name) for name in domain_clients.SPEC_FIELDS
                   if name != "public"}
        record = domain_clients.update_client(db.session, client_id, **changes)
    except ValidationError as exc:
        db.session.rollback()
        return _render_client(record, spec=spec, error=_describe(exc), status=400)
    db.session.commit()
    services().clients.forget([client_id])
    return _render_client(record, saved=True)


@bp.post("/admin/clients/<client_id>/secret")
@admin_required
def admin_rotate_secret(client_id: str) -> str:
    record = _client_or_404(client_id)
    try:
        secret = domain_clients.rotate_secret(db.session, client_id,
                                              services().settings.client_secret_overlap)
    except ValidationError as exc:
        abort(400, description=str(exc))
    db.session.commit()
    services().clients.forget([client_id])
    return render_template("admin/secret.html", client=record, secret=secret, created=False,
                           overlap=services().settings.client_secret_overlap)


@bp.post("/admin/clients/<client_id>/<action>")
@admin_required
def admin_client_action(client_id: str, action: str) -> Response:
    _client_or_404(client_id)
    if action == "disable":
        domain_clients.set_active(db.session, client_id, False)
    elif action == "enable":
        domain_clients.set_active(db.session, client_id, True)
    elif action == "delete":
        domain_clients.delete_client(db.session, client_id)
        db.session.commit()
        services().clients.forget([client_id])
        return redirect("/admin/clients?done=deleted", code=303)
    else:
        abort(404)
    db.session.commit()
    services().clients.forget([client_id])
    return redirect(f"/admin/clients/{client_id}", code=303)


@bp.post("/admin/clients/<client_id>/families/<family_id>/revoke")
@admin_required
def admin_revoke_family(client_id: str, family_id: str) -> Response:
    owner = db.session.scalar(select(TokenFamily.client_id).where(
        TokenFamily.id == family_id[:43]))
    if owner != client_id:
        abort(404, description="There is no such session for this client.")
    refresh_families.revoke_family(db.session, family_id, reason="revoked_by_admin")
    db.session.commit()
    return redirect(f"/admin/clients/{client_id}", code=303)


@bp.get("/admin/audit")
@admin_required
def admin_audit() -> str:
    query = (select(AuditEvent, User.username).outerjoin(User, User.id == AuditEvent.user_id)
             .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).limit(500))
    client_id = request.args.get("client", "").strip()[:64]
    username = request.args.get("user", "").strip()[:150]
    event = request.args.get("event", "").strip()[:64]
    if client_id:
        query = query.where(AuditEvent.client_id == client_id)
    if username:
        query = query.where(User.username == username)
    if event:
        query = query.where(AuditEvent.event == event)
    return render_template("admin/audit.html", rows=db.session.execute(query).all(),
                           client=client_id, user=username, event=event)



