"""Command of model quality: `evaluate`."""

from __future__ import annotations

from pathlib import Path

import click

from offline.cli.app import Context, cli, emit, fail, pass_context


@cli.command()
@click.option("--horizon", default="7d", show_default=True,
              help="Propensity label horizon H: a purchase in (T, T+H].")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report directory (default: <data-dir>/reports/evaluation).")
@click.option("--max-rows", type=click.IntRange(min=100), default=40_000, show_default=True,
              help="Entity rows sampled for the batch baselines.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@pass_context
def evaluate(ctx: Context, horizon: str, out: Path | None, max_rows: int, seed: int,
             as_json: bool) -> None:
    """Online propensity and segments vs batch baselines: metrics, plots, one HTML page.

    Replays the log through the online models (the scores the projector emitted), fits
    LogisticRegression, gradient boosting and an MLP on point-in-time training sets before a
    time cut, scores all on the later period next to the base rate and an RFM quintile rule
    (precision-recall, lift and gains at the top k%, AUC differences with a paired bootstrap
    over users, the online model's global importances), and compares the online segments
    with KMeans (one table per segment in business units).

    \b
    Examples:
      portrait evaluate
      portrait evaluate --horizon 7d --out reports/eval --json
    """
    from offline.evaluation import evaluate as run_evaluation
    from online.clock import parse_duration

    try:
        horizon_us = parse_duration(horizon)
    except ValueError as exc:
        fail(f"--horizon: {exc}")
    if not Path(ctx.settings.event_log_path).exists():
        fail(f"no event log in {ctx.data_dir}: run `portrait ingest` first")
    try:
        report = run_evaluation(ctx.settings, horizon_us, out, max_rows=max_rows, seed=seed,
                                progress=True)
    except ValueError as exc:
        fail(str(exc))
    emit(report, as_json, _summary(report))


def _summary(r: dict) -> str:
    p, s = r["propensity"], r["segments"]

    def f(v) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    batch = ", ".join(f"{k} {f(v)}" for k, v in p.get("batch_auc", {}).items())
    vs = p.get("online_vs_best_batch")
    gap = (f"online - {vs['best_batch']}: {f(vs['difference'])} (95% interval {f(vs['ci95'][0])}"
           f" to {f(vs['ci95'][1])}, paired bootstrap over users)\n" if vs else "")
    rule = p.get("reference", {}).get("RFM rule", {}).get("auc")
    return (f"propensity ({p['horizon']}): online AUC {f(p['online_auc'])} on the test period "
            f"(prequential {f(p['prequential']['auc'])}); batch {batch or 'n/a'}; "
            f"RFM rule {f(rule)}\n{gap}"
            f"segments (k={s['k']}): silhouette online {f(s['silhouette_online'])}, batch "
            f"{f(s['silhouette_batch'])}, ARI {f(s['ari'])}\n"
            f"report: {r['report']}")
