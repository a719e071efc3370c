from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fleet.ray_cluster import RayCluster


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """One real Ray cluster per test module (its start is what costs): a head with 2 CPUs on
    127.0.0.1. Every process of it is ended afterwards, whatever the tests did."""
    cluster = RayCluster()
    try:
        cluster.start_head(cpus=2)
        yield cluster
    finally:
        cluster.kill_all()
