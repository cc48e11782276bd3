"""Live migration of the testbed's small guest between two QEMU processes on loopback.

The guest is pacao.testbed.vm.guest (Debian cloud kernel, busybox initramfs) with
``--mem`` MiB of RAM of which ``blob`` MiB are random bytes (its /www/blob). For
each (blob, bandwidth cap) it boots a source QEMU, starts a destination with
``-incoming tcp:127.0.0.1:PORT`` and migrates through the QMP client of
pacao.controller.drivers.qmp with a 300 ms max downtime, printing the boot time
and QEMU's figures: total time, downtime, bytes transferred. Accelerator as in
pacao.testbed.vm.qemuvm (TCG here: see there why).

    python benchmarks/bench_qemu_migration.py [--mem 128] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

from pacao.controller.drivers.qmp import QmpClient, start_outgoing, wait_migration
from pacao.testbed.vm.guest import READY, artefacts
from pacao.testbed.vm.qemuvm import default_accel, kill_pid, qemu_argv, wait_qmp, wait_serial


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one(tmp: Path, mem: int, blob: int, mbps: float) -> str:
    guest = artefacts()
    append = f"pacao.blob={blob}"
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        t0 = time.monotonic()
        src_argv = qemu_argv(guest, qmp=tmp / "s.qmp", serial=tmp / "s.log", memory_mib=mem,
                             append=append)  # fmt: skip
        procs.append(subprocess.Popen(src_argv, stderr=subprocess.DEVNULL))
        wait_serial(tmp / "s.log", READY, 120)
        boot = time.monotonic() - t0
        dst_argv = qemu_argv(guest, qmp=tmp / "d.qmp", serial=tmp / "d.log", memory_mib=mem,
                             append=append, incoming=f"tcp:127.0.0.1:{port}")  # fmt: skip
        procs.append(subprocess.Popen(dst_argv, stderr=subprocess.DEVNULL))
        dst = await wait_qmp(tmp / "d.qmp", procs[1], 30)
        src = await QmpClient(f"unix:{tmp / 's.qmp'}").connect()
        await start_outgoing(src, f"tcp:127.0.0.1:{port}", mbps, 300)
        st = await wait_migration(src, 600, poll_s=0.05)
        await src.close()
        await dst.close()
        return (
            f"{mem:>4} {blob:>5} {mbps:>7.0f} {boot:>6.1f} {st.status:>10} "
            f"{st.total_time_ms or 0:>8.0f} {st.downtime_ms or 0:>9.0f} "
            f"{st.transferred / 2**20:>8.1f}"
        )
    finally:
        for p in procs:
            kill_pid(p)
        for f in tmp.iterdir():
            f.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mem", type=int, default=128, help="guest RAM, MiB")
    ap.add_argument("--quick", action="store_true", help="one run only")
    args = ap.parse_args()
    runs = [(8, 1000.0), (32, 1000.0), (32, 100.0)]
    if args.quick:
        runs = runs[:1]
    print(f"accelerator {default_accel()}; max downtime 300 ms")
    print(" mem  blob  Mbit/s boot_s     status total_ms downtime_ms MiB_sent")
    with tempfile.TemporaryDirectory(prefix="pacao-bench-qemu-") as d:
        for blob, mbps in runs:
            print(asyncio.run(one(Path(d), args.mem, blob, mbps)), flush=True)


if __name__ == "__main__":
    main()
