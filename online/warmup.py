"""Say when numba compiles the kernels, and compile them ahead: ``python -m online.warmup``.

The kernels are compiled on their first call and cached on disk (``cache=True``, see
`online.kernels.jit`), so only the first run after an install (or after a kernel source
changed) pays for it: seconds of silence otherwise. `announce_compiles` hooks numba's
compile event: each kernel compiled (a cache miss) is said on stderr with its time, so a
first command shows what it is doing. ``python -m online.warmup`` runs the projector, the
models and the as-of path over a three-event log in a scratch directory, so every kernel of
ingest and serving is compiled at setup instead (the README's install line runs it).
"""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["announce_compiles", "warm_up"]

_PACKAGE = "online.kernels"
_installed = False
_lock = threading.Lock()


def announce_compiles(stream=None) -> None:
    """Print a line on ``stream`` (stderr) for each kernel numba compiles (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    from numba.core import event

    out = stream if stream is not None else sys.stderr
    depth = threading.local()

    class _Notice(event.Listener):
        def on_start(self, ev) -> None:
            level = getattr(depth, "n", 0)
            depth.n = level + 1
            if level == 0 and _ours(ev):
                depth.t = time.perf_counter()
                name = ev.data["dispatcher"].py_func.__qualname__
                print(f"compiling kernel {name} (numba, once per install; cached on disk) ...",
                      file=out, flush=True)

        def on_end(self, ev) -> None:
            depth.n = getattr(depth, "n", 1) - 1
            if depth.n == 0 and _ours(ev) and getattr(depth, "t", None) is not None:
                print(f"  compiled in {time.perf_counter() - depth.t:.1f} s", file=out,
                      flush=True)
                depth.t = None

    event.register("numba:compile", _Notice())


def _ours(ev) -> bool:
    dispatcher = (ev.data or {}).get("dispatcher")
    module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
    return module.startswith(_PACKAGE)


def warm_up() -> float:
    """Compile (or load from the cache) every kernel of ingest and serving; seconds taken."""
    import tempfile
    from pathlib import Path

    from online.eventlog import EventLog
    from online.models.contributor import ModelContributor
    from online.projector import Projector, features_as_of_many

    start = time.perf_counter()
    events = [{"event_id": f"w{i}", "user_id": "warm", "type": kind,
               "ts": f"2024-01-01T00:0{i}:00+00:00", "item_id": "i1", "category": "c1",
               "session_id": "s1", "price": 2.5, "quantity": 1}
              for i, kind in enumerate(("view", "add_to_cart", "purchase"))]
    with tempfile.TemporaryDirectory(prefix="portrait-warmup-") as scratch:
        with EventLog(Path(scratch) / "events.db") as log:
            log.append(events, source="warmup")
            projector = Projector(log, Path(scratch) / "state", contributors=[ModelContributor()])
            projector.run()
            projector.profiles(["warm"])
            features_as_of_many(log, ["warm"], projector.watermark_us)
    _warm_models()
    return time.perf_counter() - start


def _warm_models() -> None:
    """The kernels the models call only once they have learnt (a three-event log learns no
    snapshot and no fit): the segments' k-means, the propensity's batch logits and prior."""
    import numpy as np

    from online.kernels.signed import row_logits
    from online.kernels.survival import km_pass
    from online.models.kmeans import choose, kmeans_pp, lloyd

    row_logits(np.zeros((1, 2)), np.zeros(2), 0.0, 0)
    km_pass(np.zeros(1, np.int64), np.zeros(1, np.int64), 1)

    Z = np.array([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    fresh = kmeans_pp(Z, 2, np.random.default_rng(0))
    choose(Z, [lloyd(Z, Z[:1].copy(), 2)[0], lloyd(Z, fresh, 2)[0]], 0.02)


def main() -> None:
    announce_compiles()
    print(f"kernels ready in {warm_up():.1f} s", file=sys.stderr)


if __name__ == "__main__":  # through the imported module: one listener, not two
    from online import warmup

    warmup.main()
