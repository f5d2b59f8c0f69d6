"""The few HTTP requests a resource server makes (metadata, JWKS, introspection).

Standard library only. Any object with the same ``get``/``post`` methods can replace
:class:`UrllibClient` (a shared session, a test double).
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

MAX_BODY = 1_048_576
USER_AGENT = "authserver-resource/1"


class HttpError(Exception):
    """The request could not be made or its answer could not be read."""


@dataclass(frozen=True)
class HttpResponse:
    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HttpError("the response is not JSON") from exc


class HttpClient(Protocol):
    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> HttpResponse: ...

    def post(self, url: str, form: Mapping[str, str], headers: Mapping[str, str],
             timeout: float) -> HttpResponse: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Never follow redirects: a jwks_uri or introspection endpoint is used exactly."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class UrllibClient:
    """HTTP(S) with urllib: certificate verification on, no redirects, bounded bodies."""

    def __init__(self) -> None:
        self._opener = urllib.request.build_opener(_NoRedirect())

    def _send(self, request: urllib.request.Request, timeout: float) -> HttpResponse:
        request.add_header("User-Agent", USER_AGENT)
        try:
            with self._opener.open(request, timeout=timeout) as response:
                body = response.read(MAX_BODY + 1)
                if len(body) > MAX_BODY:
                    raise HttpError("the response is too large")
                return HttpResponse(response.status, body,
                                    {k.lower(): v for k, v in response.headers.items()})
        except urllib.error.HTTPError as exc:  # a status outside 2xx is still an answer
            body = exc.read(MAX_BODY + 1) if exc.fp else b""
            return HttpResponse(exc.code, body, {k.lower(): v for k, v in exc.headers.items()})
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise HttpError(f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}") from exc

    def get(self, url: str, headers: Mapping[str, str], timeout: float) -> HttpResponse:
        _check_scheme(url)
        request = urllib.request.Request(url, headers=dict(headers))  # noqa: S310 - scheme checked
        return self._send(request, timeout)

    def post(self, url: str, form: Mapping[str, str], headers: Mapping[str, str],
             timeout: float) -> HttpResponse:
        _check_scheme(url)
        data = urllib.parse.urlencode(dict(form)).encode()
        request = urllib.request.Request(  # noqa: S310 - scheme checked above
            url, data=data, method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
        return self._send(request, timeout)


def _check_scheme(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise HttpError(f"not an http(s) URL: {url[:100]!r}")


_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-store|no-cache)\s*(?:,|=|$)", re.IGNORECASE)


def freshness(response: HttpResponse, default: float) -> float:
    """RFC 9111 §4.2.1: seconds the response stays fresh (``max-age`` minus ``Age``)."""
    cache_control = response.header("Cache-Control") or ""
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    if not match:
        return default
    lifetime = float(match.group(1))
    age = response.header("Age")
    if age and age.strip().isdigit():
        lifetime -= float(age.strip())
    return max(lifetime, 0.0)
