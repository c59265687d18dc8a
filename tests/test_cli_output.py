"""Output for people: tables and ISO times by default, --json unchanged, no library warnings,
and every README reference resolves."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from offline.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _portrait(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", "from offline.cli import main; main()", "--data-dir",
         str(data_dir), *args], env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("shop") / "data"
    events = data.parent / "events.jsonl"
    runner = CliRunner()
    r = runner.invoke(cli, ["--data-dir", str(data), "generate", "--users", "30", "--events",
                            "1500", "--seed", "5", "--out", str(events)])  # fmt: skip
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["--data-dir", str(data), "ingest", str(events), "--json"])
    assert r.exit_code == 0, r.output
    return data


def _busiest(data: Path) -> str:
    from collections import Counter

    lines = (data.parent / "events.jsonl").read_text().splitlines()
    return Counter(json.loads(line)["user_id"] for line in lines).most_common(1)[0][0]


def test_log_stats_shows_iso_times_and_json_keeps_microseconds(shop) -> None:
    runner = CliRunner()
    human = runner.invoke(cli, ["--data-dir", str(shop), "log", "stats"])
    assert human.exit_code == 0
    assert "first event" in human.stdout and "2024-01-01T00:00:00+00:00" in human.stdout
    assert "first_ts_us" not in human.stdout and "1,500" in human.stdout
    machine = json.loads(runner.invoke(cli, ["--data-dir", str(shop), "log", "stats",
                                             "--json"]).stdout)  # fmt: skip
    assert set(machine) == {"path", "events", "users", "next_offset", "quarantined", "partitions",
                            "first_ts_us", "last_ts_us", "size_bytes"}  # fmt: skip
    assert machine["first_ts_us"] == 1704067200000000


def test_profile_is_a_table_by_theme_and_json_is_the_body(shop) -> None:
    user = _busiest(shop)
    runner = CliRunner()
    body = json.loads(runner.invoke(cli, ["--data-dir", str(shop), "profile", user,
                                          "--json"]).stdout.strip().splitlines()[-1])
    assert body["user_id"] == user and "features" in body and "offset" in body
    human = runner.invoke(cli, ["--data-dir", str(shop), "profile", user]).stdout
    assert not human.lstrip().startswith("{")
    for theme in ("activity", "monetary", "recency", "interest"):
        assert re.search(rf"^\s+{theme}\s+\S", human, re.M), theme
    assert re.search(rf"event_count\s+{body['features']['event_count']:,}\s+events", human)
    assert "chance of a purchase within 7d" in human


def test_ingest_summary_is_a_table_with_problems_by_line(tmp_path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"event_id": "a", "user_id": "u", "type": "view", '
                   '"ts": "2024-01-01T00:00:00+00:00"}\n{"event_id": "b"}\n')  # fmt: skip
    r = CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "d"), "ingest", str(src)])
    assert r.exit_code == 0, r.output
    assert re.search(r"accepted\s+1\b", r.stdout) and re.search(r"rejected\s+1\b", r.stdout)
    assert re.search(r"^\s+2\s+\S+", r.stdout, re.M)  # line 2 is listed with its reason
    assert "{" not in r.stdout  # no Python dict


def test_segments_is_a_table(shop) -> None:
    r = CliRunner().invoke(cli, ["--data-dir", str(shop), "segments", "--epsilon", "0.5"])
    assert r.exit_code == 0, r.output
    assert "noisy sizes and means" in r.stdout and "privacy budget" in r.stdout
    assert "browsers" in r.stdout


@pytest.mark.slow
def test_materialize_and_evaluate_keep_library_warnings_out(shop) -> None:
    assert _portrait("replay", data_dir=shop).returncode == 0
    mat = _portrait("materialize", data_dir=shop)
    assert mat.returncode == 0, mat.stderr
    assert "Warning" not in mat.stderr, mat.stderr[-2000:]
    ev = _portrait("evaluate", "--json", data_dir=shop)
    assert ev.returncode == 0, ev.stderr
    json.loads(ev.stdout)  # stdout is the one JSON object
    phases = re.findall(r"^evaluate: (\d)/5 .* \.\.\.$", ev.stderr, re.M)
    assert phases[0] == "1" and phases[-1] == "5"  # the user sees it move, phase by phase
    assert "Warning" not in ev.stderr, ev.stderr[-2000:]


def _anchor(heading: str) -> str:
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


def test_every_readme_reference_resolves() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = {_anchor(h) for h in re.findall(r"^#+ (.+)$", readme, re.M)}
    for target in re.findall(r"\]\(#([^)]+)\)", readme):
        assert target in headings, f"README links to a missing section #{target}"
    for target in re.findall(r"\]\((?!https?:|#)([^)]+)\)", readme):
        assert (ROOT / target).exists(), f"README links to a missing file {target}"
    # the code points people at README sections by name: they must exist
    cited = []
    for folder in ("online", "offline", "feature_repo", "bench"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            cited += re.findall(r"see (?:the )?README: ([a-z][a-z ]+[a-z])", text, re.I)
            cited += re.findall(r"README's ([a-z][a-z ]+?) (?:table|section)", text, re.I)
    assert cited, "the pattern finds the demo's pointer"
    for name in cited:
        assert any(_anchor(name) in h for h in headings), f"README has no section {name!r}"
