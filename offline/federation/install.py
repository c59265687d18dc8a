"""Installing a propensity model as a data dir's serving model (a warm start).

`install_model` is the one path: under the data dir's writer lock it loads the projector from
its checkpoint, builds the new propensity model from the serving one (same features, the
same configuration around the learner), replaces it in the model set (a new model version),
checkpoints, and records both versions in the model registry (`online.models.registry`).
From the next event on the installed model scores and goes on learning from the shop's own
labels. The replacement is a model version of its own valid from the serving model's
watermark, so as-of profiles before the install are still scored by the earlier version.

`install_propensity` installs federated parameters through it: they are written into the
online model's own pipeline (the signed-log scaler's running mean and variance, the logistic
regression's weights and intercept).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["PRIOR_COUNT", "federated_pipeline", "install_model", "install_propensity"]

# how many examples the installed scaler statistics count for: new data moves them slowly
PRIOR_COUNT = 1_000


def federated_pipeline(features: tuple[str, ...], theta: np.ndarray, mean: np.ndarray,
                       scale: np.ndarray):
    """``default_propensity_model()`` with its state set to the federated parameters."""
    from online.models.contributor import default_propensity_model

    pipeline = default_propensity_model()
    scaler, logistic = pipeline.steps.values()
    for k, name in enumerate(features):
        scaler.counts[name] = PRIOR_COUNT
        scaler.means[name] = float(mean[k])
        scaler.vars[name] = float(scale[k]) ** 2
        logistic._weights[name] = float(theta[k])
    logistic.intercept = float(theta[-1])
    return pipeline


def install_model(settings, build: Callable, *, source: str, command: str, note: str = "",
                  trained_on: dict | None = None, evaluation: dict | None = None,
                  expect_version: str | None = None) -> dict:
    """Replace the data dir's serving propensity model by ``build(serving_model)``.

    ``expect_version``: refuse when the serving version is no longer this one (the model was
    built from it, and another install or a rebuild came in between). Returns the old and new
    versions, the offset from which the new one serves, and its registry entry.
    """
    from offline.wiring import build_projector
    from online.models.contributor import ModelContributor
    from online.models.registry import ModelRegistry, describe_learner
    from online.privacy.pseudonym import open_event_log
    from online.writerlock import WriterLock

    # the data dir's writer lock: a running server (or ingest) would overwrite the installed
    # model with its own at its next checkpoint; WriterBusy names it, and nothing is changed
    with WriterLock(settings.state_dir, command=command), open_event_log(settings) as log:
        projector = build_projector(log, settings, online_writes=False)
        contributor = next(c for c in projector.contributors
                           if isinstance(c, ModelContributor))
        old = contributor.models.model_version
        if expect_version is not None and old != expect_version:
            raise ValueError(f"the serving model changed from {expect_version} to {old} "
                             "while the new one was built: build it again")
        current = contributor.models.propensity
        new = build(current)
        if tuple(new.features) != tuple(current.features):
            raise ValueError(f"the serving model reads {len(current.features)} features, the "
                             f"new one {len(new.features)}: they must be the same list")
        if current.watermark_us is not None:  # valid from now: earlier as-of profiles keep
            new.advance(current.watermark_us)  # the version that served then
        registry = ModelRegistry(settings.data_dir)
        offset = projector.offset
        known = registry.get(old)
        registry.record({"model_version": old, "until_offset": offset, "replaced_by_source":
                         source, **({"source": known["source"]} if known else {
                             "source": "online", "kind": describe_learner(current),
                             "offset": 0, "trained_on": {"from_offset": 0,
                                                         "to_offset": offset}})})
        contributor.models.replace_propensity(new)
        projector.checkpoint()
        version = contributor.models.model_version
        entry = registry.record({
            "model_version": version, "source": source, "kind": describe_learner(new),
            "offset": offset, "replaces": old, "trained_on": trained_on,
            "evaluation": evaluation, "note": note})
        return {"previous_version": old, "model_version": version, "offset": offset,
                "note": note, "registry": entry}


def install_propensity(settings, features: tuple[str, ...], horizon_us: int,
                       theta: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                       note: str) -> dict:
    """Replace the data dir's serving propensity model by the federated one."""
    def build(current):
        if tuple(current.features) != tuple(features):
            raise ValueError(f"the serving model reads {len(current.features)} features, the "
                             f"federated one {len(features)}: they must be the same list")
        # same configuration (spacing, queue bound), the federated pipeline inside
        return current.clone({"model": federated_pipeline(features, theta, mean, scale),
                              "horizon_us": horizon_us})

    return install_model(settings, build, source="federated",
                         command="portrait federate --install", note=note)
