"""Dispatch latency: a `student:` label added in the sandbox -> the host's lease answered.

Runs the sandbox GitHub and the bot on loopback, holds a long-poll open as the
student `bench`, and for each of N experiments labels a new issue and times
until the lease carrying its job arrives (the whole path: webhook, inbox,
router, outbox opening the branch and draft PR on GitHub, queue, long-poll
wake-up, token minting). Each job is completed at once so the next can start.
Goal: p50 < 100 ms, p99 < 500 ms.

    python bench/dispatch.py [--n 50]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from local_lab import start_lab

CHARLM = Path(__file__).resolve().parents[1] / "trainer" / "examples" / "charlm"


def lease(client: httpx.Client, url: str, token: str) -> dict | None:
    r = client.post(
        f"{url}/api/hosts/bench/lease",
        params={"wait": 20},
        headers={"Authorization": f"Bearer {token}"},
    )
    return r.json() if r.status_code == 200 else None


def complete(client: httpx.Client, url: str, token: str, job_id: int) -> None:
    client.post(
        f"{url}/api/jobs/{job_id}/complete",
        json={"status": "refused", "reason": "dispatch benchmark: not trained", "runs": []},
        headers={"Authorization": f"Bearer {token}"},
    ).raise_for_status()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        lab = start_lab(Path(tmp), "lab/charlm", "bench", from_path=CHARLM)
        server, control, token = lab.server, lab.control, lab.token
        latencies: list[float] = []
        with httpx.Client(timeout=60) as client:
            job = lease(client, server.url, token)  # the baseline comes first
            if job is None:
                print("no baseline job was queued", file=sys.stderr)
                return 1
            complete(client, server.url, token, job["id"])
            for i in range(args.n):
                start = time.perf_counter()
                control.open_issue(
                    "lab/charlm", f"Dispatch {i}", "x", labels=["student:bench"], as_user="bob"
                )
                job = lease(client, server.url, token)
                if job is None:
                    print(f"experiment {i}: no lease within 20 s", file=sys.stderr)
                    return 1
                latencies.append(time.perf_counter() - start)
                complete(client, server.url, token, job["id"])
        lab.stop()
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000
    print(
        f"label -> lease over {len(latencies)} experiments: p50 {p50:.0f} ms, p99 {p99:.0f} ms "
        f"(goal p50 < 100 ms, p99 < 500 ms)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
