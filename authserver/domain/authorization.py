"""Validating an authorization request (RFC 6749 §4.1.1, OAuth 2.1, OIDC Core §3.1.2).

Errors come in two kinds (RFC 6749 §4.1.2.1): until the client and its redirect URI are
known to be genuine, the user must see an error page and never be redirected
(``FatalAuthorizationError``); after that, errors go back to the client
(``RedirectAuthorizationError``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from . import pkce, redirect_uris, scopes
from .clients import ClientRecord
from .errors import ValidationError

MAX_STATE = 1024
MAX_NONCE = 512
MAX_LOGIN_HINT = 256
PROMPTS = frozenset({"none", "login", "consent"})
SINGLE_VALUED = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
                 "code_challenge", "code_challenge_method", "prompt", "max_age",
                 "response_mode", "login_hint", "id_token_hint", "request", "request_uri",
                 "registration", "claims", "display", "ui_locales", "acr_values")
# Scopes a request must name itself: without ``scope`` it is a plain OAuth request
# (OIDC Core §3.1.2.1: an OpenID request MUST contain ``openid``).
OIDC_ONLY = frozenset(scopes.OIDC_SCOPES)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class AuthorizationRequest:
    client: ClientRecord
    redirect_uri: str
    redirect_uri_given: bool
    scope: list[str]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: frozenset[str]
    max_age: int | None
    login_hint: str | None = None

    @property
    def openid(self) -> bool:
        return "openid" in self.scope


class AuthorizationError(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


class FatalAuthorizationError(AuthorizationError):
    """Shown to the user; never redirected (unknown client, unregistered redirect URI)."""


class RedirectAuthorizationError(AuthorizationError):
    """Sent to the client's redirect URI with ``error`` and the request's ``state``."""

    def __init__(self, error: str, description: str, redirect_uri: str,
                 state: str | None) -> None:
        super().__init__(error, description)
        self.redirect_uri = redirect_uri
        self.state = state


def pkce_required(client: ClientRecord) -> bool:
    """RFC 9700 §2.1.1: PKCE for every public client (confidential ones may use it)."""
    return client.public


def parse(
    params: Mapping[str, Sequence[str]],
    lookup: Callable[[str], ClientRecord | None],
) -> AuthorizationRequest:
    """Validate the request parameters; raise one of the two error kinds."""

    def one(name: str) -> str | None:
        values = params.get(name) or []
        return values[0] if values else None

    # RFC 6749 §3.1: "Request and response parameters MUST NOT be included more than once."
    repeated = [name for name in SINGLE_VALUED if len(params.get(name) or []) > 1]

    # 1. The client and redirect URI: failures here are never redirected (§4.1.2.1).
    if "client_id" in repeated:
        raise FatalAuthorizationError("invalid_request", "client_id is repeated")
    client_id = one("client_id")
    if not client_id:
        raise FatalAuthorizationError("invalid_request", "client_id is missing")
    valid_id = len(client_id) <= 64 and not _CONTROL.search(client_id)
    client = lookup(client_id) if valid_id else None
    if client is None or not client.active:
        raise FatalAuthorizationError("invalid_client", "unknown client")
    if "redirect_uri" in repeated:
        raise FatalAuthorizationError("invalid_request", "redirect_uri is repeated")
    requested_uri = one("redirect_uri")
    if requested_uri is not None:
        if not redirect_uris.matches(requested_uri, client.redirect_uris):
            raise FatalAuthorizationError(
                "invalid_request", "the redirect_uri is not registered for this client")
        redirect_uri = requested_uri
    elif "openid" in (one("scope") or "").split(" "):
        # OIDC Core §3.1.2.1: redirect_uri is REQUIRED in an OpenID Connect request.
        raise FatalAuthorizationError("invalid_request",
                                      "redirect_uri is required for OpenID Connect requests")
    elif len(client.redirect_uris) == 1:
        redirect_uri = client.redirect_uris[0]  # RFC 6749 §3.1.2.3: the only one registered
    else:
        raise FatalAuthorizationError("invalid_request", "redirect_uri is missing")

    # 2. Everything else goes back to the client, with its state when that is unambiguous.
    state = None if "state" in repeated else one("state")
    if state is not None and len(state) > MAX_STATE:
        raise RedirectAuthorizationError("invalid_request",
                                         f"state is longer than {MAX_STATE} characters",
                                         redirect_uri, None)

    def fail(error: str, description: str) -> RedirectAuthorizationError:
        return RedirectAuthorizationError(error, description, redirect_uri, state)

    if repeated:
        raise fail("invalid_request", f"{repeated[0]} is repeated")
    if one("request") is not None:
        raise fail("request_not_supported", "request objects are not supported")
    if one("request_uri") is not None:
        raise fail("request_uri_not_supported", "request_uri is not supported")
    if one("registration") is not None:
        raise fail("registration_not_supported", "the registration parameter is not supported")
    response_type = one("response_type")
    if not response_type:
        raise fail("invalid_request", "response_type is missing")
    if response_type != "code":
        raise fail("unsupported_response_type", "only response_type=code is supported")
    if not client.check_grant_type("authorization_code"):
        raise fail("unauthorized_client", "the client may not use the authorization code grant")
    response_mode = one("response_mode")
    if response_mode not in (None, "query"):
        raise fail("invalid_request", "only response_mode=query is supported")

    # RFC 6749 §3.3: an absent scope gets the client's registered (non-OIDC) scopes.
    try:
        requested = scopes.parse(one("scope"))
    except ValidationError as exc:
        raise fail("invalid_scope", str(exc)) from None
    unknown = [s for s in requested if s not in client.scope]
    if unknown:
        raise fail("invalid_scope", f"the client may not request the scope {unknown[0][:40]}")
    granted = requested or [s for s in client.scope if s not in OIDC_ONLY]

    # RFC 7636 with S256 only (RFC 9700 §2.1.1); a challenge without a method means plain.
    challenge = one("code_challenge")
    method = one("code_challenge_method")
    if method is not None and method != "S256":
        raise fail("invalid_request", "code_challenge_method must be S256")
    if challenge is None:
        if method is not None:
            raise fail("invalid_request", "code_challenge is missing")
        if pkce_required(client):
            raise fail("invalid_request", "PKCE is required: send code_challenge (S256)")
    else:
        if method is None:
            raise fail("invalid_request", "code_challenge_method=S256 is required")
        if not pkce.valid_challenge(challenge):
            raise fail("invalid_request", "code_challenge is not a S256 challenge")

    nonce = one("nonce")
    if nonce is not None and (not nonce or len(nonce) > MAX_NONCE or _CONTROL.search(nonce)):
        raise fail("invalid_request", f"nonce must be 1 to {MAX_NONCE} printable characters")
    if "openid" in granted and nonce is None:
        raise fail("invalid_request", "nonce is required for openid requests")

    # OIDC Core §3.1.2.1: prompt and max_age.
    prompt = frozenset((one("prompt") or "").split())
    if not prompt <= PROMPTS:
        raise fail("invalid_request", "prompt may be none, login or consent")
    if "none" in prompt and len(prompt) > 1:
        raise fail("invalid_request", "prompt=none cannot be combined")

    max_age_raw = one("max_age")
    max_age = None
    if max_age_raw is not None:
        if not max_age_raw.isascii() or not max_age_raw.isdigit() or len(max_age_raw) > 9:
            raise fail("invalid_request", "max_age must be a non-negative integer")
        max_age = int(max_age_raw)

    # A hint only pre-fills the sign-in form; an unusable one is ignored.
    login_hint = one("login_hint")
    if login_hint is not None and (len(login_hint) > MAX_LOGIN_HINT
                                   or _CONTROL.search(login_hint)):
        login_hint = None

    return AuthorizationRequest(
        client=client, redirect_uri=redirect_uri, redirect_uri_given=requested_uri is not None,
        scope=granted, state=state, nonce=nonce, code_challenge=challenge, prompt=prompt,
        max_age=max_age, login_hint=login_hint,
    )


def issues_refresh_token(client: ClientRecord, scope: Sequence[str]) -> bool:
    """A refresh token when the client may refresh; for openid only with offline_access
    (OIDC Core §11)."""
    if not client.check_grant_type("refresh_token"):
        return False
    return "openid" not in scope or "offline_access" in scope
