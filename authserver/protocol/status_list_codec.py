"""The Token Status List's ``lst`` (draft-ietf-oauth-status-list, "Status List"): pure
functions, no I/O.

Entry ``idx`` with ``bits`` bits per entry occupies bits ``idx * bits`` .. ``idx * bits +
bits - 1`` of the byte array, counting from the least significant bit of byte 0 (so with 1
bit, entry ``idx`` is bit ``idx % 8`` of byte ``idx // 8``). The array is compressed with
DEFLATE in the ZLIB format (RFC 1950) and encoded as base64url without padding (RFC 4648 §5).

:func:`encode` is what the server serves (``protocol/status_lists.py``); :func:`decode` and
:func:`status_at` are what a reader does (the tests, and anyone checking a token by hand).
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Iterable

BITS = (1, 2, 4, 8)  # the sizes the draft allows for one entry
COMPRESSION_LEVEL = 9  # lists are built rarely and fetched often: the smallest body


class StatusListError(ValueError):
    """An ``lst`` that is not base64url, not ZLIB, or larger than the reader allows."""


def pack(size: int, entries: Iterable[tuple[int, int]], bits: int = 1) -> bytes:
    """The byte array of a list of ``size`` entries, all 0 (VALID) but ``entries``
    (``(idx, status)`` pairs). ``size * bits`` must be a whole number of bytes."""
    _check_bits(bits)
    if size < 0 or (size * bits) % 8:
        raise ValueError(f"{size} entries of {bits} bits are not a whole number of bytes")
    data = bytearray(size * bits // 8)
    limit = 1 << bits
    for idx, status in entries:
        if not 0 <= idx < size:
            raise ValueError(f"index {idx} is outside a list of {size} entries")
        if not 0 <= status < limit:
            raise ValueError(f"status {status} does not fit in {bits} bits")
        position = idx * bits
        byte, shift = divmod(position, 8)
        data[byte] = (data[byte] & ~((limit - 1) << shift)) | (status << shift)
    return bytes(data)


def encode(size: int, entries: Iterable[tuple[int, int]], bits: int = 1) -> str:
    """The ``lst`` value: :func:`pack`, ZLIB-compressed, base64url without padding."""
    compressed = zlib.compress(pack(size, entries, bits), COMPRESSION_LEVEL)
    return base64.urlsafe_b64encode(compressed).rstrip(b"=").decode("ascii")


def decode(lst: str, max_bytes: int = 1 << 24) -> bytes:
    """The byte array an ``lst`` holds. At most ``max_bytes`` are inflated (a
    decompression bomb stops there with :class:`StatusListError`)."""
    try:
        compressed = base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4))
    except (binascii.Error, ValueError) as exc:
        raise StatusListError("lst is not base64url") from exc
    inflater = zlib.decompressobj()
    try:
        data = inflater.decompress(compressed, max_bytes)
    except zlib.error as exc:
        raise StatusListError("lst is not ZLIB data") from exc
    if inflater.unconsumed_tail:
        raise StatusListError(f"lst inflates to more than {max_bytes} bytes")
    if not inflater.eof:
        raise StatusListError("lst is truncated")
    return data


def status_at(data: bytes, idx: int, bits: int = 1) -> int:
    """The status of entry ``idx`` in a decoded byte array; IndexError past its end."""
    _check_bits(bits)
    if idx < 0:
        raise IndexError(idx)
    byte, shift = divmod(idx * bits, 8)
    return (data[byte] >> shift) & ((1 << bits) - 1)


def _check_bits(bits: int) -> None:
    if bits not in BITS:
        raise ValueError(f"bits must be one of {BITS}, got {bits!r}")
