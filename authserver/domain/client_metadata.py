"""What a client registration may say: the one set of rules the CLI, the registration API
and the admin pages share, and the one table of its fields' names (:data:`CLIENT_FIELDS`).

Each rule cites where it comes from; each failure is a :class:`ValidationError` naming the
field (RFC 7591 §3.2.2: the API turns it into ``invalid_redirect_uri`` or
``invalid_client_metadata``; the CLI into one line; the pages into a message by the field).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit

from . import scopes
from .binding import IP_POLICIES, MISMATCH_ACTIONS, BindingPolicy
from .errors import ValidationError
from .hostnames import HostError, check_host

SUPPORTED_GRANT_TYPES = ("authorization_code", "password", "client_credentials", "refresh_token")
# Grants that start a session (family) and so can hand out refresh tokens.
SIGN_IN_GRANTS = ("authorization_code", "password")
SUPPORTED_RESPONSE_TYPES = ("code",)
# RFC 7591 §2 token_endpoint_auth_method values this server implements.
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")

# Scopes that make a token an administrator's: only machine (client_credentials) clients
# registered by an admin may hold them.
ADMIN_SCOPE = "admin:clients"
ADMIN_SCOPE_PREFIX = "admin:"

ACCESS_TTL_BOUNDS = (60, 86_400)  # docs/design.md, "Tokens": per client 60 s to 1 day
REFRESH_IDLE_TTL_BOUNDS = (0, 31_536_000)  # 0 = no idle limit; at most a year
REFRESH_ABSOLUTE_TTL_BOUNDS = (0, 315_360_000)  # 0 = never expires, only revoked
REUSE_GRACE_BOUNDS = (0, 300)

DEFAULT_REFRESH_IDLE_TTL = 14 * 86_400
DEFAULT_REFRESH_ABSOLUTE_TTL = 90 * 86_400
DEFAULT_REUSE_GRACE = 10

MAX_NAME = 255
MAX_URIS = 100
MAX_URI_LENGTH = 2000
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
# Where a browser app's refresh token travels (docs/design.md, "Browser apps").
BODY, COOKIE = "body", "cookie"
REFRESH_TOKEN_DELIVERIES = (BODY, COOKIE)
DEFAULT_PORTS = {"http": 80, "https": 443}

BOOL, LIST, TTL, CHOICE, TEXT = "bool", "list", "ttl", "choice", "text"


@dataclass(frozen=True)
class ClientField:
    """One registration field, as each of its three editors names it."""

    name: str  # the ClientSpec attribute, and what a ValidationError names
    kind: str  # BOOL, LIST, TTL, CHOICE or TEXT
    api: str  # the registration API's JSON member (RFC 7591 §2; our policy fields: ``name``)
    option: str  # the CLI option an error message names
    label: str  # what the admin form shows (its errors name the field so)
    bounds: tuple[int, int] | None = None  # TTL: the seconds allowed
    choices: tuple[str, ...] = ()  # CHOICE, and a LIST of fixed values


# In ClientSpec's order. ``public`` is given as token_endpoint_auth_method to the API
# (RFC 7591 §2) and as "Type" (client_type) on the admin form.
CLIENT_FIELDS = (
    ClientField("name", TEXT, "client_name", "--name", "Name"),
    ClientField("public", BOOL, "token_endpoint_auth_method", "--public", "Type"),
    ClientField("first_party", BOOL, "first_party", "--first-party", "First-party"),
    ClientField("grant_types", LIST, "grant_types", "--grant-type", "Grant types",
                choices=SUPPORTED_GRANT_TYPES),
    ClientField("redirect_uris", LIST, "redirect_uris", "--redirect-uri", "Redirect URIs"),
    ClientField("post_logout_redirect_uris", LIST, "post_logout_redirect_uris",
                "--post-logout-redirect-uri", "Post-logout redirect URIs"),
    ClientField("web_origins", LIST, "web_origins", "--web-origin", "Web origins"),
    ClientField("refresh_token_delivery", CHOICE, "refresh_token_delivery",
                "--refresh-token-delivery", "Refresh token delivery",
                choices=REFRESH_TOKEN_DELIVERIES),
    ClientField("scope", TEXT, "scope", "--scope", "Allowed scopes"),
    ClientField("access_token_ttl", TTL, "access_token_ttl", "--access-ttl",
                "Access-token lifetime", bounds=ACCESS_TTL_BOUNDS),
    ClientField("refresh_idle_ttl", TTL, "refresh_idle_ttl", "--refresh-idle-ttl",
                "Refresh idle lifetime", bounds=REFRESH_IDLE_TTL_BOUNDS),
    ClientField("refresh_absolute_ttl", TTL, "refresh_absolute_ttl", "--refresh-absolute-ttl",
                "Session lifetime", bounds=REFRESH_ABSOLUTE_TTL_BOUNDS),
    ClientField("reuse_grace", TTL, "reuse_grace", "--reuse-grace", "Reuse grace window",
                bounds=REUSE_GRACE_BOUNDS),
    ClientField("bind_device_id", BOOL, "bind_device_id", "--bind-device-id",
                "Device id must match"),
    ClientField("bind_user_agent", BOOL, "bind_user_agent", "--bind-user-agent",
                "App/browser must match"),
    ClientField("bind_ip", CHOICE, "bind_ip", "--bind-ip", "IP network must match",
                choices=IP_POLICIES),
    ClientField("require_device_id", BOOL, "require_device_id", "--require-device-id",
                "Require a device id"),
    ClientField("on_binding_mismatch", CHOICE, "on_binding_mismatch", "--on-binding-mismatch",
                "On a mismatch", choices=MISMATCH_ACTIONS),
    ClientField("require_dpop", BOOL, "require_dpop", "--require-dpop", "Require DPoP"),
    ClientField("allow_introspection", BOOL, "allow_introspection", "--allow-introspection",
                "May introspect tokens"),
    # OpenID Connect Back-Channel Logout 1.0 §2.2 (docs/design.md, "Revocation that reaches
    # APIs"): where logout tokens are POSTed, and whether the client needs their ``sid``.
    ClientField("backchannel_logout_uri", TEXT, "backchannel_logout_uri",
                "--backchannel-logout-uri", "Back-channel logout URI"),
    ClientField("backchannel_logout_session_required", BOOL,
                "backchannel_logout_session_required", "--backchannel-logout-session-required",
                "Back-channel logout needs the session id"),
)
BOOL_FIELDS = tuple(f.name for f in CLIENT_FIELDS if f.kind == BOOL)
LIST_FIELDS = tuple(f.name for f in CLIENT_FIELDS if f.kind == LIST)
TTL_FIELDS = {f.name: f.bounds for f in CLIENT_FIELDS if f.kind == TTL and f.bounds}


@dataclass
class ClientSpec:
    """Registration input, as given by an admin (CLI, API or page)."""

    name: str
    public: bool = False
    first_party: bool = False
    grant_types: list[str] = field(default_factory=list)
    redirect_uris: list[str] = field(default_factory=list)
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    web_origins: list[str] = field(default_factory=list)
    refresh_token_delivery: str = BODY
    scope: str = ""
    access_token_ttl: int | None = None
    refresh_idle_ttl: int = DEFAULT_REFRESH_IDLE_TTL
    refresh_absolute_ttl: int = DEFAULT_REFRESH_ABSOLUTE_TTL
    reuse_grace: int = DEFAULT_REUSE_GRACE
    bind_device_id: bool = True
    bind_user_agent: bool = True
    bind_ip: str = "off"
    require_device_id: bool = False
    on_binding_mismatch: str = "revoke"
    require_dpop: bool = False
    allow_introspection: bool = False
    backchannel_logout_uri: str | None = None
    backchannel_logout_session_required: bool = False

    def binding(self) -> BindingPolicy:
        return BindingPolicy(
            device_id=self.bind_device_id, user_agent=self.bind_user_agent, ip=self.bind_ip,
            require_device_id=self.require_device_id, on_mismatch=self.on_binding_mismatch,
            require_dpop=self.require_dpop,
        ).validate()


SPEC_FIELDS = [f.name for f in dataclasses.fields(ClientSpec)]


def default_grant_types(spec: ClientSpec) -> list[str]:
    """Apps with redirect URIs sign users in through the browser; first-party apps without
    them use the password grant; other confidential clients are machines."""
    if spec.redirect_uris:
        return ["authorization_code", "refresh_token"]
    if spec.first_party:
        return ["password", "refresh_token"]
    if not spec.public:
        return ["client_credentials"]
    raise ValidationError("a public client needs a redirect URI (or must be first-party)",
                          "redirect_uris")


def _has_control_characters(text: str) -> bool:
    """Control characters, or lone surrogates (JSON allows them; UTF-8 cannot store them)."""
    return any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in text)


def _split_uri(uri: object, noun: str, field_name: str
               ) -> tuple[SplitResult, Callable[[str], ValidationError]]:
    """The checks every URI of a registration shares (a non-empty string of bounded length,
    no spaces or control characters, parseable with its port); its parts, and the
    ``fail(why)`` that names it."""

    def fail(why: str) -> ValidationError:
        return ValidationError(f"{noun} {str(uri)[:80]!r} {why}", field_name)

    if not isinstance(uri, str) or not uri:
        raise ValidationError(f"a {noun} must be a non-empty string", field_name)
    if len(uri) > MAX_URI_LENGTH:
        raise fail(f"is longer than {MAX_URI_LENGTH} characters")
    if _has_control_characters(uri) or " " in uri:
        raise fail("contains spaces or control characters")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - parsing the port validates it
    except ValueError:
        raise fail("is not a valid URI") from None
    return parts, fail


# RFC 8252 §7.1: a private-use scheme is a domain name the app's owner controls, reversed:
# two or more DNS labels (RFC 3986 §3.1 then requires the first to start with a letter).
_REVERSED_DOMAIN = re.compile(r"[a-z][a-z0-9-]{0,62}(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))+")


def is_private_use_scheme(uri: str) -> bool:
    """A URI whose scheme is neither ``http`` nor ``https`` (for a checked redirect URI:
    a private-use scheme, RFC 8252 §7.1)."""
    scheme, colon, _ = uri.partition(":")
    return bool(colon) and scheme.lower() not in ("http", "https")


def _check_uri_host(parts: SplitResult, fail: Callable[[str], ValidationError]) -> None:
    """An ASCII host, international names as valid single-script A-labels
    (``domain/hostnames.py``)."""
    if parts.hostname is None:
        return
    try:
        check_host(parts.hostname, bracketed="[" in parts.netloc)
    except HostError as exc:
        raise fail(str(exc)) from None


def check_redirect_uri(uri: str, field_name: str = "redirect_uris") -> None:
    """RFC 6749 §3.1.2 and RFC 8252 §7: absolute, no fragment, no credentials; ``https``,
    except ``http`` to a loopback host (§7.3) and a private-use scheme that is a reversed
    domain name (§7.1), such as ``com.example.app:/callback``. A host is ASCII: an
    international name in its IDNA A-label form, of one script (docs/design.md,
    "Hardening")."""

    parts, fail = _split_uri(uri, "redirect URI", field_name)
    if "#" in uri:
        raise fail("must not contain a fragment (RFC 6749 §3.1.2)")
    if not parts.scheme:
        raise fail("must be an absolute URI")
    if parts.username is not None or parts.password is not None:
        raise fail("must not contain a user name or password")
    if parts.scheme in ("http", "https"):
        if not parts.hostname:
            raise fail("has no host")
        _check_uri_host(parts, fail)
        if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
            raise fail("must use https (http only for a loopback address, RFC 8252 §7.3)")
        return
    if not _REVERSED_DOMAIN.fullmatch(parts.scheme):
        raise fail("uses a scheme that is neither https nor a private-use scheme named "
                   "by a reversed domain, like com.example.app (RFC 8252 §7.1)")
    if not parts.netloc and not parts.path.startswith("/"):
        raise fail("must be absolute: a private-use URI looks like com.example.app:/callback")
    _check_uri_host(parts, fail)


def _check_confidential_redirects(spec: ClientSpec) -> None:
    """A private-use scheme reaches an app on a device, which cannot keep a client secret
    (RFC 8252 §8.4): such a client is public, and a confidential client redirects to
    ``https`` (or loopback ``http``) only."""
    if spec.public:
        return
    for name in ("redirect_uris", "post_logout_redirect_uris"):
        for uri in getattr(spec, name):
            if is_private_use_scheme(uri):
                raise ValidationError(
                    f"redirect URI {uri[:80]!r} uses a private-use scheme, which is for "
                    "apps on a device: register the client as public (no secret; RFC 8252 "
                    "§8.4), or use an https redirect URI", name)


def check_backchannel_logout_uri(uri: object) -> str | None:
    """OpenID Connect Back-Channel Logout 1.0 §2.2: an absolute URI, no fragment; here
    ``https``, or ``http`` to a loopback host as for redirect URIs (RFC 8252 §7.3). It may
    carry a port, a path and a query. Empty means none; returns the URI or None."""
    field_name = "backchannel_logout_uri"
    if uri is None or uri == "":
        return None
    if not isinstance(uri, str):
        raise ValidationError("backchannel_logout_uri must be a string", field_name)
    parts, fail = _split_uri(uri, "back-channel logout URI", field_name)
    if "#" in uri:
        raise fail("must not contain a fragment (Back-Channel Logout §2.2)")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise fail("must be an absolute https URI")
    if parts.username is not None or parts.password is not None:
        raise fail("must not contain a user name or password")
    if not parts.hostname:
        raise fail("has no host")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS:
        raise fail("must use https (http only for a loopback address)")
    return uri


def web_origin(origin: object) -> str:
    """A web origin (RFC 6454 §6.1) as a browser sends it in ``Origin``: ``scheme://host``
    with the port only when it is not the scheme's default, lowercase, no path. ``https``,
    or ``http`` to a loopback host, as for redirect URIs (RFC 8252 §7.3)."""
    parts, fail = _split_uri(origin, "web origin", "web_origins")
    port = parts.port
    if parts.scheme.lower() not in DEFAULT_PORTS or not parts.netloc:
        raise fail("must look like https://app.example.com[:port]")
    text = str(origin)  # a string: _split_uri checked it
    if parts.path not in ("", "/") or parts.query or parts.fragment or "?" in text \
            or "#" in text:
        raise fail("must be scheme://host[:port] alone: no path, query or fragment")
    if parts.username is not None or parts.password is not None or not parts.hostname:
        raise fail("must name a host, without a user name or password")
    scheme, host = parts.scheme.lower(), parts.hostname.lower()
    if "*" in host:
        raise fail("must name one host: wildcards are not allowed")
    _check_uri_host(parts, fail)
    if scheme == "http" and host not in LOOPBACK_HOSTS:
        raise fail("must use https (http only for a loopback address)")
    shown = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS[scheme]:
        shown += f":{port}"
    return f"{scheme}://{shown}"


def check_response_types(response_types: object, grant_types: list[str]) -> list[str]:
    """RFC 7591 §2.1: ``code`` is the response type of the ``authorization_code`` grant,
    and each needs the other. Only ``code`` is supported (no implicit or hybrid flows)."""
    if not isinstance(response_types, list) or not all(
            isinstance(r, str) for r in response_types):
        raise ValidationError("response_types must be a list of strings", "response_types")
    unsupported = [r for r in response_types if r not in SUPPORTED_RESPONSE_TYPES]
    if unsupported:
        raise ValidationError(f"unsupported response type {unsupported[0][:40]!r}; only "
                              "'code' is supported", "response_types")
    if ("code" in response_types) != ("authorization_code" in grant_types):
        raise ValidationError("response type 'code' and grant type 'authorization_code' go "
                              "together (RFC 7591 §2.1)", "response_types")
    return list(dict.fromkeys(response_types))


def response_types_for(grant_types: list[str] | tuple[str, ...]) -> list[str]:
    """The response types that are consistent with ``grant_types`` (RFC 7591 §2.1)."""
    return ["code"] if "authorization_code" in grant_types else []


def public_for_auth_method(method: object) -> bool:
    """RFC 7591 §2: ``none`` is a public client; the secret methods a confidential one."""
    if method not in AUTH_METHODS:
        raise ValidationError(f"token_endpoint_auth_method must be one of "
                              f"{', '.join(AUTH_METHODS)}", "token_endpoint_auth_method")
    return method == "none"


def has_admin_scope(scope: str | list[str] | tuple[str, ...]) -> bool:
    tokens = scopes.parse(scope) if isinstance(scope, str) else list(scope)
    return any(token.startswith(ADMIN_SCOPE_PREFIX) for token in tokens)


def _check_types(spec: ClientSpec) -> None:
    """Input from JSON may be of any type: refuse the wrong ones by name, before use."""
    if not isinstance(spec.name, str):
        raise ValidationError("name must be a string", "name")
    if not isinstance(spec.scope, str):
        raise ValidationError("scope must be a string of space-separated scopes", "scope")
    for name in BOOL_FIELDS:
        if not isinstance(getattr(spec, name), bool):
            raise ValidationError(f"{name} must be true or false", name)
    for name in LIST_FIELDS:
        value = getattr(spec, name)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(f"{name} must be a list of strings", name)
        if len(value) > MAX_URIS:
            raise ValidationError(f"{name} may hold at most {MAX_URIS} entries", name)
    for name in ("bind_ip", "on_binding_mismatch", "refresh_token_delivery"):
        if not isinstance(getattr(spec, name), str):
            raise ValidationError(f"{name} must be a string", name)
    for name, (low, high) in TTL_FIELDS.items():
        value = getattr(spec, name)
        if value is None and name == "access_token_ttl":
            continue  # the server's default
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValidationError(f"{name} must be a whole number of seconds from {low} to "
                                  f"{high}", name)


def _check_grant_types(spec: ClientSpec, grant_types: list[str]) -> None:
    unknown = [g for g in grant_types if g not in SUPPORTED_GRANT_TYPES]
    if unknown:
        raise ValidationError(f"unsupported grant type {unknown[0][:40]!r}; supported: "
                              f"{', '.join(SUPPORTED_GRANT_TYPES)}", "grant_types")
    if spec.public and "client_credentials" in grant_types:
        # RFC 6749 §4.4: the client credentials grant is for confidential clients only.
        raise ValidationError("a public client cannot use client_credentials", "grant_types")
    if "password" in grant_types and not spec.first_party:
        # RFC 9700 §2.4: the password grant only for our own, trusted apps.
        raise ValidationError("the password grant is only for first-party clients",
                              "grant_types")
    if "refresh_token" in grant_types and not set(SIGN_IN_GRANTS) & set(grant_types):
        raise ValidationError("refresh_token needs authorization_code or password: only a "
                              "sign-in issues refresh tokens", "grant_types")
    if "authorization_code" in grant_types and not spec.redirect_uris:
        raise ValidationError("the authorization_code grant needs at least one redirect URI",
                              "redirect_uris")


def _check_delivery(spec: ClientSpec, origins: list[str]) -> None:
    """The refresh token in an HttpOnly cookie is for browser apps: public clients whose
    code runs on a registered web origin (docs/design.md, "Browser apps")."""
    if spec.refresh_token_delivery not in REFRESH_TOKEN_DELIVERIES:
        raise ValidationError("refresh_token_delivery must be 'body' or 'cookie'",
                              "refresh_token_delivery")
    if spec.refresh_token_delivery == COOKIE and not (spec.public and origins):
        raise ValidationError("cookie delivery is only for public clients with at least one "
                              "web origin (a browser app)", "refresh_token_delivery")


def validate_spec(spec: ClientSpec) -> ClientSpec:
    """Check a registration; return it normalised, with defaults filled in.

    Raises :class:`ValidationError` naming the first field that is wrong.
    """
    _check_types(spec)
    name = spec.name.strip()
    if not name or len(name) > MAX_NAME:
        raise ValidationError(f"name must be 1 to {MAX_NAME} characters", "name")
    if _has_control_characters(name):
        raise ValidationError("name must not contain control characters", "name")
    grant_types = list(dict.fromkeys(spec.grant_types)) or default_grant_types(spec)
    _check_grant_types(spec, grant_types)
    for uri in spec.redirect_uris:
        check_redirect_uri(uri, "redirect_uris")
    for uri in spec.post_logout_redirect_uris:
        check_redirect_uri(uri, "post_logout_redirect_uris")
    _check_confidential_redirects(spec)
    scope_tokens = scopes.parse(spec.scope)
    if has_admin_scope(scope_tokens) and (spec.public or "client_credentials" not in grant_types
                                          or set(SIGN_IN_GRANTS) & set(grant_types)):
        # An admin token must stand for a machine the operator trusts, never for a user.
        raise ValidationError(f"{ADMIN_SCOPE_PREFIX}* scopes are only for confidential clients "
                              "that use client_credentials and no sign-in grant", "scope")
    if spec.public and spec.allow_introspection:
        raise ValidationError("only confidential clients may introspect tokens",
                              "allow_introspection")
    spec.binding()
    origins = list(dict.fromkeys(web_origin(origin) for origin in spec.web_origins))
    _check_delivery(spec, origins)
    logout_uri = check_backchannel_logout_uri(spec.backchannel_logout_uri)
    return dataclasses.replace(
        spec, name=name, grant_types=grant_types, scope=scopes.render(scope_tokens),
        web_origins=origins, backchannel_logout_uri=logout_uri,
        redirect_uris=list(dict.fromkeys(spec.redirect_uris)),
        post_logout_redirect_uris=list(dict.fromkeys(spec.post_logout_redirect_uris)),
    )


# -- What a client may choose without an admin -------------------------------------------


@dataclass(frozen=True)
class SelfServiceLimits:
    """The server's side of :func:`self_service_problem`: its default access-token lifetime
    (the longest a registration without an admin may ask for) and whether back-channel
    logout URIs may name private addresses (development, or the operator's setting)."""

    access_token_ttl: int
    allow_private_addresses: bool


_DEFAULTS = ClientSpec(name="")
# Stronger last: a registration may choose a stronger reaction, never a weaker one.
_MISMATCH_STRENGTH = ("reject", "revoke")
_LIMITED_TTLS = {  # field: (the most a registration may choose, and 0 = never is refused)
    "refresh_idle_ttl": DEFAULT_REFRESH_IDLE_TTL,
    "refresh_absolute_ttl": DEFAULT_REFRESH_ABSOLUTE_TTL,
}


def _private_host(host: str) -> bool:
    """A host name or literal that names this machine or a private network."""
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a DNS name: the sender checks what it resolves to at delivery
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def self_service_problem(spec: ClientSpec, base: ClientSpec | None,
                         limits: SelfServiceLimits) -> ValidationError | None:
    """What a registration without an admin (open registration, or a client updating
    itself with its registration token) may not choose, for a validated ``spec``: longer
    lifetimes than the server's defaults or none at all, a weaker device binding than the
    default, the ``client_credentials`` grant (a machine client the operator never
    approved), and a back-channel logout URI at a private address in production. A value
    the client already has (``base``: set by an admin) may stay. The first problem, naming
    its field, or None (docs/design.md, "Operations")."""

    def kept(name: str) -> bool:
        return base is not None and getattr(spec, name) == getattr(base, name)

    ttl = spec.access_token_ttl
    if ttl is not None and ttl > limits.access_token_ttl and not kept("access_token_ttl"):
        return ValidationError(f"access_token_ttl may be at most {limits.access_token_ttl} "
                               "seconds without an admin", "access_token_ttl")
    for name, most in _LIMITED_TTLS.items():
        value = getattr(spec, name)
        if not 0 < value <= most and not kept(name):
            return ValidationError(f"{name} must be from 1 to {most} seconds without an "
                                   "admin (0, never expiring, only with one)", name)
    if spec.reuse_grace > DEFAULT_REUSE_GRACE and not kept("reuse_grace"):
        return ValidationError(f"reuse_grace may be at most {DEFAULT_REUSE_GRACE} seconds "
                               "without an admin", "reuse_grace")
    for name in ("bind_device_id", "bind_user_agent", "require_device_id", "require_dpop"):
        if getattr(_DEFAULTS, name) and not getattr(spec, name) and not kept(name):
            return ValidationError(f"only an admin may turn {name} off", name)
    if _DEFAULTS.bind_ip != "off" and spec.bind_ip == "off" and not kept("bind_ip"):
        return ValidationError("only an admin may turn bind_ip off", "bind_ip")
    if (_MISMATCH_STRENGTH.index(spec.on_binding_mismatch)
            < _MISMATCH_STRENGTH.index(_DEFAULTS.on_binding_mismatch)
            and not kept("on_binding_mismatch")):
        return ValidationError(f"only an admin may set on_binding_mismatch to "
                               f"{spec.on_binding_mismatch!r}", "on_binding_mismatch")
    if "client_credentials" in spec.grant_types and not (
            base is not None and "client_credentials" in base.grant_types):
        return ValidationError("only an admin may register a client_credentials client",
                               "grant_types")
    uri = spec.backchannel_logout_uri
    if uri and not limits.allow_private_addresses and not kept("backchannel_logout_uri"):
        host = urlsplit(uri).hostname or ""
        if _private_host(host):
            return ValidationError(f"back-channel logout URI {uri[:80]!r} names a private or "
                                   "loopback address: only an admin may register one",
                                   "backchannel_logout_uri")
    return None
