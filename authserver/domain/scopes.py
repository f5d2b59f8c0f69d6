"""Scope strings (RFC 6749 §3.3): space-separated tokens of printable ASCII."""

from __future__ import annotations

import re

from .errors import ScopeNotGranted, ValidationError

_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]+$")


def parse(scope: str | None, field: str = "scope") -> list[str]:
    """Split a scope string into unique tokens in order; raise on bad syntax."""
    if scope is None:
        return []
    tokens: list[str] = []
    for token in scope.split(" "):
        if token == "":
            continue
        if not _SCOPE_TOKEN.fullmatch(token) or len(token) > 128:
            raise ValidationError(f"invalid scope token {token[:40]!r}", field)
        if token not in tokens:
            tokens.append(token)
    return tokens


def render(tokens: list[str]) -> str:
    return " ".join(tokens)


def narrow(requested: str | None, granted: list[str]) -> list[str]:
    """The scope to issue: the request's if it is a subset of ``granted``, else raise.

    An absent or empty request means everything granted (RFC 6749 §3.3, §6).
    """
    try:
        wanted = parse(requested)
    except ValidationError as exc:
        raise ScopeNotGranted(str(exc)) from exc
    if not wanted:
        return list(granted)
    extra = [token for token in wanted if token not in granted]
    if extra:
        raise ScopeNotGranted("the requested scope exceeds what was granted")
    return wanted


OIDC_SCOPES = ("openid", "profile", "email", "offline_access")

# What the consent page tells a person each scope allows, in plain words.
DESCRIPTIONS = {
    "openid": "Confirm who you are when you sign in",
    "profile": "See your name and username",
    "email": "See your email address",
    "offline_access": "Stay signed in, and act for you while you are not using it",
}


def describe(scope: str) -> str:
    return DESCRIPTIONS.get(scope, f"Use the \u201c{scope}\u201d permission")
