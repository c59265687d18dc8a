"""Profile lookups over HTTP: our server vs `feast serve` on the same data, at fixed rates.

Builds a data dir from the synthetic shop (log, projector checkpoint with the models; for
Feast: replay to parquet, `feast apply` + materialize into the sqlite online store), starts
each server as a subprocess on loopback, one after the other (ours: `portrait serve` as users
run it, one uvicorn process, models included; `ours_uncached`: the same with
PORTRAIT_PROFILE_CACHE_USERS=0, every lookup computed; Feast: `feast serve`, its defaults),
then drives each from a separate load process with an open-loop schedule (with
``--ingest-rate``, ``ours_ingesting`` runs the scenarios of ours again while another process
POSTs that many fresh events a second: every projection empties the profile cache, so this is
a shop's server under live traffic): request i is sent at
t0 + i / rate whatever happened before, and its latency counts from that scheduled time, so a
stall shows up in p99 (no coordinated omission). A server that falls behind is not waited
for forever: a request still queued 5 s after its time is dropped (counted, latency kept).
The load process takes its own pauses out of the figures it reports: its request bytes are
built and its heap frozen before the clock starts, and its cyclic garbage collector is off
while it sends (a full collection over its tens of thousands of tasks paused it for 20-90 ms,
which counted as server latency); it reports how late it started each request
(`send_late_p99_ms`: its own or the machine's delay, not the server's) and the p99 counted
from when it did (`p99_from_send_ms`; the latencies above count from the schedule).
Before them every user is looked up once (100 per request; the time is reported as
`prime_s`: ours computes a profile on its first lookup and keeps its body until the projector
moves). Scenarios: one user per request (at each `--rate`), and 100 users per request
(ours: POST /v1/profiles:batch; Feast: /get-online-features with 100 entities). The machine
is shared: compare ratios, and run twice.

    python bench/serve.py                      # defaults: 2,000 users, 100,000 events
    python bench/serve.py --rate 1000,3000 --batch-rate 50 --duration 10
    python bench/serve.py --rate 500 --batch-rate 50 --duration 10 --no-feast --no-uncached
    python bench/serve.py --rate 1000 --no-feast --ingest-rate 2000   # lookups while ingesting

The LAST line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# -- load generator (runs in its own process) ------------------------------------------------

_TIMEOUT_S = 10.0  # a request without an answer by then is an error
_MAX_QUEUED_S = 5.0  # a request that waited this long for a free connection is dropped


def _request_bytes(kind: str, batch: int, users: list[str], rng: random.Random) -> bytes:
    picked = [rng.choice(users) for _ in range(batch)]
    if kind.startswith("ours") and batch == 1:
        return (f"GET /v1/users/{picked[0]}/profile HTTP/1.1\r\nHost: bench\r\n\r\n").encode()
    if kind.startswith("ours"):
        path, body = "/v1/profiles:batch", {"user_ids": picked}
    else:
        path = "/get-online-features"
        body = {"feature_service": "user_profile", "entities": {"user_id": picked}}
    data = json.dumps(body).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n")
    return head.encode() + data


class _Conn:
    """One keep-alive HTTP/1.1 connection (raw asyncio streams: no client library overhead)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def _drop(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def send(self, raw: bytes) -> int:
        """Send one request and read the whole response; the status code (one retry on a
        connection the server closed, e.g. a recycled worker)."""
        for attempt in (0, 1):
            try:
                if self.writer is None:
                    await self._open()
                self.writer.write(raw)
                await self.writer.drain()
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                lower = head.lower()
                close = b"connection: close" in lower
                if b"transfer-encoding: chunked" in lower:
                    while True:
                        size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                        await self.reader.readexactly(size + 2)
                        if size == 0:
                            break
                else:
                    start = lower.find(b"content-length:")
                    length = int(lower[start + 15:lower.find(b"\r\n", start)]) if start >= 0 else 0
                    await self.reader.readexactly(length)
                if close:
                    self._drop()
                return status
            except (OSError, asyncio.IncompleteReadError, ValueError):
                self._drop()
                if attempt:
                    return 0
        return 0


async def _drive(spec: dict) -> dict:
    rng = random.Random(spec["seed"])
    users = spec["users"]
    rate, duration, warmup = spec["rate"], spec["duration"], spec["warmup"]
    pool = asyncio.Queue()
    for _ in range(spec["connections"]):
        pool.put_nowait(_Conn(spec["host"], spec["port"]))
    n_total = int((warmup + duration) * rate)
    n_warm = int(warmup * rate)
    requests = [_request_bytes(spec["kind"], spec["batch"], users, rng) for _ in range(n_total)]
    latencies: list[float] = []
    late: list[float] = []  # scheduled send -> the request's task running (the generator's delay)
    from_send: list[float] = []  # the request's task running -> its answer read
    errors = dropped = 0
    # time.perf_counter, not the loop clock: uvloop's clock moves in whole milliseconds
    now = time.perf_counter
    gc.collect()
    gc.freeze()  # the generator's own objects: never scanned again
    gc.disable()  # no collector pauses while sending (a bounded run: its garbage waits)
    t0 = now() + 0.2

    async def one(i: int) -> None:
        nonlocal errors, dropped
        due = t0 + i / rate
        started = now()
        if i >= n_warm:
            late.append(started - due)
        conn = await pool.get()
        if now() - due > _MAX_QUEUED_S:  # overloaded: bound the run, count it failed
            pool.put_nowait(conn)
            if i >= n_warm:
                dropped += 1
                latencies.append(now() - due)
            return
        try:
            status = await asyncio.wait_for(conn.send(requests[i]), timeout=_TIMEOUT_S)
        except TimeoutError:
            conn._drop()
            status = 0
        finally:
            pool.put_nowait(conn)
        if i >= n_warm:
            end = now()
            latencies.append(end - due)
            from_send.append(end - started)
            errors += status != 200

    tasks = []
    try:
        for i in range(n_total):
            delay = t0 + i / rate - now()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
    finally:
        gc.enable()
    elapsed = now() - (t0 + n_warm / rate)
    latencies.sort()
    late.sort()
    from_send.sort()
    n = len(latencies)

    def q(p: float) -> float:
        return round(latencies[min(n - 1, int(p * n))] * 1000, 3)

    return {
        "kind": spec["kind"], "batch": spec["batch"], "rate": rate, "requests": n,
        "achieved_rate": round((n - dropped) / elapsed, 1), "errors": errors,
        "dropped": dropped,
        "p50_ms": q(0.50), "p90_ms": q(0.90), "p99_ms": q(0.99), "max_ms": q(1.0) if n else None,
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
        "send_late_p99_ms": round(late[min(len(late) - 1, int(0.99 * len(late)))] * 1000, 3),
        "p99_from_send_ms": round(
            from_send[min(len(from_send) - 1, int(0.99 * len(from_send)))] * 1000, 3),
        "profiles_per_s": round((n - dropped - errors) * spec["batch"] / elapsed, 1),
    }  # fmt: skip


def load_worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(_drive(spec))))


def ingest_worker(spec_path: str) -> None:
    """POST fresh events to our server on a fixed schedule while lookups are measured (the
    ``ours_ingesting`` scenarios): batches of ``batch`` events at ``rate`` events/s, each
    event of a known user, stamped with the wall clock (the live watermark moves), its id
    new; prints what it achieved as one JSON line."""
    import httpx

    from offline.datasets.synthetic import generate

    spec = json.loads(Path(spec_path).read_text())
    batch, rate, seconds = spec["batch"], spec["rate"], spec["seconds"]
    n = max(1, int(rate * seconds / batch))
    rng = random.Random(spec["seed"])
    users = spec["users"]
    template = [e for chunk in generate(len(users), n * batch, spec["seed"] + 1,
                                        chunk_size=10_000) for e in chunk][:n * batch]
    latencies, accepted = [], 0
    with httpx.Client(base_url=f"http://127.0.0.1:{spec['port']}", timeout=60) as client:
        start = time.perf_counter()
        for k in range(n):
            pause = start + k * batch / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            now = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
            events = [dict(e, event_id=f"live-{spec['tag']}-{k}-{i}", user_id=rng.choice(users),
                           ts=now) for i, e in enumerate(template[k * batch:(k + 1) * batch])]
            t = time.perf_counter()
            r = client.post("/v1/events", json={"events": events})
            latencies.append(time.perf_counter() - t)
            r.raise_for_status()
            accepted += r.json()["accepted"]
        elapsed = time.perf_counter() - start
    latencies.sort()
    print(json.dumps({
        "events_per_s": round(accepted / elapsed, 1), "accepted": accepted, "batch": batch,
        "batch_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "batch_p99_ms": round(latencies[min(len(latencies) - 1,
                                            int(0.99 * len(latencies)))] * 1000, 2)}))


# -- data and servers ------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(data_dir: Path, n_users: int, n_events: int, seed: int) -> list[str]:
    """Log + projector checkpoint (features and models, as `portrait serve` loads them)
    from the synthetic shop; returns the user ids."""
    from offline.datasets.synthetic import generate
    from offline.wiring import build_projector
    from online.eventlog import EventLog
    from online.settings import Settings

    settings = Settings(data_dir=data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    reuse = settings.event_log_path.exists()  # a kept --data-dir: same data, no rebuild
    with EventLog(settings.event_log_path) as log:
        if not reuse:
            for chunk in generate(n_users, n_events, seed, chunk_size=50_000):
                log.append(chunk, source="bench")
        projector = build_projector(log, settings, online_writes=False)
        projector.run()
        projector.checkpoint()
        return list(projector.state.users.values)


def prepare_feast(data_dir: Path) -> dict:
    """Replay to parquet and materialize into Feast's sqlite online store."""
    from offline.backfill.replay import replay
    from offline.feast_store import materialize
    from online.settings import Settings

    settings = Settings(data_dir=data_dir)
    if settings.online_store_path.exists():  # a kept --data-dir, already materialized
        return {"replay_s": None, "materialize_s": None, "reused": True}
    t = time.perf_counter()
    replay(settings, progress=False)
    replay_s = time.perf_counter() - t
    t = time.perf_counter()
    out = materialize(settings)
    return {"replay_s": round(replay_s, 2), "materialize_s": round(time.perf_counter() - t, 2),
            "feature_views": len(out["feature_views"])}


class Proc:
    """A server subprocess, stopped with SIGTERM (then SIGKILL) and waited for."""

    def __init__(self, args: list[str], env: dict, cwd: Path, log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(args, env={**os.environ, **env}, cwd=cwd,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # feast serve: gunicorn and its workers
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def _wait_http(check, proc: Proc, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.proc.returncode}")
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise TimeoutError("server not ready")


def start_server(kind: str, env: dict, users: list[str], work: Path) -> tuple[Proc, int]:
    """Start one server and wait until it answers: ours is ``portrait serve`` as users run
    it (the models; once Feast is applied, the deferred online writes; one uvicorn process),
    ``ours_uncached`` the same with the profile cache off, ``feast`` is ``feast serve``."""
    import httpx

    port = _free_port()
    if kind == "feast":
        feast_bin = str(Path(sys.executable).with_name("feast"))
        proc = Proc([feast_bin, "-c", str(ROOT / "feature_repo"), "serve", "-p", str(port),
                     "--no-access-log"], env, ROOT / "feature_repo", work / "feast.log")
        probe = {"feature_service": "user_profile", "entities": {"user_id": [users[0]]}}
        _wait_http(lambda: httpx.post(f"http://127.0.0.1:{port}/get-online-features",
                                      json=probe).status_code == 200, proc)
        return proc, port
    # ours_ingesting: ours, as users run it, with events POSTed during each scenario
    extra = {"PORTRAIT_PROFILE_CACHE_USERS": "0"} if kind == "ours_uncached" else {}
    proc = Proc([sys.executable, "-c", "from offline.cli import main; main()", "serve",
                 "--port", str(port), "--log-level", "warning"], {**env, **extra}, ROOT,
                work / f"{kind}.log")
    _wait_http(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200, proc)
    return proc, port


def prime(kind: str, port: int, users: list[str]) -> float:
    """Look every user up once, 100 per request, before the measured scenarios; seconds.

    Ours computes a latest profile on its first lookup after a projection and keeps its body
    (`online.api.profile_cache`): this pass is that cold cost, reported apart, so the rates
    that follow measure the steady state of a server that has seen its users (Feast gets the
    same pass: its sqlite pages are warm too)."""
    import httpx

    start = time.perf_counter()
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        for i in range(0, len(users), 100):
            chunk = users[i:i + 100]
            if kind == "feast":
                r = client.post("/get-online-features", json={
                    "feature_service": "user_profile", "entities": {"user_id": chunk}})
            else:
                r = client.post("/v1/profiles:batch", json={"user_ids": chunk})
            r.raise_for_status()
    return round(time.perf_counter() - start, 3)


def run_load(spec: dict, workdir: Path, ingest: dict | None = None) -> dict:
    """One scenario from its own load process; with ``ingest``, an ingest process posts
    events meanwhile (its figures under ``"ingest"``)."""
    path = workdir / f"spec-{spec['kind']}-{spec['batch']}-{spec['rate']:g}.json"
    path.write_text(json.dumps(spec))
    feeder = None
    if ingest is not None:
        feed = workdir / f"ingest-{spec['batch']}-{spec['rate']:g}.json"
        feed.write_text(json.dumps({**ingest, "port": spec["port"], "users": spec["users"],
                                    "seconds": spec["warmup"] + spec["duration"],
                                    "tag": f"{spec['batch']}-{spec['rate']:g}"}))
        feeder = subprocess.Popen([sys.executable, __file__, "--ingest", str(feed)],
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT)
    out = subprocess.run([sys.executable, __file__, "--load", str(path)], capture_output=True,
                         text=True, check=True, cwd=ROOT)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if feeder is not None:
        fed, _ = feeder.communicate(timeout=600)
        result["ingest"] = json.loads(fed.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--load", help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int, default=2_000)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--rate", default="500",
                    help="single-user requests per second (comma-separated: one scenario each)")
    ap.add_argument("--batch-rate", type=float, default=50.0, help="100-user requests per second")
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per scenario")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--no-feast", action="store_true", help="measure our server only")
    ap.add_argument("--no-uncached", action="store_true",
                    help="skip ours with the profile cache off (PORTRAIT_PROFILE_CACHE_USERS=0)")
    ap.add_argument("--ingest", help=argparse.SUPPRESS)
    ap.add_argument("--ingest-rate", type=float, default=0.0,
                    help="also measure ours while this many events/s are POSTed (0: not; they "
                    "stay in the data dir)")
    ap.add_argument("--ingest-batch", type=int, default=100, help="events per ingest request")
    ap.add_argument("--data-dir", type=Path, default=None,
                    help="keep the data here; an existing one is reused as it is")
    args = ap.parse_args()
    if args.load:
        load_worker(args.load)
        return
    if args.ingest:
        ingest_worker(args.ingest)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    data = (args.data_dir or work / "data").resolve()
    t = time.perf_counter()
    users = prepare(data, args.users, args.events, args.seed)
    print(f"data: {len(users)} users, {args.events} events in {time.perf_counter() - t:.1f}s "
          f"({data})", file=sys.stderr)
    feast_info: dict = {"enabled": not args.no_feast}
    if not args.no_feast:
        try:
            feast_info.update(prepare_feast(data))
            print(f"feast: {feast_info}", file=sys.stderr)
        except Exception as exc:  # the bench still measures ours
            feast_info.update(enabled=False, error=f"{type(exc).__name__}: {exc}"[:300])
            print(f"feast unavailable: {feast_info['error']}", file=sys.stderr)

    env = {"PORTRAIT_DATA_DIR": str(data)}
    results: list[dict] = []
    kinds = ["ours"] + ([] if args.no_uncached else ["ours_uncached"])
    ingest = {"rate": args.ingest_rate, "batch": args.ingest_batch, "seed": args.seed}
    kinds += ["feast"] if feast_info["enabled"] else []
    # last: its events go into the data dir (and Feast's online store) for good
    kinds += ["ours_ingesting"] if args.ingest_rate > 0 else []
    rates = [float(r) for r in str(args.rate).split(",") if r.strip()]
    primed: dict[str, float] = {}
    for kind in kinds:  # one server at a time: ours is the data dir's one writer
        proc, port = start_server(kind, env, users, work)
        try:
            primed[kind] = prime(kind, port, users)
            print(f"{kind}: each user looked up once in {primed[kind]:.2f} s", file=sys.stderr)
            for batch, rate in [*((1, r) for r in rates), (100, args.batch_rate)]:
                spec = {"kind": kind, "batch": batch, "rate": rate, "duration": args.duration,
                        "warmup": args.warmup, "host": "127.0.0.1", "port": port,
                        "connections": args.connections, "seed": args.seed, "users": users}
                r = run_load(spec, work, ingest if kind == "ours_ingesting" else None)
                results.append(r)
                print(f"{kind:13s} {batch:3d} users/req @ {rate:6.0f} req/s: p50 "
                      f"{r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:8.2f} ms  max {r['max_ms']:8.1f}"
                      f" ms  errors {r['errors']}  dropped {r['dropped']}  achieved "
                      f"{r['achieved_rate']} req/s  (sent late p99 {r['send_late_p99_ms']:.2f} "
                      f"ms; p99 from send {r['p99_from_send_ms']:.2f} ms)"
                      + (f"; ingesting {r['ingest']['events_per_s']} ev/s, batch p99 "
                         f"{r['ingest']['batch_p99_ms']} ms" if "ingest" in r else ""),
                      file=sys.stderr)
        finally:
            proc.stop()

    ratios = {}
    for r in results:
        peer = next((x for x in results if x["kind"] == "feast" and x["batch"] == r["batch"]
                     and x["rate"] == r["rate"]), None)
        if r["kind"] == "ours" and peer is not None:
            ratios[f"batch{r['batch']}@{r['rate']:g}"] = {
                "p50_feast_over_ours": round(peer["p50_ms"] / r["p50_ms"], 2),
                "p99_feast_over_ours": round(peer["p99_ms"] / r["p99_ms"], 2),
            }
    print(json.dumps({"bench": "serve", "users": len(users), "events": args.events,
                      "server": "portrait serve (models; one uvicorn process)",
                      "feast": feast_info, "prime_s": primed, "results": results,
                      "ratios": ratios}))


if __name__ == "__main__":
    main()
