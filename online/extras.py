"""Optional dependencies: import one, or stop with one line naming the extra that installs it.

Evaluation (scikit-learn, matplotlib), differentially private exports (OpenDP) and the Redis
online store are extras of the ``portrait`` distribution, so a plain install stays small.

>>> require("json", extra="dp", purpose="a doctest").__name__
'json'
>>> try:
...     require("no_such_module_here", extra="dp", purpose="private exports")
... except MissingExtra as exc:
...     print(exc)
private exports need no_such_module_here, which is not installed: pip install 'portrait[dp]'
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtra", "require"]


class MissingExtra(ImportError):
    """A feature's optional dependency is not installed; the message names the extra."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} need {module}, which is not installed: pip install 'portrait[{extra}]'"
        )
        self.module, self.extra = module, extra


def require(module: str, *, extra: str, purpose: str) -> ModuleType:
    """``import module``, or raise `MissingExtra` telling which extra of portrait to install."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        # only the module itself (or its parent) missing is an extra problem; a broken
        # install of something else should show its own error
        if exc.name is None or not module.startswith(exc.name):
            raise
        raise MissingExtra(module, extra, purpose) from None
