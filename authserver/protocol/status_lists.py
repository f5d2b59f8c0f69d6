"""The Token Status Lists (draft-ietf-oauth-status-list; docs/design.md, "Revocation that
reaches APIs"): ``GET /oauth/status/<id>``, one list as a ``statuslist+jwt``, and ``GET
/oauth/status``, the Status List Aggregation (every list's URI).

A list is a public document: any resource server, any origin (CORS ``*``, from
protocol/cors.py), no authentication. It is signed by the active key, so the JWKS verifies
it, with claims ``iss``, ``sub`` (the list's URI, which access tokens name in
``status.status_list.uri``), ``iat``, ``exp``, ``ttl`` and ``status_list`` (``bits`` 1,
``lst``: protocol/status_list_codec.py, and ``aggregation_uri``).

``ttl`` is ``AUTHSERVER_STATUS_LIST_TTL``; the answer says ``Cache-Control: public,
max-age=<ttl>``. ``exp`` is ``iat + 2 * ttl``: this process re-signs a list at least every
``ttl / 2``, and an HTTP cache may keep what it got for ``ttl`` more, so every copy a cache
may hand out is still unexpired (1.5 ``ttl`` at most), while a copy withheld by someone in
the path (an old list replayed to hide a revocation) is refused by every reader
``2 * ttl`` after it was signed (2 minutes by default).

Each process keeps every list it served, signed (:class:`StatusLists`), and per list reads
only the list's ``version`` (one small statement) at most once a second; it reads the
entries again (one indexed query of the entries that are not VALID) when ``version``
changed or its copy is older than ``ttl / 2``, and signs again when the active key
changed. One request per list does that work; the others meanwhile get the copy there is
(if younger than ``ttl``) or wait for the new one. When the database fails, a copy younger
than ``ttl`` is served; without one, 503.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, request
from flask.blueprints import BlueprintSetupState
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from .. import http
from ..crypto.keystore import KeyStoreError
from ..domain import token_status
from ..extensions import db
from ..services import Services, services
from ..storage import engine as storage_engine
from . import status_list_codec
from .discovery import STATUS_LISTS_PATH, Document

log = logging.getLogger(__name__)

bp = Blueprint("status_lists", __name__)

STATUS_LIST_TYP = "statuslist+jwt"  # the draft's JWT "typ"
MEDIA_TYPE = "application/statuslist+jwt"
BITS = 1  # VALID or not: a list of 2^17 entries is 16 KiB before compression
EXP_TTLS = 2  # exp = iat + EXP_TTLS * ttl (see the module docstring)
VERSION_CHECK_SECONDS = 1.0  # a list's version is read at most this often per process
# The ids a list can have (a PostgreSQL INTEGER); any other path is no list, without a
# query. Canonical decimal only: "/oauth/status/01" is not the URI of list 1.
MAX_LIST_ID = 2**31 - 1
_LIST_ID = re.compile(r"[1-9][0-9]{0,9}")
EXTENSION = "authserver.status_lists"  # the app's StatusLists, in app.extensions


def list_uri(issuer: str, list_id: int) -> str:
    """The URI of a list: its ``sub`` and the ``uri`` access tokens carry."""
    return f"{issuer}{STATUS_LISTS_PATH}/{list_id}"


class Unavailable(Exception):
    """The database (or the key store) failed and no copy young enough is at hand."""


@dataclass(frozen=True)
class SignedList:
    """One list as this process serves it."""

    version: int
    size: int
    lst: str
    kid: str  # of the key that signed it
    document: Document  # the JWT, its ETag, its Cache-Control
    signed_at: float  # seconds since the epoch, from services().clock
    checked_at: float  # when its version was last read


@dataclass(frozen=True)
class _Aggregation:
    document: Document
    read_at: float


def _age(now: float, then: float) -> float:
    """Seconds since ``then``; infinite if the clock went back (then: read again)."""
    return now - then if now >= then else float("inf")


def _document(body: bytes, ttl: int) -> Document:
    """A strong ETag of the exact bytes (RFC 9110 §8.8.3)."""
    return Document(body, f'"{hashlib.sha256(body).hexdigest()[:32]}"',
                    f"public, max-age={ttl}")


def _autocommit() -> Connection:
    """Its own autocommit connection: a status read opens no ORM transaction (on SQLite
    that would take the writer lock)."""
    return storage_engine.autocommit(db.engine.connect())


class StatusLists:
    """The signed lists of this process, and the aggregation (per app)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards the two dicts below
        self._locks: dict[int, threading.Lock] = {}
        self._lists: dict[int, SignedList] = {}
        self._aggregation: _Aggregation | None = None
        self._aggregation_lock = threading.Lock()

    def _list_lock(self, list_id: int) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(list_id, threading.Lock())

    def _store(self, list_id: int, signed: SignedList | None) -> None:
        with self._lock:
            if signed is None:
                self._lists.pop(list_id, None)
                self._locks.pop(list_id, None)
            else:
                self._lists[list_id] = signed

    # -- one list ----------------------------------------------------------------------
    def get(self, list_id: int, svc: Services) -> Document | None:
        """The list's signed document; None for no such list; :class:`Unavailable`."""
        ttl = svc.settings.status_list_ttl
        now = svc.clock().timestamp()
        signed = self._lists.get(list_id)
        if signed is not None and self._current(signed, now, ttl, svc):
            return signed.document
        lock = self._list_lock(list_id)
        if not lock.acquire(blocking=False):
            # Another request is reading or signing this list: the copy there is will do
            # while it is younger than ttl; without one, wait for the new one.
            if signed is not None and _age(now, signed.signed_at) < ttl:
                return signed.document
            lock.acquire()
        try:
            signed = self._lists.get(list_id)  # another request may just have refreshed it
            if signed is not None and self._current(signed, now, ttl, svc):
                return signed.document
            try:
                fresh = self._refresh(list_id, signed, svc, now)
            except Unavailable:
                if signed is None:  # nothing kept for an id nobody knows to be a list
                    self._store(list_id, None)
                raise
            self._store(list_id, fresh)
            return fresh.document if fresh is not None else None
        finally:
            lock.release()

    @staticmethod
    def _current(signed: SignedList, now: float, ttl: int, svc: Services) -> bool:
        """Servable without a query: version read within the second, signed within
        ttl/2, by the key that signs now."""
        if _age(now, signed.checked_at) >= VERSION_CHECK_SECONDS \
                or _age(now, signed.signed_at) >= ttl / 2:
            return False
        try:
            return signed.kid == svc.keys.active().kid
        except KeyStoreError:
            return True  # no key to sign again with: the copy stands (until it is old)

    def _refresh(self, list_id: int, signed: SignedList | None, svc: Services, now: float
                 ) -> SignedList | None:
        """Read the version; read the entries again if it changed or the copy is older than
        ttl/2; sign again if anything changed or the active key did. None: no such list."""
        ttl = svc.settings.status_list_ttl
        try:
            with _autocommit() as connection:
                version = token_status.list_version(connection, list_id)
                if version is None:
                    return None
                if signed is not None and signed.version == version \
                        and _age(now, signed.signed_at) < ttl / 2:
                    if signed.kid == svc.keys.active().kid:
                        return dataclasses.replace(signed, checked_at=now)
                    size, lst = signed.size, signed.lst  # a new key: sign it again
                else:
                    snapshot = token_status.list_snapshot(connection, list_id)
                    if snapshot is None:
                        return None
                    version, size, entries = snapshot
                    lst = self._encode(list_id, size, entries)
            return self._sign(list_id, version, size, lst, svc, now)  # no connection held
        except (SQLAlchemyError, KeyStoreError) as exc:
            if http.is_database_outage(exc):
                http.database_error(f"status list {list_id}", exc)
            else:
                log.exception("status list %d: could not be read or signed", list_id)
            if signed is not None and _age(now, signed.signed_at) < ttl:
                return signed
            raise Unavailable from None

    @staticmethod
    def _encode(list_id: int, size: int, entries: list[tuple[int, int]]) -> str:
        """The ``lst``: with 1 bit, every status but VALID (0) is 1. An index outside the
        list (which the domain never writes) is left out, and logged."""
        inside = [(idx, 1) for idx, status in entries if status and 0 <= idx < size]
        if len(inside) != sum(1 for _, status in entries if status):
            log.error("status list %d: entries outside its %d indices left out", list_id, size)
        return status_list_codec.encode(size, inside, BITS)

    @staticmethod
    def _sign(list_id: int, version: int, size: int, lst: str, svc: Services, now: float
              ) -> SignedList:
        settings = svc.settings
        ttl = settings.status_list_ttl
        key = svc.keys.active()
        iat = int(now)
        claims: dict[str, Any] = {
            "iss": settings.issuer,
            "sub": list_uri(settings.issuer, list_id),
            "iat": iat,
            "exp": iat + EXP_TTLS * ttl,
            "ttl": ttl,
            "status_list": {"bits": BITS, "lst": lst,
                            "aggregation_uri": f"{settings.issuer}{STATUS_LISTS_PATH}"},
        }
        body = key.sign(claims, STATUS_LIST_TYP).encode("ascii")
        return SignedList(version, size, lst, key.kid, _document(body, ttl), now, now)

    # -- the aggregation ---------------------------------------------------------------
    def aggregation(self, svc: Services) -> Document:
        """``{"status_lists": [every list's URI]}``, read at most once a second."""
        ttl = svc.settings.status_list_ttl
        now = svc.clock().timestamp()
        cached = self._aggregation
        if cached is not None and _age(now, cached.read_at) < VERSION_CHECK_SECONDS:
            return cached.document
        with self._aggregation_lock:
            cached = self._aggregation
            if cached is not None and _age(now, cached.read_at) < VERSION_CHECK_SECONDS:
                return cached.document
            try:
                with _autocommit() as connection:
                    ids = token_status.list_ids(connection)
            except SQLAlchemyError as exc:
                if http.is_database_outage(exc):
                    http.database_error("status list aggregation", exc)
                else:
                    log.exception("status list aggregation: the lists could not be read")
                if cached is not None and _age(now, cached.read_at) < ttl:
                    return cached.document
                raise Unavailable from None
            issuer = svc.settings.issuer
            body = http.json_body({"status_lists": [list_uri(issuer, i) for i in ids]})
            if cached is None or cached.document.body != body:
                cached = _Aggregation(_document(body, ttl), now)
            else:
                cached = dataclasses.replace(cached, read_at=now)
            self._aggregation = cached
            return cached.document


def _install(state: BlueprintSetupState) -> None:
    state.app.extensions.setdefault(EXTENSION, StatusLists())


bp.record_once(_install)


def _lists() -> StatusLists:
    lists: StatusLists = current_app.extensions[EXTENSION]
    return lists


def _answer(document: Document, mimetype: str) -> Response:
    """200 with the document, or 304 for a matching ``If-None-Match``; ``HEAD`` gets the
    headers only (Werkzeug drops the body)."""
    headers = {"Cache-Control": document.cache_control, "ETag": document.etag}
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match and document.matches(if_none_match):
        return Response(status=304, headers=headers)
    return Response(document.body, mimetype=mimetype, headers=headers)


def _not_found() -> Response:
    return http.json_response({"error": "not_found", "error_description": "no such status list"},
                              404, http.NO_STORE)


def _guarded(read: Callable[[], Response]) -> Response:
    """The view's answer; the database's failure without a copy at hand is 503."""
    try:
        return read()
    except Unavailable:
        return http.unavailable()


@bp.get(f"{STATUS_LISTS_PATH}/<list_id>")
def status_list(list_id: str) -> Response:
    """One Status List Token (``GET`` and ``HEAD``)."""
    if "time" in request.args:
        # The draft's historical resolution: not kept here ("not implemented", as it asks).
        return http.json_response(
            {"error": "invalid_request",
             "error_description": "historical status lists are not available"},
            501, http.NO_STORE)
    number = int(list_id) if _LIST_ID.fullmatch(list_id) else 0
    if not 1 <= number <= MAX_LIST_ID:
        return _not_found()

    def read() -> Response:
        document = _lists().get(number, services())
        return _answer(document, MEDIA_TYPE) if document is not None else _not_found()

    return _guarded(read)


@bp.get(STATUS_LISTS_PATH)
def aggregation() -> Response:
    """The Status List Aggregation: ``{"status_lists": [uri, ...]}``."""
    return _guarded(lambda: _answer(_lists().aggregation(services()), "application/json"))
