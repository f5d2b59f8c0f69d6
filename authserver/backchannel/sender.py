"""One outbound POST of a logout token (OpenID Connect Back-Channel Logout 1.0 §2.5), with
the rules an authorization server needs when it calls URLs that clients registered
(docs/design.md, "Revocation that reaches APIs"):

- ``https`` only in production; ``http`` (to a loopback host, the only kind registration
  allows) in development.
- In production the host is resolved once and *every* address it resolves to is checked:
  one that is private, loopback, link-local, shared, multicast or reserved refuses the
  delivery (unless the operator allows private receivers). The connection then goes to
  an address that was checked, never through a second lookup, so a name that changes its
  answer between the check and the connection (DNS rebinding) gains nothing. TLS still
  verifies the certificate against the host name.
- No redirect is followed: a 3xx is a failure (§2.8 counts only 200 and 204 as success).
- ``timeout`` bounds the whole exchange: connecting, sending, and reading the answer.

The token is the request's only secret: it is never logged, and no error message holds it.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

USER_AGENT = "authserver-backchannel-logout/1"
MAX_ERROR = 200
SUCCESS = (200, 204)  # Back-Channel Logout §2.8

Address = tuple[int, Any]  # (address family, socket address)


@dataclass(frozen=True)
class Policy:
    """What one delivery may do: the timeout (seconds), ``https`` required, and whether
    receivers at non-public addresses may be reached."""

    timeout: float
    https_only: bool = True
    allow_private: bool = False


@dataclass(frozen=True)
class Outcome:
    """The receiver's answer: ``ok`` for 200 or 204; ``error`` says why not (never holds
    the token)."""

    ok: bool
    status: int | None = None
    error: str = ""


class Refused(Exception):
    """The delivery may not be attempted (scheme, address): retrying will not help soon."""


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def resolve(host: str, port: int, policy: Policy) -> list[Address]:
    """The addresses to try, each checked against ``policy``; :class:`Refused` if any of
    them may not be reached (one bad answer refuses the whole name)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ConnectionError(f"cannot resolve {host[:80]!r}: {exc}") from None
    addresses: list[Address] = []
    for family, _, _, _, sockaddr in infos:
        if (family, sockaddr) not in addresses:
            addresses.append((family, sockaddr))
    if not policy.allow_private:
        for _, sockaddr in addresses:
            if not _public(str(sockaddr[0])):
                raise Refused(f"{host[:80]!r} resolves to {sockaddr[0]}, a private, loopback "
                              "or reserved address (AUTHSERVER_BACKCHANNEL_ALLOW_PRIVATE "
                              "allows it)")
    return addresses


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to an address already resolved and checked; the Host header
    and the TLS server name are the URI's host."""

    def __init__(self, host: str, port: int, address: Address, tls: bool,
                 timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address
        self._tls = tls

    def connect(self) -> None:
        family, sockaddr = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(sockaddr)
            if self._tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _exchange(connection: _PinnedConnection, target: str, body: bytes, remaining: float
              ) -> int:
    """Send the request and read the status within ``remaining`` seconds (a receiver that
    trickles its answer byte by byte is cut off then)."""
    expired = threading.Event()

    def cut_off() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(remaining, cut_off)
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", target, body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": USER_AGENT,
            "Accept": "*/*",
            "Connection": "close",
        })
        response = connection.getresponse()
        response.read(1024)  # a short body is read; the connection is closed anyway
        return response.status
    except (OSError, http.client.HTTPException):
        if expired.is_set():
            raise TimeoutError("timed out") from None
        raise
    finally:
        timer.cancel()
        connection.close()


def send(uri: str, logout_token: str, policy: Policy) -> Outcome:
    """POST ``logout_token=<token>`` (form-encoded) to ``uri``; never raises for a
    network or receiver problem (the outcome says it)."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return Outcome(False, error="not an http(s) URI")
    if policy.https_only and scheme != "https":
        return Outcome(False, error="refused: only https receivers in production")
    host = parts.hostname
    port = parts.port or (443 if scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    body = urlencode({"logout_token": logout_token}).encode("ascii")
    try:
        addresses = resolve(host, port, policy)
    except Refused as exc:
        return Outcome(False, error=f"refused: {exc}"[:MAX_ERROR])
    except ConnectionError as exc:
        return Outcome(False, error=str(exc)[:MAX_ERROR])
    return _try_each(addresses, host, port, scheme == "https", target, body, policy.timeout)


def _try_each(addresses: Sequence[Address], host: str, port: int, tls: bool, target: str,
              body: bytes, timeout: float) -> Outcome:
    """Connect to the checked addresses in turn, all within ``timeout``; the first that
    accepts the connection gets the request."""
    deadline = time.monotonic() + timeout
    error = "no address"
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = f"{error} (timed out)" if error != "no address" else "timed out"
            break
        connection = _PinnedConnection(host, port, address, tls, remaining)
        try:
            connection.connect()
        except (OSError, ssl.SSLError) as exc:
            connection.close()
            error = f"cannot connect to {address[1][0]}: {_describe(exc)}"
            continue
        try:
            status = _exchange(connection, target, body, max(deadline - time.monotonic(), 0.01))
        except (OSError, http.client.HTTPException) as exc:
            return Outcome(False, error=f"no answer: {_describe(exc)}"[:MAX_ERROR])
        if status in SUCCESS:
            return Outcome(True, status)
        if 300 <= status < 400:
            return Outcome(False, status, f"HTTP {status}: redirects are not followed")
        return Outcome(False, status, f"HTTP {status}")
    return Outcome(False, error=error[:MAX_ERROR])


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:120]
