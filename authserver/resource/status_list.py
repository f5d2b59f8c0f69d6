"""Token Status List checks for a resource server (draft-ietf-oauth-status-list §8).

An access token may carry ``"status": {"status_list": {"idx": N, "uri": U}}``. The list
behind ``U`` is a signed ``statuslist+jwt`` whose ``status_list.lst`` is a zlib-DEFLATE
(RFC 1950) bit array, ``bits`` (1, 2, 4 or 8) per entry, packed from the least significant
bit of each byte. The entry at ``idx`` is 0 (VALID), 1 (INVALID), 2 (SUSPENDED), or
another value (refused too). See docs/design.md, "Revocation that reaches APIs".

:class:`StatusListCache` keeps each list for its ``ttl`` (never past its ``exp``), so the
check on a request is a dictionary lookup and a bit test. Per list:

- one fetch in flight: of the threads that find the copy stale, one fetches and the
  others wait for it; revalidation with ``If-None-Match`` (a 304 renews the copy);
- a list is trusted only from an allowed URI (under the issuer by default), only over
  https (http only to a loopback host or the issuer's own origin), and only when it is
  signed by a key of the issuer's JWKS with an accepted algorithm that fits the key,
  ``typ`` ``statuslist+jwt``, ``sub`` equal to the URI;
- when a refetch fails, the previous copy stays in use until ``ttl + grace`` after it was
  fetched (and never past its ``exp``), retried at most once per ``retry_interval``; then
  ``failure="closed"`` (the default) refuses the token with :class:`StatusUnavailable`,
  ``failure="open"`` accepts it unchecked (and logs).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard
from urllib.parse import urlsplit

from . import jws
from .errors import (
    InvalidClaims,
    InvalidToken,
    StatusUnavailable,
    TokenRevoked,
)
from .http import MAX_BODY, HttpClient, HttpError, freshness
from .jwks import KeySetCache

log = logging.getLogger(__name__)

VALID, INVALID, SUSPENDED = 0, 1, 2
STATUS_LIST_TYPES = ("statuslist+jwt", "application/statuslist+jwt")
MEDIA_TYPE = "application/statuslist+jwt"
ALLOWED_BITS = (1, 2, 4, 8)
MAX_LIST_BYTES = 16 * 1024 * 1024  # decompressed: 2^27 one-bit entries
MAX_LISTS = 1_000  # lists cached at once; only signed tokens can name one
MIN_TTL = 1.0
FAILURE_POLICIES = ("closed", "open")


class StatusListError(Exception):
    """A list could not be fetched, verified or decoded (the reason, for logs and 503s)."""


@dataclass(frozen=True)
class StatusList:
    """A decoded list: ``bits`` per entry in ``data``, LSB first (draft §4.1)."""

    bits: int
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data) * 8 // self.bits

    def status(self, idx: int) -> int | None:
        """The status of entry ``idx``, or None when the list is shorter."""
        if self.bits == 1:  # the common case, kept to three operations
            byte = idx >> 3
            if byte >= len(self.data):
                return None
            return (self.data[byte] >> (idx & 7)) & 1
        per_byte = 8 // self.bits
        byte = idx // per_byte
        if byte >= len(self.data):
            return None
        return (self.data[byte] >> ((idx % per_byte) * self.bits)) & ((1 << self.bits) - 1)


def decode_status_list(claim: Any) -> StatusList:
    """The ``status_list`` claim of a Status List Token (draft §4.2) decoded."""
    if not isinstance(claim, dict):
        raise StatusListError("the status_list claim is not an object")
    bits, lst = claim.get("bits"), claim.get("lst")
    if type(bits) is not int or bits not in ALLOWED_BITS:
        raise StatusListError("the status list's bits is not 1, 2, 4 or 8")
    if not isinstance(lst, str) or not lst:
        raise StatusListError("the status list has no lst")
    try:
        compressed = jws.b64decode(lst, "the status list")
    except (InvalidToken, ValueError) as exc:
        raise StatusListError("the status list's lst is not base64url") from exc
    inflater = zlib.decompressobj(wbits=15)  # the zlib format (RFC 1950), not raw DEFLATE
    try:
        data = inflater.decompress(compressed, MAX_LIST_BYTES)
    except zlib.error as exc:
        raise StatusListError(f"the status list does not inflate: {exc}") from exc
    if inflater.unconsumed_tail:
        raise StatusListError("the status list is too large")
    if not inflater.eof or inflater.unused_data:
        raise StatusListError("the status list's zlib stream is truncated or padded")
    return StatusList(bits, data)


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port


class _Entry:
    """One list's cache slot; its lock is held by whoever fetches it."""

    __slots__ = ("attempted_at", "current", "error", "etag", "expires_at", "failed",
                 "fresh_until", "lock", "ttl", "usable_until")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.current: StatusList | None = None
        self.etag: str | None = None
        self.ttl = 0.0
        self.fresh_until = 0.0   # timer: refetch from here on
        self.usable_until = 0.0  # timer: ttl + grace, never past exp
        self.expires_at = math.inf  # timer: the list's exp (plus leeway)
        self.attempted_at: float | None = None
        self.failed = False
        self.error = ""


class StatusListCache:
    """The status lists an issuer's tokens point at; :meth:`check` a token's claim."""

    def __init__(self, issuer: str, keys: KeySetCache, http: HttpClient, *,
                 algorithms: Collection[str], allowed_uris: Iterable[str] | None = None,
                 failure: str = "closed", grace: float = 60.0, retry_interval: float = 2.0,
                 default_ttl: float = 60.0, max_ttl: float = 3600.0, timeout: float = 5.0,
                 leeway: int = 30, clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.monotonic) -> None:
        if failure not in FAILURE_POLICIES:
            raise ValueError(f"status_failure must be 'closed' or 'open', not {failure!r}")
        if grace < 0 or retry_interval <= 0 or default_ttl < MIN_TTL or max_ttl < MIN_TTL:
            raise ValueError("status grace must be >= 0, the retry interval > 0, ttls >= 1 s")
        self.issuer = issuer
        self._issuer_origin = _origin(issuer)
        prefixes = [issuer] if allowed_uris is None else list(allowed_uris)
        if isinstance(allowed_uris, str):
            raise ValueError("status_list_uris is a list of URL prefixes, not one string")
        self.allowed_prefixes = tuple(self._prefix(p) for p in prefixes)
        self._keys = keys
        self._http = http
        self._algorithms = tuple(algorithms)
        self.failure = failure
        self.grace = grace
        self.retry_interval = retry_interval
        self._default_ttl = default_ttl
        self._max_ttl = max_ttl
        self._timeout = timeout
        self._leeway = leeway
        self._clock = clock
        self._timer = timer
        self._entries: dict[str, _Entry] = {}
        self._entries_lock = threading.Lock()
        # Counters for operators and tests.
        self.fetches = 0
        self.not_modified = 0
        self.failures = 0

    # -- the request path ---------------------------------------------------------------
    def check(self, status: Any) -> None:
        """Raise unless the token's ``status`` claim (draft §6.1) says VALID."""
        if not isinstance(status, dict):
            raise InvalidClaims("the status claim is not an object")
        reference = status.get("status_list")
        if reference is None:
            return  # another status mechanism (draft §14.3): not one we check
        if not isinstance(reference, dict):
            raise InvalidClaims("the status_list claim is not an object")
        idx, uri = reference.get("idx"), reference.get("uri")
        if type(idx) is not int or idx < 0:
            raise InvalidClaims("the status_list idx is not a non-negative integer")
        if not isinstance(uri, str):
            raise InvalidClaims("the status_list uri is not a string")
        value = self.status(uri, idx)
        if value:
            raise TokenRevoked(value)

    def status(self, uri: str, idx: int) -> int:
        """The status of entry ``idx`` of the list at ``uri`` (VALID when failing open)."""
        entry = self._entries.get(uri) or self._entry(uri)
        current = entry.current
        if current is None or self._timer() >= entry.fresh_until:
            current = self._refresh(entry, uri)
            if current is None:
                return VALID  # failure="open", logged by _refresh
        value = current.status(idx)
        if value is None:
            # draft §8.3: an index outside the list has no status to trust
            raise InvalidClaims("the access token's status index lies outside its list")
        return value

    # -- the URI rules ------------------------------------------------------------------
    def _prefix(self, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"a status list URI prefix must be an absolute URL: {url!r}")
        if parts.username is not None or parts.query or parts.fragment:
            raise ValueError(f"a status list URI prefix has no userinfo, query, fragment: {url!r}")
        if not self._transport_allowed(url):
            raise ValueError(f"status lists must come over https (http only from loopback "
                             f"or the issuer's origin): {url!r}")
        return url if parts.path.endswith("/") else url + "/"

    def _transport_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        if parts.scheme == "https":
            return True
        return parts.scheme == "http" and (_is_loopback(parts.hostname or "")
                                           or _origin(url) == self._issuer_origin)

    def _entry(self, uri: str) -> _Entry:
        parts = urlsplit(uri)
        if (not parts.hostname or parts.username is not None or parts.fragment
                or not self._transport_allowed(uri)
                or not any(uri.startswith(prefix) for prefix in self.allowed_prefixes)):
            raise InvalidClaims("the access token's status list is not at an allowed URI")
        with self._entries_lock:
            entry = self._entries.get(uri)
            if entry is None:
                if len(self._entries) >= MAX_LISTS:
                    now = self._timer()
                    self._entries = {u: e for u, e in self._entries.items()
                                     if e.current is not None and now < e.usable_until}
                    if len(self._entries) >= MAX_LISTS:
                        raise StatusUnavailable("status list unavailable: too many lists")
                entry = self._entries[uri] = _Entry()
            return entry

    # -- fetching -----------------------------------------------------------------------
    def _refresh(self, entry: _Entry, uri: str) -> StatusList | None:
        """Fetch once for everyone waiting; the list to use, or None to fail open."""
        with entry.lock:
            now = self._timer()
            if entry.current is not None and now < entry.fresh_until:
                return entry.current  # fetched by another thread while this one waited
            if (entry.attempted_at is None or not entry.failed
                    or now - entry.attempted_at >= self.retry_interval):
                entry.attempted_at = now
                try:
                    self._fetch(entry, uri, now)
                    entry.failed = False
                    return entry.current
                except StatusListError as exc:
                    self.failures += 1
                    entry.failed, entry.error = True, str(exc)
                    # Until the next retry, requests use the old copy without this lock.
                    entry.fresh_until = min(now + self.retry_interval, entry.usable_until)
                    log.warning("status list %s: %s", uri[:200], exc)
            if entry.current is not None and now < entry.usable_until:
                return entry.current  # the previous copy, within ttl + grace
            if self.failure == "open":
                log.warning("status list %s unavailable (%s): token accepted unchecked",
                            uri[:200], entry.error)
                return None
            raise StatusUnavailable(f"status list unavailable: {entry.error}")

    def _fetch(self, entry: _Entry, uri: str, now: float) -> None:
        headers = {"Accept": MEDIA_TYPE}
        revalidate = entry.current is not None and entry.etag and now < entry.expires_at
        if revalidate and entry.etag:
            headers["If-None-Match"] = entry.etag
        self.fetches += 1
        try:
            response = self._http.get(uri, headers, self._timeout)
        except HttpError as exc:
            raise StatusListError(f"the status list could not be fetched: {exc}") from exc
        if response.status == 304 and revalidate:
            self.not_modified += 1
            self._keep(entry, now, entry.ttl, entry.expires_at - now)
            return
        if response.status != 200:
            raise StatusListError(f"the status list answered HTTP {response.status}")
        try:
            token = response.body.decode("ascii").strip()
        except UnicodeDecodeError:
            raise StatusListError("the status list is not a JWT") from None
        try:
            _, payload = jws.verify(token, self._keys, algorithms=self._algorithms,
                                    types=STATUS_LIST_TYPES, what="the status list token",
                                    max_length=MAX_BODY)
        except jws.TypeMismatch:
            raise StatusListError("the status list token's typ is not statuslist+jwt"
                                  ) from None
        except InvalidToken as exc:
            raise StatusListError(exc.description) from None
        current, ttl, remaining = self._claims(payload, uri, response)
        entry.current, entry.etag = current, response.header("ETag")
        self._keep(entry, now, ttl, remaining)

    def _claims(self, payload: dict[str, Any], uri: str, response: Any
                ) -> tuple[StatusList, float, float]:
        """draft §8.3: ``sub`` is the URI, ``iat``/``exp`` hold; the list and its ``ttl``."""
        if payload.get("sub") != uri:
            raise StatusListError("the status list token's sub is not its URI")
        if "iss" in payload and payload["iss"] != self.issuer:
            raise StatusListError("the status list token was issued by another server")
        wall = self._clock()
        iat = payload.get("iat")
        if not _number(iat) or iat > wall + self._leeway:
            raise StatusListError("the status list token's iat is missing or in the future")
        remaining = math.inf
        if "exp" in payload:
            exp = payload["exp"]
            if not _number(exp):
                raise StatusListError("the status list token's exp is not a number")
            remaining = exp + self._leeway - wall
            if remaining <= 0:
                raise StatusListError("the status list token has expired")
        if "ttl" in payload:
            ttl = payload["ttl"]
            if not _number(ttl) or ttl <= 0:
                raise StatusListError("the status list token's ttl is not a positive number")
        else:
            ttl = freshness(response, self._default_ttl)
        current = decode_status_list(payload.get("status_list"))
        return current, min(max(float(ttl), MIN_TTL), self._max_ttl), remaining

    def _keep(self, entry: _Entry, now: float, ttl: float, remaining: float) -> None:
        entry.ttl = ttl
        entry.expires_at = now + remaining
        entry.fresh_until = now + min(ttl, remaining)
        entry.usable_until = now + min(ttl + self.grace, remaining)


def _number(value: Any) -> TypeGuard[int | float]:
    return (not isinstance(value, bool) and isinstance(value, int | float)
            and math.isfinite(value))


__all__ = ["INVALID", "SUSPENDED", "VALID", "StatusList", "StatusListCache",
           "StatusListError", "decode_status_list"]
