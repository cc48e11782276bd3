"""Driver registry: the controller's built-in drivers plus plugins from Python entry points.

Groups ``pacao.drivers.mapping`` and ``pacao.drivers.hypervisor``; an entry
point names a class called as ``cls(config, clock=clock, **options)``. Plugins
register their own in their pyproject (docs/controller.md): the emulated
testbed's ``testbed`` hypervisor is one (pacao.testbed.vm.hypervisor), so the
controller names nothing of the testbed.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from pacao.errors import InputError

GROUPS = {"mapping": "pacao.drivers.mapping", "hypervisor": "pacao.drivers.hypervisor"}

#: The controller's own drivers, available even when the package metadata (and so its
#: entry points) is not installed.
BUILTIN: dict[str, dict[str, str]] = {
    "mapping": {
        "memory": "pacao.controller.drivers.memory:MemoryMapping",
        "lisp": "pacao.controller.drivers.lisp:LispMapping",
    },
    "hypervisor": {
        "memory": "pacao.controller.drivers.memory:MemoryHypervisor",
        "libvirt": "pacao.controller.drivers.libvirt:LibvirtHypervisor",
        "qemu": "pacao.controller.drivers.qmp:QemuQmpDriver",
    },
}


def available(kind: str) -> dict[str, str]:
    """Driver name -> 'module:attr' for a kind (entry points win over built-ins)."""
    found = dict(BUILTIN[kind])
    for ep in entry_points(group=GROUPS[kind]):
        found[ep.name] = ep.value
    return found


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    obj: Any = import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def load_driver(kind: str, name: str, config: Any, clock: Any, options: dict[str, Any]) -> Any:
    names = available(kind)
    if name not in names:
        raise InputError(f"drivers.{kind}.name", name, f"installed drivers: {sorted(names)}")
    try:
        cls = _load(names[name])
    except (ImportError, AttributeError) as exc:
        raise InputError(f"drivers.{kind}.name", name, f"cannot be loaded ({exc})") from None
    try:
        return cls(config, clock=clock, **options)
    except TypeError as exc:
        raise InputError(f"drivers.{kind}.options", options, f"rejected: {exc}") from None
