"""The bot's capacity: many simulated hosts and labs over real HTTP against one `kohai serve`.

For each configuration (hosts x labs) the bench starts, on loopback:

- the GitHub sandbox (in this process) with the labs as repositories of one
  installation (rate limits off: this bench measures the bot, not GitHub);
- `kohai serve` in its own process, as it runs in production (its CPU time
  and resident memory are read from /proc);
- a bare litestar endpoint in another process, the reference for webhook
  acknowledgements;
- the hosts, as asyncio tasks in this process over one HTTP connection pool:
  each long-polls for a lease, "trains" for `--job-s` seconds sending a
  heartbeat every `--heartbeat-s`, then completes with a plausible result.
  They join over the warm-up and their first jobs end at random, so the
  measurement sees a running fleet's steady rate of leases, not the herd of a
  thousand hosts starting in the same few seconds;
- webhooks at a steady rate (`--webhooks-per-s`), signed as GitHub signs
  them, sent alternately to the bot and the bare endpoint.

Work for the hosts is kept queued by adding baseline jobs of the labs straight
to the bot's store (what a busy lab's queue holds), so every lease finds a job
and its latency is the bot's own; the long-poll wake-up path is measured by
`bench/dispatch.py`. After a warm-up the bench measures for `--measure-s`
seconds and prints, per configuration: lease latency p50/p99, heartbeat p99,
webhook ack p99 against the bare endpoint, the bot's CPU seconds per
host-hour and its share of a core, its resident memory, the requests per
second it answered (each lease, completion and stored delivery is one SQLite
write transaction; heartbeats are written together once a second), and the
load generator's own share of a core.

Goals (2-core machine): 1,000 hosts and 100 labs with lease p99 < 500 ms,
heartbeat p99 < 200 ms, webhook ack p99 within 1.5x the bare endpoint,
resident memory < 1 GB, CPU per host growing no worse than linearly.

    python bench/capacity.py [--configs 10x1,100x10,1000x100] [--measure-s 40]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
KOHAI_TOML = """\
[metric]
name = "val_bpb"
direction = "minimize"

[train]
command = "python train.py"
budget = "5m"
seeds = 1
confirm_seeds = 1
baseline_seeds = 1

[files]
editable = ["train.py"]
"""
GOALS = {"lease_p99_ms": 500.0, "heartbeat_p99_ms": 200.0, "ack_ratio": 1.5, "rss_mb": 1024.0}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# -- the servers ----------------------------------------------------------------------


def _serve(kind: str, port: int) -> None:
    """Child process: the bot as `kohai serve` builds it, or the bare reference endpoint."""
    import uvicorn
    from litestar import Litestar, post

    if kind == "bare":

        @post("/webhooks/github", status_code=202)
        async def bare() -> None:
            return None

        app: Any = Litestar(route_handlers=[bare])
    else:
        from bot.cli.serve import build_context
        from bot.config import Settings
        from webhooks.app import create_app

        app = create_app(build_context(Settings.from_env()))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def _spawn(kind: str, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    process = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
            return process
        except httpx.HTTPError:
            if process.poll() is not None:
                err = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"{kind} server exited: {err[-2000:]}") from None
            time.sleep(0.2)
    raise RuntimeError(f"{kind} server did not start")


def _proc_stats(pid: int) -> tuple[float, float]:
    """(CPU seconds user+system, resident MB) of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return cpu, rss_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- the load ---------------------------------------------------------------------------


class Conn:
    """One keep-alive HTTP/1.1 connection, as a host holds one to the bot.

    A few lines over asyncio streams instead of a general client: with a
    thousand hosts in one process, a general client's per-request overhead
    would be what the bench measures, not the bot.
    """

    def __init__(self, url: str) -> None:
        parts = httpx.URL(url)
        self.host, self.port = parts.host, parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):  # a keep-alive connection the server closed: reconnect once
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                assert self.reader is not None
                head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
                head += [f"{k}: {v}" for k, v in (headers or {}).items()]
                head.append(f"Content-Length: {len(body)}")
                self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
                await self.writer.drain()
                status_line = await self.reader.readline()
                if not status_line:
                    raise ConnectionResetError("closed")
                status = int(status_line.split()[1])
                length, chunked = 0, False
                while True:
                    line = await self.reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    elif name.lower() == "transfer-encoding" and "chunked" in value:
                        chunked = True
                if chunked:
                    data = b""
                    while True:
                        size = int((await self.reader.readline()).strip() or b"0", 16)
                        chunk = await self.reader.readexactly(size + 2)
                        if size == 0:
                            break
                        data += chunk[:-2]
                    return status, data
                return status, await self.reader.readexactly(length) if length else b""
            except (ConnectionError, asyncio.IncompleteReadError, OSError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Figures:
    leases: list[float] = field(default_factory=list)
    heartbeats: list[float] = field(default_factory=list)
    completions: list[float] = field(default_factory=list)
    acks_kohai: list[float] = field(default_factory=list)
    acks_bare: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    measuring: bool = False

    def keep(self, bucket: list[float], value: float) -> None:
        if self.measuring:
            bucket.append(value)


async def host(
    url: str,
    name: str,
    token: str,
    args: argparse.Namespace,
    figures: Figures,
    stop: asyncio.Event,
) -> None:
    """One simulated host: lease, heartbeats while 'training', complete, again."""
    auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn = Conn(url)
    # A fleet in its steady state, not a thundering herd: hosts join over the warm-up
    # and their first jobs end at random, so leases and completions arrive at the rate
    # a running fleet makes them (hosts / job length) from the start of the measurement.
    await asyncio.sleep(random.random() * min(args.warmup_s, args.job_s) * 0.8)
    first = True
    while not stop.is_set():
        start = time.perf_counter()
        try:
            status, raw = await conn.request("POST", f"/api/hosts/{name}/lease?wait=20", b"", auth)
        except OSError as exc:
            figures.errors.append(f"lease: {type(exc).__name__}")
            await asyncio.sleep(1)
            continue
        if status != 200:
            if status != 204:
                figures.errors.append(f"lease: {status}")
                await asyncio.sleep(1)
            continue
        figures.keep(figures.leases, time.perf_counter() - start)
        job = json.loads(raw)
        lease_id = job.get("lease_id", "")
        share = random.uniform(0.05, 1.2) if first else random.uniform(0.8, 1.2)
        first = False
        ends = time.monotonic() + args.job_s * share
        while time.monotonic() < ends and not stop.is_set():
            await asyncio.sleep(min(args.heartbeat_s, max(0.0, ends - time.monotonic())))
            start = time.perf_counter()
            try:
                event = json.dumps({"kind": "heartbeat", "lease_id": lease_id}).encode()
                status, _ = await conn.request("POST", f"/api/jobs/{job['id']}/events", event, auth)
                if status != 200:
                    figures.errors.append(f"heartbeat: {status}")
            except OSError as exc:
                figures.errors.append(f"heartbeat: {type(exc).__name__}")
                continue
            figures.keep(figures.heartbeats, time.perf_counter() - start)
        metric = 2.0 + random.gauss(0, 0.01)
        result = {
            "status": "ok",
            "lease_id": lease_id,
            "runs": [
                {"seed": s, "status": "ok", "metric": metric, "metrics": {"val_bpb": metric}}
                for s in job.get("seeds", [0])
            ],
        }
        start = time.perf_counter()
        try:
            status, _ = await conn.request(
                "POST", f"/api/jobs/{job['id']}/complete", json.dumps(result).encode(), auth
            )
            if status != 200:
                figures.errors.append(f"complete: {status}")
        except OSError as exc:
            figures.errors.append(f"complete: {type(exc).__name__}")
        figures.keep(figures.completions, time.perf_counter() - start)


async def webhooks(
    urls: tuple[str, str],
    rate: float,
    secret: str,
    figures: Figures,
    stop: asyncio.Event,
) -> None:
    """Signed deliveries at a steady rate, alternating between the bot and the bare endpoint."""
    body = json.dumps(
        {
            "action": "opened",
            "zen": "capacity",
            "hook_id": 1,
            "sender": {"login": "bob", "type": "User"},
        }
    ).encode()
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    conns = (Conn(urls[0]), Conn(urls[1]))
    i = 0
    while not stop.is_set():
        await asyncio.sleep(1.0 / rate)
        kohai = i % 2 == 0
        i += 1
        headers = {
            "X-GitHub-Event": "ping",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": signature,
            "Content-Type": "application/json",
        }
        start = time.perf_counter()
        try:
            status, _ = await conns[0 if kohai else 1].request(
                "POST", "/webhooks/github", body, headers
            )
        except OSError as exc:
            figures.errors.append(f"webhook: {type(exc).__name__}")
            continue
        if status not in (200, 202):
            figures.errors.append(f"webhook: {status}")
        figures.keep(
            figures.acks_kohai if kohai else figures.acks_bare, time.perf_counter() - start
        )


def feed(db_path: str, repo_ids: list[int], depth: int, stop: asyncio.Event) -> asyncio.Task[None]:
    """Keep `depth` baseline jobs queued, spread over the labs (straight into the store)."""
    from bot.store import Store, now

    store = Store(db_path)

    async def loop() -> None:
        try:
            while not stop.is_set():
                queued = store.count("SELECT COUNT(*) FROM jobs WHERE state = 'queued'")
                if queued < depth:
                    rows = [
                        r
                        for r in store.query("SELECT id, base_sha FROM repos")
                        if r["id"] in repo_ids
                    ]
                    with store.transaction():
                        for _ in range(depth - queued):
                            repo = random.choice(rows)
                            t = now()
                            store.insert(
                                "jobs",
                                {
                                    "kind": "baseline",
                                    "repo_id": repo["id"],
                                    "state": "queued",
                                    "seeds": "[0]",
                                    "base_sha": repo["base_sha"],
                                    "created_at": t,
                                    "updated_at": t,
                                },
                            )
                await asyncio.sleep(0.5)
        finally:
            store.close()

    return asyncio.get_running_loop().create_task(loop())


# -- one configuration -------------------------------------------------------------------


def run_config(hosts: int, labs: int, args: argparse.Namespace) -> dict[str, Any]:
    from bot.engine.jobs import register_student
    from bot.store import Store
    from sandbox.server import SandboxServer

    with tempfile.TemporaryDirectory() as tmp:
        db = f"{tmp}/kohai.db"
        bot_port, bare_port = _port(), _port()
        bot_url, bare_url = f"http://127.0.0.1:{bot_port}", f"http://127.0.0.1:{bare_port}"
        sandbox = SandboxServer(Path(tmp) / "github", webhook_url=f"{bot_url}/webhooks/github")
        sandbox.world.limits.configure({"budget": None, "graphql_budget": None})
        sandbox.start()
        store = Store(db)
        tokens = {f"h{i}": register_student(store, f"h{i}") for i in range(hosts)}
        env = {
            "KOHAI_GITHUB_APP_ID": str(sandbox.app_id),
            "KOHAI_GITHUB_PRIVATE_KEY": sandbox.private_key_pem,
            "KOHAI_WEBHOOK_SECRET": sandbox.webhook_secret,
            "KOHAI_GITHUB_API_URL": sandbox.url,
            "KOHAI_DB": db,
            "KOHAI_CATCH_UP": "off",
            "KOHAI_ADVISOR": "off",
            "KOHAI_LOG": "ERROR",
            "KOHAI_DASHBOARD_PUBLIC": "1",
        }
        bot = _spawn("kohai", bot_port, env)
        bare = _spawn("bare", bare_port, env)
        try:
            for i in range(labs):
                sandbox.create_repo(
                    f"lab/l{i}", files={"kohai.toml": KOHAI_TOML, "train.py": "LR = 0.01\n"}
                )
            deadline = time.time() + 120
            while time.time() < deadline:
                synced = store.query("SELECT id FROM repos WHERE base_sha IS NOT NULL")
                if len(synced) >= labs:
                    break
                time.sleep(0.5)
            repo_ids = [
                r["id"] for r in store.query("SELECT id FROM repos WHERE base_sha IS NOT NULL")
            ]
            if len(repo_ids) < labs:
                raise RuntimeError(f"only {len(repo_ids)} of {labs} labs synced")
            args.secret = sandbox.webhook_secret
            figures = asyncio.run(load(bot_url, bare_url, db, repo_ids, tokens, args, bot.pid))
        finally:
            for process in (bot, bare):
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
            store.close()
            sandbox.stop()
    return figures


async def load(
    bot_url: str,
    bare_url: str,
    db: str,
    repo_ids: list[int],
    tokens: dict[str, str],
    args: argparse.Namespace,
    bot_pid: int,
) -> dict[str, Any]:
    figures = Figures()
    stop = asyncio.Event()
    hosts = len(tokens)
    feeder = feed(db, repo_ids, max(8, hosts // 4), stop)
    tasks = [
        asyncio.create_task(host(bot_url, name, token, args, figures, stop))
        for name, token in tokens.items()
    ]
    tasks.append(
        asyncio.create_task(
            webhooks((bot_url, bare_url), args.webhooks_per_s, args.secret, figures, stop)
        )
    )
    await asyncio.sleep(args.warmup_s)
    cpu0, _ = _proc_stats(bot_pid)
    own0 = time.process_time()
    t0 = time.monotonic()
    figures.measuring = True
    await asyncio.sleep(args.measure_s)
    figures.measuring = False
    elapsed = time.monotonic() - t0
    cpu1, rss = _proc_stats(bot_pid)
    own = time.process_time() - own0
    stop.set()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, feeder, return_exceptions=True)
    writes = (
        len(figures.leases)
        + len(figures.heartbeats)
        + len(figures.completions)
        + len(figures.acks_kohai)
    )
    return {
        "hosts": hosts,
        "labs": len(repo_ids),
        "lease_p50_ms": _pct(figures.leases, 0.5),
        "lease_p99_ms": _pct(figures.leases, 0.99),
        "heartbeat_p99_ms": _pct(figures.heartbeats, 0.99),
        "ack_p99_ms": _pct(figures.acks_kohai, 0.99),
        "bare_p99_ms": _pct(figures.acks_bare, 0.99),
        "ack_ratio": _pct(figures.acks_kohai, 0.99) / max(1e-9, _pct(figures.acks_bare, 0.99)),
        "cpu_s_per_host_hour": (cpu1 - cpu0) / (hosts * elapsed / 3600),
        "cpu_share": (cpu1 - cpu0) / elapsed,
        "client_cpu_share": own / elapsed,
        "rss_mb": rss,
        "requests_per_s": writes / elapsed,
        "leases": len(figures.leases),
        "heartbeats": len(figures.heartbeats),
        "errors": sorted(set(figures.errors))[:5],
        "error_count": len(figures.errors),
    }


def report(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'hosts':>6} {'labs':>5} {'lease p50':>10} {'lease p99':>10} {'beat p99':>9} "
        f"{'ack p99':>8} {'bare p99':>9} {'ratio':>6} {'CPU s/host-h':>13} {'CPU':>5} "
        f"{'RSS MB':>7} {'req/s':>9} {'errors':>7} {'load CPU':>9}"
    )
    for r in rows:
        print(
            f"{r['hosts']:>6} {r['labs']:>5} {r['lease_p50_ms']:>8.0f}ms {r['lease_p99_ms']:>8.0f}ms "
            f"{r['heartbeat_p99_ms']:>7.0f}ms {r['ack_p99_ms']:>6.0f}ms {r['bare_p99_ms']:>7.0f}ms "
            f"{r['ack_ratio']:>6.2f} {r['cpu_s_per_host_hour']:>13.1f} {r['cpu_share']:>4.0%} "
            f"{r['rss_mb']:>7.0f} {r['requests_per_s']:>9.0f} {r['error_count']:>7} "
            f"{r['client_cpu_share']:>8.0%}"
        )
        for error in r["errors"]:
            print(f"{'':>13}error: {error}")
    print(
        f"goals: lease p99 < {GOALS['lease_p99_ms']:.0f} ms, heartbeat p99 < "
        f"{GOALS['heartbeat_p99_ms']:.0f} ms, ack p99 ratio <= {GOALS['ack_ratio']}, "
        f"RSS < {GOALS['rss_mb']:.0f} MB, CPU per host-hour flat or falling as hosts grow"
    )
    with open("/proc/loadavg") as load:
        print(f"machine: {os.cpu_count()} CPUs, load average {load.read().split()[:3]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="10x1,100x10,1000x100", help="HOSTSxLABS,...")
    parser.add_argument("--job-s", type=float, default=60.0, help="how long a job 'trains'")
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--webhooks-per-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=15.0)
    parser.add_argument("--measure-s", type=float, default=40.0)
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--serve", choices=["kohai", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.port)
        return 0
    random.seed(7)
    logging.disable(logging.WARNING)
    rows = []
    for config in args.configs.split(","):
        hosts, labs = (int(x) for x in config.lower().split("x"))
        print(f"{hosts} hosts, {labs} labs ...", flush=True)
        rows.append(run_config(hosts, labs, args))
    report(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
