"""One writer per data dir: the writer lock, checkpoints that survive concurrent writers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fastapi.testclient import TestClient

from online.api.main import create_app
from online.api.settings import ApiSettings
from online.eventlog import EventLog
from online.projector import Projector
from online.writerlock import WriterBusy, WriterLock

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
CLI = [sys.executable, "-c", "from offline.cli import main; main()"]


def _events(n: int, prefix: str = "e", users: int = 7) -> list[dict]:
    return [{"event_id": f"{prefix}{k}", "user_id": f"u{k % users}", "type": "view",
             "ts": f"2024-01-01T00:{k // 60 % 60:02d}:{k % 60:02d}Z", "item_id": f"i{k % 5}"}
            for k in range(n)]


def _write_jsonl(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


_CHECKPOINTER = textwrap.dedent("""
    import sys, time
    from online.eventlog import EventLog
    from online.projector import Projector
    data, rounds, start = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    time.sleep(max(0.0, start - time.time()))  # both processes race from the same moment
    errors = []
    with EventLog(data + "/events.db") as log:
        p = Projector(log, data + "/state")
        p.run()
        for k in range(rounds):
            for step in (p.checkpoint, lambda: Projector(log, data + "/state")):
                try:
                    step()   # write a checkpoint; load the current one (as a reader does)
                except Exception as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
    print(len(errors), errors[:3])
""")


def test_two_processes_checkpointing_the_same_state_dir_never_corrupt_it(tmp_path) -> None:
    # the race without the lock: two processes loading and checkpointing 40 times
    data = tmp_path / "d"
    data.mkdir()
    with EventLog(data / "events.db") as log:
        log.append(_events(3000, users=500))
    start = str(time.time() + 8)  # after both have imported numpy and the kernels
    procs = [subprocess.Popen([sys.executable, "-c", _CHECKPOINTER, str(data), "40", start],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.startswith("0 "), out  # no process saw an error, in 40 rounds each
    with EventLog(data / "events.db") as log:
        p = Projector(log, data / "state")
        assert p.offset == 3000
        assert p.state.n_users == 500
    # whatever a lost race left behind is a whole checkpoint, and goes once it is stale
    state = data / "state"
    left = [x for x in state.iterdir() if x.name.startswith("ckpt-")]
    assert all((x / "meta.json").exists() for x in left)
    for x in left:
        os.utime(x, (1.0, 1.0))
    with EventLog(data / "events.db") as log:
        kept = Projector(log, state).checkpoint()
    assert [x.name for x in state.iterdir() if x.name.startswith("ckpt-")] == [kept.name]


def test_a_second_writer_is_refused_naming_the_holder(tmp_path) -> None:
    state = tmp_path / "state"
    with WriterLock(state, command="portrait serve"):
        # flock is per open file: a second lock in this process conflicts like another process
        try:
            WriterLock(state, command="portrait ingest").acquire()
        except WriterBusy as exc:
            message = str(exc)
        else:
            raise AssertionError("a second writer got the lock")
        assert f"pid {os.getpid()}" in message and "portrait serve" in message
    with WriterLock(state):  # released: free again
        pass


def test_cli_ingest_while_a_server_writes_exits_2_and_reads_go_on(tmp_path) -> None:
    data = tmp_path / "d"
    settings = ApiSettings(data_dir=data)
    src = _write_jsonl(tmp_path / "ev.jsonl", _events(50, "cli"))
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/events", json={"events": _events(20)}).status_code == 200
        ingest = subprocess.run([*CLI, "--data-dir", str(data), "ingest", str(src), "--json"],
                                env=ENV, capture_output=True, text=True, timeout=300)
        assert ingest.returncode == 2, ingest.stderr
        error = ingest.stderr.strip().splitlines()
        assert len(error) == 1 and f"pid {os.getpid()}" in error[0], error
        with EventLog(data / "events.db") as log:
            assert log.next_offset == 20  # refused before anything was appended
        # a reader works while the server holds the lock
        profile = subprocess.run([*CLI, "--data-dir", str(data), "profile", "u1", "--json"],
                                 env=ENV, capture_output=True, text=True, timeout=300)
        assert profile.returncode == 0, profile.stderr
        assert json.loads(profile.stdout)["features"]["event_count"] == 3
        # appending only is allowed; the server projects what others append
        only = subprocess.run([*CLI, "--data-dir", str(data), "ingest", str(src), "--no-project",
                               "--json"], env=ENV, capture_output=True, text=True, timeout=300)
        assert only.returncode == 0, only.stderr
        # the server's follower projects what the other process appended (bounded wait: it
        # polls the log, so on a busy machine that takes a moment)
        service = client.app.state.service
        deadline = time.monotonic() + 60
        while service.projector.offset < 70 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.projector.offset == 70
    with EventLog(data / "events.db") as log:
        assert Projector(log, data / "state").offset == 70  # the server's final checkpoint


def test_concurrent_cli_ingests_one_wins_the_other_is_refused(tmp_path) -> None:
    data = tmp_path / "d"
    for rnd in range(2):  # bounded: two rounds of two racing ingests
        srcs = [_write_jsonl(tmp_path / f"ev{rnd}{k}.jsonl", _events(400, f"r{rnd}p{k}-"))
                for k in range(2)]
        procs = [subprocess.Popen([*CLI, "--data-dir", str(data), "ingest", str(s), "--json"],
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for s in srcs]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode in (0, 2), err
            if p.returncode == 2:
                assert "error: another process (pid " in err and "Traceback" not in err
    with EventLog(data / "events.db") as log:
        end = log.next_offset
        p = Projector(log, data / "state")
        p.run()
        fresh = Projector(log, tmp_path / "fresh")
        fresh.run()
        assert p.offset == fresh.offset == end
        assert p.state.equals(fresh.state)


def test_a_second_server_exits_2_naming_the_writer(tmp_path) -> None:
    data = tmp_path / "d"
    with WriterLock(data / "state", command="portrait ingest"):
        serve = subprocess.run([*CLI, "--data-dir", str(data), "serve", "--port", "1"],
                               env=ENV, capture_output=True, text=True, timeout=300)
    assert serve.returncode == 2, serve.stderr
    lines = serve.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pid {os.getpid()}: portrait ingest" in lines[0], lines
