"""User-space delay line: one process applies delay/jitter/loss to every link end of a testbed.

Each link end (namespace, egress interface) has its own NFQUEUE. An iptables rule
`mangle POSTROUTING -o IF -j NFQUEUE` is installed only while that end is impaired,
so unimpaired links run at kernel speed. Packets are released in FIFO order at
arrival + delay + N(0, jitter) (never before the previous one: jitter without
reordering, which TCP tolerates as real queues do), lost ones are dropped at once.
FIFO order lets one batch verdict release every due packet.

Control: JSON lines on a UNIX socket (path-based, so reachable from any namespace):
  {"op": "set", "queue": 7, "delay_ms": 50, "jitter_ms": 5, "loss_pct": 1}
  {"op": "stats"}
"""

from __future__ import annotations

import argparse
import json
import random
import select
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacao.testbed.daemons import control as control_channel
from pacao.testbed.daemons import drain, serve
from pacao.testbed.daemons.nfqueue import Queue

EARLY = 50e-6  # release packets due within 50 us now rather than sleep again


@dataclass
class End:
    """One direction of one link: packets leaving `iface` inside namespace `ns`."""

    queue: int
    ns: str
    iface: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    ruled: bool = False
    nfq: Queue | None = None
    held: deque[tuple[float, int]] = field(default_factory=deque)
    last_release: float = 0.0
    passed: int = 0
    dropped: int = 0

    @property
    def active(self) -> bool:
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.loss_pct > 0


def _rule(end: End, op: str) -> None:
    cmd = ["ip", "netns", "exec", end.ns, "iptables", "-w", "-t", "mangle", op, "POSTROUTING"]
    cmd += ["-o", end.iface, "-j", "NFQUEUE", "--queue-num", str(end.queue)]
    subprocess.run(cmd, check=True, capture_output=True)


class DelayLine:
    """The event loop: queues, timers, control socket."""

    def __init__(self, ends: list[End], control: Path, seed: int | None = None) -> None:
        self.ends = {e.queue: e for e in ends}
        self.rng = random.Random(seed)
        for end in ends:
            end.nfq = Queue(end.queue, netns=f"/run/netns/{end.ns}")
        self.ctl = control_channel.listen(control)
        self.running = True
        for end in ends:
            self.apply(end)

    def apply(self, end: End) -> None:
        """Install or remove the end's iptables rule to match its settings."""
        if end.active and not end.ruled:
            _rule(end, "-A")
            end.ruled = True
        elif not end.active and end.ruled:
            _rule(end, "-D")
            end.ruled = False

    def command(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "stats":
            return {
                "ok": True,
                "ends": [
                    {
                        "queue": e.queue,
                        "ns": e.ns,
                        "iface": e.iface,
                        "delay_ms": e.delay_ms,
                        "jitter_ms": e.jitter_ms,
                        "loss_pct": e.loss_pct,
                        "passed": e.passed,
                        "dropped": e.dropped,
                        "held": len(e.held),
                    }
                    for e in self.ends.values()
                ],
            }
        if op == "set":
            end = self.ends.get(int(req.get("queue", -1)))
            if end is None:
                return {"ok": False, "error": f"unknown queue {req.get('queue')}"}
            for key in ("delay_ms", "jitter_ms", "loss_pct"):
                if key in req:
                    value = float(req[key])
                    if not 0 <= value <= (100 if key == "loss_pct" else 60_000):
                        return {"ok": False, "error": f"{key} {value} out of range"}
                    setattr(end, key, value)
            self.apply(end)
            return {"ok": True}
        if op == "stop":
            self.running = False
            return {"ok": True}
        return {"ok": False, "error": f"unknown op {op!r}"}

    def _control(self) -> None:
        control_channel.answer(self.ctl, self.command)

    def _arrive(self, end: End, now: float) -> None:
        assert end.nfq is not None
        for pid in end.nfq.read():
            if end.loss_pct > 0 and self.rng.random() * 100 < end.loss_pct:
                end.nfq.verdict(pid, accept=False)
                end.dropped += 1
                continue
            delay = end.delay_ms
            if end.jitter_ms > 0:
                delay += self.rng.gauss(0.0, end.jitter_ms)
            release = max(end.last_release, now + max(delay, 0.0) / 1000.0)
            end.last_release = release
            end.held.append((release, pid))

    def _release(self, now: float) -> float:
        """Release due packets; return seconds until the next one (or 1 s)."""
        wait = 1.0
        for end in self.ends.values():
            held = end.held
            last = -1
            while held and held[0][0] <= now:
                last = held.popleft()[1]
                end.passed += 1
            if last >= 0:
                assert end.nfq is not None
                end.nfq.accept_upto(last)
            if held:
                wait = min(wait, held[0][0] - now)
        return max(wait, 0.0)

    def run(self, wake: int) -> None:
        # select.select takes microseconds; epoll/poll round timeouts up to whole ms,
        # which would add ~0.5 ms to every delayed packet.
        fds = {e.nfq.fileno(): e for e in self.ends.values() if e.nfq is not None}
        watch = [*fds, self.ctl.fileno(), wake]
        wait = 0.0
        while self.running:
            try:
                ready, _, _ = select.select(watch, [], [], wait)
            except InterruptedError:
                ready = []
            for fd in ready:
                if fd in fds:
                    self._arrive(fds[fd], time.monotonic())
                elif fd == wake:
                    drain(wake)
                else:
                    self._control()
            wait = self._release(time.monotonic() + EARLY)
        for end in self.ends.values():
            end.delay_ms = end.jitter_ms = end.loss_pct = 0.0
            self.apply(end)
            if end.held and end.nfq is not None:
                end.nfq.accept_upto(end.held[-1][1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="pacao testbed user-space delay line")
    parser.add_argument("--config", required=True, help="JSON list of link ends")
    parser.add_argument("--control", required=True, help="UNIX socket path")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    ends = [End(**e) for e in json.loads(Path(args.config).read_text())]
    line = DelayLine(ends, Path(args.control), args.seed)

    return serve(line)


if __name__ == "__main__":
    sys.exit(main())
