"""How good the federated model is: per shop and pooled, against local-only and central.

Per shop, on its own later period: the local-only model (its data alone), the federated
model and the central model (every shop's rows pooled: the upper bound that needs the data in
one place, fitted only for this comparison).  Pooled figures are over the union of the later
periods, from the shops' score histograms and summed losses, not from their rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from offline.federation import model as fm
from offline.federation.coordinator import FederationResult, federate


def central_model(tenants, l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The pooled-data baseline: every shop's training rows in one place (evaluation only)."""
    rows = [r for r in tenants.map("training_rows").values() if not isinstance(r, Exception)]
    if not rows:
        return None
    Z = np.vstack([z for z, _, _ in rows])
    y = np.concatenate([y for _, y, _ in rows])
    # users are per shop: prefix with the shop index so equal ids in two shops stay apart
    users = np.concatenate([np.char.add(f"{k}:", u.astype(str)) for k, (_, _, u) in
                            enumerate(rows)])
    std = fm.Standardiser.from_moments(fm.user_moments(Z, users), Z.shape[1])
    return fm.fit_exact(std(Z), y, l2), std.mean, std.scale


def evaluate(tenants, result: FederationResult, *, l2: float,
             central: bool = True) -> dict[str, Any]:
    """The report: per shop ``events``, ``local_auc``, ``federated_auc``, ``central_auc`` ..."""
    models = {"federated": result.model()}
    cm = central_model(tenants, l2) if central else None
    if cm is not None:
        models["central"] = cm
    evals = tenants.map("evaluate", {"models": models, "l2": l2})
    sizes = tenants.map("summary")
    shops: dict[str, Any] = {}
    pooled: dict[str, dict[str, Any]] = {}
    for name, ev in evals.items():
        if isinstance(ev, Exception):
            shops[name] = {"error": f"{type(ev).__name__}: {ev}"}
            continue
        size = sizes.get(name)
        row: dict[str, Any] = dict(size) if isinstance(size, dict) else {}
        for model_name in ("local", "federated", "central"):
            m = ev.get(model_name)
            row[f"{model_name}_auc"] = m["auc"] if m else None
            row[f"{model_name}_log_loss"] = m["log_loss"] if m else None
            if m and model_name != "local":
                acc = pooled.setdefault(model_name, {"pos": 0.0, "neg": 0.0, "loss": 0.0,
                                                     "n": 0})
                acc["pos"] = acc["pos"] + m["hist_pos"]
                acc["neg"] = acc["neg"] + m["hist_neg"]
                acc["loss"] += (m["log_loss"] or 0.0) * m["n"]
                acc["n"] += m["n"]
        row["test_positive_rate"] = (ev["federated"]["positives"] / ev["federated"]["n"]
                                     if ev["federated"]["n"] else None)
        shops[name] = row
    out_pooled: dict[str, Any] = {}
    for model_name in ("central", "federated"):
        acc = pooled.get(model_name)
        out_pooled[f"{model_name}_auc"] = (fm.histogram_auc(acc["pos"], acc["neg"])
                                           if acc else None)
        out_pooled[f"{model_name}_log_loss"] = acc["loss"] / acc["n"] if acc and acc["n"] \
            else None
    return {
        "rounds": result.rounds,
        "epsilon": result.epsilon,
        "delta": result.delta,
        "epsilon_spent": result.epsilon_spent,
        "noise_multiplier": result.noise_multiplier,
        "bytes_per_round": result.bytes_per_round,
        "engine": getattr(tenants, "engine", None),
        "pooled": out_pooled,
        "tenants": shops,
        "dropped": {str(r): d for r, d in result.dropped.items()},
        "refused": result.refused,
    }


def epsilon_curve(tenants, epsilons: list[float], *, rounds: int, delta: float, l2: float,
                  lr: float, clip: float, runs: int = 3) -> list[dict[str, Any]]:
    """Pooled federated AUC at each epsilon over ``runs`` noise draws.

    Every run is a real release and spends its epsilon from every shop's ledger.
    """
    points = []
    for eps in epsilons:
        aucs = []
        for _ in range(runs):
            res = federate(tenants, rounds=rounds, epsilon=eps, delta=delta, l2=l2, lr=lr,
                           clip=clip)
            rep = evaluate(tenants, res, l2=l2, central=False)
            aucs.append(rep["pooled"]["federated_auc"])
        good = [a for a in aucs if a is not None]
        points.append({"epsilon": eps, "federated_auc": float(np.mean(good)) if good else None,
                       "auc_min": min(good, default=None), "auc_max": max(good, default=None),
                       "runs": len(aucs)})
    return points


def plot_curve(points: list[dict[str, Any]], report: dict[str, Any], out: Path, *,
               delta: float) -> Path:
    """A PNG of pooled AUC against epsilon, with the noiseless and central levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    pts = [p for p in points if p["federated_auc"] is not None]
    xs, ys = [p["epsilon"] for p in pts], [p["federated_auc"] for p in pts]
    err = [[y - p["auc_min"] for y, p in zip(ys, pts, strict=True)],
           [p["auc_max"] - y for y, p in zip(ys, pts, strict=True)]]
    ax.errorbar(xs, ys, yerr=err, fmt="o-", capsize=4,
                label=f"federated, user-level DP (mean, range of {pts[0]['runs'] if pts else 0} "
                      "runs)")
    pooled = report["pooled"]
    for key, style, label in (("federated_auc", "--", "federated, no noise"),
                              ("central_auc", ":", "central (pooled data)")):
        if pooled.get(key) is not None:
            ax.axhline(pooled[key], linestyle=style, color="gray", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"epsilon over the whole run (delta = {delta:g})")
    ax.set_ylabel("pooled AUC, later periods")
    ax.set_title("Federated propensity: AUC against the privacy budget")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
