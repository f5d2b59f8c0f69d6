"""The public documents: the JWKS (``/.well-known/jwks.json``) and the two discovery
documents, RFC 8414 (``/.well-known/oauth-authorization-server``) and OpenID Connect
Discovery 1.0 (``/.well-known/openid-configuration``).

Resource servers and clients fetch these far more often than anything else is called, and
they change only when the key set does. Each is serialised once per key set (bytes and an
``ETag``), and :class:`DocumentMiddleware` answers ``GET``/``HEAD`` for them in front of
Flask, with ``If-None-Match`` -> 304. Other methods fall through to Flask (405).

The JWKS is never published empty (docs/design.md, "Keys that stay"): a process with no key
answers ``503`` with ``no-store``, so resource servers keep the copy they cached instead of
caching an empty set for ``max-age`` and rejecting every token meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response

from ..config import Settings
from ..crypto import jose
from ..crypto.keystore import PUBLISHED_STATES, KeyStore, KeyStoreError, SigningKey
from ..domain.client_metadata import SUPPORTED_GRANT_TYPES
from ..domain.scopes import OIDC_SCOPES
from ..services import services
from .dpop import ALGORITHMS as DPOP_ALGORITHMS

bp = Blueprint("discovery", __name__)

JWKS_PATH = "/.well-known/jwks.json"
OAUTH_METADATA_PATH = "/.well-known/oauth-authorization-server"
OPENID_CONFIGURATION_PATH = "/.well-known/openid-configuration"
# The Token Status Lists (protocol/status_lists.py): the aggregation here, each list below it.
STATUS_LISTS_PATH = "/oauth/status"
METADATA_MAX_AGE = 3600
# Public documents: any origin's script may read them, without credentials (the preflights
# and other methods get the same from protocol/cors.py).
PUBLIC_CORS = {"Access-Control-Allow-Origin": "*"}

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def authorization_server_metadata(settings: Settings) -> dict[str, Any]:
    """What exists on this server (RFC 8414 §2)."""
    issuer = settings.issuer
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "userinfo_endpoint": f"{issuer}/oauth/userinfo",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint": f"{issuer}/oauth/introspect",
        "introspection_endpoint_auth_methods_supported": AUTH_METHODS[:2],
        "end_session_endpoint": f"{issuer}/logout",
        # RFC 7591 (admin-authorised unless AUTHSERVER_OPEN_REGISTRATION is on).
        "registration_endpoint": f"{issuer}/oauth/register",
        "grant_types_supported": list(SUPPORTED_GRANT_TYPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "scopes_supported": list(OIDC_SCOPES),
        "authorization_response_iss_parameter_supported": True,
        "prompt_values_supported": ["none", "login", "consent"],
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),
        # draft-ietf-oauth-status-list, "Status List Aggregation": every list's URI.
        "status_list_aggregation_endpoint": f"{issuer}{STATUS_LISTS_PATH}",
        "service_documentation": f"{issuer}/",
    }


def signing_algorithms(keys: Iterable[SigningKey]) -> list[str]:
    """The algorithms of the published keys, RS256 always first (OIDC Discovery §3
    requires it): of the keys this process holds, not of a fresh look at the disk."""
    algs = {"RS256"} | {k.alg for k in keys
                        if k.state in PUBLISHED_STATES and k.alg in jose.SUPPORTED_ALGORITHMS}
    return sorted(algs, key=lambda a: (a != "RS256", a))


def openid_configuration(settings: Settings, keys: Iterable[SigningKey] = ()
                         ) -> dict[str, Any]:
    """OIDC Discovery: the RFC 8414 document plus the OIDC-specific members."""
    data = authorization_server_metadata(settings)
    data.update(
        {
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": signing_algorithms(keys),
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid",
                "name", "preferred_username", "email", "email_verified",
            ],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
            # OpenID Connect Back-Channel Logout 1.0 §2.1: logout tokens always carry sid.
            "backchannel_logout_supported": True,
            "backchannel_logout_session_supported": True,
        }
    )
    return data


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

    def get(self, path: str) -> Document | None:
        """The document, or None for the JWKS while this process has no key to publish."""
        settings, keys = self.source()
        try:
            current = keys.keys()
        except KeyStoreError:
            current = []  # never loaded: keys/ missing or damaged since start
        fingerprint = (id(settings), id(keys),
                       *((k.kid, k.state) for k in current))
        if fingerprint != self._built_for:
            with self._lock:
                self._documents = self._build(settings, current)
                self._built_for = fingerprint
        return self._documents.get(path)

    @staticmethod
    def _build(settings: Settings, keys: list[SigningKey]) -> dict[str, Document]:
        documents = {
            OAUTH_METADATA_PATH: Document.of(authorization_server_metadata(settings),
                                             METADATA_MAX_AGE),
            OPENID_CONFIGURATION_PATH: Document.of(openid_configuration(settings, keys),
                                                   METADATA_MAX_AGE),
        }
        published = [k.public_jwk() for k in keys if k.state in PUBLISHED_STATES]
        if published:  # never an empty set that caches would keep for max-age
            documents[JWKS_PATH] = Document.of({"keys": published}, settings.jwks_max_age)
        return documents


def no_keys_response() -> tuple[str, list[tuple[str, str]], bytes]:
    """503 ``temporarily_unavailable``, never cached: no key set to publish."""
    body = json.dumps({"error": "temporarily_unavailable",
                       "error_description": "no signing keys loaded; try again later"}).encode()
    return "503 SERVICE UNAVAILABLE", [
        ("Content-Type", "application/json"), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"), ("Retry-After", "5"), *PUBLIC_CORS.items()], body


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
        if document is None:
            status, no_keys, body = no_keys_response()
            start_response(status, no_keys)
            return [b"" if method == "HEAD" else body]
        headers = [("Cache-Control", document.cache_control), ("ETag", document.etag),
                   *PUBLIC_CORS.items()]
        if_none_match = environ.get("HTTP_IF_NONE_MATCH")
        if if_none_match and document.matches(if_none_match):
            start_response("304 NOT MODIFIED", headers)
            return [b""]
        headers += [("Content-Type", "application/json"),
                    ("Content-Length", str(len(document.body)))]
        start_response("200 OK", headers)
        return [b"" if method == "HEAD" else document.body]


def _document(path: str) -> Response:
    """What :class:`DocumentMiddleware` answers before Flask is reached; these views exist
    for ``url_for`` and so that other methods get a 405."""
    document = services().documents.get(path)
    if document is None:
        status, headers, body = no_keys_response()
        return Response(body, status=int(status[:3]), headers=headers)
    response = Response(document.body, mimetype="application/json",
                        headers={"Cache-Control": document.cache_control,
                                 "ETag": document.etag, **PUBLIC_CORS})
    return response


@bp.get(JWKS_PATH)
def jwks() -> Response:
    """Public signing keys (next, active, retired) for local verification."""
    return _document(JWKS_PATH)


@bp.get(OAUTH_METADATA_PATH)
def oauth_metadata() -> Response:
    return _document(OAUTH_METADATA_PATH)


@bp.get(OPENID_CONFIGURATION_PATH)
def openid_metadata() -> Response:
    return _document(OPENID_CONFIGURATION_PATH)
