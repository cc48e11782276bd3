"""Two private libvirt daemons on this machine, as two "DCs" for migration tests.

Each is the real Debian libvirtd (root, qemu driver) in its own mount namespace
(``unshare -m``) with a private /run, /var/lib/libvirt, /var/cache/libvirt and
/etc/libvirt, its own host UUID (libvirt refuses to migrate to the same host),
its socket in a test directory and a TCP listener on loopback (URIs
``qemu+tcp://127.0.0.1:PORT/system``). QEMU runs as root without a security
driver or cgroups; the domain is a 64 MiB TCG guest with no disk. Stopped by
PID; domains are destroyed first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

# A guest with no disk is mostly zero pages, which QEMU migrates almost for free;
# `fill` random bytes loaded at 16 MiB make the migration move real data.
DOMAIN_XML = """<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <memory unit='MiB'>{mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><emulator>{qemu}</emulator></devices>
  {extra}
</domain>"""
LOADER = """<qemu:commandline><qemu:arg value='-device'/>
  <qemu:arg value='loader,file={file},addr=0x1000000,force-raw=on'/></qemu:commandline>"""


def _need(tool: str) -> str:
    path = shutil.which(tool) or (
        f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}") else None
    )
    assert path, f"{tool} is missing: `make debs` installs libvirt-daemon-system, qemu-system-x86"
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(d: Path, port: int) -> subprocess.Popen[bytes]:
    for sub in ("etc", "sock", "lib", "cache", "log"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    # TCP without TLS or auth, on loopback only: peer-to-peer migration refuses URIs
    # without a host name (libvirt's "same host" check), so daemons reach each other by TCP.
    (d / "etc" / "libvirtd.conf").write_text(
        f'unix_sock_dir = "{d}/sock"\nhost_uuid = "{uuid.uuid4()}"\nauth_unix_rw = "none"\n'
        f'listen_tls = 0\nlisten_tcp = 1\nlisten_addr = "127.0.0.1"\ntcp_port = "{port}"\n'
        f'auth_tcp = "none"\nlog_outputs = "3:file:{d}/log/libvirtd.log"\n'
    )
    (d / "etc" / "qemu.conf").write_text(
        'user = "root"\ngroup = "root"\ndynamic_ownership = 0\nsecurity_driver = "none"\n'
        'cgroup_controllers = [ ]\nstdio_handler = "file"\nremember_owner = 0\n'
    )
    script = (
        "set -e; mount -t tmpfs tmpfs /run; mkdir -p /run/libvirt;"
        f" mount --bind {d}/lib /var/lib/libvirt; mount --bind {d}/cache /var/cache/libvirt;"
        f" mount --bind {d}/etc /etc/libvirt;"
        f" exec {_need('libvirtd')} --listen --config {d}/etc/libvirtd.conf"
        f" --pid-file {d}/libvirtd.pid"
    )
    return subprocess.Popen(
        [_need("unshare"), "--mount", "--propagation", "private", "sh", "-c", script],
        stdout=subprocess.DEVNULL,
        stderr=open(d / "log" / "stderr", "wb"),
    )


@contextlib.contextmanager
def libvirt_pair(tmp: Path) -> Iterator[dict[str, str]]:
    """{"dc1": uri, "dc2": uri} of two running daemons."""
    import libvirt

    assert os.geteuid() == 0, "the libvirt tests run libvirtd as root (they must not skip)"
    assert os.path.exists("/usr/bin/qemu-system-x86_64"), "qemu-system-x86 is missing"
    procs: dict[str, subprocess.Popen[bytes]] = {}
    uris = {}
    try:
        for dc in ("dc1", "dc2"):
            d = tmp / dc
            port = _free_port()
            procs[dc] = _start(d, port)
            uris[dc] = f"qemu+tcp://127.0.0.1:{port}/system"
        for dc, uri in uris.items():
            deadline = time.monotonic() + 30
            while True:
                assert procs[dc].poll() is None, (tmp / dc / "log" / "stderr").read_text()
                try:
                    libvirt.open(uri).close()
                    break
                except libvirt.libvirtError:
                    assert time.monotonic() < deadline, f"libvirtd of {dc} did not start"
                    time.sleep(0.1)
        yield uris
    finally:
        for uri in uris.values():
            with contextlib.suppress(libvirt.libvirtError):
                c = libvirt.open(uri)
                for dom in c.listAllDomains():
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.isActive():
                            dom.destroy()
                c.close()
        for p in procs.values():
            # `unshare` and `sh` exec'd: the Popen PID is libvirtd's.
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def create_domain(uri: str, name: str, mib: int = 64, fill: Path | None = None) -> None:
    """A transient domain; ``fill``: a file of random bytes (< mib - 16 MiB) put in RAM."""
    import libvirt

    extra = "" if fill is None else LOADER.format(file=fill)
    xml = DOMAIN_XML.format(name=name, mib=mib, qemu="/usr/bin/qemu-system-x86_64", extra=extra)
    c = libvirt.open(uri)
    try:
        c.createXML(xml, 0)
    finally:
        c.close()
