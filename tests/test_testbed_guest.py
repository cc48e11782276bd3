"""The guest image builder: Debian's kernel + busybox initramfs, rebuilt only when stale.

Needs the Debian packages linux-image-cloud-amd64 and busybox-static (`make debs`):
fails without them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from pacao.testbed import guest as g


def cpio_entries(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc archive."""
    out, off = {}, 0
    while True:
        assert data[off : off + 6] == b"070701", off
        fields = [int(data[off + 6 + 8 * i : off + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[off + 110 : off + 110 + namesize - 1].decode()
        off += 110 + namesize
        off += -off % 4
        body = data[off : off + size]
        off += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, body)


def test_guest_build_contents_and_up_to_date(tmp_path: Path) -> None:
    built = g.build(tmp_path)
    assert built.kernel.stat().st_size > 1 << 20 and built.kernel_version.endswith("amd64")
    files = cpio_entries(gzip.decompress(built.initrd.read_bytes()))
    init = files["init"][1].decode()
    assert files["init"][0] & 0o111 and init.startswith("#!/bin/busybox sh")
    assert g.READY in init and "pacao.ip" in init and "httpd -p 80" in init
    assert files["bin/busybox"][1][:4] == b"\x7fELF"
    assert files["dev/console"][0] & 0o170000 == 0o020000  # a character device
    mods = files["etc/modules"][1].decode().split()
    if mods:  # virtio_net is a module in Debian's cloud kernel: dependencies first
        assert mods[-1] == "virtio_net.ko" and "virtio.ko" in mods
        assert mods.index("virtio.ko") < mods.index("virtio_pci.ko")
        assert mods.index("failover.ko") < mods.index("net_failover.ko")
        for m in mods:
            assert files[f"lib/modules/{m}"][1][:4] == b"\x7fELF"
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["inputs"]["kernel"] == built.kernel_version
    # up to date: nothing rewritten; a changed input: rebuilt
    mtime = built.initrd.stat().st_mtime_ns
    assert g.build(tmp_path) == built
    assert built.initrd.stat().st_mtime_ns == mtime
    manifest["inputs"]["busybox"] = "stale"
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    g.build(tmp_path)
    assert json.loads((tmp_path / "manifest.json").read_text())["inputs"]["busybox"] != "stale"


def test_guest_cli_errors_are_one_line(tmp_path: Path) -> None:
    boot = tmp_path / "boot"
    boot.mkdir()
    try:
        g.find_kernel(boot, tmp_path)
    except g.GuestBuildError as exc:
        assert "linux-image-cloud-amd64" in str(exc)
    else:
        raise AssertionError("no kernel must be an error")
    assert g.main(["--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "initrd.gz").exists()
