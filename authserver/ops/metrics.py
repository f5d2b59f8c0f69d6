"""Prometheus metrics (docs/design.md, "Health and metrics"), with the official
``prometheus_client``.

The counters are module-level objects fed by one listener of the events feed
(``domain/events.py``) and a WSGI middleware that times each request by endpoint. Under
``authserver serve`` each worker process writes its values to files in a private directory
(``PROMETHEUS_MULTIPROC_DIR``, made by ``serve``) and a scrape adds up every worker's files
(:func:`use_multiprocess`); the active key's age and the logout outbox's backlog are read at
scrape time, by whichever process answers it.

``/metrics`` on the main listener exists only when ``AUTHSERVER_METRICS_TOKEN`` is set (a 404
like any unknown path otherwise) and then answers only ``Authorization: Bearer <token>``
(compared in constant time). ``AUTHSERVER_METRICS_PORT`` serves the same text without a token
on 127.0.0.1 only, from ``serve``'s parent process (:func:`serve_loopback`).

Labels are bounded: endpoints are route names (``other`` for any path no route has), and
a label fed by an event keeps at most :data:`MAX_LABEL_VALUES` values (the rest are
``other``), so no request can grow the number of series.
"""

from __future__ import annotations

import atexit
import datetime as dt
import glob
import hmac
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map

from ..domain import audit, events, logout_outbox
from ..domain.client_metadata import SUPPORTED_GRANT_TYPES
from ..http import NO_STORE, json_response
from ..services import Services
from .health import probe_engine

log = logging.getLogger(__name__)
bp = Blueprint("metrics", __name__)

METRICS_PATH = "/metrics"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_LABEL_VALUES = 64
OTHER = "other"
# Request durations: a refresh takes about a millisecond, a sign-in (argon2) a few hundred.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_LABEL_VALUE = re.compile(r"[a-z0-9_.:-]{1,64}")
# No ``*_created`` series beside each counter (multiprocess mode has none either).
disable_created_metrics()


class _Label:
    """The values one label may take: ``known`` ones, then up to MAX_LABEL_VALUES others
    that look like identifiers; anything else is ``other``."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self.seen = set(known)

    def __call__(self, value: object) -> str:
        if isinstance(value, str) and value in self.seen:
            return value
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value) \
                or len(self.seen) >= MAX_LABEL_VALUES:
            return OTHER
        self.seen.add(value)
        return value


class Metrics:
    """Every metric a worker process counts (one instance per process mode)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        r = registry
        self.token_requests = Counter(
            "authserver_token_requests", "Token endpoint requests by grant type and outcome "
            "(ok or the RFC 6749 error code).", ["grant_type", "outcome"], registry=r)
        self.request_duration = Histogram(
            "authserver_request_duration_seconds", "Time to answer a request, by endpoint "
            "(route name; 'other' for paths no route has).", ["endpoint"], buckets=BUCKETS,
            registry=r)
        self.requests_in_progress = Gauge(
            "authserver_requests_in_progress", "Requests being answered now.",
            multiprocess_mode="livesum", registry=r)
        self.refresh_rotations = Counter(
            "authserver_refresh_rotations", "Refresh tokens rotated.", registry=r)
        self.grace_retries = Counter(
            "authserver_refresh_grace_retries", "Refresh requests answered again inside the "
            "grace window (a client's retry).", registry=r)
        self.reuse_detections = Counter(
            "authserver_refresh_reuse_detections", "Rotated refresh tokens presented again "
            "(the family is revoked).", registry=r)
        self.binding_mismatches = Counter(
            "authserver_binding_mismatches", "Refresh requests from another device than the "
            "family's, by the action the client's policy took.", ["action"], registry=r)
        self.dpop_failures = Counter(
            "authserver_dpop_failures", "DPoP proofs refused, by error.", ["error"],
            registry=r)
        self.family_revocations = Counter(
            "authserver_family_revocations", "Refresh families revoked, by cause.",
            ["cause"], registry=r)
        self.sign_ins = Counter(
            "authserver_sign_ins", "Sign-ins (pages and password grant) by outcome.",
            ["outcome"], registry=r)
        self.rate_limited = Counter(
            "authserver_rate_limited_requests", "Requests refused by a brute-force limit, "
            "by limit scope and endpoint.", ["scope", "endpoint"], registry=r)
        self.key_activations = Gauge(
            "authserver_key_activations", "Signing-key activations seen since the server "
            "started (each worker sees each one: the largest count is shown).",
            multiprocess_mode="max", registry=r)
        self.database_errors = Counter(
            "authserver_database_errors", "Requests answered 503 because the database "
            "failed, by error class.", ["error"], registry=r)
        for outcome in ("succeeded", "failed"):
            self.sign_ins.labels(outcome)
        self.grant_type = _Label((*SUPPORTED_GRANT_TYPES, OTHER))
        self.outcome, self.action, self.dpop_error = _Label(("ok",)), _Label(), _Label()
        self.cause, self.scope, self.limited, self.db_error = (
            _Label(), _Label(), _Label(), _Label())
        self.token_children: dict[tuple[object, object], Any] = {}
        self.duration_children: dict[str, Any] = {}

    def token_request(self, grant_type: object, outcome: object) -> None:
        """The token endpoint's hot path: one dict lookup and one increment."""
        key = (grant_type, outcome)
        child = self.token_children.get(key)
        if child is None:
            child = self.token_requests.labels(self.grant_type(grant_type),
                                               self.outcome(outcome))
            if len(self.token_children) < MAX_LABEL_VALUES * 4:
                self.token_children[key] = child
        child.inc()

    def observe(self, endpoint: str, seconds: float) -> None:
        child = self.duration_children.get(endpoint)
        if child is None:
            child = self.duration_children[endpoint] = self.request_duration.labels(endpoint)
        child.observe(seconds)


METRICS = Metrics(REGISTRY)


def _on_event(event: str, fields: Mapping[str, Any]) -> None:
    """The events listener: cheap (one dict lookup, one increment)."""
    if event == events.TOKEN_REQUEST:  # the refresh grant's hot path: no handler call
        child = METRICS.token_children.get((fields.get("grant_type"), fields.get("outcome")))
        if child is not None:
            child.inc()
            return
    handler = _HANDLERS.get(event)
    if handler is not None:
        handler(METRICS, fields)


_HANDLERS: dict[str, Callable[[Metrics, Mapping[str, Any]], None]] = {
    events.TOKEN_REQUEST: lambda m, f: m.token_request(f.get("grant_type"), f.get("outcome")),
    events.REFRESH_ROTATED: lambda m, f: m.refresh_rotations.inc(),
    audit.ROTATION_RETRY: lambda m, f: m.grace_retries.inc(),
    audit.REUSE_DETECTED: lambda m, f: m.reuse_detections.inc(),
    audit.BINDING_MISMATCH: lambda m, f: m.binding_mismatches.labels(
        m.action(f.get("action"))).inc(),
    events.DPOP_FAILED: lambda m, f: m.dpop_failures.labels(m.dpop_error(f.get("error"))).inc(),
    audit.FAMILY_REVOKED: lambda m, f: m.family_revocations.labels(
        m.cause(f.get("cause"))).inc(),
    audit.SIGN_IN_SUCCEEDED: lambda m, f: m.sign_ins.labels("succeeded").inc(),
    audit.SIGN_IN_FAILED: lambda m, f: m.sign_ins.labels("failed").inc(),
    events.RATE_LIMITED: lambda m, f: m.rate_limited.labels(
        m.scope(f.get("scope")), m.limited(f.get("endpoint"))).inc(),
    events.KEY_ACTIVATED: lambda m, f: m.key_activations.inc(),
    events.DATABASE_ERROR: lambda m, f: m.database_errors.labels(
        m.db_error(f.get("error"))).inc(),
}


def install(app: Flask) -> None:
    """Count this app's events and time its requests (idempotent per app)."""
    events.subscribe(_on_event)
    if not isinstance(app.wsgi_app, RequestTimer):
        app.wsgi_app = RequestTimer(app.wsgi_app, app.url_map)  # type: ignore[method-assign]


# -- multiprocess mode ---------------------------------------------------------------------
def use_multiprocess() -> str:
    """Count in files shared by the worker processes ``serve`` is about to start: a fresh
    private directory (mode 0700) named in ``PROMETHEUS_MULTIPROC_DIR``, which forked and
    spawned workers inherit. The metrics made before are replaced by file-backed ones
    (prometheus_client picks its value class when first imported; this process imported it
    before ``serve`` knew it would fork). Returns the directory; :func:`end_multiprocess`
    removes it."""
    global METRICS
    directory = tempfile.mkdtemp(prefix="authserver-metrics-")
    os.chmod(directory, 0o700)
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.MultiProcessValue()
    METRICS = Metrics(None)
    return directory


def end_multiprocess(directory: str, owner: int | None = None) -> None:
    """Remove the directory (only in the process that made it, ``owner``)."""
    if owner is not None and os.getpid() != owner:
        return
    values.close_all_multiprocess_files()
    shutil.rmtree(directory, ignore_errors=True)
    if os.environ.get(MULTIPROC_ENV) == directory:
        del os.environ[MULTIPROC_ENV]


def start_for_serve(app: Flask) -> None:
    """What ``serve`` does before it starts its workers, when metrics are published (a
    token or a port is set): the shared directory (removed when ``serve`` exits) and the
    loopback port. Raises OSError when the port is taken."""
    settings = app.extensions["authserver"].settings
    if not (settings.metrics_token or settings.metrics_port):
        return
    directory = use_multiprocess()
    atexit.register(end_multiprocess, directory, os.getpid())
    if settings.metrics_port:
        serve_loopback(app, settings.metrics_port)


def multiprocess_dir() -> str | None:
    directory = os.environ.get(MULTIPROC_ENV)
    if directory and getattr(values.ValueClass, "_multiprocess", False) \
            and os.path.isdir(directory):
        return directory
    return None


class _LiveProcesses(Collector):
    """Before every worker's files are added up: forget the live gauges of workers that
    exited (granian respawns them; prometheus_client cannot know)."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.inner = multiprocess.MultiProcessCollector(None, directory)

    def collect(self) -> Iterable[Metric]:
        for path in glob.glob(os.path.join(self.directory, "gauge_live*_*.db")):
            pid = path.rsplit("_", 1)[1][:-3]
            if pid.isdigit() and not _alive(int(pid)):
                multiprocess.mark_process_dead(int(pid), self.directory)
        return self.inner.collect()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- read at scrape time -------------------------------------------------------------------
class ScrapeTime(Collector):
    """What is read when scraped, not counted: the active key's age, the keys by state,
    the Back-Channel Logout messages not yet delivered."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        svc: Services = self.app.extensions["authserver"]
        with self.app.app_context():
            yield from self._keys(svc)
            yield from self._outbox()

    def _keys(self, svc: Services) -> Iterator[Metric]:
        age = GaugeMetricFamily(
            "authserver_active_key_age_seconds",
            "Seconds since the signing key in use became active.")
        states = GaugeMetricFamily("authserver_signing_keys", "Signing keys by state.",
                                   labels=["state"])
        try:
            keys = svc.keys.keys()
            now = svc.clock()
        except Exception as exc:  # the keys directory unreadable: readiness says why
            log.debug("metrics: keys unavailable: %s", exc)
            keys, now = [], dt.datetime.now(dt.UTC)
        counts: dict[str, int] = {}
        for key in keys:
            counts[key.state] = counts.get(key.state, 0) + 1
            if key.state == "active":
                age.add_metric([], max(0.0, (now - key.state_changed_at).total_seconds()))
        for state, count in sorted(counts.items()):
            states.add_metric([state], count)
        yield age
        yield states

    def _outbox(self) -> Iterator[Metric]:
        backlog = GaugeMetricFamily(
            "authserver_logout_outbox_backlog",
            "Back-Channel Logout messages not yet delivered (nor given up).")
        try:
            backlog.add_metric([], logout_outbox.backlog(probe_engine(self.app)))
        except Exception as exc:
            log.warning("metrics: logout outbox backlog unreadable: %s", type(exc).__name__)
        yield backlog


def exposition(app: Flask) -> bytes:
    """The Prometheus text of this process (or, under ``serve``, of every worker)."""
    directory = multiprocess_dir()
    if directory is None:
        counted = generate_latest(REGISTRY)
    else:
        registry = CollectorRegistry()
        registry.register(_LiveProcesses(directory))
        counted = generate_latest(registry)
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(ScrapeTime(app))
    return counted + generate_latest(scraped)


@bp.get(METRICS_PATH)
def metrics() -> Response:
    """The metrics, to ``Authorization: Bearer <AUTHSERVER_METRICS_TOKEN>`` only."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    expected = app.extensions["authserver"].settings.metrics_token
    if not expected:
        abort(404)  # not published: like any path nothing serves
    scheme, _, presented = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode("latin-1", "replace"), expected.encode()):
        challenge = 'Bearer realm="metrics"' + (
            ', error="invalid_token"' if presented else "")
        return json_response(
            {"error": "invalid_token", "error_description": "metrics need the metrics token"},
            401, {**NO_STORE, "WWW-Authenticate": challenge})
    return Response(exposition(app), 200, {**NO_STORE, "Content-Type": CONTENT_TYPE_LATEST})


def serve_loopback(app: Flask, port: int) -> Any:
    """``/metrics`` without a token on 127.0.0.1:``port``, in a thread of this process (the
    ``serve`` parent, which workers' files are visible to). Raises OSError if the port is
    taken."""
    from prometheus_client import start_http_server

    class Registry(CollectorRegistry):
        def collect(self) -> Iterator[Metric]:  # what exposition() shows, freshly read
            directory = multiprocess_dir()
            if directory is not None:
                yield from _LiveProcesses(directory).collect()
            else:
                yield from REGISTRY.collect()
            yield from ScrapeTime(app).collect()

    server, _thread = start_http_server(port, addr="127.0.0.1",
                                        registry=Registry(auto_describe=False))
    return server


# -- request durations ---------------------------------------------------------------------
class RequestTimer:
    """WSGI middleware: each request's duration into the histogram of its endpoint (the
    route's name, never the path: ``other`` when no route matches)."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]], url_map: Map) -> None:
        self.wsgi_app = wsgi_app
        self.url_map = url_map
        self._static: dict[str, str] | None = None

    def _endpoint(self, environ: dict[str, Any]) -> str:
        static = self._static
        if static is None:  # the routes are all registered by the first request
            static = {}
            for rule in self.url_map.iter_rules():
                if not rule.arguments:
                    static.setdefault(rule.rule, rule.endpoint)
            self._static = static
        path = environ.get("PATH_INFO") or "/"
        endpoint = static.get(path)
        if endpoint is not None:
            return endpoint
        try:
            adapter = self.url_map.bind("localhost", path_info=path)
            matched, _ = adapter.match(path, method=environ.get("REQUEST_METHOD", "GET"))
            return str(matched)
        except (HTTPException, ValueError):
            return OTHER

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        started = time.perf_counter()
        metrics_now = METRICS
        metrics_now.requests_in_progress.inc()
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            metrics_now.requests_in_progress.dec()
            metrics_now.observe(self._endpoint(environ), time.perf_counter() - started)
