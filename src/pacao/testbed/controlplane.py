"""The LISP control plane and the PACAO controller inside a running testbed (issue 7).

What runs where (docs/testbed.md, "Control plane"):

* a management namespace ``pc<id>-ctl`` joined to every xTR namespace by a veth
  (/30s from 198.18.0.0/16, out of band like an operator's management network);
* in it the map-server/map-resolver (``pacao lisp map-server``) on 198.18.255.1:4342
  and, for pacao1/pacao2, the controller (``pacao controller run``) with a config
  generated from the topology;
* in each xTR namespace the ``pacao.lisp.xtr`` agent (control plane, UDP 4342 on the
  RLOC, so RLOC probes cross the emulated links and their RTT includes the injected
  delays; HTTP on its management address) hosted by ``pacao.testbed.agent``, which
  pushes every map-cache change into the xTR's data plane: the data plane forwards
  with the agent's map-cache, so a priority change moves real traffic.

The legacy arm is the same control plane without the controller.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pacao.testbed.runner import State
from pacao.testbed.topology import Topology

Policy = Literal["legacy", "pacao1", "pacao2"]
VmBackend = Literal["namespace", "qemu"]


@dataclass(frozen=True)
class ControllerSettings:
    """Controller timers and SLA, in seconds already time-scaled by the caller.

    ``policy``: legacy (no controller), pacao1 (entry switching only: the VM is
    pinned), pacao2 (switching + migration, Step 2). ``s1`` = S' (decision period),
    ``s2`` = S'' (wait before Step 2), ``s3`` = S''' (probe interval of the agents and
    the controller's poll period); the controller requires s3 <= s2 < s1.
    ``rtt_max_ms``: the user's RTT SLA bound (the only criterion, as in the paper).
    ``policy_overrides``: extra keys of the controller config's ``policy`` section
    (docs/controller.md), e.g. ``{"min_dwell_s": 0}``.
    """

    policy: Policy
    s1: float
    s2: float
    s3: float
    vm_backend: VmBackend = "namespace"
    rtt_max_ms: float = 60.0
    switch_method: Literal["smr", "change-priority", "both"] = "both"
    policy_overrides: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class MigrationModel:
    """Pre-copy live migration of a VM of ``memory_mib`` over a link of bandwidth B.

    Round 0 copies the whole memory (M / B); each next round copies what the guest
    dirtied meanwhile (V_i = V_{i-1} x D / B with D = ``dirty_rate_mbps``) until the
    remaining volume fits ``max_downtime_ms`` at B or ``max_rounds`` were made; then
    stop-and-copy: the VM is paused (unreachable) for V_last / B + ``switchover_ms``.
    B is the inter-DC link's tbf rate, or ``default_bandwidth_mbps`` when it has none.
    ``time_scale`` multiplies every waited duration (compressed scenario runs).
    """

    memory_mib: int = 1024
    dirty_rate_mbps: float = 0.0
    max_downtime_ms: float = 300.0
    max_rounds: int = 30
    switchover_ms: float = 50.0
    default_bandwidth_mbps: float = 1000.0
    time_scale: float = 1.0


@dataclass(frozen=True)
class MigrationResult:
    """One migration: wall seconds actually spent (scaled), the model's bytes copied."""

    vm: str
    src: str
    dst: str
    started: float  # wall clock (time.time())
    duration_s: float  # from start to the VM running at dst
    downtime_s: float  # VM unreachable (measured around the stop-and-copy)
    bytes: int  # memory copied over all pre-copy rounds + the final round
    rounds: int
    modelled: bool  # True: namespace VM (times from the model); False: real QEMU migration


def migration_estimate(
    model: MigrationModel, bandwidth_bps: float
) -> tuple[float, float, int, int]:
    """(total seconds, downtime seconds, bytes, rounds) of the model, unscaled."""
    raise NotImplementedError


def migrate_vm(
    state: State, vm: str, dst_dc: str, model: MigrationModel | None = None
) -> MigrationResult:
    """Move VM (a vm node of the topology) to the dc node ``dst_dc`` and return the result.

    Blocking. The VM keeps running (reachable) during the pre-copy, is unreachable for
    the downtime, then runs at ``dst_dc`` with the same EID: its link is re-created on the
    destination dc and the fabric routes of every locator xTR are updated. ``model``
    defaults to the one stored for the run (``TestbedControlPlane`` or ``set_vm_model``).
    Usable from scenario timelines (event kind ``migrate``) and from the controller's
    ``testbed`` hypervisor driver; each migration is appended to the run's events.
    """
    raise NotImplementedError


def vm_location(state: State, vm: str) -> str:
    """The dc node the VM currently runs on."""
    raise NotImplementedError


class TestbedControlPlane:
    """Map-server + one xTR agent per xTR + (pacao1/pacao2) the PACAO controller."""

    def __init__(
        self,
        state: State,
        topology: Topology,
        settings: ControllerSettings,
        workdir: Path,
        migration: MigrationModel | None = None,
    ) -> None:
        raise NotImplementedError

    def start(self, timeout: float = 30.0) -> None:
        """Start map-server, agents (and controller); returns once every data plane follows
        its agent (each xTR's map-cache holds the topology's remote mappings, resolved
        through the map-server). Processes are recorded by PID in the run state."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the controller, agents, map-server and remove the management namespace."""
        raise NotImplementedError

    def set_priority(self, prefix: str, priorities: dict[str, int]) -> list[dict[str, Any]]:
        """Re-register ``prefix`` with new priorities (keys: xtr node names or RLOCs) through
        ``pacao lisp set-priority`` on every xTR agent that owns it; returns their replies."""
        raise NotImplementedError

    def agent(self, node: str) -> dict[str, Any]:
        """The xTR agent's current snapshot (map-cache with probe RTT/jitter, database)."""
        raise NotImplementedError

    def plans(self) -> list[dict[str, Any]]:
        """The controller's stored plans, oldest first (state, actions, created/updated)."""
        raise NotImplementedError

    def events(self) -> list[dict[str, Any]]:
        """Entry switches seen by the data planes and migrations, with wall times, oldest
        first: ``{"t", "kind": "entry", "node", "prefix", "rloc"}`` and
        ``{"t", "kind": "migration", "vm", "src", "dst", "duration_s", "downtime_s", ...}``."""
        raise NotImplementedError
