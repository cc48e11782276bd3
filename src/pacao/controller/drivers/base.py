"""What a driver must do. Mapping drivers change LISP priorities; hypervisor drivers move VMs.

Every operation must be idempotent for the same arguments: after a crash the
controller re-runs an ongoing action's ``execute`` (docs/controller.md,
"Restart"), so setting the same priorities twice or asking for a migration
that already finished must not do anything twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

#: Raises unless this replica still leads (set on a driver's ``fence`` attribute by a
#: replicated controller; docs/controller.md "High availability").
FenceCheck = Callable[[], Awaitable[None]]


async def fenced(driver: object) -> None:
    """Call a driver's fence check, if it has one, right before it changes the world:
    a replica whose lease ended must not register a mapping or start a migration."""
    check: FenceCheck | None = getattr(driver, "fence", None)
    if check is not None:
        await check()


def set_fence(driver: object, check: FenceCheck) -> None:
    """Give a driver the check :func:`fenced` calls (the protocols leave ``fence`` out:
    a driver that never changes the world needs none)."""
    setattr(driver, "fence", check)  # noqa: B010


class DriverError(RuntimeError):
    """An action failed in the outside world (the plan becomes failed)."""


@dataclass(frozen=True)
class VmStatus:
    """Where a VM runs and whether it runs."""

    dc: str
    running: bool


@dataclass(frozen=True)
class MigrationJob:
    """A hypervisor migration job: state is none, running, completed or failed."""

    state: str
    dc: str | None = None  # destination
    progress: float = 0.0  # 0..1
    error: str | None = None
    job_id: str | None = None


class MappingDriver(Protocol):
    """Entry switching: re-register a VM EID's locator set with new priorities and make
    the user's ITR switch at once (SMR / CHANGE-PRIORITY)."""

    async def get_priorities(self, vm_eid: str) -> dict[str, int]: ...

    async def set_priorities(
        self, vm_eid: str, priorities: dict[str, int], notify: list[str]
    ) -> None: ...

    async def close(self) -> None: ...


class HypervisorDriver(Protocol):
    """Live migration with a bandwidth limit and a max downtime; abort on failure."""

    async def status(self, vm: str) -> VmStatus: ...

    async def start_migration(
        self, vm: str, dst: str, job_id: str, bandwidth_mbps: float, max_downtime_ms: float
    ) -> None: ...

    async def job(self, vm: str) -> MigrationJob: ...

    async def abort(self, vm: str) -> None: ...

    async def resume(self, vm: str) -> None: ...

    async def close(self) -> None: ...
