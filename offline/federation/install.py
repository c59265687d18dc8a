"""Installing a federated model as a shop's serving propensity model (a warm start).

The federated parameters are written into the online model's own pipeline (the signed-log
scaler's running mean and variance, the logistic regression's weights and intercept), the
model set gets a new version, and the projector checkpoints it: from the next event on, the
shop's model scores with the federated weights and goes on learning from its own labels.
"""

from __future__ import annotations

import numpy as np

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


def install_propensity(settings, features: tuple[str, ...], horizon_us: int,
                       theta: np.ndarray, mean: np.ndarray, scale: np.ndarray,
                       note: str) -> dict:
    """Replace the data dir's serving propensity model; returns the old and new versions."""
    from offline.wiring import build_projector
    from online.models.contributor import ModelContributor
    from online.privacy.pseudonym import open_event_log
    from online.writerlock import WriterLock

    # the data dir's writer lock: a running server (or ingest) would overwrite the installed
    # model with its own at its next checkpoint; WriterBusy names it, and nothing is changed
    with WriterLock(settings.state_dir, command="portrait federate --install"), \
            open_event_log(settings) as log:
        projector = build_projector(log, settings, online_writes=False)
        contributor = next(c for c in projector.contributors
                           if isinstance(c, ModelContributor))
        old = contributor.models.model_version
        current = contributor.models.propensity
        if tuple(current.features) != tuple(features):
            raise ValueError(f"the serving model reads {len(current.features)} features, the "
                             f"federated one {len(features)}: they must be the same list")
        # same configuration (horizon, spacing, queue bound), the federated pipeline inside
        contributor.models.replace_propensity(current.clone(
            {"model": federated_pipeline(features, theta, mean, scale),
             "horizon_us": horizon_us}))
        projector.checkpoint()
        return {"previous_version": old, "model_version": contributor.models.model_version,
                "offset": projector.offset, "note": note}
