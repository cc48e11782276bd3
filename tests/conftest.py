"""The files `make test` runs on two pytest-xdist workers before the rest (docs/testing.md,
"How `make test` runs").

These files compute on in-memory inputs and temporary files only: no root, no
namespace, no daemon, no socket bound to a fixed port, no PostgreSQL, QEMU, libvirt,
tshark or browser, no shared path outside ``tmp_path`` and no assertion about time.
Two of them side by side only share the CPU, which changes nothing they check. Every
other file, and any new file until it is added here, runs serially after them, as
before. ``pytest`` alone still runs the whole suite serially.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import settings

# No hypothesis deadline (its default fails an example that takes over 200 ms of wall
# time): a time limit is not what these tests check, and on a loaded host, or beside
# the other xdist worker, one example once took 418 ms (test_lisp_codec::test_round_trip,
# 0.06 ms when replayed). Loaded here, before the test modules, so that every @settings
# inherits it.
settings.register_profile("pacao", deadline=None)
# CI (.ci/run sets CI) draws the same examples every run: a gate that lands or refuses a
# change must not depend on the draw. Exploring new examples is `make explore` (random
# seeds, many runs) and every local `make test`; what they find becomes a fixed test
# (docs/testing.md, "A failure hypothesis found").
settings.register_profile("ci", deadline=None, derandomize=True, database=None)
settings.load_profile("ci" if os.environ.get("CI") else "pacao")

PARALLEL_SAFE = frozenset(
    {
        "test_architecture.py",
        "test_assign.py",
        "test_assign_capacity.py",
        "test_assign_partitioned.py",
        "test_cli_solve.py",
        "test_decision_policy.py",
        "test_lisp_auth_rules.py",
        "test_lisp_codec.py",
        "test_lisp_fastpath.py",
        "test_lisp_fuzz.py",
        "test_lisp_interop.py",
        "test_mutation_assign.py",
        "test_mutation_bulk.py",
        "test_mutation_decision.py",
        "test_mutation_lisp_auth.py",
        "test_mutation_lisp_codec.py",
        "test_mutation_lisp_lpm.py",
        "test_mutation_milp.py",
        "test_mutation_optimize.py",
        "test_mutation_policy.py",
        "test_optimize_single.py",
        "test_reproduce.py",
        "test_sim_controller.py",
        "test_sim_engine.py",
        "test_sim_geography.py",
        "test_sim_mobility.py",
        "test_sim_network.py",
        "test_sim_sensitivity.py",
        "test_sim_traces.py",
        "test_testbed_dataplane.py",
        "test_testbed_scenario.py",
        "test_testbed_topology.py",
        "test_validate.py",
    }
)


#: Collected first: the longest file (its module fixture is a whole `pacao reproduce`).
#: xdist hands files out in collection order, so started last it would run alone on one
#: worker while the other idles.
FIRST = "test_reproduce.py"


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in PARALLEL_SAFE:
            item.add_marker(pytest.mark.parallel_safe)
    items.sort(key=lambda item: item.path.name != FIRST)  # stable: the rest keep their order


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """An in-process Dask cluster (one worker, two threads) for the partitioned-run tests."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        Client(cluster) as c,  # type: ignore[no-untyped-call]
    ):
        yield c
