"""Client registration API: RFC 7591 (register) and RFC 7592 (read, update, delete).

Authorised by an access token with the ``admin:clients`` scope (an admin client's
``client_credentials`` token), or, for a client's own record, by the registration access
token returned at registration. Open registration (no token) is off unless
``AUTHSERVER_OPEN_REGISTRATION`` is on, and then cannot set privileged fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Response, request

from ..domain import clients as domain_clients
from ..domain import secrets as creds
from ..domain.clients import ClientRecord, ClientSpec
from ..domain.errors import ValidationError
from ..extensions import db
from ..services import services
from . import access_tokens
from .routes import bp, json_response

ADMIN_SCOPE = "admin:clients"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
PRIVILEGED = ("first_party", "allow_introspection")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
# RFC 7591 metadata name -> ClientSpec field (our policy fields keep their own names).
_METADATA = {
    "client_name": "name", "redirect_uris": "redirect_uris", "grant_types": "grant_types",
    "scope": "scope", "post_logout_redirect_uris": "post_logout_redirect_uris",
}
_POLICY = [f.name for f in dataclasses.fields(ClientSpec)
           if f.name not in ("name", "public", "redirect_uris", "grant_types", "scope",
                             "post_logout_redirect_uris")]


class Denied(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


def _error(status: int, error: str, description: str) -> Response:
    headers = dict(NO_STORE)
    if status in (401, 403):
        challenge = f'Bearer realm="registration", error="{error}"'
        if error == "insufficient_scope":
            challenge += f', scope="{ADMIN_SCOPE}"'
        headers["WWW-Authenticate"] = challenge
    return json_response({"error": error, "error_description": description}, status, headers)


def _bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _is_admin(token: str) -> bool:
    """A valid access token of ours with the admin scope, from an active client."""
    svc = services()
    try:
        verified = access_tokens.verify(token, keys=svc.keys, issuer=svc.settings.issuer,
                                        session=db.session, now=svc.clock())
    except access_tokens.InvalidAccessToken:
        return False
    if ADMIN_SCOPE not in verified.scope:
        raise Denied(403, "insufficient_scope", f"the token lacks the {ADMIN_SCOPE} scope")
    owner = svc.clients.get(str(verified.claims.get("client_id", "")))
    return owner is not None and owner.active


def _authorise(client_id: str | None) -> bool:
    """True for an admin; for ``client_id``, its own registration token also works."""
    token = _bearer()
    if token is None:
        raise Denied(401, "invalid_token", "a Bearer token is required")
    if token.startswith("reg_"):
        if client_id is not None:
            record = services().clients.get(client_id)
            if record is not None and creds.matches(token, record.registration_token_digest):
                return False
        raise Denied(401, "invalid_token", "the registration access token is not valid here")
    if _is_admin(token):
        return True
    raise Denied(401, "invalid_token", "the access token is not valid")


def spec_from_metadata(body: Any, base: ClientSpec | None = None) -> ClientSpec:
    """RFC 7591 §2 metadata (plus our policy fields) to a spec; unknown members ignored."""
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", "body")
    values: dict[str, Any] = {}
    for name, field_name in _METADATA.items():
        if name in body:
            values[field_name] = body[name]
    for name in _POLICY:
        if name in body:
            values[name] = body[name]
    method = body.get("token_endpoint_auth_method", "client_secret_basic")
    if method not in AUTH_METHODS:
        raise ValidationError(f"token_endpoint_auth_method must be one of {AUTH_METHODS}",
                              "token_endpoint_auth_method")
    values["public"] = method == "none"
    if "grant_types" not in values and base is None:
        values["grant_types"] = ["authorization_code"]  # RFC 7591 §2 default
    response_types = body.get("response_types")
    grant_types = values.get("grant_types") or (base.grant_types if base else [])
    if response_types is not None:
        if not isinstance(response_types, list) or not set(response_types) <= {"code"}:
            raise ValidationError("only the response type 'code' is supported",
                                  "response_types")
        if ("code" in response_types) != ("authorization_code" in grant_types):
            raise ValidationError("response_types 'code' goes with grant_types "
                                  "'authorization_code' (RFC 7591 §2.1)", "response_types")
    for list_field in ("redirect_uris", "grant_types", "post_logout_redirect_uris"):
        if list_field in values and (not isinstance(values[list_field], list) or not all(
                isinstance(v, str) for v in values[list_field])):
            raise ValidationError(f"{list_field} must be a list of strings", list_field)
    for text_field in ("name", "scope"):
        if text_field in values and not isinstance(values[text_field], str):
            raise ValidationError(f"{text_field} must be a string", text_field)
    if base is not None:
        return dataclasses.replace(base, **values)
    if "name" not in values:
        raise ValidationError("client_name is required", "client_name")
    return ClientSpec(**values)


def _metadata(record: ClientRecord) -> dict[str, Any]:
    data = record.to_public_dict()
    data["client_name"] = data.pop("name")
    data["response_types"] = ["code"] if "authorization_code" in record.grant_types else []
    data["registration_client_uri"] = (
        f"{services().settings.issuer}/oauth/register/{record.client_id}")
    return data


def _validation_error(exc: ValidationError) -> Response:
    error = ("invalid_redirect_uri" if exc.field in ("redirect_uris", "post_logout_redirect_uris")
             else "invalid_client_metadata")
    field = f"{exc.field}: " if exc.field else ""
    return _error(400, error, f"{field}{exc}")


@bp.post("/oauth/register")
def register() -> Response:
    """RFC 7591 §3.1: create a client; answer 201 with the secret and registration token."""
    try:
        admin = _authorise(None) if (_bearer() or not services().settings.open_registration) \
            else False
    except Denied as exc:
        return _error(exc.status, exc.error, exc.description)
    try:
        body = request.get_json(silent=True)
        spec = spec_from_metadata(body)
        if not admin and any(getattr(spec, name) for name in PRIVILEGED):
            return _error(403, "invalid_client_metadata",
                          "only an admin may register first-party or introspecting clients")
        record, secret = domain_clients.create_client(db.session, spec)
        token = domain_clients.issue_registration_token(db.session, record.client_id)
    except ValidationError as exc:
        db.session.rollback()
        return _validation_error(exc)
    db.session.commit()
    data = _metadata(record)
    data.update({
        "client_id_issued_at": int(services().clock().timestamp()),
        "registration_access_token": token,
    })
    if secret is not None:
        data["client_secret"] = secret
        data["client_secret_expires_at"] = 0
    return json_response(data, 201, NO_STORE)


def _lookup(client_id: str) -> tuple[ClientRecord, bool] | Response:
    """The client named in the URL and whether the caller is an admin, or an error."""
    try:
        admin = _authorise(client_id)
    except Denied as exc:
        return _error(exc.status, exc.error, exc.description)
    record = domain_clients.find_client(db.session, client_id[:64])
    if record is None:
        return _error(404, "invalid_client_id", "no such client")
    return record, admin


@bp.get("/oauth/register/<client_id>")
def read(client_id: str) -> Response:
    """RFC 7592 §2.1."""
    found = _lookup(client_id)
    if isinstance(found, Response):
        return found
    return json_response(_metadata(found[0]), 200, NO_STORE)


@bp.put("/oauth/register/<client_id>")
def update(client_id: str) -> Response:
    """RFC 7592 §2.2: replace the metadata; absent fields keep their current values."""
    found = _lookup(client_id)
    if isinstance(found, Response):
        return found
    current, admin = found
    body = request.get_json(silent=True)
    if isinstance(body, dict) and body.get("client_id", client_id) != client_id:
        return _error(400, "invalid_client_metadata", "client_id does not match the URL")
    try:
        spec = spec_from_metadata(body, domain_clients.spec_of(current))
        if spec.public != current.public:
            raise ValidationError("token_endpoint_auth_method cannot switch between public "
                                  "and confidential", "token_endpoint_auth_method")
        if not admin and any(getattr(spec, n) != getattr(current, n) for n in PRIVILEGED):
            return _error(403, "invalid_client_metadata", "only an admin may change that")
        changes = {f.name: getattr(spec, f.name) for f in dataclasses.fields(ClientSpec)
                   if f.name != "public"}
        record = domain_clients.update_client(db.session, client_id, **changes)
    except ValidationError as exc:
        db.session.rollback()
        return _validation_error(exc)
    db.session.commit()
    services().clients.forget([client_id])
    return json_response(_metadata(record), 200, NO_STORE)


@bp.delete("/oauth/register/<client_id>")
def remove(client_id: str) -> Response:
    """RFC 7592 §2.3: delete the client; its sessions are revoked with it."""
    found = _lookup(client_id)
    if isinstance(found, Response):
        return found
    domain_clients.delete_client(db.session, found[0].client_id)
    db.session.commit()
    services().clients.forget([client_id])
    return Response(status=204, headers=NO_STORE)


@bp.post("/oauth/register/<client_id>/secret")
def rotate(client_id: str) -> Response:
    """Rotate the secret: the new one is returned once, the old one works for the overlap."""
    found = _lookup(client_id)
    if isinstance(found, Response):
        return found
    body = request.get_json(silent=True) or {}
    overlap = body.get("overlap_seconds", services().settings.client_secret_overlap) \
        if isinstance(body, dict) else None
    if not isinstance(overlap, int) or isinstance(overlap, bool):
        return _error(400, "invalid_client_metadata", "overlap_seconds must be an integer")
    try:
        secret = domain_clients.rotate_secret(db.session, found[0].client_id, overlap)
    except ValidationError as exc:
        db.session.rollback()
        return _validation_error(exc)
    db.session.commit()
    services().clients.forget([client_id])
    return json_response({"client_id": found[0].client_id, "client_secret": secret,
                          "client_secret_expires_at": 0,
                          "previous_secret_valid_for": overlap}, 200, NO_STORE)
