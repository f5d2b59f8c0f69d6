"""Client registration API: RFC 7591 (register) and RFC 7592 (read, update, delete), plus
secret rotation and enable/disable for admins.

Who may call (RFC 6750 Bearer, or RFC 9449 DPoP for a bound token):

- an **admin**: an access token of ours with the ``admin:clients`` scope, issued by the
  ``client_credentials`` grant to a client that is active and still registered for that
  scope. Signature by a published key (its algorithm only), ``typ: at+jwt``, our issuer, our
  audience, not expired, session not revoked (RFC 9068 §4).
- a **client, for its own record**: the registration access token returned when it was
  registered (RFC 7592 §1); only its digest is stored, compared in constant time.
- **anyone**, for ``POST /oauth/register`` only, when ``AUTHSERVER_OPEN_REGISTRATION`` is
  on (off by default); such registrations cannot set the privileged fields.

Errors are RFC 7591 §3.2.2 JSON (``invalid_redirect_uri``, ``invalid_client_metadata``, 400)
naming the field, or RFC 6750 §3 (401 ``invalid_token``, 403 ``insufficient_scope``) with
``WWW-Authenticate``. Every response is ``Cache-Control: no-store``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, request

from ..domain import attempt_limits, client_admin
from ..domain import client_metadata as rules
from ..domain import clients as domain_clients
from ..domain import credentials as creds
from ..domain.client_metadata import ADMIN_SCOPE, ClientSpec
from ..domain.clients import ClientRecord
from ..domain.errors import NotFound, ValidationError
from ..extensions import db
from ..http import OAUTH_NO_STORE, json_response
from ..services import services
from . import bearer, dpop, rate_limits

bp = Blueprint("registration", __name__)

# Fields only an admin may set: they widen what a client may do.
PRIVILEGED = ("first_party", "allow_introspection")
# JSON member -> ClientSpec field: RFC 7591 §2 names, our policy fields their own. ``public``
# is given as token_endpoint_auth_method (see spec_from_metadata).
_MEMBERS = {f.api: f.name for f in rules.CLIENT_FIELDS if f.name != "public"}
# ClientSpec field (as named in a ValidationError) -> the name the API caller used.
_API_NAMES = {**{f.name: f.api for f in rules.CLIENT_FIELDS}, "overlap": "overlap_seconds"}


@dataclass(frozen=True)
class Caller:
    """Who is calling: an admin, a client managing itself, or an open registration."""

    admin: bool
    actor: str
    registration_token: str | None = None  # as presented, echoed per RFC 7592 §3


# A refused caller: the error and the scheme of its challenge. Like the token checks of
# ``bearer``, which raise it too; a DPoP nonce is not offered here.
Denied = bearer.BearerError


NO_CREDENTIALS = ""  # Denied.error of a request that sent no token (RFC 6750 §3.1)


def _error(status: int, error: str, description: str, scheme: str = "Bearer",
           challenge: bool = False) -> Response:
    """The JSON error; with ``challenge`` (every 401 and 403, and a malformed
    ``Authorization`` header) also the RFC 6750 §3 ``WWW-Authenticate`` header."""
    headers = dict(OAUTH_NO_STORE)
    if error == NO_CREDENTIALS:
        # RFC 6750 §3.1: no error code when the request had no authentication at all.
        headers["WWW-Authenticate"] = 'Bearer realm="registration"'
        return json_response({"error": "invalid_token", "error_description": description},
                             status, headers)
    if challenge or status in (401, 403):
        header = f'{scheme} realm="registration", error="{error}"'
        if error == "insufficient_scope":
            header += f', scope="{ADMIN_SCOPE}"'
        if scheme == "DPoP":
            header += f', algs="{" ".join(dpop.ALGORITHMS)}"'
        headers["WWW-Authenticate"] = header
    return json_response({"error": error, "error_description": description}, status, headers)


def _json_body() -> Any:
    """The JSON request body, or None when it is missing or not JSON. Nesting too deep for
    the parser is not JSON either (it raises RecursionError, not a decoding error)."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None


def _denied(exc: Denied) -> Response:
    return _error(exc.status, exc.error, exc.description, exc.scheme, challenge=True)


def _credential() -> tuple[str, str] | None:
    """The token in ``Authorization`` and its scheme (RFC 6750 §2.1, RFC 9449 §7.1), or
    None without the header. A header that is there but unusable is refused, never read
    as "no token" (which open registration would accept)."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, token = bearer.authorization(header)
    if scheme is None:
        # Another scheme (Basic, ...) carries no token for us: a plain challenge (§3.1).
        raise Denied(401, NO_CREDENTIALS, "send the token as: Authorization: Bearer <token>")
    if not token or " " in token:
        # RFC 6750 §3.1: a malformed request is invalid_request (400).
        raise Denied(400, "invalid_request", "send the token as: Authorization: Bearer <token>")
    if len(token) > 8192:
        raise Denied(401, "invalid_token", "the token is too long")
    return token, scheme


def _admin(token: str, scheme: str) -> Caller:
    """An admin access token: valid, ``admin:clients``, from a client_credentials grant."""
    svc = services()
    verified = bearer.verify(token, scheme)
    claims = verified.claims
    audience = claims.get("aud")
    if svc.settings.audience not in (audience if isinstance(audience, list) else [audience]):
        raise Denied(401, "invalid_token", "the token is not meant for this server", scheme)
    if ADMIN_SCOPE not in verified.scope:
        raise Denied(403, "insufficient_scope", f"the token lacks the {ADMIN_SCOPE} scope")
    client_id = str(claims.get("client_id", ""))
    if claims.get("sid") is not None or claims.get("sub") != client_id:
        # A token issued for a user's sign-in never administers clients, whatever its scope.
        raise Denied(403, "insufficient_scope", "admin tokens come from an admin client's "
                     "client_credentials grant")
    owner = domain_clients.find_client(db.session(), client_id)
    if owner is None or not owner.active or ADMIN_SCOPE not in owner.scope:
        raise Denied(401, "invalid_token", "the client of this token is no longer an admin",
                     scheme)
    bearer.check_binding(token, scheme, verified,
                         bound="the token is DPoP-bound: use the DPoP scheme")
    return Caller(admin=True, actor=f"admin client {client_id}")


def _own_client(token: str, scheme: str, client_id: str | None) -> Caller:
    """RFC 7592 §1: a registration access token, only for the client it was issued to."""
    record = domain_clients.find_client(db.session(), client_id) if client_id else None
    if (scheme != "Bearer" or record is None
            or not creds.matches(token, record.registration_token_digest)):
        raise Denied(401, "invalid_token",
                     "the registration access token is not valid for this client")
    if not record.active:
        raise Denied(401, "invalid_token", "the client is disabled")
    return Caller(admin=False, actor=f"client {record.client_id} (registration token)",
                  registration_token=token)


def _authorise(client_id: str | None) -> Caller:
    """The caller, or Denied. ``client_id``: the record the request is about, if any."""
    credential = _credential()
    if credential is None:
        if client_id is None and services().settings.open_registration:
            return Caller(admin=False, actor="open registration")
        raise Denied(401, NO_CREDENTIALS, "a Bearer access token is required")
    token, scheme = credential
    if token.startswith(client_admin.REGISTRATION_TOKEN_PREFIX):
        return _own_client(token, scheme, client_id)
    return _admin(token, scheme)


def spec_from_metadata(body: Any, base: ClientSpec | None = None) -> ClientSpec:
    """RFC 7591 §2 metadata (plus our policy fields) to a spec, for the domain to validate.

    With ``base`` (an update, RFC 7592 §2.2) absent members keep their current values.
    Members this server does not know are ignored (RFC 7591 §2).
    """
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", "body")
    values: dict[str, Any] = {}
    for member, field_name in _MEMBERS.items():
        if member in body:
            values[field_name] = body[member]
    if "token_endpoint_auth_method" in body or base is None:
        values["public"] = rules.public_for_auth_method(
            body.get("token_endpoint_auth_method", "client_secret_basic"))
    if "grant_types" not in values and base is None:
        values["grant_types"] = ["authorization_code"]  # RFC 7591 §2 default
    if "response_types" in body:
        grant_types = values.get("grant_types", base.grant_types if base else [])
        if isinstance(grant_types, list):
            rules.check_response_types(body["response_types"], grant_types)
    if base is not None:
        return dataclasses.replace(base, **values)
    if "name" not in values:
        raise ValidationError("client_name is required", "name")
    return ClientSpec(**values)


def _privileged_change(spec: ClientSpec, base: ClientSpec | None) -> ValidationError | None:
    """What a non-admin may not set: the privileged flags, an admin scope, or a scope
    beyond the open-registration ones it does not have yet (RFC 7591 §2: the server may
    restrict the scopes a client registers for; without this, open registration would
    hand out every API's scope)."""
    for name in PRIVILEGED:
        if getattr(spec, name) != (getattr(base, name) if base else False):
            return ValidationError(f"only an admin may set {name}", name)
    if not isinstance(spec.scope, str):
        return None
    had = set(base.scope.split()) if base is not None and isinstance(base.scope, str) else set()
    if rules.has_admin_scope(spec.scope.split()) and not rules.has_admin_scope(list(had)):
        return ValidationError("only an admin may grant admin scopes", "scope")
    allowed = had | set(services().settings.open_registration_scopes.split())
    beyond = sorted(set(spec.scope.split()) - allowed)
    if beyond:
        return ValidationError(
            f"only an admin may grant {' '.join(beyond)[:200]!r}; without one a client may "
            f"register for {' '.join(sorted(allowed))!r}", "scope")
    return None


def _self_service(spec: ClientSpec, base: ClientSpec | None) -> ValidationError | None:
    """The limits of a registration without an admin (``rules.self_service_problem``), on
    the spec as it will be stored (defaults filled in: no grant types means
    ``client_credentials`` for a confidential client without redirect URIs)."""
    settings = services().settings
    limits = rules.SelfServiceLimits(
        access_token_ttl=settings.access_token_ttl,
        allow_private_addresses=settings.backchannel_allow_private or not settings.production)
    return rules.self_service_problem(rules.validate_spec(spec), base, limits)


def _metadata(record: ClientRecord, caller: Caller | None = None) -> dict[str, Any]:
    """RFC 7591 §3.2.1 / RFC 7592 §3 client information response (never the secret)."""
    data = record.to_public_dict()
    data["client_name"] = data.pop("name")
    data["response_types"] = rules.response_types_for(record.grant_types)
    data["registration_client_uri"] = (
        f"{services().settings.issuer}/oauth/register/{record.client_id}")
    if record.created_at is not None:
        data["client_id_issued_at"] = int(record.created_at.timestamp())
    if caller is not None and caller.registration_token is not None:
        data["registration_access_token"] = caller.registration_token
    return data


def _validation_error(exc: ValidationError) -> Response:
    field = _API_NAMES.get(exc.field or "", exc.field)
    error = ("invalid_redirect_uri" if field in ("redirect_uris", "post_logout_redirect_uris")
             else "invalid_client_metadata")
    prefix = f"{field}: " if field else ""
    return _error(400, error, f"{prefix}{exc}")


def _throttled(limited: attempt_limits.Limited) -> Response:
    """429: this address made as many open registrations as it may for now."""
    attempt_limits.record_refusal(db.session(), limited, endpoint="registration",
                                  ip=request.remote_addr)
    response = _error(429, "temporarily_unavailable",
                      f"too many registrations; retry in {limited.retry_after} s")
    response.headers["Retry-After"] = str(limited.retry_after)
    return response


def _not_found() -> Response:
    return _error(404, "not_found", "no such client")


def _changed(client_id: str) -> None:
    """The domain has committed a change of the client: drop its cached record."""
    services().clients.forget([client_id])


@bp.post("/oauth/register")
def register() -> Response:
    """RFC 7591 §3.1: create a client; 201 with the secret (once) and a registration token."""
    try:
        caller = _authorise(None)
    except Denied as exc:
        return _denied(exc)
    address = rate_limits.address_key(request.remote_addr)
    if not caller.admin:  # open registration: so many per address (docs/design.md, "Operations")
        limited = services().limits.check_registration(address)
        if limited is not None:
            return _throttled(limited)
    try:
        spec = spec_from_metadata(_json_body())
        problem = None if caller.admin else (_privileged_change(spec, None)
                                             or _self_service(spec, None))
        if problem is not None:
            raise problem
        record, secret, token = client_admin.register_client(
            db.session(), spec, actor=caller.actor, now=services().clock())
    except ValidationError as exc:
        db.session.rollback()
        return _validation_error(exc)
    if not caller.admin:
        services().limits.registered(address)
    data = _metadata(record, Caller(caller.admin, caller.actor, token))
    if secret is not None:
        data["client_secret"] = secret
        data["client_secret_expires_at"] = 0  # RFC 7591 §3.2.1: it does not expire
    headers = {**OAUTH_NO_STORE, "Location": data["registration_client_uri"]}
    return json_response(data, 201, headers)


def _lookup(client_id: str, admin_only: bool = False) -> tuple[ClientRecord, Caller] | Response:
    """The client named in the URL and the caller, or the error response."""
    try:
        caller = _authorise(client_id)
    except Denied as exc:
        return _denied(exc)
    if admin_only and not caller.admin:
        return _error(403, "insufficient_scope", f"this needs a token with {ADMIN_SCOPE}")
    record = domain_clients.find_client(db.session(), client_id)
    if record is None:
        return _not_found()
    return record, caller


@bp.get("/oauth/register/<client_id>")
def read(client_id: str) -> Response:
    """RFC 7592 §2.1: the client's current registration."""
    found = _lookup(client_id)
    if isinstance(found, Response):
        return found
    return json_response(_metadata(*found), 200, OAUTH_NO_STORE)


@bp.put("/oauth/register/<client_id>")
def update(client_id: str) -> Response:
    """RFC 7592 §2.2: update the registration.

    The body must carry the ``client_id``; a ``client_secret``, if sent, must be the current
    one (a client never chooses its secret). Members left out keep their values (§2.2 lets
    the server ignore omitted values); read-only members of the response are ignored.
    """
    found = _lookup(client_id)
    if isinstance(found, Response):
        return found
    current, caller = found
    body = _json_body()
    try:
        if not isinstance(body, dict):
            raise ValidationError("the request body must be a JSON object", "body")
        if body.get("client_id") != client_id:
            raise ValidationError("must be present and match the client being updated",
                                  "client_id")
        sent_secret = body.get("client_secret")
        if sent_secret is not None and not (
                isinstance(sent_secret, str) and current.check_client_secret(
                    sent_secret, services().clock())):
            raise ValidationError("does not match the current secret; rotate it with "
                                  "POST .../secret instead", "client_secret")
        base = client_admin.spec_of(current)
        spec = spec_from_metadata(body, base)
        if spec.public != current.public:
            raise ValidationError("cannot switch between public and confidential", "public")
        problem = None if caller.admin else (_privileged_change(spec, base)
                                             or _self_service(spec, base))
        if problem is not None:
            raise problem
        changes = {name: getattr(spec, name) for name in rules.SPEC_FIELDS if name != "public"}
        record = client_admin.update_client(db.session(), client_id, actor=caller.actor,
                                              **changes)
    except ValidationError as exc:
        db.session.rollback()
        return _validation_error(exc)
    _changed(client_id)
    return json_response(_metadata(record, caller), 200, OAUTH_NO_STORE)


@bp.delete("/oauth/register/<client_id>")
def remove(client_id: str) -> Response:
    """RFC 7592 §2.3: delete the client; every session it holds is revoked with it."""
    found = _lookup(client_id)
    if isinstance(found, Response):
        return found
    record, caller = found
    try:
        client_admin.delete_client(db.session(), record.client_id, actor=caller.actor)
    except NotFound:
        db.session.rollback()
        return _not_found()
    _changed(client_id)
    return Response(status=204, headers=OAUTH_NO_STORE)


@bp.post("/oauth/register/<client_id>/secret")
def rotate(client_id: str) -> Response:
    """A new secret, returned once; the old one keeps working for ``overlap_seconds``
    (default ``AUTHSERVER_CLIENT_SECRET_OVERLAP``), so deployments can roll over."""
    found = _lookup(client_id)
    if isinstance(found, Response):
        return found
    record, caller = found
    svc = services()
    body = _json_body() if request.get_data() else {}
    try:
        if not isinstance(body, dict):
            raise ValidationError("the request body must be a JSON object", "body")
        overlap = body.get("overlap_seconds", svc.settings.client_secret_overlap)
        now = svc.clock()
        secret = client_admin.rotate_secret(db.session(), record.client_id, overlap,
                                              actor=caller.actor, now=now)
    except ValidationError as exc:
        db.session.rollback()
        return _validation_error(exc)
    _changed(client_id)
    return json_response({
        "client_id": record.client_id, "client_secret": secret, "client_secret_expires_at": 0,
        "previous_secret_valid_for": overlap,
        "previous_secret_expires_at": int(now.timestamp()) + overlap if overlap else None,
    }, 200, OAUTH_NO_STORE)


def _set_active(client_id: str, active: bool) -> Response:
    found = _lookup(client_id, admin_only=True)
    if isinstance(found, Response):
        return found
    record, caller = found
    revoked = client_admin.set_active(db.session(), record.client_id, active, actor=caller.actor)
    _changed(client_id)
    return json_response({"client_id": record.client_id, "active": active,
                          "sessions_revoked": revoked}, 200, OAUTH_NO_STORE)


@bp.post("/oauth/register/<client_id>/disable")
def disable(client_id: str) -> Response:
    """Admins only: the client can no longer authenticate; its sessions are revoked."""
    return _set_active(client_id, False)


@bp.post("/oauth/register/<client_id>/enable")
def enable(client_id: str) -> Response:
    """Admins only: the client may authenticate again (revoked sessions stay revoked)."""
    return _set_active(client_id, True)
