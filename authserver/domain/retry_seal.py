"""Sealing the rotation response for an identical retry inside the grace window.

The response (which contains a live access token and refresh token) is stored only as
AES-256-GCM ciphertext under a key derived with HKDF from the *presented* refresh token.
The database never holds that token, only its SHA-256 digest, so a database reader cannot
open the box; the client that retries with the same token can (docs/design.md, "Rotation" 2).
"""

from __future__ import annotations

import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_INFO = b"authserver rotation-retry v1"
_NONCE_BYTES = 12


def _key(presented_token: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
        presented_token.encode("utf-8", "surrogatepass")
    )


def seal(presented_token: str, response: dict[str, Any], token_row_id: int) -> bytes:
    nonce = os.urandom(_NONCE_BYTES)
    plaintext = json.dumps(response, separators=(",", ":")).encode()
    aad = str(token_row_id).encode()
    return nonce + AESGCM(_key(presented_token)).encrypt(nonce, plaintext, aad)


def open_sealed(presented_token: str, box: bytes, token_row_id: int) -> dict[str, Any] | None:
    """The sealed response, or None if the box does not open with this token."""
    try:
        nonce, ciphertext = box[:_NONCE_BYTES], box[_NONCE_BYTES:]
        plaintext = AESGCM(_key(presented_token)).decrypt(
            nonce, ciphertext, str(token_row_id).encode()
        )
        value = json.loads(plaintext)
    except (InvalidTag, ValueError):
        return None
    return value if isinstance(value, dict) else None
