"""Discovery documents: RFC 8414 and OpenID Connect Discovery 1.0."""

from __future__ import annotations

from typing import Any

from ..config import Settings
from ..crypto.keystore import published_algorithms
from ..domain.clients import SUPPORTED_GRANT_TYPES
from ..domain.scopes import OIDC_SCOPES
from .dpop import ALGORITHMS as DPOP_ALGORITHMS

AUTH_METHODS = ["client_secret_basic", "client_secret_post", "none"]


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
        "service_documentation": f"{issuer}/",
    }


def openid_configuration(settings: Settings) -> dict[str, Any]:
    """OIDC Discovery: the RFC 8414 document plus the OIDC-specific members."""
    data = authorization_server_metadata(settings)
    data.update(
        {
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": published_algorithms(settings.keys_dir),
            "claims_supported": [
                "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "at_hash", "sid",
                "name", "preferred_username", "email", "email_verified",
            ],
            "claims_parameter_supported": False,
            "request_parameter_supported": False,
            "request_uri_parameter_supported": False,
        }
    )
    return data
