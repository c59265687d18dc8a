"""Commands of the served models: `train` (a batch warm start) and `models` (the registry)."""

from __future__ import annotations

from pathlib import Path

import click

from offline.cli.app import Context, cli, emit, fail, pass_context


@cli.command()
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Passes over the training rows (in time order each).")
@click.option("--holdout", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.2, show_default=True,
              help="Share of the latest rows held out to evaluate the recipe.")
@click.option("--max-rows", type=click.IntRange(min=100), default=20_000, show_default=True,
              help="Training rows sampled from the log's prediction points.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-install", is_flag=True, help="Train and evaluate only; keep serving model.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as one JSON object.")
@pass_context
def train(ctx: Context, epochs: int, holdout: float, max_rows: int, seed: int,
          no_install: bool, as_json: bool) -> None:
    """Train a copy of the serving propensity model in a batch pass and install it.

    The copy (same learner, same configuration) learns point-in-time training rows of the
    replay with the serving horizon, is evaluated on a time-held-out part, then learns every
    labelled row and replaces the serving model (a new model version, recorded in the model
    registry; `portrait models` lists them). It goes on learning online from there. Needs the
    data dir's writer lock: stop `portrait serve` first.

    \b
    Examples:
      portrait train
      portrait train --epochs 5 --holdout 0.25 --json
      portrait train --no-install
    """
    from offline.warm_start import train as run
    from online.writerlock import WriterBusy

    if not Path(ctx.settings.event_log_path).exists():
        fail(f"no event log in {ctx.data_dir}: run `portrait ingest` first")
    try:
        out = run(ctx.settings, epochs=epochs, holdout=holdout, max_rows=max_rows, seed=seed,
                  install=not no_install, progress=True)
    except (ValueError, WriterBusy) as exc:
        fail(str(exc))
    emit(out, as_json, _trained(out))


def _trained(out: dict) -> str:
    ev = out["evaluation"]

    def f(v) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    text = (f"held out after {ev['cut']} ({ev['test_rows']:,} rows; trained on "
            f"{ev['train_rows']:,}): AUC trained {f(ev['trained']['auc'])}, serving "
            f"{f(ev['serving']['auc'])} (optimistic), log loss trained "
            f"{f(ev['trained']['log_loss'])}, base rate {f(ev['base_rate']['log_loss'])}\n")
    inst = out["installed"]
    if inst is None:
        return text + f"not installed; serving {out['serving_version']}"
    return text + (f"installed {inst['model_version']} (replaces {inst['previous_version']}) "
                   f"from offset {inst['offset']:,}")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the registry as one JSON object.")
@pass_context
def models(ctx: Context, as_json: bool) -> None:
    """The model registry: every propensity model version that served this data dir.

    Per version: its source (online, train, federated), learner, when it was recorded, the
    log offset it serves from, what it was trained on and its held-out figures; the one
    serving now is marked.

    \b
    Examples:
      portrait models
      portrait models --json
    """
    from offline.cli.app import open_log
    from offline.wiring import build_projector
    from online.models.contributor import ModelContributor
    from online.models.registry import ModelRegistry

    serving = learnt = None
    if Path(ctx.settings.event_log_path).exists():
        with open_log(ctx) as log:
            projector = build_projector(log, ctx.settings, online_writes=False)
            contributor = next(c for c in projector.contributors
                               if isinstance(c, ModelContributor))
            serving, learnt = contributor.model_version, contributor.offset
    registry = ModelRegistry(ctx.settings.data_dir)
    entries = [{**e, "serving": e["model_version"] == serving} for e in registry.entries()]
    for e in entries:
        if e["serving"]:
            e["learnt_to_offset"] = learnt
    out = {"registry": str(registry.path), "serving": serving, "models": entries}
    emit(out, as_json, "\n".join(_line(e) for e in entries) or "no model has served yet")


def _line(e: dict) -> str:
    auc = ((e.get("evaluation") or {}).get("trained") or {}).get("auc")
    return (f"{'*' if e['serving'] else ' '} {e['model_version']:<18} {e['source']:<9} "
            f"from offset {e.get('offset', 0):>9,}  {e.get('kind', '')}  "
            f"{e.get('first_recorded_at') or e['recorded_at']}"
            + (f"  held-out AUC {auc:.3f}" if auc is not None else ""))
