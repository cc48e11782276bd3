"""The systemd units in deploy/systemd: systemd itself checks them (`systemd-analyze
verify`, and `security --offline` for the sandbox), with the binary path pointed at
this checkout's `pacao` (verify insists that ExecStart= is executable)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "deploy" / "systemd"
#: every unit must set these (the sandbox docs/controller.md describes)
HARDENING = {
    "DynamicUser": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces": "yes",
    "SystemCallArchitectures": "native",
    "SystemCallFilter": "@system-service",
    "LockPersonality": "yes",
}
INSTANCES = {
    "pacao-map-server.service": "pacao-map-server.service",
    "pacao-xtr@.service": "pacao-xtr@dc1.service",
    "pacao-controller.service": "pacao-controller.service",
}


def tool() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing (Debian package systemd)"
    return found


@pytest.fixture(scope="module")
def units(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pacao = Path(sys.executable).parent / "pacao"
    assert pacao.is_file(), pacao
    d = tmp_path_factory.mktemp("units")
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(INSTANCES)
    for name in INSTANCES:
        text = (UNITS / name).read_text()
        assert "/opt/pacao/bin/pacao " in text
        (d / name).write_text(text.replace("/opt/pacao/bin/pacao", str(pacao)))
    return d


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_unit_passes_systemd_analyze_verify(units: Path, name: str) -> None:
    r = subprocess.run(
        [tool(), "verify", "--man=no", str(units / INSTANCES[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify prints unknown keys and bad values as warnings with exit 0: both must be clean
    assert r.returncode == 0 and r.stderr.strip() == "" and r.stdout.strip() == "", r


@pytest.mark.parametrize("name", sorted(INSTANCES))
def test_unit_sets_the_hardening_options(units: Path, name: str) -> None:
    text = (UNITS / name).read_text()
    got: dict[str, list[str]] = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if m:
            got.setdefault(m.group(1), []).append(m.group(2))
    for key, value in HARDENING.items():
        assert value in got.get(key, []), (name, key, got.get(key))
    r = subprocess.run(
        [tool(), "security", "--offline=yes", str(units / INSTANCES[name])],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    print(f"{name}: exposure {m.group(1)} {m.group(2)}")
    # systemd's scale: 0 (sandboxed) .. 10 (exposed); "OK" is below 2.
    assert float(m.group(1)) < 2.0 and m.group(2) == "OK", m.group(0)
