"""Shared fixtures: one local Ray for the whole session (started on first use)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray (2 CPUs, a small object store), shut down when the session ends."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
                 log_to_driver=False)
    yield ray
    ray.shutdown()
