"""Map-Register authentication details left open by test_lisp_auth_rules (written against
mutmut's survivors in lisp/auth.py): signing with algorithm 0 clears what an earlier
signature left, an unknown algorithm is an error that names it, and the Authentication Data
Length is the whole 16-bit field (RFC 9301 section 5.6), not its low byte."""

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


def test_signing_with_no_algorithm_clears_an_earlier_signature() -> None:
    signed = auth.sign(MSG, "k", auth.ALG_HMAC_SHA1)
    assert signed.alg_id == auth.ALG_HMAC_SHA1 and len(signed.auth_data) == 20
    cleared = auth.sign(signed, "k", auth.ALG_NONE)
    assert cleared.alg_id == auth.ALG_NONE and cleared.auth_data == b""
    assert cleared.to_bytes()[12:16] == bytes(4)  # key-id kept (0), alg 0, length 0
    assert cleared == MSG


def test_an_unknown_algorithm_is_an_error_naming_it() -> None:
    with pytest.raises(LispEncodeError) as err:
        auth.sign(MSG, "k", 3)
    assert err.value.field == "alg_id" and err.value.reason == "unknown algorithm 3"


def test_the_length_field_is_sixteen_bits() -> None:
    # A SHA-1 digest (20 = 0x14 bytes) behind a length of 0x0114: signed over exactly these
    # bytes, so only the length's high byte makes it wrong.
    raw = bytearray(auth.sign(MSG, "k", auth.ALG_HMAC_SHA1).to_bytes())
    raw[14:16] = (0x0114).to_bytes(2, "big")
    zeroed = bytes(raw[:16]) + bytes(20) + bytes(raw[36:])
    raw[16:36] = hmac.new(b"k", zeroed, hashlib.sha1).digest()
    assert not auth.verify(bytes(raw), "k")
    raw[14] = 0
    zeroed = bytes(raw[:16]) + bytes(20) + bytes(raw[36:])
    raw[16:36] = hmac.new(b"k", zeroed, hashlib.sha1).digest()
    assert auth.verify(bytes(raw), "k")


def test_a_digest_that_ends_the_message_is_checked() -> None:
    # No records and no trailer: the authentication data is the message's last bytes.
    raw = auth.sign(MapRegister(7, ()), "k", auth.ALG_HMAC_SHA256).to_bytes()
    assert len(raw) == 16 + 32
    assert auth.verify(raw, "k") and not auth.verify(raw, "K")
    assert not auth.verify(raw[:-1], "k")
