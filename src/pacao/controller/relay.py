"""A UDP impairment relay: forwards datagrams with an added one-way delay (and loss).

Put in front of an xTR on loopback it raises the RTT every probe through it
sees, which is how the end-to-end test and a lab operator provoke an entry
switch without root (``tc netem`` needs it). Each ``LISTEN=TARGET`` pair binds
LISTEN; a datagram from client C goes to TARGET from a socket bound to C's
address (so TARGET sees C's address and answers that socket), and the answer
goes back to C from LISTEN, each way ``delay`` seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass, field

from pacao.lisp.config import parse_hostport
from pacao.lisp.udp import UdpEndpoint, open_udp

Addr = tuple[str, int]


@dataclass
class Relay:
    """Delay (seconds, each direction) and loss (0..1) can be changed while it runs."""

    delay: float = 0.0
    loss: float = 0.0
    forwarded: int = 0
    dropped: int = 0
    endpoints: list[UdpEndpoint] = field(default_factory=list)
    _upstream: dict[tuple[Addr, Addr], UdpEndpoint] = field(default_factory=dict)

    def _later(self, ep: UdpEndpoint, data: bytes, to: Addr) -> None:
        if self.loss > 0 and random.random() < self.loss:
            self.dropped += 1
            return
        self.forwarded += 1
        loop = asyncio.get_running_loop()
        if self.delay > 0:
            loop.call_later(self.delay, self._send, ep, data, to)
        else:
            self._send(ep, data, to)

    @staticmethod
    def _send(ep: UdpEndpoint, data: bytes, to: Addr) -> None:
        with contextlib.suppress(OSError):
            ep.sock.sendto(data, to)

    def add(self, listen: Addr, target: Addr) -> None:
        front: list[UdpEndpoint] = []

        def inbound(data: bytes, client: Addr) -> None:
            key = (listen, client)
            up = self._upstream.get(key)
            if up is None:

                def back(reply: bytes, _src: Addr) -> None:
                    self._later(front[0], reply, client)

                up = open_udp(client[0], 0, back)
                self._upstream[key] = up
                self.endpoints.append(up)
            self._later(up, data, target)

        front.append(open_udp(listen[0], listen[1], inbound))
        self.endpoints.append(front[0])

    def close(self) -> None:
        for ep in self.endpoints:
            ep.close()
        self.endpoints.clear()
        self._upstream.clear()


def parse_pair(text: str) -> tuple[Addr, Addr]:
    """``HOST:PORT=HOST:PORT`` (listen = target)."""
    a, sep, b = text.partition("=")
    if not sep:
        from pacao.errors import InputError

        raise InputError("--pair", text, "expected LISTEN_HOST:PORT=TARGET_HOST:PORT")
    return parse_hostport("--pair", a, 0), parse_hostport("--pair", b, 0)


async def serve_relay(pairs: list[tuple[Addr, Addr]], delay: float, loss: float) -> None:
    """Run until cancelled (SIGINT/SIGTERM in the CLI)."""
    from pacao.aio import wait_for_stop_signal

    relay = Relay(delay=delay, loss=loss)
    for listen, target in pairs:
        relay.add(listen, target)
    print(f"pacao controller relay: {len(pairs)} pair(s), delay {delay * 1000:g} ms", flush=True)
    try:
        await wait_for_stop_signal()
    finally:
        relay.close()
