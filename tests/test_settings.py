"""Settings: one-line errors (exit code 2), the config file, the data-dir rule, the README table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from offline.cli import cli
from online.api.settings import ApiSettings, settings_table
from online.settings import (
    CONFIG_ENV,
    DEFAULT_DATA_DIR,
    Settings,
    SettingsInvalid,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("PORTRAIT_"):
            monkeypatch.delenv(name)
    # `--config` exports the file's name into this process: setenv records "unset" as the
    # value to restore after the test (delenv of an unset name records nothing)
    monkeypatch.setenv(CONFIG_ENV, "")
    monkeypatch.delenv(CONFIG_ENV)


def _run(args: list[str], env: dict[str, str]):
    return CliRunner().invoke(cli, args, env=env)


@pytest.mark.parametrize(
    "env, expected",
    [
        ({"PORTRAIT_API_READ_KEYS": "abc"},
         'PORTRAIT_API_READ_KEYS: must be a JSON list of strings, e.g. ["key-1", "key-2"]'),
        ({"PORTRAIT_API_WRITE_KEYS": '"abc"'},
         "PORTRAIT_API_WRITE_KEYS: Input should be a valid list"),
        ({"PORTRAIT_ONLINE_STORE": "redis2"},
         "PORTRAIT_ONLINE_STORE='redis2': Input should be 'sqlite' or 'redis'"),
        ({"PORTRAIT_BATCH_SIZE": "0"},
         "PORTRAIT_BATCH_SIZE='0': Input should be greater than or equal to 1"),
        ({"PORTRAIT_PROFILE_SAMPLE_RATE": "2"},
         "PORTRAIT_PROFILE_SAMPLE_RATE='2': Input should be less than or equal to 1"),
        ({"PORTRAIT_MAX_BODY_BYTES": "lots"},
         "PORTRAIT_MAX_BODY_BYTES='lots': Input should be a valid integer, unable to parse "
         "string as an integer"),
        ({CONFIG_ENV: "/no/such/portrait.toml"},
         f"{CONFIG_ENV}=/no/such/portrait.toml: no such file"),
    ],
)  # fmt: skip
def test_a_bad_value_is_one_line_naming_the_variable_and_exit_2(tmp_path, env, expected) -> None:
    result = _run(["--data-dir", str(tmp_path), "log", "stats"], env)
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: {expected}"


def test_secrets_are_not_echoed_in_the_error(tmp_path) -> None:
    result = _run(["--data-dir", str(tmp_path), "log", "stats"],
                  {"PORTRAIT_API_READ_KEYS": '["ok", 5]'})  # fmt: skip
    assert result.exit_code == 2 and "5" not in result.output.split(":", 2)[1]


def test_serve_refuses_a_bad_setting_before_binding(tmp_path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PORTRAIT_ONLINE_STORE": "redis2"}
    proc = subprocess.run(
        [sys.executable, "-c", "from offline.cli import main; main()",
         "--data-dir", str(tmp_path), "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: PORTRAIT_ONLINE_STORE='redis2': Input should be 'sqlite' or 'redis'"
    )
    assert "Traceback" not in proc.stderr


def test_the_config_file_sets_values_the_environment_overrides(tmp_path, monkeypatch) -> None:
    config = tmp_path / "portrait.toml"
    config.write_text('online_store = "redis"\nbatch_size = 123\nmax_batch_users = 7\n')
    monkeypatch.setenv(CONFIG_ENV, str(config))
    s = load_settings(Settings)
    assert (s.online_store, s.batch_size) == ("redis", 123)
    assert load_settings(ApiSettings).max_batch_users == 7  # the API's keys, same file
    monkeypatch.setenv("PORTRAIT_BATCH_SIZE", "9")
    assert load_settings(Settings).batch_size == 9
    assert load_settings(Settings, batch_size=5).batch_size == 5  # an explicit flag wins


def test_a_bad_or_unknown_key_in_the_config_file_is_named(tmp_path, monkeypatch) -> None:
    config = tmp_path / "portrait.toml"
    config.write_text('online_stor = "redis"\n')
    result = _run(["--data-dir", str(tmp_path), "log", "stats"], {CONFIG_ENV: str(config)})
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: online_stor in {config}: unknown setting (see the README's settings table)"
    )
    config.write_text('batch_size = "many"\n')
    monkeypatch.setenv(CONFIG_ENV, str(config))
    with pytest.raises(SettingsInvalid, match=f"^batch_size in {re.escape(str(config))}='many'"):
        load_settings(Settings)
    config.write_text("batch_size = \n")
    monkeypatch.delenv(CONFIG_ENV)
    result = _run(["--data-dir", str(tmp_path), "log", "stats"], {CONFIG_ENV: str(config)})
    assert result.exit_code == 2 and "not readable TOML" in result.output


def test_the_config_option_exports_the_file(tmp_path) -> None:
    config = tmp_path / "portrait.toml"
    config.write_text('online_store = "redis2"\n')
    result = _run(["--config", str(config), "--data-dir", str(tmp_path), "log", "stats"], {})
    assert result.exit_code == 2
    assert "online_store in" in result.output and "'redis2'" in result.output


def test_the_default_data_dir_does_not_depend_on_the_current_directory(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTRAIT_")}
    out = subprocess.run(
        [sys.executable, "-c", "from online.settings import Settings; print(Settings().data_dir)"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
        check=True,
    ).stdout.strip()  # fmt: skip
    assert Path(out) == DEFAULT_DATA_DIR == ROOT / "data"


def test_feast_and_portrait_share_the_default_data_dir() -> None:
    # Feast expands feature_store.yaml with os.path.expandvars and resolves relative paths from
    # feature_repo/: unset, "${PORTRAIT_DATA_DIR}" stays literal and is the symlink to ../data
    repo = ROOT / "feature_repo"
    yaml = (repo / "feature_store.yaml").read_text()
    registry = re.search(r"^registry: (.+)$", yaml, re.M).group(1)
    feast_path = (repo / os.path.expandvars(registry)).resolve()
    assert feast_path == (Settings().data_dir / "registry.db").resolve()


def test_the_readme_lists_every_setting_as_the_classes_define_them() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings-table:start -->\n(.*?)\n<!-- settings-table:end -->",
                      readme, re.S)  # fmt: skip
    assert block, "README has no settings table markers"
    assert block.group(1) == settings_table(), "regenerate: python -m online.api.settings"


def test_every_portrait_variable_the_code_reads_is_in_the_table() -> None:
    table = settings_table()
    names = set()
    for folder in ("online", "offline", "tests", "bench", "feature_repo"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(re.findall(r"\bPORTRAIT_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))
    names |= set(re.findall(r"\bPORTRAIT_[A-Z][A-Z_]*[A-Z]\b", (ROOT / ".ci/run").read_text()))
    names.discard("PORTRAIT_API")  # a prefix named in prose
    missing = sorted(n for n in names if f"`{n}`" not in table)
    assert not missing, missing


def test_version() -> None:
    result = _run(["--version"], {})
    assert result.exit_code == 0 and re.fullmatch(r"portrait \S+\n", result.output)


def test_serve_starts_with_settings_from_the_config_file(tmp_path) -> None:
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "portrait.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\nmax_batch_events = 3\n')
    env = {**os.environ, "PYTHONPATH": str(ROOT), CONFIG_ENV: str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from offline.cli import main; main()", "serve", "--port",
         str(port), "--log-level", "warning"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        events = [{"event_id": f"e{k}", "user_id": "u", "type": "view",
                   "ts": "2024-01-01T00:00:00+00:00"} for k in range(4)]  # fmt: skip
        r = httpx.post(f"http://127.0.0.1:{port}/v1/events", json={"events": events}, timeout=30)
        assert r.status_code == 413  # the file's limit, not the default 10,000
        assert (tmp_path / "data" / "events.db").exists()  # the file's data dir
    finally:
        proc.terminate()
        proc.wait(timeout=60)
