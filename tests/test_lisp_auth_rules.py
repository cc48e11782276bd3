"""Map-Register authentication (RFC 9301 §5.6) pinned by its properties: the digest covers
the whole message with the field zeroed, both full and RFC 6833 truncated lengths, and
every malformed or unknown header is refused rather than accepted."""

from __future__ import annotations

import hashlib
import hmac
from ipaddress import IPv4Address

import pytest

from pacao.lisp import auth
from pacao.lisp.address import EidPrefix
from pacao.lisp.messages import Locator, MappingRecord, MapRegister
from pacao.lisp.wire import LispEncodeError

REC = MappingRecord.for_prefix(
    EidPrefix.parse("10.1.0.0/16"), locators=(Locator(IPv4Address("192.0.2.1"), 1, 100),)
)
MSG = MapRegister(0x1234, (REC,), want_map_notify=True)


@pytest.mark.parametrize(
    ("alg", "hashfn", "full", "short"),
    [(auth.ALG_HMAC_SHA1, hashlib.sha1, 20, 12), (auth.ALG_HMAC_SHA256, hashlib.sha256, 32, 16)],
)
@pytest.mark.parametrize("key", ["k", b"k"])
def test_sign_writes_the_hmac_of_the_zeroed_message(
    alg: int, hashfn: object, full: int, short: int, key: str | bytes
) -> None:
    for truncated, size in ((False, full), (True, short)):
        raw = auth.sign(MSG, key, alg, truncated=truncated).to_bytes()
        assert raw[13] == alg and int.from_bytes(raw[14:16], "big") == size
        zeroed = raw[:16] + bytes(size) + raw[16 + size :]
        want = hmac.new(b"k", zeroed, hashfn).digest()[:size]  # type: ignore[arg-type]
        assert raw[16 : 16 + size] == want
        assert auth.verify(raw, "k") and auth.verify(raw, b"k")
        assert not auth.verify(raw, "K")
        for i in (0, 4, 12, 16, len(raw) - 1):  # any bit anywhere breaks it
            bad = bytearray(raw)
            bad[i] ^= 0x01
            assert not auth.verify(bytes(bad), "k"), i


def test_verify_refuses_what_it_cannot_check() -> None:
    raw = auth.sign(MSG, "k", auth.ALG_HMAC_SHA256).to_bytes()
    assert not auth.verify(raw[:15], "k")  # shorter than the header
    assert not auth.verify(raw[:40], "k")  # the digest is cut
    bad = bytearray(raw)
    bad[13] = 3  # unknown algorithm
    assert not auth.verify(bytes(bad), "k")
    bad = bytearray(raw)
    bad[14:16] = (20).to_bytes(2, "big")  # a SHA-1 length for SHA-256
    assert not auth.verify(bytes(bad), "k")
    none = auth.sign(MSG, "k", auth.ALG_NONE)
    assert none.alg_id == auth.ALG_NONE and none.auth_data == b""
    assert not auth.verify(none.to_bytes(), "k")
    with pytest.raises(LispEncodeError, match="alg_id"):
        auth.sign(MSG, "k", 7)
