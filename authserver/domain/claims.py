"""Claims about a user released per scope (OIDC Core §5.4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..storage.models import User


def user_claims(user: User, scope: Sequence[str]) -> dict[str, Any]:
    """``sub`` always; profile and email claims when those scopes were granted."""
    claims: dict[str, Any] = {"sub": user.subject}
    if "profile" in scope:
        claims["preferred_username"] = user.username
        if user.name:
            claims["name"] = user.name
    if "email" in scope and user.email:
        claims["email"] = user.email
        claims["email_verified"] = False
    return claims
