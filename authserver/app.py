"""The application factory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Settings, load_settings, shipped_path
from .crypto.keystore import KeyStore
from .domain import token_status
from .domain.clients import ClientCache, ClientRecord, load_client
from .extensions import db, migrate
from .http import SecurityHeaders, register_error_handlers
from .ops import health, logs, metrics
from .ops.request_id import RequestIdMiddleware
from .protocol import (
    authorize,
    cors,
    discovery,
    introspection,
    logout,
    registration,
    revocation,
    status_lists,
    token,
    userinfo,
)
from .protocol.discovery import DocumentMiddleware, PublicDocuments
from .protocol.dpop import NonceSource
from .protocol.rate_limits import Limits
from .protocol.server import AuthServer
from .protocol.token_fast_path import TokenFastPath
from .protocol.tokens import AccessTokenIssuer
from .services import Services
from .storage import engine as storage_engine
from .storage.replay_cache import DatabaseReplayCache, RedisReplayCache
from .web import account, admin
from .web import bp as web_bp
from .web import login as login_pages
from .web.security import csrf_token

SESSION_COOKIE = "authserver_session"
MIGRATIONS_DIR = str(shipped_path("migrations", "migrations"))
# Every endpoint and page, each module owning its blueprint: the protocol's endpoints, then
# the pages (and the templates and static files they share).
BLUEPRINTS = (
    token.bp, authorize.bp, revocation.bp, introspection.bp, registration.bp, discovery.bp,
    userinfo.bp, logout.bp, status_lists.bp, login_pages.bp, account.bp, admin.bp, web_bp,
    health.bp, metrics.bp,
)


def _load_client(client_id: str) -> ClientRecord | None:
    # Its own autocommit connection: a client lookup never opens the request's ORM
    # transaction (on SQLite that would take the write lock for the whole request).
    with storage_engine.autocommit(db.engine.connect()) as connection:
        return load_client(connection, client_id)


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, without building a signer for a request that carries
    no session cookie: every API call (the token endpoint's hot path among them)."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if app.secret_key and not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def create_app(overrides: Mapping[str, Any] | None = None,
               settings: Settings | None = None) -> Flask:
    """Build the app: settings (validated), database, keys, OAuth server, routes, CLI."""
    settings = settings or load_settings(overrides)
    # No app-level static folder: its /static route would shadow the web blueprint's.
    app = Flask(__name__, static_folder=None)
    app.session_interface = _SessionInterface()
    logs.setup(settings)  # text or JSON lines, the security events as lines
    database_url = storage_engine.resolve_database_url(settings.database_url)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SQLALCHEMY_DATABASE_URI=database_url,
        SQLALCHEMY_ENGINE_OPTIONS=storage_engine.engine_options(
            database_url, settings.db_pool_size, lock_timeout_ms=settings.db_lock_timeout_ms,
            statement_timeout_ms=settings.db_statement_timeout_ms,
        ),
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        # Production: a __Host- cookie is Secure, host-only and Path=/, which browsers
        # enforce, so no sibling subdomain can set or shadow it (RFC 6265bis §4.1.3.2).
        SESSION_COOKIE_NAME=SESSION_COOKIE if not settings.production
        else f"__Host-{SESSION_COOKIE}",
        SESSION_COOKIE_PATH="/",
        SESSION_COOKIE_DOMAIN=None,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.production,
        JSON_SORT_KEYS=False,
    )
    if not settings.production:
        # Authlib refuses plain-http requests; development may serve on a LAN address.
        os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")

    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS_DIR, compare_type=True)
    with app.app_context():
        engine = db.engine
        storage_engine.install_sqlite_hooks(engine, settings.sqlite_busy_timeout_ms)
        storage_engine.install_postgres_limits(engine, settings.db_lock_timeout_ms)
        token_status.install(engine, list_size=settings.status_list_size)

    keys = KeyStore.from_settings(settings)
    clients = ClientCache(_load_client, settings.client_cache_seconds)
    app.extensions["authserver"] = Services(
        settings=settings,
        keys=keys,
        clients=clients,
        tokens=AccessTokenIssuer(settings, keys),
        oauth=AuthServer(clients),
        replay=RedisReplayCache(settings.redis_url) if settings.redis_url
        else DatabaseReplayCache(engine),
        limits=Limits(settings),
        nonces=NonceSource(settings.secret_key) if settings.dpop_nonce else None,
    )
    svc: Services = app.extensions["authserver"]
    svc.documents = PublicDocuments(lambda: (svc.settings, svc.keys))
    # Outermost first: the public documents, the trusted proxies' headers, the refresh
    # grant's fast path (which sees the client address ProxyFix settled), Flask.
    app.wsgi_app = TokenFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
    if settings.trusted_proxies:
        # Behind N reverse proxies, trust exactly N X-Forwarded-* hops (never more).
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]
    app.wsgi_app = DocumentMiddleware(app.wsgi_app, svc.documents)  # type: ignore[method-assign]
    # Outermost: nosniff, the page headers and HSTS on whatever answered (docs/design.md,
    # "Operations").
    app.wsgi_app = SecurityHeaders(  # type: ignore[method-assign]
        app.wsgi_app, settings.hsts_max_age if settings.production else 0)
    # Around everything: the request id of each answer and its log lines (docs/design.md,
    # "Operations").
    app.wsgi_app = RequestIdMiddleware(  # type: ignore[method-assign]
        app.wsgi_app, trust_header=settings.trusted_proxies > 0)

    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    app.jinja_env.globals["csrf_token"] = csrf_token
    register_error_handlers(app)
    cors.install(app)  # browser apps: CORS on the token, revocation, UserInfo, ... answers
    # The metrics' events listener and the request timer, outermost (docs/design.md,
    # "Health and metrics").
    metrics.install(app)
    return app


def start_background_work(app: Flask) -> None:
    """What a serving process runs besides requests: the sweeper of expired sealed retry
    responses (docs/design.md, "Rotation" 5) and, on SQLite, the WAL checkpointer
    ("Storage"). Called by ``authserver serve``'s workers, not by ``create_app``: tests and
    CLI commands start no threads."""
    svc: Services = app.extensions["authserver"]
    with app.app_context():
        svc.sweeper.start(db.engine, svc.clock)
        svc.checkpointer.start(db.engine)

