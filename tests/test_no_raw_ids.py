"""With a pseudonym key set nothing the service writes holds a raw id, and erasure is whole.

A real `portrait serve` (uvicorn, access log on) with profile sampling at rate 1.0 serves
profiles, batches, history and a DELETE; afterwards every file of the data dir and the
server's captured log are searched for the raw ids. Then the real `portrait erase` CLI,
started without the sample-log settings, must still reach the sample log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from online.privacy import pseudonymizer_from_settings
from online.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-c", "from offline.cli import main; main()"]
KEY = "k" * 48
USERS = ["rawcust-leak-zq7", "rawcust-other-xk3", "rawcust-gone-pw9"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _events() -> list[dict]:
    return [{"event_id": f"ev-{k}", "user_id": USERS[k % 3], "ts": f"2024-01-01T00:00:{k:02d}Z",
             "type": "purchase" if k % 4 == 3 else "view", "item_id": f"sku-{k % 5}",
             **({"price": 2.5, "quantity": 1} if k % 4 == 3 else {})} for k in range(30)]


def _files_with(root: Path, needles: list[str]) -> list[str]:
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)}: {n}" for n in needles if n.encode() in data]
    return hits


def test_served_written_and_logged_data_hold_no_raw_id_and_cli_erase_reaches_samples(
    tmp_path,
) -> None:
    data = tmp_path / "data"
    samples = tmp_path / "samples" / "served.jsonl"
    base = {**os.environ, "PYTHONPATH": str(ROOT), "PORTRAIT_DATA_DIR": str(data),
            "PORTRAIT_PSEUDONYM_KEY": KEY}
    for name in ("PORTRAIT_PROFILE_SAMPLE_PATH", "PORTRAIT_PROFILE_SAMPLE_RATE"):
        base.pop(name, None)
    serving = {**base, "PORTRAIT_PROFILE_SAMPLE_PATH": str(samples),
               "PORTRAIT_PROFILE_SAMPLE_RATE": "1.0"}
    port = _free_port()
    log_file = tmp_path / "server.log"
    with log_file.open("wb") as out:
        server = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=ROOT, env=serving,
                                  stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                assert server.poll() is None, log_file.read_text()
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not become ready"
                time.sleep(0.2)
            with httpx.Client(base_url=url, timeout=30) as c:
                assert c.post("/v1/events", json={"events": _events()}).status_code == 200
                for user in USERS:
                    assert c.get(f"/v1/users/{user}/profile").status_code == 200
                    assert c.get(f"/v1/users/{user}/profile",
                                 params={"as_of": "2024-01-01T00:00:10Z"}).status_code == 200
                    assert c.get(f"/v1/users/{user}/events").status_code == 200
                body = {"user_ids": USERS, "as_of": "2024-01-01T00:00:20Z"}
                assert c.post("/v1/profiles:batch", json=body).status_code == 200
                assert c.post("/v1/profiles:batch",
                              json={"user_ids": USERS}).status_code == 200
                assert c.get("/v1/users/rawcust-unknown-qq1/profile").status_code == 404
                assert c.delete(f"/v1/users/{USERS[2]}").status_code == 200
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    logged = log_file.read_text()
    assert "/v1/users/{user_id}/profile" in logged  # the access log is on, as templates
    raw = [*USERS, "rawcust-unknown-qq1"]
    assert [u for u in raw if u in logged] == []
    # 12 served (3 users x 2 profiles, 2 batches of 3), of which the DELETE erased 4
    assert samples.exists() and samples.read_text().count("\n") == 8
    assert _files_with(data, raw) == [] and _files_with(samples.parent, raw) == []

    # the pseudonymized samples still recompute exactly from the log
    check = subprocess.run([*CLI, "consistency", str(samples), "--json"], cwd=ROOT, env=base,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["profiles"] == 8 and report["share_equal"] == 1.0, report["mismatches"][:3]
    assert report["missing_users"] == []

    # `portrait erase` started without the sample settings still reaches the sample log
    pseudo = pseudonymizer_from_settings(Settings(data_dir=data, pseudonym_key=KEY))
    victim = pseudo(USERS[0])
    assert victim in samples.read_text()
    erase = subprocess.run([*CLI, "erase", USERS[0], "--json"], cwd=ROOT, env=base,
                           capture_output=True, text=True, timeout=300)
    assert erase.returncode == 0, erase.stderr
    receipt = json.loads(erase.stdout)
    assert receipt["complete"] is True and receipt["found"] is True
    assert receipt["stores"]["profile_samples"]["lines"] >= 4
    assert victim not in samples.read_text()
    assert pseudo(USERS[1]) in samples.read_text()  # the others' samples stay
