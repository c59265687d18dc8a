"""Command of federated learning across shops: `federate`."""

from __future__ import annotations

from pathlib import Path

import click

from offline.cli.app import Context, cli, emit, fail, pass_context


def _tenant(value: str) -> tuple[str, Path]:
    name, sep, path = value.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise click.BadParameter(f"expected NAME=DATA_DIR, got {value!r}")
    return name.strip(), Path(path.strip())


def _epsilons(value: str | None) -> list[float]:
    if not value:
        return []
    try:
        out = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected numbers separated by commas, got {value!r}") from None
    if any(not (e > 0) for e in out):
        raise click.BadParameter(f"every epsilon must be > 0, got {value!r}")
    return out


@cli.command()
@click.option("--tenant", "tenant_args", multiple=True, metavar="NAME=DATA_DIR",
              help="A shop and its data dir (repeat for each shop).")
@click.option("--demo-shops", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Make the shops from the Online Retail file split by country, in this dir.")
@click.option("--shops", type=click.IntRange(min=2), default=5, show_default=True,
              help="With --demo-shops: the largest countries plus one shop of the rest.")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Rounds of averaging [default: 30 without noise, 10 with --epsilon].")
@click.option("--epsilon", type=click.FloatRange(min=0, min_open=True), default=None,
              help="User-level (epsilon, delta)-DP over the whole run; none: no noise.")
@click.option("--delta", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=1e-5, show_default=True)
@click.option("--horizon", default="30d", show_default=True,
              help="Label horizon: a purchase within it after a point.")
@click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
              show_default=True, help="Shops as objects here, or as Ray actors.")
@click.option("--address", default=None, help="Ray cluster address (--engine ray).")
@click.option("--curve", default=None, metavar="E1,E2,...",
              help="Also run at each epsilon and plot pooled AUC against it (spends budget).")
@click.option("--curve-runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Noise draws per epsilon of --curve (each spends its epsilon).")
@click.option("--central/--no-central", default=True, show_default=True,
              help="Fit the pooled-data upper bound for the report (evaluation only).")
@click.option("--install", is_flag=True,
              help="Install the federated model as every shop's serving propensity model.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the plot goes (default: ./reports/federation).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_context
def federate(ctx: Context, tenant_args: tuple[str, ...], demo_shops: Path | None, shops: int,
             rounds: int | None, epsilon: float | None, delta: float, horizon: str,
             engine: str, address: str | None, curve: str | None, curve_runs: int,
             central: bool,
             install: bool, out: Path | None, as_json: bool) -> None:
    """Train one propensity model across shops; only clipped, noised parameters cross.

    Each shop's worker opens its own data dir only and sends parameter vectors; the
    coordinator averages them (FedAvg; with --epsilon, DP-FedAvg with per-user clipping and
    Gaussian noise added by each shop, accounted with OpenDP).  The report compares, per shop
    on its own later period, the local-only, federated and central models.

    \b
    Examples:
      portrait federate --demo-shops shops --rounds 30
      portrait federate --tenant uk=data/uk --tenant de=data/de --epsilon 4 --json
      portrait federate --demo-shops shops --curve 1,2,4,8 --out reports/fed
    """
    from offline.federation import report as fr
    from offline.federation.coordinator import federate as run
    from offline.federation.engines import tenants as make_tenants
    from online.clock import parse_duration

    try:
        horizon_us = parse_duration(horizon)
        pairs = [_tenant(t) for t in tenant_args]
        curve_eps = _epsilons(curve)
    except (ValueError, click.BadParameter) as exc:
        fail(str(exc))
    if demo_shops is not None:
        from offline.datasets.online_retail import find_online_retail
        from offline.federation.shops import split_online_retail

        source = find_online_retail()
        if source is None:
            fail("--demo-shops needs the Online Retail file (PORTRAIT_ONLINE_RETAIL or "
                 "../shared/datasets/online_retail.csv.gz)")
        click.echo(f"splitting {source.name} by country into {demo_shops} ...", err=True)
        pairs += list(split_online_retail(source, demo_shops, shops=shops).items())
    if len(pairs) < 2:
        fail("a federation needs at least two shops (--tenant NAME=DATA_DIR or --demo-shops)")
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        fail(f"shop names must be distinct, got {names}")
    for name, path in pairs:
        if not (path / "events.db").exists():
            fail(f"shop {name}: no event log in {path}")
    rounds = rounds or (10 if epsilon is not None else 30)
    lr = 0.5 if epsilon is not None else 1.0
    l2 = 1e-2
    specs = {n: {"data_dir": p, "horizon_us": horizon_us} for n, p in pairs}
    shops_ = make_tenants(specs, engine, address=address)
    try:
        from offline.cli.progress import counting_progress

        with counting_progress("federated rounds", rounds) as advance:
            result = run(shops_, rounds=rounds, epsilon=epsilon, delta=delta, lr=lr, l2=l2,
                         progress=lambda r, n: advance(1))
        report = fr.evaluate(shops_, result, l2=l2, central=central)
        if curve_eps:
            points = fr.epsilon_curve(shops_, curve_eps, rounds=10, delta=delta, l2=l2,
                                      lr=0.5, clip=1.0, runs=curve_runs)
            png = fr.plot_curve(points, report, (out or Path("reports/federation")) /
                                "auc_vs_epsilon.png", delta=delta)
            report["curve"] = {"points": points, "plot": str(png)}
        if install:
            note = f"federated rounds={rounds} epsilon={epsilon}"
            installed = shops_.map("install", {"theta": result.theta, "mean": result.mean,
                                               "scale": result.scale, "note": note})
            report["installed"] = {n: (v if isinstance(v, dict) else f"failed: {v}")
                                   for n, v in installed.items()}
    except (ValueError, RuntimeError) as exc:
        fail(str(exc))
    finally:
        shops_.close()
    emit(report, as_json, _summary(report))


def _summary(r: dict) -> str:
    def f(v) -> str:
        return "  n/a" if v is None else f"{v:.3f}"

    eps = "no noise" if r["epsilon"] is None else (
        f"epsilon {r['epsilon_spent']:.3g} at delta {r['delta']:g} (user level)")
    lines = [f"federation: {len(r['tenants'])} shops, {r['rounds']} rounds, {eps}, "
             f"{r['bytes_per_round']:,} bytes per round",
             f"{'shop':<16}{'events':>9}{'local':>8}{'federated':>11}{'central':>9}"]
    for name, t in r["tenants"].items():
        if "error" in t:
            lines.append(f"{name:<16} error: {t['error']}")
            continue
        lines.append(f"{name:<16}{t['events']:>9,}{f(t['local_auc']):>8}"
                     f"{f(t['federated_auc']):>11}{f(t['central_auc']):>9}")
    p = r["pooled"]
    lines.append(f"{'pooled':<16}{'':>9}{'':>8}{f(p['federated_auc']):>11}"
                 f"{f(p['central_auc']):>9}   (AUC on the later periods)")
    if r.get("dropped"):
        lines.append(f"dropped: {r['dropped']}")
    if r.get("curve"):
        pts = ", ".join(f"eps {p['epsilon']:g}: {f(p['federated_auc']).strip()}"
                        for p in r["curve"]["points"])
        lines.append(f"AUC against epsilon: {pts} (plot: {r['curve']['plot']})")
    return "\n".join(lines)
