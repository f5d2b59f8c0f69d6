"""``require_token``: protect a Flask view with :mod:`authserver.resource`.

Flask is imported when a protected view runs, never at import, so the rest of the
package works in any framework (use :func:`authserver.resource.bearer.authenticate`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .bearer import Verifier, authenticate, challenges, required_scope
from .claims import AccessTokenClaims
from .dpop import DPoPVerifier
from .errors import InvalidToken, VerifierUnavailable

F = TypeVar("F", bound=Callable[..., Any])


def require_token(verifier: Verifier, scope: str | Iterable[str] = (), *, realm: str = "api",
                  dpop: DPoPVerifier | None = None, accept_dpop: bool = True
                  ) -> Callable[[F], F]:
    """Answer 401/403 unless the request carries a valid access token with ``scope``.

    The verified :class:`AccessTokenClaims` are ``flask.g.access_token`` (see
    :func:`current_token`). Refusals follow RFC 6750 §3: 401 with
    ``WWW-Authenticate: Bearer realm=..., error="invalid_token", error_description=...``,
    403 with ``error="insufficient_scope"`` and the scope needed, 400 for a malformed
    request; a DPoP-bound token needs the DPoP scheme and a valid proof (RFC 9449 §7.1).
    503 when the authorization server's keys cannot be fetched.
    """
    needed = required_scope(scope)
    dpop_verifier = (dpop or DPoPVerifier()) if accept_dpop else None
    dpop_algs = dpop_verifier.algorithms if dpop_verifier is not None else None

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from flask import g, request

            try:
                claims, _ = authenticate(
                    verifier, authorization=request.headers.getlist("Authorization"),
                    dpop_proofs=request.headers.getlist("DPoP"), method=request.method,
                    url=request.base_url, scope=needed, dpop=dpop_verifier)
            except InvalidToken as exc:
                return refusal(exc, realm=realm, dpop_algs=dpop_algs)
            g.access_token = claims
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def refusal(error: InvalidToken, *, realm: str, dpop_algs: Iterable[str] | None) -> Any:
    """The Flask response for a refused request: status, challenge, a small JSON body."""
    from flask import Response

    body: dict[str, str] = {}
    if error.error:
        body = {"error": error.error, "error_description": error.description}
    headers: list[tuple[str, str]] = [("Cache-Control", "no-store")]
    if isinstance(error, VerifierUnavailable):
        headers.append(("Retry-After", "5"))
    else:
        algs = tuple(dpop_algs) if dpop_algs is not None else None
        headers += [("WWW-Authenticate", value)
                    for value in challenges(error, realm=realm, dpop_algs=algs)]
    return Response(json.dumps(body), status=error.status, headers=headers,
                    mimetype="application/json")


def current_token() -> AccessTokenClaims:
    """The claims of the request's verified access token (inside a protected view)."""
    from flask import g

    return g.access_token
