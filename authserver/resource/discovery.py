"""Authorization server metadata: RFC 8414 §3, falling back to OpenID Connect Discovery."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .errors import VerifierUnavailable
from .http import HttpClient, HttpError

log = logging.getLogger(__name__)


def metadata_urls(issuer: str) -> list[str]:
    """Where the metadata lives: RFC 8414 §3.1 inserts the well-known segment before the
    issuer's path; OIDC Discovery §4 appends it to the issuer."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit((parts.scheme, parts.netloc,
                          "/.well-known/oauth-authorization-server" + path, "", ""))
    oidc = issuer.rstrip("/") + "/.well-known/openid-configuration"
    return [rfc8414, oidc]


def check_endpoint(issuer: str, url: Any, name: str) -> str:
    """An endpoint from metadata must be an absolute URL, https when the issuer is."""
    if not isinstance(url, str):
        raise VerifierUnavailable(f"the authorization server metadata has no {name}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise VerifierUnavailable(f"the metadata's {name} is not an absolute URL")
    if urlsplit(issuer).scheme == "https" and parts.scheme != "https":
        raise VerifierUnavailable(f"the metadata's {name} must use https")
    return url


class Metadata:
    """The issuer's metadata document, fetched once (retried at most every ``retry`` s)."""

    def __init__(self, issuer: str, http: HttpClient, *, timeout: float, retry: float,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self.issuer = issuer
        self._http = http
        self._timeout = timeout
        self._retry = retry
        self._timer = timer
        self._lock = threading.Lock()
        self._document: dict[str, Any] | None = None
        self._failed_at: float | None = None
        self.fetches = 0

    def endpoint(self, name: str) -> str:
        return check_endpoint(self.issuer, self.document().get(name), name)

    def document(self) -> dict[str, Any]:
        if self._document is not None:
            return self._document
        with self._lock:
            if self._document is not None:
                return self._document
            if self._failed_at is not None and self._timer() - self._failed_at < self._retry:
                raise VerifierUnavailable("the authorization server metadata is unavailable")
            try:
                self._document = self._fetch()
            except VerifierUnavailable:
                self._failed_at = self._timer()
                raise
            return self._document

    def _fetch(self) -> dict[str, Any]:
        problem = "no metadata document"
        for url in metadata_urls(self.issuer):
            self.fetches += 1
            try:
                response = self._http.get(url, {"Accept": "application/json"}, self._timeout)
                if response.status != 200:
                    problem = f"{url} answered {response.status}"
                    continue
                document = response.json()
            except HttpError as exc:
                problem = f"{url}: {exc}"
                continue
            if not isinstance(document, dict):
                problem = f"{url} is not a JSON object"
                continue
            # RFC 8414 §3.3 / OIDC Discovery §4.3: the issuer must be exactly ours.
            if document.get("issuer") != self.issuer:
                raise VerifierUnavailable(
                    "the authorization server metadata names another issuer")
            return document
        log.warning("authorization server metadata unavailable: %s", problem)
        raise VerifierUnavailable("the authorization server metadata is unavailable")
