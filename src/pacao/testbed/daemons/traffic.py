"""Traffic of the Section IV experiments: a 300 MB download and iperf3 TCP/UDP.

The download is a minimal HTTP/1.0 server (run in the VM's namespace) that
streams N bytes generated on the fly (no 300 MB file on disk), and a client
(run in the user's namespace) that counts the bytes received per interval and
writes them as JSON when the run ends or is stopped: a compressed run never
finishes the 300 MB, so the volume received is what we report.

iperf3 runs as Debian ships it; `iperf3_cmd` builds the reverse-mode client
(server in the VM sends, user receives, like the paper's downloads) and
`parse_iperf3` turns its --json output into the same interval records.

    python -m pacao.testbed.daemons.traffic serve --port 8080 --size 300000000
    python -m pacao.testbed.daemons.traffic fetch --host 10.2.0.10 --port 8080 \
        --duration 22.5 --interval 0.1 --out fetch.json [--path /cgi-bin/stream?300000000]
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

DOWNLOAD_PORT = 8080
IPERF_PORT = 5201
CHUNK = 64 * 1024


def set_congestion(sock: socket.socket, congestion: str | None) -> None:
    """TCP_CONGESTION (the host profile's algorithm; root may pick any loaded one)."""
    if congestion:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())


def serve(port: int, size: int, congestion: str | None = None) -> None:
    """Answer every connection with an HTTP/1.0 200 and ``size`` bytes, one thread each."""
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    set_congestion(lst, congestion)
    lst.bind(("0.0.0.0", port))
    lst.listen(16)
    block = bytes(range(256)) * (CHUNK // 256)

    def one(conn: socket.socket) -> None:
        with conn:
            try:
                set_congestion(conn, congestion)
                conn.settimeout(30.0)
                conn.recv(4096)  # the request line; any request gets the file
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                    + f"Content-Length: {size}\r\n\r\n".encode()
                )
                conn.settimeout(None)
                left = size
                while left > 0:
                    n = conn.send(block[: min(CHUNK, left)])
                    left -= n
            except OSError:
                return  # the client went away: the next one is served anyway

    print("ready", flush=True)
    while True:
        conn, _ = lst.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def fetch(
    host: str,
    port: int,
    duration: float,
    interval: float,
    out: Path,
    path: str = "/file",
    congestion: str | None = None,
) -> dict[str, Any]:
    """Download ``path`` for ``duration`` seconds (or to the end); bytes per ``interval``.

    The server is ours (``serve``) or the QEMU guest's busybox httpd (``--vm qemu``:
    ``/cgi-bin/stream?N``); either sends a Content-Length, the body is what is counted.
    """
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    t0 = time.monotonic()
    wall0 = time.time()
    counts: list[int] = [0]
    total = 0
    error = ""
    expected = None
    done_at = None
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        set_congestion(sock, congestion)
        sock.settimeout(10.0)
        sock.connect((host, port))
        sock.settimeout(0.05)
        sock.sendall(f"GET {path} HTTP/1.0\r\nHost: vm\r\n\r\n".encode())
        header = b""
        while not stop.is_set() and time.monotonic() - t0 < duration:
            try:
                data = sock.recv(1 << 18)
            except TimeoutError:
                data = None
            now = time.monotonic() - t0
            while now >= len(counts) * interval:
                counts.append(0)
            if data is None:
                continue
            if not data:
                done_at = now
                break
            if expected is None:
                header += data
                if b"\r\n\r\n" not in header:
                    continue
                head, data = header.split(b"\r\n\r\n", 1)
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        expected = int(line.split(b":", 1)[1])
                expected = expected if expected is not None else -1
            counts[-1] += len(data)
            total += len(data)
        sock.close()
    except OSError as exc:
        error = str(exc)
    n = int(min(time.monotonic() - t0, duration) / interval) + 1
    counts = (counts + [0] * n)[: max(n, 1)]
    doc = {
        "kind": "download",
        "start_wall": wall0,
        "interval_s": interval,
        "bytes_per_interval": counts,
        "bytes": total,
        "expected_bytes": expected,
        "complete": expected is not None and expected >= 0 and total >= expected,
        "completed_at_s": done_at,
        "error": error,
    }
    out.write_text(json.dumps(doc))
    return doc


def python_cmd() -> list[str]:
    """How to run this module's serve/fetch in a namespace (same interpreter, same path)."""
    return [sys.executable, "-m", "pacao.testbed.daemons.traffic"]


def iperf3_server_cmd(port: int = IPERF_PORT, interval: float = 1.0) -> list[str]:
    """One iperf3 server per trial; JSON so the UDP receiver's intervals reach the client."""
    return ["iperf3", "-s", "-p", str(port), "-J", "-i", f"{interval:.3f}"]


def iperf3_cmd(
    host: str,
    *,
    udp: bool,
    duration: float,
    interval: float,
    port: int = IPERF_PORT,
    udp_rate: str = "1M",
    udp_length: int = 1000,
    congestion: str | None = None,
) -> list[str]:
    """TCP: reverse mode, the VM sends and the user receives (a download).

    UDP: the user sends to the VM and the VM's receiver reports loss and jitter per
    interval (``--get-server-output``). Not reverse: a sender whose address vanishes
    during a migration's downtime gets errors and iperf3 aborts the test, while a
    receiver just sees the gap, which is the loss we want to measure.
    """
    cmd = ["iperf3", "-c", host, "-p", str(port), "--json", "--connect-timeout", "5000"]
    cmd += ["-t", f"{duration:.3f}", "-i", f"{interval:.3f}"]
    if udp:
        cmd += ["-u", "-b", udp_rate, "-l", str(udp_length), "--get-server-output"]
    else:
        cmd += ["-R"]
        if congestion:  # the client passes it to the server, the sender in -R
            cmd += ["-C", congestion]
    return cmd


def _lost(value: int) -> int:
    """iperf3 prints a negative interval loss (late packets counted lost before) as an
    unsigned 64-bit number; those packets were not lost: count 0."""
    if value >= 1 << 62:
        value -= 1 << 64
    return max(0, value)


def _rebucket(rows: list[dict[str, Any]], interval: float) -> list[dict[str, Any]]:
    """Merge the receiver's short intervals (the QEMU guest's server reports every 0.1 s)
    into ``interval``-long ones: bytes, packets and losses add up; the jitter is the
    receiver's running estimate at the end of the merged interval, as iperf3 reports it."""
    out: dict[int, dict[str, Any]] = {}
    for r in rows:
        k = int((r["start"] + 1e-6) // interval)
        cur = out.get(k)
        if cur is None:
            out[k] = {**r, "start": r["start"]}
            continue
        for key in ("seconds", "bytes", "lost", "packets"):
            if key in r:
                cur[key] += r[key]
        if "jitter_ms" in r:
            cur["jitter_ms"] = r["jitter_ms"]
    return [out[k] for k in sorted(out)]


def parse_iperf3(doc: dict[str, Any], interval: float | None = None) -> dict[str, Any]:
    """Interval records (start, seconds, bytes[, jitter_ms, lost, packets]) and totals.

    ``interval``: the client's reporting interval; receiver intervals shorter than it
    (a server started with a smaller ``-i``) are merged to it.
    """
    if "error" in doc and not doc.get("intervals"):
        raise ValueError(f"iperf3: {doc['error']}")
    server = doc.get("server_output_json")
    if isinstance(server, dict) and server.get("intervals"):
        # UDP measured at the receiver (the VM): its intervals carry loss and jitter
        doc = {**doc, "intervals": server["intervals"], "end": server.get("end", {})}
    rows = []
    for iv in doc.get("intervals", []):
        s = iv["sum"]
        if s.get("omitted"):
            continue
        row = {"start": float(s["start"]), "seconds": float(s["seconds"]), "bytes": int(s["bytes"])}
        if "jitter_ms" in s:
            row["jitter_ms"] = float(s["jitter_ms"])
            row["lost"] = _lost(int(s.get("lost_packets", 0)))
            row["packets"] = int(s.get("packets", 0))
        rows.append(row)
    short = sorted(r["seconds"] for r in rows)
    if interval is not None and rows and short[len(short) // 2] < 0.75 * interval:
        rows = _rebucket(rows, interval)
    end = doc.get("end", {})
    udp = bool(rows) and "jitter_ms" in rows[0]
    total = end.get("sum_received", end.get("sum", {}))
    out: dict[str, Any] = {
        "kind": "udp" if udp else "tcp",
        "intervals": rows,
        "bytes": sum(r["bytes"] for r in rows) if udp else int(total.get("bytes", 0)),
        "error": str(doc.get("error", "")),
    }
    if udp:
        out["lost"] = sum(r["lost"] for r in rows)
        out["packets"] = sum(r["packets"] for r in rows)
        out["jitter_ms"] = float(end.get("sum", {}).get("jitter_ms", 0.0))
    return out


def stopped_tcp_measure(doc: dict[str, Any], *, test_s: float, interval: float) -> dict[str, Any]:
    """The measure of a reverse-TCP iperf3 client stopped by SIGTERM after its test's end.

    iperf3 3.12 (Debian 12's) can hang in the exchange that follows a reverse test: the
    client reads the last data block in blocking mode and the server waits for it
    (esnet/iperf#819). On SIGTERM it still writes the intervals it received: those are the
    measurement when data reached the test's end; data that stopped earlier is a failure
    (ValueError), not a hang at the end (iperf3 goes on reporting empty intervals).
    """
    meas = parse_iperf3(doc, interval)
    with_data = [r["start"] + r["seconds"] for r in meas["intervals"] if r["bytes"] > 0]
    reached = max(with_data, default=0.0)
    if reached < test_s - 1.5 * interval:
        raise ValueError(f"its data stopped at {reached:.1f} s of its {test_s:.1f} s")
    meas["error"] = ""  # iperf3's "interrupt - the client has terminated": ours, after the end
    return meas


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pacao.testbed.daemons.traffic")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, default=DOWNLOAD_PORT)
    s.add_argument("--size", type=int, default=300_000_000)
    s.add_argument("--congestion", help="TCP_CONGESTION of the sockets (e.g. cubic)")
    f = sub.add_parser("fetch")
    f.add_argument("--host", required=True)
    f.add_argument("--port", type=int, default=DOWNLOAD_PORT)
    f.add_argument("--duration", type=float, required=True)
    f.add_argument("--interval", type=float, default=1.0)
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--path", default="/file", help="request path (guest: /cgi-bin/stream?N)")
    f.add_argument("--congestion", help="TCP_CONGESTION of the socket (e.g. cubic)")
    a = ap.parse_args(argv)
    if a.cmd == "serve":
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        serve(a.port, a.size, a.congestion)
    else:
        fetch(a.host, a.port, a.duration, a.interval, a.out, a.path, a.congestion)
    return 0


if __name__ == "__main__":
    sys.exit(main())
