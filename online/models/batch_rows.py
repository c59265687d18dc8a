"""One `observe_many` batch's questions, as rows of signed logs scored in one compiled pass.

`PurchasePropensity.observe_many` computes the signed logs of a whole batch at once; the
questions then refer to a row of it by its index (`DelayedLabels._ask`, `_values`), so no row
becomes a Python list unless it is held, and the learner's logits for every row come from one
call (`online.kernels.signed.row_logits`, the sum `WindowedLogistic.proba_logs` makes, bit for
bit). A refit inside the batch changes the fit: the logits are then made again from the row
asked on.
"""

from __future__ import annotations

from array import array

import numpy as np

from online.kernels.signed import row_logits

from .signed import sigmoid

__all__ = ["BatchRows"]


class BatchRows:
    """Rows `Z` (signed logs in `names` order) scored by `model`, a `WindowedLogistic`."""

    __slots__ = ("Z", "_model", "_names", "_slopes", "_offset", "_logits")

    def __init__(self, Z: np.ndarray, model, names: tuple) -> None:
        self.Z = Z
        self._model = model
        self._names = names
        self._slopes: list | None = None  # the fit the logits were made with
        self._offset = 0.0
        self._logits: list[float] | None = None

    def ask(self, i: int) -> float:
        """``model.proba_logs(names, row i)``: the score of row `i` under the current fit."""
        model = self._model
        if model._slopes is not self._slopes or model._offset != self._offset:
            self._slopes, self._offset = model._slopes, model._offset
            self._logits = (row_logits(self.Z, np.array(model._slopes, np.float64),
                                       float(model._offset), i).tolist()
                            if model._fit_keys == self._names else None)
        logits = self._logits
        if logits is None:  # a fit over other names (or none yet): the learner's own path
            return model.proba_logs(self._names, self.Z[i].tolist())
        return sigmoid(logits[i])

    def values(self, i: int) -> array:
        """Row `i` as a held question keeps it (8 bytes a value)."""
        return array("d", self.Z[i].tobytes())
