"""Why a propensity score is what it is: signed per-feature contributions.

Two methods, chosen by the model's shape:

- linear (a River `GLM` such as `LogisticRegression`, alone or at the end of a `Pipeline` of
  name-preserving transformers such as `StandardScaler`): contribution = weight x transformed
  value, in logit units. They sum, with the intercept, to the logit of the score; with a
  `StandardScaler` in front a feature at its running mean contributes exactly 0. A model
  with its own `contributions_one(x)` (logit units that sum with its intercept to the
  logit, such as `learners.WindowedLogistic`) is explained by it.
- occlusion (any other classifier): contribution = p(x) - p(x with the feature replaced by its
  running mean over the examples the model learnt from), in probability units. One extra
  prediction per feature, so it is meant for the per-user profile, not the per-event path.

Features are ranked by absolute contribution, ties by name, so the order is deterministic.
Features equal in value and in contribution at `x` (a copy of another feature, or one
perfectly collinear with it in the data the model learnt from) are one reason, listed once
under the first name with the others in ``same_as``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from river import base, compose
from river.linear_model.base import GLM

__all__ = ["is_additive", "linear_step", "linear_contributions", "occlusion_contributions",
           "top_contributions"]


def is_additive(model: base.Estimator) -> bool:
    """Whether `model`'s logit is a sum of per-feature contributions `linear_contributions`
    can give: a linear step (`linear_step`) or a model with `contributions_one`."""
    return callable(getattr(model, "contributions_one", None)) or linear_step(model) is not None


def linear_step(model: base.Estimator) -> GLM | None:
    """The linear model whose weights explain `model`'s scores, or None when there is none.

    >>> from river import linear_model, preprocessing, tree
    >>> model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    >>> type(linear_step(model)).__name__
    'LogisticRegression'
    >>> linear_step(tree.HoeffdingTreeClassifier()) is None
    True
    """
    if isinstance(model, GLM):
        return model
    if isinstance(model, compose.Pipeline):
        steps = list(model.steps.values())
        # Only transformers that keep feature names map a weight back to a raw feature.
        if isinstance(steps[-1], GLM) and all(_keeps_names(s) for s in steps[:-1]):
            return steps[-1]
    return None


def _keeps_names(step: base.Estimator) -> bool:
    from river import preprocessing

    return isinstance(
        step,
        preprocessing.StandardScaler | preprocessing.MinMaxScaler | preprocessing.MaxAbsScaler,
    )


def linear_contributions(model: base.Estimator, x: dict[str, float]) -> dict[str, float]:
    """weight x transformed value per feature of `x`, for a model `linear_step` accepts.

    >>> from river import linear_model
    >>> lr = linear_model.LogisticRegression()
    >>> lr.learn_one({"a": 1.0, "b": -1.0}, True)
    >>> linear_contributions(lr, {"a": 2.0, "b": 1.0})
    {'a': 0.01, 'b': -0.005}
    """
    own = getattr(model, "contributions_one", None)
    if callable(own):
        return own(x)
    glm = linear_step(model)
    if glm is None:
        raise ValueError(f"no linear step to explain {type(model).__name__}: use occlusion")
    z = model.transform_one(x) if isinstance(model, compose.Pipeline) else x
    weights = glm._weights
    return {k: weights.get(k, 0.0) * v for k, v in z.items()}


def occlusion_contributions(
    predict: Callable[[dict[str, float]], float],
    x: dict[str, float],
    baseline: Mapping[str, float],
) -> dict[str, float]:
    """p(x) - p(x with feature k set to `baseline[k]`), for each feature k of `x`.

    >>> predict = lambda x: min(1.0, 0.1 * x["a"])
    >>> occlusion_contributions(predict, {"a": 5.0, "b": 1.0}, {"a": 2.0, "b": 0.0})
    {'a': 0.3, 'b': 0.0}
    """
    p = predict(x)
    out = {}
    for k in x:
        occluded = dict(x)
        occluded[k] = baseline.get(k, 0.0)
        out[k] = p - predict(occluded)
    return out


def top_contributions(
    x: Mapping[str, float], contributions: Mapping[str, float], top: int, names: Sequence[str]
) -> list[dict]:
    """The `top` features of `names` by |contribution|, as {"feature", "value", "contribution"}.

    >>> top_contributions({"a": 1.0, "b": 2.0}, {"a": -0.5, "b": 0.5}, 1, ("a", "b"))
    [{'feature': 'a', 'value': 1.0, 'contribution': -0.5}]
    >>> top_contributions({"n": 3.0, "m": 3.0, "z": 1.0}, {"n": 0.4, "m": 0.4, "z": 0.1}, 2,
    ...                   ("n", "m", "z"))  # doctest: +NORMALIZE_WHITESPACE
    [{'feature': 'm', 'value': 3.0, 'contribution': 0.4, 'same_as': ['n']},
     {'feature': 'z', 'value': 1.0, 'contribution': 0.1}]
    """
    ranked = sorted(names, key=lambda k: (-abs(contributions.get(k, 0.0)), k))
    out: list[dict] = []
    by_key: dict[tuple, dict] = {}
    for k in ranked:
        c = contributions.get(k, 0.0)
        key = (x[k], c)
        if c != 0.0 and key in by_key:
            by_key[key].setdefault("same_as", []).append(k)
            continue
        if len(out) >= max(top, 0):
            # a duplicate of a listed reason may still follow (equal contribution)
            if out and abs(c) < abs(out[-1]["contribution"]):
                break
            continue
        entry = {"feature": k, "value": x[k], "contribution": c}
        by_key[key] = entry
        out.append(entry)
    return out
