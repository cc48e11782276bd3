"""Putting the controller together: checks before a start, the controller over its
storage and drivers, the API server and `pacao controller run`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pacao.clock import Clock, SystemClock
from pacao.controller.config import ControllerConfig, load_config, with_listen
from pacao.controller.drivers import load_driver
from pacao.controller.drivers.base import HypervisorDriver, MappingDriver
from pacao.controller.leadership import Leadership
from pacao.controller.monitoring import Source, sources_from_config
from pacao.controller.service import Controller, Service
from pacao.controller.storage import Store, check_storage
from pacao.logs import setup_logging

if TYPE_CHECKING:
    import uvicorn


def check_runtime(cfg: ControllerConfig) -> None:
    """Every check `run` makes before it starts, starting nothing: `check-config` calls
    exactly this. Each driver accepts its options (drivers validate them in their
    constructor and connect nothing there), the storage opens (or can be created) and
    the API token is readable."""
    d = cfg.drivers
    clock = SystemClock()
    made: list[MappingDriver | HypervisorDriver] = [
        load_driver("mapping", d.mapping.name, cfg, clock, dict(d.mapping.options))
    ]
    try:
        made.append(
            load_driver("hypervisor", d.hypervisor.name, cfg, clock, dict(d.hypervisor.options))
        )
        check_storage(cfg.storage.url)
        cfg.api_token()
    finally:
        asyncio.run(_close_all(made))


async def _close_all(drivers: Sequence[MappingDriver | HypervisorDriver]) -> None:
    for drv in drivers:
        await drv.close()


def build(
    cfg: ControllerConfig,
    clock: Clock | None = None,
    dry_run: bool = False,
    manual: bool = False,
    sources: Sequence[Source] | None = None,
) -> Controller:
    """A controller over the config's storage and drivers (nothing runs yet)."""
    clock = clock or SystemClock()
    # A replica's sessions: one stopped inside a transaction must not hold the lease
    # row's lock for longer than half a lease.
    idle = cfg.ha.lease_s / 2 if cfg.ha.enabled else None
    store = Store(cfg.storage.url, clock=clock, idle_tx_timeout_s=idle)
    d = cfg.drivers
    mapping: MappingDriver = load_driver(
        "mapping", d.mapping.name, cfg, clock, dict(d.mapping.options)
    )
    hyper: HypervisorDriver = load_driver(
        "hypervisor", d.hypervisor.name, cfg, clock, dict(d.hypervisor.options)
    )
    return Controller(
        cfg,
        store,
        sources if sources is not None else sources_from_config(cfg),
        mapping,
        hyper,
        clock,
        dry_run=dry_run,
        manual=manual,
    )


def make_server(ctl: Controller, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server for the API in this event loop (signals stay with the service)."""
    import uvicorn

    from pacao.controller.api import create_app

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    host, cfg_port = ctl.cfg.listen()
    ctl.api_token = ctl.cfg.api_token()
    config = uvicorn.Config(
        create_app(ctl, ctl.api_token),
        host=host,
        port=cfg_port if port is None else port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,  # open web-view event streams never end by themselves
    )
    return _Server(config)


def replica_id() -> str:
    """This process's lease holder name: host, PID and a random part (never reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def run_forever(
    config_path: Path,
    dry_run: bool = False,
    manual: bool = False,
    log_level: str = "info",
    listen: str | None = None,
    advertise: str | None = None,
) -> None:
    """`pacao controller run`: until SIGINT/SIGTERM."""
    cfg = with_listen(load_config(config_path), listen)
    check_runtime(cfg)
    setup_logging(level=log_level)

    async def main() -> None:
        ctl = build(cfg, dry_run=dry_run, manual=manual)
        ctl.config_path = config_path
        ctl.listen_override = listen
        if cfg.ha.enabled:
            host, port = cfg.listen()
            if host in ("0.0.0.0", "::", ""):
                host = socket.gethostname()
            Leadership(ctl, replica_id(), advertise or f"http://{host}:{port}")
        svc = Service(ctl, make_server(ctl))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, svc.stop.set)
        loop.add_signal_handler(signal.SIGHUP, svc.reload)
        await svc.serve()

    asyncio.run(main())
