"""TCP host profiles of the testbed's end hosts (the user and the namespace VM).

``paper``: the paper models TCP with "the typical TCP window size (163840 bytes)"
(Sec. V, Fig. 16). The hosts' socket buffers are capped at 163,840 B through the
per-namespace ``net.ipv4.tcp_rmem``/``tcp_wmem`` maxima, so autotuning never grows
a receive window (or a send buffer) beyond it, whatever the application asks: the
download client, iperf3 and the servers need no option of their own. Linux counts
the packets' memory overhead against the buffer, so the window it advertises stays
below the buffer (about 0.58 of it through the testbed's xTRs, 0.88 on a plain veth):
trials record the peak ``snd_wnd`` the VM's kernel saw. The traffic's sockets use
CUBIC (``CONGESTION``).

``linux``: today's host settings: autotuning (buffers up to megabytes) and this host's
default congestion control (BBR here), which keeps several Mbit/s through +1000 ms.

``Testbed.ss_tcp`` (pacao.testbed.net) reads what the kernel reports (``ss -tin``), so
tests and trial records check the window actually in use, not the configuration written.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pacao.errors import InputError

PAPER_WINDOW_BYTES = 163_840
PROFILES = ("paper", "linux")
DEFAULT_PROFILE = "paper"

#: per-namespace sysctls of each profile (min, default, max in bytes)
SYSCTLS: dict[str, dict[str, str]] = {
    "paper": {
        "net.ipv4.tcp_rmem": f"4096 131072 {PAPER_WINDOW_BYTES}",
        "net.ipv4.tcp_wmem": f"4096 16384 {PAPER_WINDOW_BYTES}",
    },
    "linux": {},  # the host's own values (host_sysctls), copied into the namespace
}
#: congestion control of the traffic's sockets (TCP_CONGESTION, iperf3 -C): a netns may
#: only default to the host's allowed ones, a root process may pick any loaded one.
#: CUBIC was Linux's default in 2016; this host's default is BBR, which keeps its rate
#: through added delay by design. None: the namespace's default.
CONGESTION: dict[str, str | None] = {"paper": "cubic", "linux": None}


def check_profile(where: str, value: Any) -> str:
    if value not in PROFILES:
        raise InputError(where, value, f"one of {', '.join(PROFILES)}")
    return str(value)


def host_sysctls() -> dict[str, str]:
    """The buffer sysctls of the namespace we run in (the host's): the linux profile."""
    return {
        key: " ".join(Path("/proc/sys", *key.split(".")).read_text().split())
        for key in ("net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem")
    }


_FIELDS = ("snd_wnd", "rcv_space", "rcv_ssthresh", "cwnd", "mss", "bytes_acked", "bytes_received")


def parse_ss(text: str) -> list[dict[str, Any]]:
    """``ss -tin`` output -> one dict per connection: addresses and the numeric fields
    above (absent ones are missing), plus ``rtt_ms``."""
    conns: list[dict[str, Any]] = []
    cur: dict[str, Any] | None = None
    for line in text.splitlines():
        if not line.strip() or line.startswith("State"):
            continue
        if not line[0].isspace():
            parts = line.split()
            cur = {"state": parts[0], "local": parts[3] if len(parts) > 4 else "",
                   "peer": parts[4] if len(parts) > 4 else ""}  # fmt: skip
            conns.append(cur)
            continue
        if cur is None:
            continue
        first = line.split()[0] if line.split() else ""
        if "cc" not in cur and first.isalpha():
            cur["cc"] = first
        for name in _FIELDS:
            m = re.search(rf"(?<![\w_]){name}:(\d+)", line)
            if m:
                cur[name] = int(m.group(1))
        m = re.search(r"(?<![\w_])rtt:([\d.]+)/", line)
        if m:
            cur["rtt_ms"] = float(m.group(1))
    return conns
