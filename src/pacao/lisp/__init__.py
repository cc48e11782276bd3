"""LISP control plane (RFC 9300/9301): codec, map-server/map-resolver, xTR agent.

See docs/lisp.md.  The codec lives in :mod:`pacao.lisp.wire` (engine),
:mod:`pacao.lisp.address` (AFIs, LCAF) and :mod:`pacao.lisp.messages`
(message tables); :mod:`pacao.lisp.auth` signs and verifies registrations.
"""

from pacao.lisp.address import EidPrefix, InstanceIdAddress, LcafAddress
from pacao.lisp.messages import (
    EncapsulatedControlMessage,
    Locator,
    MapNotify,
    MapNotifyAck,
    MappingRecord,
    MapRegister,
    MapReply,
    MapRequest,
    Message,
    RequestRecord,
    decode_message,
    encode_message,
)
from pacao.lisp.wire import LispDecodeError, LispEncodeError

__all__ = [
    "EidPrefix",
    "EncapsulatedControlMessage",
    "InstanceIdAddress",
    "LcafAddress",
    "LispDecodeError",
    "LispEncodeError",
    "Locator",
    "MapNotify",
    "MapNotifyAck",
    "MapRegister",
    "MapReply",
    "MapRequest",
    "MappingRecord",
    "Message",
    "RequestRecord",
    "decode_message",
    "encode_message",
]
