"""Webhook acknowledgement latency: `kohai serve`'s intake against a bare 202 endpoint.

Sends N signed deliveries at concurrency C to each server in turn (both on
loopback, in this process's sibling threads), prints p50/p99 of both, their
ratio, and how many deliveries reached the inbox. Goal: p99 ratio <= 1.5 and
none lost.

    python bench/webhook_ack.py [--n 2000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import uvicorn
from litestar import Litestar, post

from bot.config import Settings

SECRET = "bench-secret"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(kind: str, port: int, db: str, pem_path: str) -> subprocess.Popen[bytes]:
    """Each server in its own process, so the client never shares a GIL with it."""
    env = {
        **os.environ,
        "KOHAI_GITHUB_APP_ID": "1",
        "KOHAI_GITHUB_PRIVATE_KEY_PATH": pem_path,
        "KOHAI_WEBHOOK_SECRET": SECRET,
        "KOHAI_GITHUB_API_URL": "http://127.0.0.1:9",
        "KOHAI_DB": db,
        "KOHAI_CATCH_UP": "off",
        "KOHAI_ADVISOR": "off",
        "KOHAI_LOG": "WARNING",
    }
    command = [sys.executable, __file__, "--serve", kind, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except httpx.HTTPError:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{kind} server exited: {process.stderr.read().decode() if process.stderr else ''}"
                ) from None
            time.sleep(0.1)
    raise RuntimeError(f"{kind} server did not start")


def _run_server(kind: str, port: int) -> None:
    if kind == "bare":
        app: Litestar = Litestar(route_handlers=[bare])
    else:
        from bot.cli.serve import build_context
        from webhooks.app import create_app

        app = create_app(build_context(Settings.from_env()))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error")


@post("/webhooks/github", status_code=202)
async def bare() -> None:
    return None


def _pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def _fire(url: str, n: int, concurrency: int, body: bytes) -> list[float]:
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            while not queue.empty():
                queue.get_nowait()
                headers = {
                    "X-GitHub-Event": "issues",
                    "X-GitHub-Delivery": str(uuid.uuid4()),
                    "X-Hub-Signature-256": signature,
                    "Content-Type": "application/json",
                }
                start = time.perf_counter()
                response = await client.post(
                    f"{url}/webhooks/github", content=body, headers=headers
                )
                latencies.append(time.perf_counter() - start)
                if response.status_code != 202:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", choices=["kohai", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _run_server(args.serve, args.port)
        return 0
    fixture = (
        Path(__file__).resolve().parents[1]
        / "tests/fixtures/github-webhooks/issues/labeled.payload.json"
    )
    body = fixture.read_bytes() if fixture.exists() else json.dumps({"action": "labeled"}).encode()

    with tempfile.TemporaryDirectory() as tmp:
        pem_path = f"{tmp}/app.pem"
        Path(pem_path).write_text(_pem())
        db = f"{tmp}/bench.db"
        kohai_port, bare_port = _port(), _port()
        servers = [
            _spawn("kohai", kohai_port, db, pem_path),
            _spawn("bare", bare_port, db, pem_path),
        ]
        kohai_url, bare_url = f"http://127.0.0.1:{kohai_port}", f"http://127.0.0.1:{bare_port}"
        try:
            asyncio.run(_fire(kohai_url, 100, args.concurrency, body))  # warm-up
            asyncio.run(_fire(bare_url, 100, args.concurrency, body))
            kohai, bare_lat = [], []
            for _ in range(4):  # alternate, so load changes hit both alike
                kohai += asyncio.run(_fire(kohai_url, args.n // 4, args.concurrency, body))
                bare_lat += asyncio.run(_fire(bare_url, args.n // 4, args.concurrency, body))
            time.sleep(0.5)
            with sqlite3.connect(db) as conn:
                stored = conn.execute("SELECT COUNT(*) FROM inbox").fetchone()[0] - 100
        finally:
            for server in servers:
                server.terminate()
                server.wait(timeout=30)

    rows = [("kohai serve", kohai), ("bare litestar 202", bare_lat)]
    print(f"{args.n} signed deliveries at concurrency {args.concurrency}")
    print(f"{'endpoint':<20} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for name, lat in rows:
        print(
            f"{name:<20} {_pct(lat, 0.5):>8.2f} {_pct(lat, 0.99):>8.2f} {statistics.mean(lat) * 1000:>8.2f}"
        )
    ratio = _pct(kohai, 0.99) / _pct(bare_lat, 0.99)
    print(f"p99 ratio kohai/bare: {ratio:.2f} (goal <= 1.5)")
    print(f"reached the inbox: {stored}/{args.n} (lost: {args.n - stored})")
    return 0 if stored == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
