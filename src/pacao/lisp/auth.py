"""Map-Register / Map-Notify authentication (RFC 9301 §5.6) as deployed.

The authentication data is the HMAC of the whole LISP message (type nibble to
the end of the UDP payload) computed with the authentication field zeroed and
keyed with the ASCII site key.  lispers.net sends the full digest: 20 bytes
for HMAC-SHA-1 (algorithm 1) and 32 bytes for HMAC-SHA-256 (algorithm 2).
RFC 6833 specified truncated digests (HMAC-SHA-1-96, HMAC-SHA-256-128);
`verify` also accepts those lengths, `sign` writes the full digest.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace
from typing import TypeVar

from pacao.lisp.messages import ChangePriority, MapNotify, MapRegister
from pacao.lisp.wire import LispEncodeError

ALG_NONE = 0
ALG_HMAC_SHA1 = 1
ALG_HMAC_SHA256 = 2
ALGORITHMS = {ALG_HMAC_SHA1: hashlib.sha1, ALG_HMAC_SHA256: hashlib.sha256}
DIGEST_SIZE = {ALG_HMAC_SHA1: 20, ALG_HMAC_SHA256: 32}
TRUNCATED_SIZE = {ALG_HMAC_SHA1: 12, ALG_HMAC_SHA256: 16}
ALG_NAMES = {"none": ALG_NONE, "sha1": ALG_HMAC_SHA1, "sha256": ALG_HMAC_SHA256}
AUTH_OFFSET = 16  # 4 header + 8 nonce + key-id, alg-id, length
M = TypeVar("M", MapRegister, MapNotify, ChangePriority)


def _key(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


def digest(alg_id: int, key: str | bytes, data: bytes) -> bytes:
    return hmac.new(_key(key), data, ALGORITHMS[alg_id]).digest()


def sign(msg: M, key: str | bytes, alg_id: int = ALG_HMAC_SHA256, truncated: bool = False) -> M:
    """Return `msg` with its authentication data computed for `key`.

    `truncated`: the RFC 6833 lengths (HMAC-SHA-1-96, HMAC-SHA-256-128), used to
    answer a peer that sent those."""
    if alg_id == ALG_NONE:
        return replace(msg, alg_id=ALG_NONE, auth_data=b"")
    if alg_id not in ALGORITHMS:
        raise LispEncodeError("alg_id", f"unknown algorithm {alg_id}")
    size = (TRUNCATED_SIZE if truncated else DIGEST_SIZE)[alg_id]
    zeroed: M = replace(msg, alg_id=alg_id, auth_data=bytes(size))
    return replace(zeroed, auth_data=digest(alg_id, key, zeroed.to_bytes())[:size])


def verify(raw: bytes, key: str | bytes) -> bool:
    """Check the HMAC of a received Map-Register/Notify/CHANGE-PRIORITY (raw bytes)."""
    if len(raw) < AUTH_OFFSET:
        return False
    alg_id = raw[13]
    length = int.from_bytes(raw[14:16], "big")
    if alg_id not in ALGORITHMS or length not in (DIGEST_SIZE[alg_id], TRUNCATED_SIZE[alg_id]):
        return False
    end = AUTH_OFFSET + length
    if len(raw) < end:
        return False
    zeroed = raw[:AUTH_OFFSET] + bytes(length) + raw[end:]
    expected = digest(alg_id, key, zeroed)[:length]
    return hmac.compare_digest(expected, raw[AUTH_OFFSET:end])
