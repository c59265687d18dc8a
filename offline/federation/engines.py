"""Where tenant workers run: objects in this process, or Ray actors (one per shop).

Both engines expose the same call: ``map(method, kwargs)`` runs a method on every live tenant
and returns each tenant's result or the exception that stopped it, so a failing shop drops
out of one round instead of stopping the federation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from offline.federation.tenant import TenantWorker


class LocalTenants:
    """Tenant workers as objects of this process, called one after another."""

    engine = "local"

    def __init__(self, specs: Mapping[str, dict[str, Any]]) -> None:
        self.workers = {name: TenantWorker(name, **spec) for name, spec in specs.items()}

    @property
    def names(self) -> list[str]:
        return list(self.workers)

    def map(self, method: str, kwargs: dict[str, Any] | None = None,
            names: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in (self.names if names is None else names):
            try:
                out[name] = getattr(self.workers[name], method)(**(kwargs or {}))
            except Exception as exc:  # one shop failing must not stop the others
                out[name] = exc
        return out

    def close(self) -> None:
        pass


class RayTenants:
    """One Ray actor per shop; a crashed actor is restarted (it rebuilds its examples)."""

    engine = "ray"

    def __init__(self, specs: Mapping[str, dict[str, Any]], *, address: str | None = None,
                 max_restarts: int = 1) -> None:
        import ray

        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False)
            self._started = True
        # Actors hold no CPU while idle: more shops than cores must still all be placed.
        actor = ray.remote(num_cpus=0, max_restarts=max_restarts)(TenantWorker)
        self.actors = {name: actor.remote(name, **spec) for name, spec in specs.items()}

    @property
    def names(self) -> list[str]:
        return list(self.actors)

    def map(self, method: str, kwargs: dict[str, Any] | None = None,
            names: list[str] | None = None) -> dict[str, Any]:
        refs = {name: getattr(self.actors[name], method).remote(**(kwargs or {}))
                for name in (self.names if names is None else names)}
        out: dict[str, Any] = {}
        for name, ref in refs.items():
            try:
                out[name] = self._ray.get(ref)
            except Exception as exc:  # a dead actor or a failed call: this round without it
                out[name] = exc
        return out

    def pids(self) -> dict[str, int]:
        """Each actor's process id (to watch or, in tests, to kill one)."""
        import os

        return {n: self._ray.get(a.__ray_call__.remote(lambda _self: os.getpid()))
                for n, a in self.actors.items()}

    def close(self) -> None:
        for a in self.actors.values():
            self._ray.kill(a)
        if self._started:
            self._ray.shutdown()


def tenants(specs: Mapping[str, dict[str, Any]], engine: str = "local", *,
            address: str | None = None):
    """The engine's tenant set over ``specs`` (name -> TenantWorker keyword arguments)."""
    if engine == "local":
        return LocalTenants(specs)
    if engine == "ray":
        return RayTenants(specs, address=address)
    raise ValueError(f"engine: expected 'local' or 'ray', got {engine!r}")
