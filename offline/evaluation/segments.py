"""Segment quality: the online segments against a batch KMeans on the same user snapshot.

A seeded sample of users at the watermark; both label sets are judged on the same
standardised log1p RFM features: the online segments (`UserSegments.predict_one`) and a batch
`KMeans` with the same k. Silhouette (scikit-learn's classic one; River's
`metrics.Silhouette` is a different quantity and is not reported) and the adjusted Rand index
between the two labellings.
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
    values = kernels.evaluate(state, rows, run.projector.watermark_us, names=list(seg.inputs))
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
    }


