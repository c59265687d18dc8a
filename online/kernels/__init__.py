"""The numba kernels of the feature engine, in one package, behind checked public wrappers."""

from online.kernels import asof, events, kmeans, snapshot, stored
from online.kernels.features import (
    EVENT_COLUMNS,
    apply,
    apply_encoded,
    checked,
    evaluate,
    evaluate_stored,
    next_window_change,
    stored_values,
)
from online.kernels.jit import guard_cache
from online.kernels.layout import I_LAST_TS, OUT_FLOAT, OUT_INT
from online.kernels.stored import decay_factors
from online.warmup import announce_compiles

# a kernel compiled on first use (a cold numba cache) is said on stderr, whichever command or
# library call loads the kernels first (the projector, a bare replay, a training set)
announce_compiles()

guard_cache([f for m in (events, stored, snapshot, asof, kmeans) for f in vars(m).values()
             if hasattr(f, "_cache") and hasattr(f, "py_func")])

__all__ = [
    "EVENT_COLUMNS",
    "I_LAST_TS",
    "OUT_FLOAT",
    "OUT_INT",
    "apply",
    "apply_encoded",
    "checked",
    "decay_factors",
    "evaluate",
    "evaluate_stored",
    "next_window_change",
    "stored_values",
]
