"""Validating an authorization request (RFC 6749 §4.1.1, OAuth 2.1, OIDC Core §3.1.2).

Errors come in two kinds (RFC 6749 §4.1.2.1): until the client and its redirect URI are
known to be genuine, the user must see an error page and never be redirected
(``FatalAuthorizationError``); after that, errors go back to the client
(``RedirectAuthorizationError``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from . import pkce, redirect_uris, scopes
from .clients import ClientRecord
from .errors import ValidationError

MAX_STATE = 1024
MAX_NONCE = 512
PROMPTS = frozenset({"none", "login", "consent"})
SINGLE_VALUED = ("response_type", "client_id", "redirect_uri", "scope", "state", "nonce",
                 "code_challenge", "code_challenge_method", "prompt", "max_age",
                 "response_mode")


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

    repeated = [name for name in SINGLE_VALUED if len(params.get(name) or []) > 1]

    # 1. The client and redirect URI: failures here are never redirected.
    if "client_id" in repeated:
        raise FatalAuthorizationError("invalid_request", "client_id is repeated")
    client_id = one("client_id")
    if not client_id:
        raise FatalAuthorizationError("invalid_request", "client_id is missing")
    client = lookup(client_id) if len(client_id) <= 64 else None
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
    elif len(client.redirect_uris) == 1:
        redirect_uri = client.redirect_uris[0]
    else:
        raise FatalAuthorizationError("invalid_request", "redirect_uri is missing")

    # 2. Everything else goes back to the client.
    state = one("state")
    if state is not None and len(state) > MAX_STATE:
        raise RedirectAuthorizationError("invalid_request", "state is too long",
                                         redirect_uri, None)

    def fail(error: str, description: str) -> RedirectAuthorizationError:
        return RedirectAuthorizationError(error, description, redirect_uri, state)

    if repeated:
        raise fail("invalid_request", f"{repeated[0]} is repeated")
    if one("request") is not None:
        raise fail("request_not_supported", "request objects are not supported")
    if one("request_uri") is not None:
        raise fail("request_uri_not_supported", "request_uri is not supported")
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

    try:
        requested = scopes.parse(one("scope"))
    except ValidationError as exc:
        raise fail("invalid_scope", str(exc)) from None
    if any(s not in client.scope for s in requested):
        raise fail("invalid_scope", "the client may not request that scope")
    granted = requested or list(client.scope)

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
    if nonce is not None and (not nonce or len(nonce) > MAX_NONCE):
        raise fail("invalid_request", "nonce must be 1 to 512 characters")
    if "openid" in granted and nonce is None:
        raise fail("invalid_request", "nonce is required for openid requests")

    prompt = frozenset((one("prompt") or "").split())
    if not prompt <= PROMPTS:
        raise fail("invalid_request", "prompt may be none, login or consent")
    if "none" in prompt and len(prompt) > 1:
        raise fail("invalid_request", "prompt=none cannot be combined")

    max_age_raw = one("max_age")
    max_age = None
    if max_age_raw is not None:
        if not max_age_raw.isdigit() or len(max_age_raw) > 9:
            raise fail("invalid_request", "max_age must be a non-negative integer")
        max_age = int(max_age_raw)

    return AuthorizationRequest(
        client=client, redirect_uri=redirect_uri, redirect_uri_given=requested_uri is not None,
        scope=granted, state=state, nonce=nonce, code_challenge=challenge, prompt=prompt,
        max_age=max_age,
    )


def issues_refresh_token(client: ClientRecord, scope: Sequence[str]) -> bool:
    """A refresh token when the client may refresh; for openid only with offline_access
    (OIDC Core §11)."""
    if not client.check_grant_type("refresh_token"):
        return False
    return "openid" not in scope or "offline_access" in scope
