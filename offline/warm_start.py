"""`portrait train`: the serving learner trained in a batch pass and installed as a warm start.

The model trained is a copy of the serving propensity model itself (`clone()`: the same
learner, the same configuration, no learnt state), so the batch side knows nothing of the
learner's internals and the installed model goes on learning online exactly as before:

1. Training rows come from the replay's point-in-time training sets
   (`offline.backfill.training_set`): the online model's own prediction points (per user the
   last event of each effective time, bounded per user and overall, seeded), features as of
   each row's time, label "a purchase in (t, t+H]" with the serving model's horizon H, only
   rows whose label is known at the log's watermark.
2. Held-out evaluation: a time cut at the ``1 - holdout`` quantile of the rows' times; the copy
   learns the rows with t + H <= cut (no label reaches past the cut) and is scored on the rows
   after it, next to the serving model and the base rate. The serving model has learnt online
   from the held-out period's labels too, so its figure there is optimistic.
3. The installed model: a fresh copy with the same recipe over every known row. Each epoch
   visits the rows in time order (ties: a seeded order) through the public `learn_one`: the
   order in which the learner meets labels online. The served `WindowedLogistic` reads the
   newest rows of its window as the present (its ridge is chosen on them, its intercept set
   on them), so shuffled rows would make it validate on rows it also fitted and centre its
   base rate on a random fifth (held-out AUC 0.48, 0.83 and 0.52 on three synthetic shops of
   150 users where one time-ordered pass gets 0.79, 0.87 and 0.88). One epoch is the
   default; more repeat each row in the window.
4. It is installed through `offline.federation.install.install_model` (the writer lock, a new
   model version valid from the watermark, the registry entry with the figures of step 2).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from online import catalogue as cat
from online.eventlog import EventLog
from online.extras import require
from online.models import format_duration
from online.settings import Settings

__all__ = ["fit_copy", "point_in_time_rows", "train"]


def point_in_time_rows(settings: Settings, features: tuple[str, ...], horizon_us: int, *,
                       max_per_user: int, max_rows: int, seed: int) -> dict[str, Any]:
    """Training rows at the log's prediction points: users, times, X (float64), labels."""
    from offline.backfill import replay as rp
    from offline.backfill.training_set import features_at, labels
    from offline.evaluation import entity_points

    with EventLog(settings.event_log_path) as log:
        end = log.next_offset
        parts = [(b.user_id, b.ts) for b, _ in log.batches(0, end, size=200_000)]
    if not parts:
        raise ValueError(f"the event log in {settings.data_dir} is empty: nothing to train on")
    if rp.replayed_end(settings) < end:  # the training sets read the replayed snapshot
        rp.replay(settings)
    users = np.concatenate([p[0] for p in parts])
    # effective times, as the projector serves them: never decreasing per user
    t = pd.Series(np.concatenate([p[1] for p in parts])).groupby(users).cummax().to_numpy()
    watermark = int(rp.watermark(settings))
    known = t + horizon_us <= watermark
    idx = entity_points({"user_id": users, "t_us": t}, known, max_per_user=max_per_user,
                        max_rows=max_rows, seed=seed)
    entities = pd.DataFrame({
        "user_id": users[idx],
        "event_timestamp": pd.DatetimeIndex(t[idx].view("datetime64[us]")).tz_localize("UTC")})
    X = features_at(settings, entities, list(features)).to_numpy(np.float64, na_value=np.nan)
    y = labels(settings, entities, horizon_us).iloc[:, 1].to_numpy(dtype=bool, na_value=False)
    return {"users": users[idx], "t_us": t[idx], "X": X, "y": y, "watermark_us": watermark,
            "to_offset": end}


def fit_copy(serving, X: np.ndarray, y: np.ndarray, t_us: np.ndarray, *, epochs: int,
             seed: int):
    """A fresh copy of ``serving`` (same learner and configuration) that learnt the rows, in
    time order ``t_us`` (rows at the same time in a seeded order), `epochs` times."""
    model = serving.clone()
    rows = X.tolist()
    features = model.features
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        shuffled = rng.permutation(len(rows))
        for i in shuffled[np.argsort(np.asarray(t_us)[shuffled], kind="stable")]:
            model.learn_one(dict(zip(features, rows[i], strict=True)), bool(y[i]))
    return model


def train(settings: Settings, *, epochs: int = 1, holdout: float = 0.2,
          max_per_user: int = 20, max_rows: int = 20_000, seed: int = 0,
          install: bool = True, progress: bool = False) -> dict[str, Any]:
    """Train a copy of the serving propensity model on point-in-time rows; install it."""
    from offline.evaluation.scoring import scores
    from offline.federation.install import install_model
    from offline.wiring import build_projector
    from online.models.contributor import ModelContributor
    from online.privacy.pseudonym import open_event_log
    from online.writerlock import WriterLock

    require("sklearn", extra="evaluate", purpose="the held-out figures of `portrait train`")
    if epochs < 1 or not 0.0 < holdout < 1.0:
        raise ValueError(f"need epochs >= 1 and 0 < holdout < 1, got {epochs} and {holdout}")
    started = time.perf_counter()
    if install:
        # fail before the work when another writer holds the data dir; the install takes
        # the lock again for itself
        WriterLock(settings.state_dir, command="portrait train").acquire().release()

    def say(text: str) -> None:
        if progress:
            print(f"train: {text}", file=sys.stderr, flush=True)

    with open_event_log(settings) as log:
        contributor = next(c for c in build_projector(log, settings, online_writes=False)
                           .contributors if isinstance(c, ModelContributor))
    serving, serving_version = contributor.models.propensity, contributor.model_version
    horizon = serving.horizon_us
    say(f"point-in-time training rows (horizon {format_duration(horizon)})")
    rows = point_in_time_rows(settings, serving.features, horizon, max_per_user=max_per_user,
                              max_rows=max_rows, seed=seed)
    t, X, y = rows["t_us"], rows["X"], rows["y"]
    cut = int(np.quantile(t, 1.0 - holdout)) if len(t) else 0
    tr, te = t + horizon <= cut, t > cut
    if tr.sum() == 0 or te.sum() == 0 or len(np.unique(y[tr])) < 2:
        raise ValueError(f"not enough labelled rows before and after the cut ({int(tr.sum())} "
                         f"and {int(te.sum())} of {len(t)}): a longer log or a shorter horizon")
    say(f"held-out fit on {int(tr.sum()):,} rows, scored on {int(te.sum()):,}")
    held = fit_copy(serving, X[tr], y[tr], t[tr], epochs=epochs, seed=seed)
    names = serving.features

    def score(model, part) -> list[float]:
        return [model.predict_proba_one(dict(zip(names, r, strict=True)))
                for r in X[part].tolist()]

    evaluation = {
        "cut": cat.iso_utc(cut), "train_rows": int(tr.sum()), "test_rows": int(te.sum()),
        "trained": scores(y[te], np.asarray(score(held, te))),
        "serving": {**scores(y[te], np.asarray(score(serving, te))),
                    "model_version": serving_version,
                    "note": "learnt online from the held-out period's labels too (optimistic)"},
        "base_rate": scores(y[te], np.full(int(te.sum()), float(y[tr].mean()))),
        "recipe": {"epochs": epochs, "seed": seed, "order": "time order per epoch",
                   "holdout": holdout}}
    say(f"final fit on all {len(t):,} labelled rows")
    final = fit_copy(serving, X, y, t, epochs=epochs, seed=seed)
    trained_on = {"from_offset": 0, "to_offset": int(rows["to_offset"]),
                  "from": cat.iso_utc(int(t.min())), "to": cat.iso_utc(int(t.max())),
                  "labels_until": cat.iso_utc(rows["watermark_us"]), "rows": int(len(t)),
                  "users": int(len(np.unique(rows["users"]))),
                  "horizon": format_duration(horizon)}
    out: dict[str, Any] = {"data_dir": str(settings.data_dir), "serving_version":
                           serving_version, "trained_on": trained_on, "evaluation": evaluation,
                           "installed": None}
    if install:
        say("installing")
        out["installed"] = install_model(
            settings, lambda current: final, source="train", command="portrait train",
            note=f"batch warm start, {epochs} epochs", trained_on=trained_on,
            evaluation=evaluation, expect_version=serving_version)
    out["seconds"] = round(time.perf_counter() - started, 1)
    return out
