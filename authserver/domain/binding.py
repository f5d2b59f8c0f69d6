"""Binding a sign-in (refresh family) to the device that received it
(docs/design.md, "Device binding").

A client's policy says which parts of the device context must match on refresh: the
``device_id`` the app sent, the user-agent *family* (app or browser + OS, no versions),
and the IP network. DPoP (RFC 9449) is the cryptographic binding: a family bound to a key
thumbprint accepts refreshes only with a proof signed by that key, whatever the policy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from . import user_agents
from .errors import ValidationError

IP_POLICIES = ("off", "exact", "/24", "/16", "/64", "/48")
# Each network policy has an IPv4 and an IPv6 meaning, so one setting covers both.
_PREFIXES = {"/24": (24, 64), "/64": (24, 64), "/16": (16, 48), "/48": (16, 48)}
MISMATCH_ACTIONS = ("reject", "revoke")
DEVICE_ID_MIN, DEVICE_ID_MAX = 8, 128


@dataclass(frozen=True)
class BindingPolicy:
    """What must match on refresh, per client. The defaults: docs/design.md, "Device binding"."""

    device_id: bool = True  # the device id must match when one was given at sign-in
    user_agent: bool = True  # the user-agent family must match
    ip: str = "off"
    require_device_id: bool = False
    on_mismatch: str = "revoke"
    require_dpop: bool = False

    def validate(self) -> BindingPolicy:
        if self.ip not in IP_POLICIES:
            raise ValidationError(f"bind_ip must be one of {', '.join(IP_POLICIES)}", "bind_ip")
        if self.on_mismatch not in MISMATCH_ACTIONS:
            raise ValidationError("on_binding_mismatch must be reject or revoke",
                                  "on_binding_mismatch")
        return self


@dataclass(frozen=True)
class DeviceContext:
    """Where a token request came from."""

    device_id: str | None = None
    user_agent: str | None = None
    ip: str | None = None
    dpop_jkt: str | None = None

    @property
    def ua_family(self) -> str:
        return user_agents.family(self.user_agent)

    def describe(self) -> dict[str, str | None]:
        """For the audit trail (no secrets: these are what the client sent openly)."""
        return {"device_id": self.device_id, "user_agent_family": self.ua_family,
                "ip": self.ip, "dpop_jkt": self.dpop_jkt}


@dataclass(frozen=True)
class Bound:
    """What a family was bound to at sign-in, and the address its last token went to."""

    device_id: str | None
    ua_family: str | None
    ip: str | None
    dpop_jkt: str | None

    def describe(self) -> dict[str, str | None]:
        return {"device_id": self.device_id, "user_agent_family": self.ua_family,
                "ip": self.ip, "dpop_jkt": self.dpop_jkt}


def valid_device_id(value: str) -> bool:
    """8 to 128 printable ASCII characters, no spaces."""
    return DEVICE_ID_MIN <= len(value) <= DEVICE_ID_MAX and all(
        0x21 <= ord(ch) <= 0x7E for ch in value)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(value)
    # A dual-stack socket reports IPv4 clients as ::ffff:a.b.c.d: the same client.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise_ip(value: str | None) -> str | None:
    """The canonical text of a client address, or None if it is not one.

    The address comes from the socket or from a trusted proxy's ``X-Forwarded-For``; a
    misconfigured proxy count could still pass on junk, which must not reach the database.
    """
    if not value:
        return None
    try:
        return str(_address(value.strip()))
    except ValueError:
        return None


def same_network(a: str | None, b: str | None, policy: str) -> bool:
    """Whether ``b`` is in ``a``'s network under ``policy`` (off, exact, or a prefix pair:
    /24 and /64 mean IPv4 /24 or IPv6 /64; /16 and /48 mean IPv4 /16 or IPv6 /48)."""
    if policy == "off":
        return True
    if a is None or b is None:
        return False
    try:
        first, second = _address(a), _address(b)
    except ValueError:
        return False
    if first.version != second.version:
        return False
    if policy == "exact":
        return first == second
    v4, v6 = _PREFIXES[policy]
    prefix = v4 if first.version == 4 else v6
    network = ipaddress.ip_network(f"{first}/{prefix}", strict=False)
    return second in network


def mismatches(policy: BindingPolicy, bound: Bound, presented: DeviceContext) -> list[str]:
    """The parts of the context that do not match (empty when the request may proceed)."""
    found = []
    if bound.dpop_jkt is not None and presented.dpop_jkt != bound.dpop_jkt:
        found.append("dpop_key")
    if policy.device_id and bound.device_id is not None and (
            presented.device_id != bound.device_id):
        found.append("device_id")
    if policy.user_agent and bound.ua_family is not None and (
            presented.ua_family != bound.ua_family):
        found.append("user_agent")
    if not same_network(bound.ip, presented.ip, policy.ip):
        found.append("ip")
    return found
