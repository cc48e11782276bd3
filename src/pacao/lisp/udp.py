"""A UDP socket on the asyncio loop that drains every queued datagram per wake-up.

asyncio's datagram transport reads one datagram per event-loop iteration; a
map-resolver under load then spends most of its time in the loop itself.
This endpoint calls `recvfrom` until the socket is empty (bounded per
wake-up) and sends without buffering (a full socket buffer drops, counted by
the caller, as a router would).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from ipaddress import ip_address
from typing import Any


class UdpEndpoint:
    def __init__(
        self,
        sock: socket.socket,
        on_datagram: Callable[[bytes, tuple[str, int]], None],
        loop: asyncio.AbstractEventLoop,
        batch: int = 256,
    ) -> None:
        self.sock = sock
        self.on_datagram = on_datagram
        self.loop = loop
        self.batch = batch
        self.closed = False
        loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        recv = self.sock.recvfrom
        for _ in range(self.batch):
            try:
                data, addr = recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # e.g. ICMP port unreachable reported on the socket
                continue
            self.on_datagram(data, addr)

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sock.sendto(data, addr)

    def get_extra_info(self, name: str) -> Any:
        if name == "sockname":
            return self.sock.getsockname()
        if name == "socket":
            return self.sock
        return None

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(ValueError, OSError):
            self.loop.remove_reader(self.sock.fileno())
        self.sock.close()


def open_udp(
    host: str, port: int, on_datagram: Callable[[bytes, tuple[str, int]], None]
) -> UdpEndpoint:
    """Bind a non-blocking UDP socket (4 MiB receive buffer) on the running loop."""
    family = socket.AF_INET6 if ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        with contextlib.suppress(OSError):  # absorb bursts; the kernel caps the size
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return UdpEndpoint(sock, on_datagram, asyncio.get_running_loop())
