"""Commands of the serving side: `serve` and `consistency`."""

from __future__ import annotations

from pathlib import Path

import click

from offline.cli.app import Context, cli, emit, fail, open_log, pass_context, writer_lock


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--log-level", default="info", show_default=True)
@pass_context
def serve(ctx: Context, host: str, port: int, log_level: str) -> None:
    """Run the REST API (OpenAPI at /docs) over the data dir.

    Without API keys configured (PORTRAIT_API_READ_KEYS / PORTRAIT_API_WRITE_KEYS /
    PORTRAIT_API_PRIVACY_KEYS) the server only binds loopback addresses. The server is the
    data dir's one writer while it runs (exit 2 if another process is). Access logs name
    route templates, never paths with user ids.

    \b
    Example:
      portrait serve --port 8000
      curl localhost:8000/v1/users/17850/profile
    """
    import uvicorn

    from offline.wiring import create_app
    from online.api.auth import InsecureBind, check_bind
    from online.api.settings import ApiSettings
    from online.settings import load_settings

    settings = load_settings(ApiSettings, data_dir=ctx.data_dir)  # checked by the group
    try:
        check_bind(host, settings)
    except InsecureBind as exc:
        fail(str(exc))
    # a clean exit 2 when another process is the data dir's writer (the server takes the
    # lock itself when it opens; this only checks before uvicorn starts)
    writer_lock(ctx, "portrait serve").release()
    app = create_app(settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


@cli.command()
@click.argument("sample", type=click.Path(dir_okay=False, path_type=Path), required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@pass_context
def consistency(ctx: Context, sample: Path | None, as_json: bool) -> None:
    """Recompute served profiles from the log and report how many values match exactly.

    SAMPLE is the server's profile sample log (default: the data dir's sample file).

    \b
    Example:
      export PORTRAIT_PROFILE_SAMPLE_PATH=data/samples.jsonl PORTRAIT_PROFILE_SAMPLE_RATE=0.1
      portrait serve &    # ... traffic ...
      portrait consistency --json
    """
    from online.api.consistency import check_consistency
    from online.api.settings import ApiSettings
    from online.settings import load_settings

    settings = load_settings(ApiSettings, data_dir=ctx.data_dir)
    path = sample or settings.profile_sample_path
    if path is None or not Path(path).exists():
        fail(f"no profile sample log at {path}: run the server with sampling enabled")
    with open_log(ctx) as log:
        report = check_consistency(path, log)
    emit(report, as_json)
