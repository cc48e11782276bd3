"""A minimal NFQUEUE client over raw netlink, in pure Python (no C build dependency).

The kernel has no netem here, so delay/jitter/loss are applied by holding the
verdict of queued packets in user space. Only what the delay line needs is
implemented: bind a queue with metadata-only copies (the payload is never
read), GSO pass-through (TCP super-packets get one verdict instead of ~40), and
single and batch verdicts. Protocol: linux/netfilter/nfnetlink_queue.h.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_GSO = 4
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NF_DROP = 0
NF_ACCEPT = 1
CLONE_NEWNET = 0x40000000
SOL_NETLINK = 270
NETLINK_NO_ENOBUFS = 5

_NLHDR = struct.Struct("=IHHII")
_NFGEN = struct.Struct("!BBH")
_ATTR = struct.Struct("=HH")


class NfqueueError(OSError):
    """A netlink request was refused (bad queue number, queue already bound, ...)."""


def _attr(kind: int, payload: bytes) -> bytes:
    size = _ATTR.size + len(payload)
    return _ATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


@contextmanager
def in_netns(path: str | None) -> Iterator[None]:
    """Temporarily enter a network namespace (sockets created inside stay bound to it)."""
    if path is None:
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    finally:
        os.close(target)
        os.close(home)


class Queue:
    """One bound NFQUEUE: read packet ids, then accept/drop them (now or later)."""

    def __init__(self, num: int, maxlen: int = 16384, netns: str | None = None) -> None:
        self.num = num
        self._seq = 0
        with in_netns(netns):
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self._buf = bytearray(1 << 20)
        self._config(_attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)))
        self._config(
            _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
            + _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", maxlen))
            + _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO))
            + _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_GSO))
        )
        self.sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _message(self, kind: int, flags: int, body: bytes) -> bytes:
        self._seq += 1
        payload = _NFGEN.pack(socket.AF_UNSPEC, 0, self.num) + body
        return (
            _NLHDR.pack(
                _NLHDR.size + len(payload), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, self._seq, 0
            )
            + payload
        )

    def _config(self, body: bytes) -> None:
        self.sock.send(self._message(NFQNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, body))
        data = self.sock.recv(65536)
        _len, kind, _flags, _seq, _pid = _NLHDR.unpack_from(data, 0)
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, _NLHDR.size)
            if code != 0:
                raise NfqueueError(-code, f"NFQUEUE {self.num} config: {os.strerror(-code)}")

    def read(self) -> list[int]:
        """Ids of all packets waiting now (non-blocking; empty list if none)."""
        ids: list[int] = []
        while True:
            try:
                n = self.sock.recv_into(self._buf)
            except BlockingIOError:
                return ids
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue
                raise
            off = 0
            buf = self._buf
            while off + _NLHDR.size <= n:
                length, kind, _flags, _seq, _pid = _NLHDR.unpack_from(buf, off)
                if length < _NLHDR.size:
                    break
                if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                    a = off + _NLHDR.size + _NFGEN.size
                    end = off + length
                    while a + 4 <= end:
                        alen, atype = _ATTR.unpack_from(buf, a)
                        if alen < 4:
                            break
                        if atype & 0x7FFF == NFQA_PACKET_HDR:
                            ids.append(struct.unpack_from("!I", buf, a + 4)[0])
                            break
                        a += (alen + 3) & ~3
                off += (length + 3) & ~3

    def verdict(self, packet_id: int, accept: bool) -> None:
        """Accept or drop one packet."""
        hdr = struct.pack("!II", NF_ACCEPT if accept else NF_DROP, packet_id)
        self.sock.send(
            self._message(NFQNL_MSG_VERDICT, NLM_F_REQUEST, _attr(NFQA_VERDICT_HDR, hdr))
        )

    def accept_upto(self, packet_id: int) -> None:
        """Accept every queued packet with an id <= packet_id (one message)."""
        hdr = struct.pack("!II", NF_ACCEPT, packet_id)
        self.sock.send(
            self._message(NFQNL_MSG_VERDICT_BATCH, NLM_F_REQUEST, _attr(NFQA_VERDICT_HDR, hdr))
        )
