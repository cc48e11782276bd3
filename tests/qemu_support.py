"""QEMU processes for the QMP driver and QemuGuest tests: started here, killed by PID.

The tests FAIL (never skip) when qemu-system-x86_64 or the guest's Debian packages are
missing (`make debs guest` installs and builds them), and when /dev/kvm is missing if
the accelerator is KVM. The default accelerator is TCG: see pacao.testbed.vm.qemuvm for
why this machine's /dev/kvm (kvm_pvm) cannot run Debian's kernel at speed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from pacao.testbed.vm.guest import Guest, artefacts
from pacao.testbed.vm.qemuvm import default_accel, kill_pid


def need_qemu() -> Guest:
    assert shutil.which("qemu-system-x86_64"), "qemu-system-x86 is missing: run `make debs`"
    if default_accel() == "kvm":
        assert os.path.exists("/dev/kvm"), "/dev/kvm is missing and PACAO_QEMU_ACCEL=kvm"
    return artefacts()  # builds build/guest when missing (fails without the packages)


class Procs:
    """Processes a test started; all killed by PID at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "wb") as err:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.procs.append(p)
        return p

    def add(self, p: subprocess.Popen[bytes]) -> None:
        self.procs.append(p)

    def kill_all(self) -> None:
        for p in self.procs:
            kill_pid(p)
