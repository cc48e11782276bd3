"""The two-DC controller config the hypervisor-driver tests run a VmMigration under."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pacao.controller.config import load_config


def two_dc_config(tmp: Path, memory_mib: int) -> Any:
    """dc1/dc2 and one VM `tiny` at dc1; drivers are given to the action, not read here."""
    doc = {
        "dcs": [
            {"name": dc, "location": {"lat": 48.85, "lon": 2.35}, "rlocs": [rloc],
             "capacity": {"ram_mib": 4096, "cpu": 4}, "xtr": {"stats_url": "http://127.0.0.1:1/"}}
            for dc, rloc in (("dc1", "192.0.2.1"), ("dc2", "192.0.2.2"))
        ],
        "vms": [{"name": "tiny", "eid": "10.1.0.10/32", "memory_mib": memory_mib, "vcpus": 1,
                 "host": "dc1", "hypervisor_uri": "qemu:///system"}],
        "users": [],
        "timers": {"s1": 10, "s2": 5, "s3": 1},
        "drivers": {"mapping": {"name": "memory"}, "hypervisor": {"name": "memory"}},
        "storage": {"url": f"sqlite:///{tmp / 'c.db'}"},
        "api": {"token": "t"},
    }  # fmt: skip
    p = tmp / "c.yaml"
    p.write_text(yaml.safe_dump(doc))
    return load_config(p)
