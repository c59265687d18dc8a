"""Segment quality: the online segments against a batch KMeans on the same user snapshot.

A seeded sample of users at the watermark; both label sets are judged on the same
standardised log1p RFM features: the online segments (`UserSegments.predict_one`) and a batch
`KMeans` with the same k. Silhouette (scikit-learn's classic one; River's
`metrics.Silhouette` is a different quantity and is not reported) and the adjusted Rand index
between the two labellings.

Per online segment, a table in business units over the same sampled users (as of the
watermark): users and their share, how many ever bought, spend, orders, days since the last
purchase (buyers only), events, average order value and the online purchase score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from online import kernels

from .scoring import OnlineRun

__all__ = ["segments"]


def segments(run: OnlineRun, n_users: int, seed: int, curves) -> dict[str, Any]:
    """Online segments vs batch KMeans on the same standardised RFM features of sampled users."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, silhouette_score
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    seg = run.contributor.models.segments
    state, k = run.projector.state, seg.n_clusters
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(state.n_users, size=min(n_users, state.n_users), replace=False))
    propensity = run.contributor.models.propensity
    names = sorted({*seg.inputs, *propensity.features, *_BUSINESS})
    values = kernels.evaluate(state, rows, run.projector.watermark_us, names=names)
    xs = [{n: values[n][i].item() for n in seg.inputs} for i in range(len(rows))]
    R = np.array([list(seg.rfm(x).values()) for x in xs])  # log1p RFM, as the model sees it
    Z = StandardScaler().fit_transform(R)
    online = np.array([seg.predict_one(x) for x in xs])
    with threadpool_limits(1):
        batch = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(Z)

    def silhouette(labels):
        if len(np.unique(labels)) < 2 or len(labels) <= len(np.unique(labels)):
            return None
        return float(silhouette_score(Z, labels, random_state=seed))

    described = seg.describe()
    curves["segments"] = {
        "online_sizes": np.bincount(online, minlength=k), "batch_sizes":
        np.bincount(batch.labels_, minlength=k),
        "online_centroids": np.array([[d["centroid"][a] for a in d["centroid"]]
                                      for d in described]),
        "batch_centroids": batch.cluster_centers_,
        "axes": list(described[0]["centroid"]) if described else [],
        "labels": [d["label"] for d in described],
    }
    return {
        "k": int(k), "users_sampled": int(len(rows)),
        "silhouette_online": silhouette(online), "silhouette_batch": silhouette(batch.labels_),
        "ari": float(adjusted_rand_score(batch.labels_, online)),
        "online_segments_used": int(len(np.unique(online))),
        "online": [{"id": d["id"], "label": d["label"], "learnt": d["size"],
                    "sampled_users": int((online == d["id"]).sum())} for d in described],
        "business": business_tables(online, values, described, [
            propensity.predict_proba_one({f: values[f][i].item() for f in propensity.features})
            for i in range(len(rows))], users_total=int(state.n_users)),
    }


# measure -> (catalogue column, unit, buyers only)
_MEASURES = {
    "spend": ("spend_total", "currency", False),
    "orders": ("order_count", "orders", False),
    "days since last purchase": ("rfm_recency_days", "days", True),
    "events": ("event_count", "events", False),
    "average order value": ("avg_order_value", "currency", True),
}
_BUSINESS = tuple(c for c, _, _ in _MEASURES.values())


def business_tables(labels: np.ndarray, values: dict[str, np.ndarray], described: list[dict],
                    score: list[float], *, users_total: int) -> list[dict]:
    """One table per segment: counts, spend, orders, recency, events, order value, score."""
    n = max(len(labels), 1)
    buyers = np.asarray(values["order_count"], np.float64) > 0
    score_ = np.asarray(score, np.float64)
    out = []
    for d in described:
        mine = labels == d["id"]
        rows = []
        for measure, (column, unit, buyers_only) in {
                **_MEASURES, "purchase score": (None, "probability", False)}.items():
            v = score_ if column is None else np.asarray(values[column], np.float64)
            v = v[mine & buyers] if buyers_only else v[mine]
            rows.append({"measure": measure, "unit": unit, "users": int(len(v)),
                         **_summary(v, total=column in ("spend_total", "order_count"))})
        out.append({"id": d["id"], "label": d["label"], "users": int(mine.sum()),
                    "share": float(mine.sum() / n), "buyers": int((mine & buyers).sum()),
                    "sample_of": users_total, "measures": rows})
    return out


def _summary(v: np.ndarray, total: bool) -> dict:
    if not len(v):
        return {"total": 0.0 if total else None, "mean": None, "median": None, "p25": None,
                "p75": None}
    q25, q50, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"total": float(v.sum()) if total else None, "mean": float(v.mean()),
            "median": float(q50), "p25": float(q25), "p75": float(q75)}


