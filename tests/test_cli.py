"""The CLI: every command documents itself with an example, and the ingest path end to end."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from offline.cli import cli


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out = []
    for name, command in sorted(group.commands.items()):
        out.append((prefix + name, command))
        if isinstance(command, click.Group):
            out.extend(_commands(command, prefix + name + " "))
    return out


@pytest.mark.parametrize(
    "name,command", _commands(cli), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_command_has_help_with_an_example(name: str, command: click.Command) -> None:
    result = CliRunner().invoke(cli, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    if not isinstance(command, click.Group):
        assert "Example" in result.output, f"`portrait {name} --help` shows no example"


def test_ingest_reports_bad_lines_and_is_idempotent(tmp_path) -> None:
    good = {"event_id": "e1", "user_id": "u1", "type": "view", "ts": "2024-01-01T00:00:00Z"}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "event_id": "e2", "ts": "2024-01-01T00:00:00"}),  # naive
        json.dumps({**good, "event_id": "e3", "type": "purchase", "price": -1.0}),
        json.dumps({**good, "event_id": "e4", "colour": "red"}),  # unknown field
        json.dumps({**good, "event_id": "e5", "type": "purchase", "price": 9.5, "quantity": 2}),
    ]
    src = tmp_path / "events.jsonl"
    src.write_text("\n".join(lines) + "\n")
    args = ["--data-dir", str(tmp_path / "d"), "ingest", str(src), "--json"]

    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    # a line that is no JSON is rejected (and quarantined) like a bad event, not skipped
    assert (summary["accepted"], summary["rejected"], summary["skipped"]) == (2, 4, 0)
    assert summary["lines"] == 6
    problems = {p["line"]: p for p in summary["problems"]}
    assert set(problems) == {2, 3, 4, 5}
    assert problems[2]["field"] == "<line>" and "invalid_json" in problems[2]["reason"]
    assert problems[3]["field"] == "ts"
    assert problems[4]["field"] == "price"
    assert problems[5]["field"] == "colour"

    second = CliRunner().invoke(cli, args)
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert again["last_offset"] is None


def test_ingest_missing_file_is_a_clean_error(tmp_path) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", str(tmp_path), "ingest", "nope.jsonl"])
    assert result.exit_code != 0
    assert "not found" in result.output
    assert "Traceback" not in result.output
