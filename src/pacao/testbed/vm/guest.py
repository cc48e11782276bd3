"""The small KVM guest of the testbed: Debian's kernel and a busybox initramfs, built here.

No image is downloaded: ``make guest`` (``python -m pacao.testbed.vm.guest``) takes the
kernel of the Debian package ``linux-image-cloud-amd64`` (made for VMs, it boots in
well under a second) and ``busybox-static``, and writes under ``build/guest/``:

* ``vmlinuz`` -- the kernel, copied from ``/boot``;
* ``initrd.gz`` -- a gzipped newc cpio with busybox, the virtio network modules of
  that kernel (``virtio_net`` is a module there: it and its dependencies are loaded
  by ``/init`` with ``insmod``) and the ``/init`` script below;
* ``manifest.json`` -- what was built from what; a second run with the same inputs
  does nothing (so ``make guest`` is cheap when up to date).

The guest's ``/init`` reads its settings from the kernel command line:
``pacao.ip=10.2.0.10/24`` (eth0's address), ``pacao.gw=10.2.0.1`` (default route),
``pacao.blob=MIB`` (size of ``/www/blob``, random bytes, default 1 MiB: it is also
guest memory that a migration must copy), ``pacao.tick=SECONDS`` (period of the
console counter, default 0.5). It starts ``httpd`` on port 80 (``/index.html`` and
``/blob``) and a TCP echo (``nc``) on port 7, prints :data:`READY` on the serial
console, then ``pacao-tick N`` every tick so a test can see that the guest runs.
An iperf3 server (Debian's binary and its shared libraries, copied into the
initramfs) listens on port 5201 (``-J -i 0.1``) before the ready marker.
``/cgi-bin/stream?N`` (:data:`STREAM_PATH`, a CGI of busybox httpd) streams N zero
bytes generated on the fly (default 300 MB): the download of ``pacao testbed run
--vm qemu``, which could not keep a 300 MB file in the guest's RAM.

The artefacts are found by :func:`artefacts`: ``$PACAO_GUEST_DIR`` if set, else
``build/guest`` of the source checkout this module belongs to.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

READY = "PACAO-GUEST-READY"
TICK = "pacao-tick"
DEB_PACKAGES = ("linux-image-cloud-amd64", "busybox-static", "iperf3")
#: Debian's iperf3 (dynamic: copied with the libraries ``ldd`` lists) for Table II's trials
IPERF3 = Path("/usr/bin/iperf3")
# The guest NIC is virtio-net-pci: these modules (with their modules.dep dependencies).
MODULES = ("virtio_pci", "virtio_net")
CONFIG_OF = {"virtio_pci": "CONFIG_VIRTIO_PCI", "virtio_net": "CONFIG_VIRTIO_NET"}

INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /www
/bin/busybox --install -s /bin
export PATH=/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
for m in $(cat /etc/modules); do insmod "/lib/modules/$m" || echo "pacao: insmod $m failed"; done
arg() { for a in $(cat /proc/cmdline); do case "$a" in "$1"=*) echo "${a#*=}";; esac; done; }
ip=$(arg pacao.ip); gw=$(arg pacao.gw); blob=$(arg pacao.blob); tick=$(arg pacao.tick)
ip link set lo up
if [ -n "$ip" ]; then
  n=0
  while ! ip link show eth0 >/dev/null 2>&1 && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
  ip link set eth0 up
  ip addr add "$ip" dev eth0
  [ -n "$gw" ] && ip route add default via "$gw"
fi
echo "pacao guest" > /www/index.html
dd if=/dev/urandom of=/www/blob bs=1048576 count="${blob:-1}" 2>/dev/null
httpd -p 80 -h /www
(while :; do nc -l -p 7 -e /bin/cat; done) >/dev/null 2>&1 &
if [ -x /bin/iperf3 ]; then
  (while :; do iperf3 -s -p 5201 -J -i 0.1; sleep 1; done) >/dev/null 2>&1 &
  n=0
  while ! netstat -ltn | grep -q ':5201 ' && [ $n -lt 300 ]; do usleep 100000; n=$((n+1)); done
fi
echo "__READY__ ip=$ip gw=$gw blob=${blob:-1}MiB"
i=0
while :; do
  echo "__TICK__ $i"
  i=$((i+1))
  sleep "${tick:-0.5}"
done
""".replace("__READY__", READY).replace("__TICK__", TICK)

#: ``/cgi-bin/stream?N``: N bytes (default 300 MB) generated on the fly by busybox httpd's
#: CGI, the paper's 300 MB download without a 300 MB file in a 128 MiB guest's RAM.
STREAM_PATH = "/cgi-bin/stream"
STREAM_CGI = r"""#!/bin/sh
n=${QUERY_STRING:-300000000}
case "$n" in ''|*[!0-9]*) n=300000000;; esac
printf 'Content-Type: application/octet-stream\r\nContent-Length: %s\r\n\r\n' "$n"
exec head -c "$n" /dev/zero
"""


@dataclass(frozen=True)
class Guest:
    """Paths of a built guest."""

    kernel: Path
    initrd: Path
    kernel_version: str


class GuestBuildError(RuntimeError):
    """The guest cannot be built (a Debian package is missing, ...)."""


def default_dir() -> Path:
    """``$PACAO_GUEST_DIR``, else ``build/guest`` next to this checkout's pyproject.toml."""
    env = os.environ.get("PACAO_GUEST_DIR")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[4]
    if (root / "pyproject.toml").exists():
        return root / "build" / "guest"
    return Path.cwd() / "build" / "guest"


def _version_key(v: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", v)]


def find_kernel(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> str:
    """The newest installed cloud kernel (else generic amd64) whose modules are present."""
    for flavour in ("cloud-amd64", "amd64"):
        found = [
            p.name.removeprefix("vmlinuz-")
            for p in boot.glob(f"vmlinuz-*-{flavour}")
            if (modules / p.name.removeprefix("vmlinuz-") / "modules.dep").exists()
        ]
        found = [v for v in found if flavour != "amd64" or not v.endswith("cloud-amd64")]
        if found:
            return max(found, key=_version_key)
    raise GuestBuildError(
        f"no Debian kernel in {boot}: `make debs` installs {' '.join(DEB_PACKAGES)}"
    )


def _builtin(config: Path, option: str) -> bool:
    if not config.exists():
        return False
    return f"{option}=y" in config.read_text().splitlines()


def module_files(version: str, modules: Path = Path("/lib/modules")) -> list[str]:
    """Relative paths of the modules to load, dependencies first (from modules.dep)."""
    base = modules / version
    deps: dict[str, list[str]] = {}
    for line in (base / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
    by_name = {re.sub(r"\.ko(\.\w+)?$", "", Path(m).name).replace("-", "_"): m for m in deps}
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for d in reversed(deps.get(path, [])):  # modules.dep lists the deepest last
            visit(d)
        order.append(path)

    config = Path("/boot") / f"config-{version}"
    for name in MODULES:
        if _builtin(config, CONFIG_OF[name]):
            continue
        if name not in by_name:
            raise GuestBuildError(f"kernel {version} has neither built-in nor module {name}")
        visit(by_name[name])
    return order


def _module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".zst":
        raise GuestBuildError(f"{path}: zstd-compressed modules are not supported")
    return data


class _Cpio:
    """A newc cpio archive (what the kernel unpacks as initramfs), written without root."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        nb = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(nb), 0]
        self.ino += 1
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + nb)
        self.buf.write(b"\0" * (-(110 + len(nb)) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * (-len(data) % 4))

    def dir(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return self.buf.getvalue()


def shared_libs(binary: Path) -> list[Path]:
    """The shared objects ``binary`` loads (``ldd``), with its ELF interpreter."""
    done = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise GuestBuildError(f"ldd {binary}: {done.stderr.strip() or done.stdout.strip()}")
    libs = []
    for line in done.stdout.splitlines():
        m = re.search(r"(?:=>\s*)?(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        h.update(str(path).encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _inputs(version: str, busybox: Path, modules: list[str], extra: list[Path]) -> dict[str, str]:
    h = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
    bb = hashlib.sha256(busybox.read_bytes()).hexdigest()
    return {"builder": h, "kernel": version, "busybox": bb, "modules": " ".join(modules),
            "iperf3": _digest(extra)}  # fmt: skip


def build(out: Path | None = None, force: bool = False) -> Guest:
    """Build (or find up to date) the guest under ``out``; returns its paths."""
    out = out or default_dir()
    version = find_kernel()
    busybox = Path("/bin/busybox")
    if not busybox.exists() or not _is_static(busybox):
        raise GuestBuildError(
            "/bin/busybox (static) is missing: `make debs` installs busybox-static"
        )
    mods = module_files(version)
    if not IPERF3.exists():
        raise GuestBuildError(f"{IPERF3} is missing: `make debs` installs iperf3")
    libs = shared_libs(IPERF3)
    inputs = _inputs(version, busybox, mods, [IPERF3, *libs])
    guest = Guest(out / "vmlinuz", out / "initrd.gz", version)
    manifest = out / "manifest.json"
    if not force and guest.kernel.exists() and guest.initrd.exists() and manifest.exists():
        try:
            if json.loads(manifest.read_text()).get("inputs") == inputs:
                return guest
        except ValueError:
            pass
    out.mkdir(parents=True, exist_ok=True)
    cpio = _Cpio()
    for d in (
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "sys",
        "tmp",
        "www",
        "www/cgi-bin",
    ):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    cpio.file("bin/iperf3", IPERF3.read_bytes(), 0o755)
    dirs = {"lib"}
    for lib in libs:  # at the paths the loader looks for them (symlinks resolved)
        lrel = lib.relative_to("/")
        for parent in reversed(lrel.parents[:-1]):
            if str(parent) not in dirs:
                cpio.dir(str(parent))
                dirs.add(str(parent))
        cpio.file(str(lrel), lib.read_bytes(), 0o755)
    names = []
    for rel in mods:
        src = Path("/lib/modules") / version / rel
        name = re.sub(r"\.ko\.\w+$", ".ko", src.name)
        cpio.file(f"lib/modules/{name}", _module_bytes(src))
        names.append(name)
    cpio.file("etc/modules", ("\n".join(names) + "\n").encode())
    cpio.file("init", INIT.encode(), 0o755)
    cpio.file("www/cgi-bin/stream", STREAM_CGI.encode(), 0o755)
    tmp = guest.initrd.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
    tmp.replace(guest.initrd)
    shutil.copyfile(Path("/boot") / f"vmlinuz-{version}", guest.kernel)
    manifest.write_text(json.dumps({"inputs": inputs}, indent=1) + "\n")
    return guest


def _is_static(path: Path) -> bool:
    """A static ELF (busybox-static) has no PT_INTERP program header; the guest has no libc."""
    import struct

    data = path.read_bytes()[:65536]
    if data[:4] != b"\x7fELF" or data[4] != 2:  # 64-bit ELF
        return False
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    for i in range(phnum):
        off = phoff + i * phentsize
        if off + 4 <= len(data) and struct.unpack_from("<I", data, off)[0] == 3:
            return False
    return True


def artefacts(out: Path | None = None) -> Guest:
    """The built guest, building it first when missing or stale."""
    return build(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pacao.testbed.vm.guest", description=__doc__)
    ap.add_argument("--out", type=Path, default=None, help="output directory (build/guest)")
    ap.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = ap.parse_args(argv)
    try:
        g = build(args.out, force=args.force)
    except (GuestBuildError, OSError) as exc:
        print(f"pacao: error: guest: {exc}", file=sys.stderr)
        return 2
    size = g.initrd.stat().st_size
    print(f"guest: kernel {g.kernel_version} {g.kernel}, initrd {g.initrd} ({size >> 10} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
