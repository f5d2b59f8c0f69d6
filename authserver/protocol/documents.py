"""The public documents: the JWKS and the two discovery documents.

Resource servers and clients fetch these far more often than anything else is called, and
they change only when the key set does. Each is serialised once per key set (bytes and an
``ETag``), and :class:`DocumentMiddleware` answers ``GET``/``HEAD`` for them in front of
Flask, with ``If-None-Match`` -> 304. Other methods fall through to Flask (405).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..config import Settings
from ..crypto.keystore import KeyStore
from .metadata import authorization_server_metadata, openid_configuration

JWKS_PATH = "/.well-known/jwks.json"
OAUTH_METADATA_PATH = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION_PATH = "/.well-known/openid-configuration"
METADATA_MAX_AGE = 3600

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Document:
    body: bytes
    etag: str  # quoted, as sent
    cache_control: str

    @classmethod
    def of(cls, data: object, max_age: int) -> Document:
        body = json.dumps(data, sort_keys=True).encode()
        return cls(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"',
                   f"public, max-age={max_age}")

    def matches(self, if_none_match: str) -> bool:
        """RFC 9110 §13.1.2 (weak comparison): ``*`` or one of the listed tags."""
        if if_none_match.strip() == "*":
            return True
        tags = (tag.strip() for tag in if_none_match.split(","))
        return self.etag in (tag[2:] if tag.startswith("W/") else tag for tag in tags)


class PublicDocuments:
    """The three documents, rebuilt when the key set changes (never per request).

    ``source`` returns the settings and key store in force (tests swap them).
    """

    def __init__(self, source: Callable[[], tuple[Settings, KeyStore]]) -> None:
        self.source = source
        self._lock = threading.Lock()
        self._built_for: tuple[object, ...] | None = None
        self._documents: dict[str, Document] = {}

    def get(self, path: str) -> Document:
        settings, keys = self.source()
        fingerprint = (id(settings), id(keys),
                       *((k.kid, k.state) for k in keys.keys()))  # noqa: SIM118
        if fingerprint != self._built_for:
            with self._lock:
                self._documents = self._build(settings, keys)
                self._built_for = fingerprint
        return self._documents[path]

    @staticmethod
    def _build(settings: Settings, keys: KeyStore) -> dict[str, Document]:
        return {
            JWKS_PATH: Document.of(keys.jwks(), settings.jwks_max_age),
            OAUTH_METADATA_PATH: Document.of(authorization_server_metadata(settings),
                                             METADATA_MAX_AGE),
            OPENID_CONFIGURATION_PATH: Document.of(openid_configuration(settings),
                                                   METADATA_MAX_AGE),
        }


class DocumentMiddleware:
    """Serves :class:`PublicDocuments` for ``GET``/``HEAD`` without entering Flask."""

    def __init__(self, app: WSGIApp, documents: PublicDocuments) -> None:
        self.app = app
        self.documents = documents

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if path not in (JWKS_PATH, OAUTH_METADATA_PATH, OPENID_CONFIGURATION_PATH) \
                or method not in ("GET", "HEAD"):
            return self.app(environ, start_response)
        document = self.documents.get(path)
        headers = [("Cache-Control", document.cache_control), ("ETag", document.etag)]
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match and document.matches(if_none_match):
            start_response("304 NOT MODIFIED", headers)
            return [b""]
        headers += [("Content-Type", "application/json"),
                    ("Content-Length", str(len(document.body)))]
        start_response("200 OK", headers)
        return [b"" if method == "HEAD" else document.body]
