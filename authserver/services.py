"""The per-app objects built once at start-up (settings, keys, client cache, token issuer)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from .config import Settings
from .crypto.keystore import KeyStore
from .domain.clients import ClientCache
from .domain.clock import Clock, utcnow
from .domain.retry_sweeper import RetrySweeper
from .storage.engine import WalCheckpointer
from .storage.replay_cache import ReplayCache

if TYPE_CHECKING:
    from .protocol.discovery import PublicDocuments
    from .protocol.dpop import NonceSource
    from .protocol.rate_limits import Limits
    from .protocol.server import AuthServer
    from .protocol.tokens import AccessTokenIssuer


@dataclass
class Services:
    settings: Settings
    keys: KeyStore
    clients: ClientCache
    tokens: AccessTokenIssuer
    oauth: AuthServer
    replay: ReplayCache
    limits: Limits  # the brute-force limits (docs/design.md, "Operations")
    nonces: NonceSource | None = None
    clock: Clock = utcnow
    sweeper: RetrySweeper = field(default_factory=RetrySweeper)
    checkpointer: WalCheckpointer = field(default_factory=WalCheckpointer)
    documents: PublicDocuments = field(init=False)


def services() -> Services:
    """The current app's services (inside a request or app context)."""
    return current_app.extensions["authserver"]
