"""JSON views of decoded messages (for `pacao lisp decode` and the daemons' logs)."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from pacao.lisp.address import InstanceIdAddress, LcafAddress
from pacao.lisp.messages import (
    ACTIONS,
    MESSAGE_NAMES,
    REFERRAL_ACTIONS,
    InfoMessage,
    MappingRecord,
    Message,
    ReferralRecord,
    RequestRecord,
)
from pacao.lisp.pcap import iter_lisp, read_pcap
from pacao.lisp.wire import LispDecodeError

_HEX_INTS = {"nonce"}


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: addresses as text, bytes as hex, nonces as 0x-hex."""
    if isinstance(obj, Message):
        name = obj.name if isinstance(obj, InfoMessage) else MESSAGE_NAMES.get(obj.TYPE)
        out: dict[str, Any] = {"type": name or str(obj.TYPE)}
        out.update(_fields(obj))
        return out
    if isinstance(obj, MappingRecord | RequestRecord | ReferralRecord):
        out = {"eid_prefix": _prefix_text(obj)}
        out.update(_fields(obj))
        if isinstance(obj, MappingRecord):
            out["action_name"] = ACTIONS.get(obj.action, "unassigned")
        if isinstance(obj, ReferralRecord):
            out["action_name"] = REFERRAL_ACTIONS.get(obj.action, "unassigned")
        return out
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _fields(obj)
    if isinstance(obj, IPv4Address | IPv6Address | InstanceIdAddress | LcafAddress):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, tuple | list):
        return [to_jsonable(x) for x in obj]
    return obj


def _prefix_text(rec: MappingRecord | RequestRecord | ReferralRecord) -> str:
    try:
        return str(rec.prefix)
    except ValueError:
        return f"{rec.eid}/{rec.eid_mask_len}"


def _fields(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if f.name in _HEX_INTS and isinstance(value, int):
            out[f.name] = f"0x{value:016x}"
        else:
            out[f.name] = to_jsonable(value)
    return out


def decode_pcap(path: Path) -> list[dict[str, Any]]:
    """Every LISP control datagram of a capture, decoded (or the decode error)."""
    from pacao.lisp.messages import decode_message

    rows: list[dict[str, Any]] = []
    for d in iter_lisp(read_pcap(path)):
        row: dict[str, Any] = {
            "frame": d.frame,
            "time": d.time,
            "source": f"{d.source}:{d.source_port}",
            "destination": f"{d.destination}:{d.destination_port}",
        }
        try:
            row["message"] = to_jsonable(decode_message(d.payload))
        except LispDecodeError as exc:
            row["error"] = {"offset": exc.offset, "field": exc.field, "reason": exc.reason}
            row["payload"] = d.payload.hex()
        rows.append(row)
    return rows
