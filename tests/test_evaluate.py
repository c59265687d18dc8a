"""Model evaluation: labels of the online predictions, the report, the CLI's JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from offline.cli import cli
from offline.datasets import generate
from offline.evaluation import entity_points, resolve_labels
from online.eventlog import EventLog
from online.models import DAY_US
from online.settings import Settings


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("shop")
    with EventLog(Settings(data_dir=root).event_log_path) as log:
        for chunk in generate(80, 4000, seed=2):
            log.append(chunk, now_us=2**62)
    return root


def naive_labels(pred, horizon_us, watermark_us):
    y, known = [], []
    n = len(pred["t_us"])
    for i in range(n):
        u, t = pred["user_id"][i], int(pred["t_us"][i])
        later = [int(pred["t_us"][j]) for j in range(n) if pred["user_id"][j] == u
                 and pred["is_purchase"][j] and int(pred["t_us"][j]) > t]
        y.append(bool(later) and min(later) <= t + horizon_us)
        known.append(t + horizon_us <= watermark_us)
    return np.array(y), np.array(known)


def test_labels_of_online_predictions_equal_a_naive_scan():
    rng = np.random.default_rng(4)
    n = 400
    users = rng.choice(["a", "b", "c"], n).astype(object)
    t = np.zeros(n, np.int64)
    newest: dict[str, int] = {}
    for i in range(n):  # effective times: non-decreasing per user, with ties
        t[i] = newest[users[i]] = newest.get(users[i], 0) + int(rng.choice([0, 0, 1, 5, 30]))
    pred = {"user_id": users, "offset": np.arange(n), "t_us": t,
            "is_purchase": rng.random(n) < 0.15}
    y, known = resolve_labels(pred, horizon_us=20, watermark_us=int(t.max()) - 10)
    ny, nknown = naive_labels(pred, 20, int(t.max()) - 10)
    np.testing.assert_array_equal(y, ny)
    np.testing.assert_array_equal(known, nknown)

    idx = entity_points(pred, known, max_per_user=30, max_rows=60, seed=1)
    assert len(idx) <= 60 and known[idx].all()
    for i in idx:  # the last event of its (user, t): features there are those as of t
        same = (users == users[i]) & (t == t[i])
        assert i == np.flatnonzero(same).max()
    assert max(np.unique(users[idx], return_counts=True)[1]) <= 30


def test_evaluate_cli_writes_the_report_and_prints_the_figures(data_dir, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "evaluate", "--horizon",
                                      "2d", "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    p, s = body["propensity"], body["segments"]
    assert p["horizon"] == "2d"
    assert set(p["batch_auc"]) == {"logistic", "gbm", "mlp"}
    for auc in (p["online_auc"], p["prequential"]["auc"], *p["batch_auc"].values()):
        assert 0.0 <= auc <= 1.0
    rows = p["split"]["labels_agree_with_retrieval"].split("/")
    assert rows[0] == rows[1] and int(rows[0]) > 0  # our labels are retrieval's labels
    assert p["split"]["train_rows"] > 0 and p["split"]["test_rows"] > 0
    assert set(p["reference"]) == {"base rate", "RFM rule"}
    assert p["reference"]["base rate"]["auc"] == 0.5  # a constant ranks nothing
    t = p["test_period"]
    assert set(t["average_precision"]) == {"online", "logistic", "gbm", "mlp", "base rate",
                                           "RFM rule"}
    assert t["average_precision"]["base rate"] == pytest.approx(t["positive_rate"])
    for rows in t["lift_gains"].values():
        assert [r["top"] for r in rows][:4] == ["1%", "2%", "5%", "10%"]
        assert rows[-1]["captured"] >= rows[0]["captured"]  # gains only grow
    vs = p["online_vs_best_batch"]
    assert vs["best_batch"] == max(p["batch_auc"], key=p["batch_auc"].get)
    assert vs["difference"] == pytest.approx(p["online_auc"] - p["batch_auc"][vs["best_batch"]])
    assert vs["ci95"][0] <= vs["difference"] <= vs["ci95"][1]
    assert "over users" in t["auc_difference"]["method"]
    names = [f["feature"] for f in t["importances"]["features"]]
    assert len(names) == len(set(names)) and names  # each reason once
    assert set(s) >= {"k", "silhouette_online", "silhouette_batch", "ari"}
    assert sum(seg["users"] for seg in s["business"]) == s["users_sampled"]
    assert -1.0 <= s["ari"] <= 1.0
    for name in ("index.html", "roc.png", "calibration.png", "segments.png", "report.json",
                 "pr.png", "gains.png", "importances.png"):
        assert (out / name).stat().st_size > 0
    html = (out / "index.html").read_text()
    assert 'src="roc.png"' in html and "River" in html
    assert json.loads((out / "report.json").read_text())["segments"]["k"] == s["k"]


def test_evaluate_is_deterministic_and_defaults_its_output(data_dir):
    from offline.evaluation import evaluate

    settings = Settings(data_dir=data_dir)
    a = evaluate(settings, 2 * DAY_US, max_rows=500)
    b = evaluate(settings, 2 * DAY_US, max_rows=500)
    assert a["report"] == str(data_dir / "reports" / "evaluation" / "index.html")
    for key in ("online_auc", "batch_auc", "prequential", "split", "reference",
                "online_vs_best_batch"):
        assert a["propensity"][key] == b["propensity"][key]
    assert a["segments"] == b["segments"]
