"""The refresh-token cookie of a browser app (issue 12), as a browser sees it: the
``Set-Cookie`` headers of a response, parsed by hand so the tests check exactly what the
server wrote (RFC 6265bis §4.1: attributes, the ``__Host-`` prefix)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PREFIX = "__Host-refresh-"
# "Never expires": the longest a browser keeps a cookie (RFC 6265bis §5.6.2, 400 days).
NEVER_EXPIRES_MAX_AGE = 34_560_000
# What our cookie may carry; ``Expires`` is allowed beside ``Max-Age`` (which wins).
ALLOWED_ATTRIBUTES = {"secure", "httponly", "samesite", "path", "max-age", "expires"}


def cookie_name(client_id: str) -> str:
    return PREFIX + client_id


@dataclass(frozen=True)
class SetCookie:
    name: str
    value: str
    attributes: dict[str, str | None]  # lowercased names; None for a flag (Secure)

    @property
    def max_age(self) -> int | None:
        raw = self.attributes.get("max-age")
        return None if raw is None else int(raw)


def parse_set_cookie(header: str) -> SetCookie:
    pair, *parameters = header.split(";")
    name, _, value = pair.partition("=")
    attributes: dict[str, str | None] = {}
    for parameter in parameters:
        key, sep, raw = parameter.partition("=")
        attributes[key.strip().lower()] = raw.strip() if sep else None
    return SetCookie(name.strip(), value.strip(), attributes)


def refresh_cookies(set_cookie_headers: Iterable[str]) -> dict[str, SetCookie]:
    """Our ``__Host-refresh-*`` cookies among a response's ``Set-Cookie`` headers, by name."""
    parsed = [parse_set_cookie(header) for header in set_cookie_headers]
    return {cookie.name: cookie for cookie in parsed if cookie.name.startswith(PREFIX)}


def assert_cookie_attributes(cookie: SetCookie) -> None:
    """``Secure; HttpOnly; SameSite=Strict; Path=/``, no ``Domain``: what the ``__Host-``
    prefix demands and the browser-apps BCP asks of a cookie carrying credentials."""
    attributes = cookie.attributes
    assert set(attributes) <= ALLOWED_ATTRIBUTES, attributes
    assert "domain" not in attributes, attributes
    assert "secure" in attributes and attributes["secure"] is None, attributes
    assert "httponly" in attributes and attributes["httponly"] is None, attributes
    assert attributes.get("samesite") == "Strict", attributes
    assert attributes.get("path") == "/", attributes
    assert cookie.max_age is not None, attributes


def assert_refresh_cookie(cookie: SetCookie, max_age: int, tolerance: int = 5) -> None:
    """A live cookie whose ``Max-Age`` is ``max_age`` seconds (give or take ``tolerance``)."""
    assert_cookie_attributes(cookie)
    assert cookie.value.startswith("rt_"), cookie
    assert cookie.max_age is not None and abs(cookie.max_age - max_age) <= tolerance, (
        cookie.max_age, max_age)


def assert_expired(cookie: SetCookie) -> None:
    """The cookie is deleted: ``Max-Age=0`` with the same attributes (else the browser
    would not match it to the one it holds), and no token left in it."""
    assert_cookie_attributes(cookie)
    assert cookie.max_age == 0 and not cookie.value.startswith("rt_"), cookie
