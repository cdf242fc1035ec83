"""Test helpers: a seeded lab on a real SQLite file, the dashboard served on loopback."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from litestar import Litestar
from litestar.datastructures import State

from bot.engine.bus import Bus
from bot.problem import Problem
from bot.store import Store, dumps
from webhooks.dashboard import ROUTES
from webhooks.dashboard.signin import Access

REPO = "lab/charlm"
BASES = ["b0" * 20, "b1" * 20, "b2" * 20]


def curve(start: float, end: float, steps: int = 20, wiggle: float = 0.0) -> list[list[float]]:
    """A plausible decaying training-loss curve from `start` to about `end`."""
    points = []
    for i in range(steps + 1):
        progress = i / steps
        loss = end + (start - end) * math.exp(-4 * progress) + wiggle * math.sin(i)
        points.append([i * 50, round(loss, 4)])
    return points


class Lab:
    """Writes a lab's history into a store the way the engine does, with explicit times."""

    def __init__(self, store: Store, t0: float, repo_id: int | None = None) -> None:
        """A new lab repo, or (with `repo_id`) more history for an existing one."""
        self.store = store
        self.t0 = t0
        self.repo_id = repo_id or store.insert(
            "repos",
            {"full_name": REPO, "installation_id": 1, "base_sha": BASES[0], "created_at": t0},
        )

    def student(self, name: str, state: str = "idle", gpus: int = 1, seen: float = 0.0) -> None:
        self.store.insert(
            "students",
            {
                "name": name,
                "state": state,
                "gpus": gpus,
                "last_seen": self.t0 + seen,
                "created_at": self.t0,
            },
        )

    def experiment(
        self,
        title: str,
        state: str,
        student: str | None,
        pr: int | None,
        at: float,
        base: str | None = None,
        hypothesis: str = "",
    ) -> int:
        return self.store.insert(
            "experiments",
            {
                "repo_id": self.repo_id,
                "state": state,
                "source": "advisor",
                "title": title,
                "hypothesis": hypothesis or f"We expect that {title.lower()} helps.",
                "student": student,
                "pr_number": pr,
                "branch": f"kohai/{pr}-x" if pr else None,
                "base_sha": base,
                "head_sha": f"{pr or 0:02d}" * 20,
                "cost_usd": 0.05,
                "created_at": self.t0 + at,
                "updated_at": self.t0 + at,
            },
        )

    def job(
        self,
        kind: str,
        state: str,
        experiment_id: int | None = None,
        student: str | None = None,
        leased_by: str | None = None,
        phase: str | None = None,
        seeds: list[int] | None = None,
        at: float = 0.0,
        result: dict[str, Any] | None = None,
    ) -> int:
        return self.store.insert(
            "jobs",
            {
                "kind": kind,
                "repo_id": self.repo_id,
                "experiment_id": experiment_id,
                "student": student,
                "state": state,
                "seeds": dumps(seeds or [0]),
                "leased_by": leased_by,
                "phase": phase,
                "result": dumps(result) if result is not None else None,
                "created_at": self.t0 + at,
                "updated_at": self.t0 + at,
            },
        )

    def runs(
        self,
        kind: str,
        values: list[float | None],
        *,
        base: str,
        at: float,
        experiment_id: int | None = None,
        commit: str | None = None,
        student: str = "fern",
        status: str = "ok",
        job_state: str = "done",
        result: dict[str, Any] | None = None,
        sealed: bool = True,
    ) -> int:
        job_id = self.job(
            kind if kind == "baseline" else "experiment",
            job_state,
            experiment_id,
            leased_by=student,
            seeds=list(range(len(values))),
            at=at,
            result=result,
        )
        for seed, value in enumerate(values):
            ok = status == "ok" and value is not None
            self.store.insert(
                "runs",
                {
                    "repo_id": self.repo_id,
                    "experiment_id": experiment_id,
                    "job_id": job_id,
                    "kind": kind,
                    "student": student,
                    "seed": seed,
                    "commit_sha": commit or base,
                    "base_sha": base,
                    "status": status,
                    "metric": value if ok else None,
                    "metrics": json.dumps({"val_bpb": value} if ok else {}),
                    "curve": json.dumps(curve(2.4, (value or 1.6) + 0.05, wiggle=0.01 * seed)),
                    "duration_s": 300.0 + seed,
                    "peak_mem_mb": 2048.0 + 100 * seed,
                    "gpu_hours": 0.09,
                    "cost_usd": 0.2,
                    "reason": "" if ok else "CUDA out of memory",
                    "log_tail": "" if ok else "RuntimeError: CUDA out of memory",
                    "sealed": int(sealed),
                    "sandboxed": 1,
                    "created_at": self.t0 + at + seed,
                },
            )
        return job_id

    def decide(
        self, experiment_id: int, verdict: str, actor: str, rationale: str, at: float
    ) -> None:
        self.store.insert(
            "decisions",
            {
                "experiment_id": experiment_id,
                "verdict": verdict,
                "actor": actor,
                "rationale": rationale,
                "created_at": self.t0 + at,
            },
        )

    def set_base(self, base: str) -> None:
        self.store.update("repos", self.repo_id, {"base_sha": base})


@dataclass
class Seeded:
    path: Path
    ids: dict[str, int]


def seed_lab(store: Store, t0: float) -> dict[str, int]:
    """A three-hour session: two merged winners, a closed loser, a crash, one in review,
    two running, one queued, and a baseline re-measured after each merge."""
    lab = Lab(store, t0)
    ids: dict[str, int] = {}
    lab.student("fern", "training", gpus=2, seen=10_700)
    lab.student("frieren", "implementing", seen=10_750)
    lab.student("himmel", "idle", seen=10_600)
    lab.student("stark", "offline", seen=3_000)
    lab.runs("baseline", [1.500, 1.505, 1.498], base=BASES[0], at=0)

    ids["lr"] = lab.experiment("Raise learning rate to 3e-3", "merged", "fern", 2, 600, BASES[0])
    lab.runs(
        "candidate",
        [1.462, 1.458, 1.466],
        base=BASES[0],
        at=1200,
        experiment_id=ids["lr"],
        commit="c1" * 20,
        result={"status": "ok", "changed_files": ["train.py"], "notes": "lr 1e-3 -> 3e-3"},
    )
    lab.decide(ids["lr"], "confirm", "gate", "Looks better after one seed: confirming.", 1300)
    lab.decide(ids["lr"], "merge", "gate", "Δ -0.0390 ± 0.004, p = 0.001 (Welch, one-sided).", 2400)
    lab.set_base(BASES[1])
    lab.runs("baseline", [1.461, 1.463, 1.460], base=BASES[1], at=2700)

    ids["deep"] = lab.experiment("Deeper model: 4 layers", "closed", "frieren", 3, 900, BASES[1])
    lab.runs(
        "candidate",
        [1.481, 1.486, 1.479],
        base=BASES[1],
        at=3600,
        experiment_id=ids["deep"],
        commit="c2" * 20,
        student="frieren",
    )
    lab.decide(
        ids["deep"],
        "close",
        "advisor",
        "Worse by 0.02: deeper nets are under-trained in a 5-minute budget.",
        3700,
    )

    ids["tied"] = lab.experiment(
        "Tie input and output embeddings", "closed", "himmel", 5, 1000, BASES[1]
    )
    lab.runs(
        "candidate",
        [None],
        base=BASES[1],
        at=4000,
        experiment_id=ids["tied"],
        commit="c5" * 20,
        student="himmel",
        status="crash",
    )
    lab.decide(ids["tied"], "close", "advisor", "Crashed out of memory; not worth a retry.", 4100)

    ids["cos"] = lab.experiment(
        "Cosine schedule with warmup", "merged", "himmel", 4, 1500, BASES[1]
    )
    lab.runs(
        "candidate",
        [1.428, 1.431, 1.426],
        base=BASES[1],
        at=5400,
        experiment_id=ids["cos"],
        commit="c4" * 20,
        student="himmel",
    )
    lab.decide(ids["cos"], "merge", "human:alice", "Merged by @alice with /merge.", 6000)
    lab.set_base(BASES[2])
    lab.runs("baseline", [1.429, 1.427, 1.430], base=BASES[2], at=6300)

    ids["wide"] = lab.experiment("Wider embeddings (384)", "review", "fern", 6, 6500, BASES[2])
    lab.runs(
        "candidate", [1.421], base=BASES[2], at=8000, experiment_id=ids["wide"], commit="c6" * 20
    )
    lab.decide(ids["wide"], "confirm", "gate", "Better by 0.007 on one seed: 2 more seeds.", 8100)

    ids["drop"] = lab.experiment("Dropout 0.1 on attention", "training", "fern", 7, 9000, BASES[2])
    lab.job(
        "experiment",
        "leased",
        ids["drop"],
        student="fern",
        leased_by="fern",
        phase="training",
        seeds=[0],
        at=9500,
    )
    ids["smooth"] = lab.experiment(
        "Label smoothing 0.05", "implementing", "frieren", 8, 9800, BASES[2]
    )
    lab.job(
        "experiment",
        "leased",
        ids["smooth"],
        student="frieren",
        leased_by="frieren",
        phase="implementing",
        seeds=[0],
        at=9900,
    )
    ids["batch"] = lab.experiment("Double the batch size", "queued", None, 9, 10_000, BASES[2])
    lab.job("experiment", "queued", ids["batch"], seeds=[0], at=10_000)
    return ids


CHARLM_TOML = '[metric]\nname = "val_bpb"\ndirection = "minimize"\n'
VISION_TOML = '[metric]\nname = "accuracy"\ndirection = "maximize"\n[lab]\nweight = 3\n'


def seed_vision(store: Store, t0: float) -> dict[str, int]:
    """A second lab: a maximize metric with two merged winners, the better one merged first."""
    repo_id = store.insert(
        "repos",
        {
            "full_name": "lab/vision",
            "installation_id": 1,
            "base_sha": BASES[0],
            "problem_toml": VISION_TOML,
            "created_at": t0,
        },
    )
    lab = Lab(store, t0, repo_id=repo_id)
    lab.runs("baseline", [0.70, 0.71, 0.69], base=BASES[0], at=0)
    ids = {"repo": repo_id}
    ids["wider"] = lab.experiment("Wider convolutions", "merged", "fern", 2, 100, BASES[0])
    lab.runs("candidate", [0.91, 0.90, 0.92], base=BASES[0], at=200, experiment_id=ids["wider"])
    lab.decide(ids["wider"], "merge", "gate", "accuracy +0.21", 300)
    ids["mixup"] = lab.experiment("Mixup augmentation", "merged", "frieren", 3, 400, BASES[0])
    lab.runs("candidate", [0.80, 0.81, 0.79], base=BASES[0], at=500, experiment_id=ids["mixup"])
    lab.decide(ids["mixup"], "merge", "gate", "accuracy +0.10", 600)
    return ids


@dataclass
class Served:
    url: str
    loop: asyncio.AbstractEventLoop
    bus: Bus
    store: Store

    def publish(self, topic: str, **data: Any) -> None:
        """Publish from the test thread onto the server's loop, as the engine would."""
        self.loop.call_soon_threadsafe(lambda: self.bus.publish(topic, **data))


def serve_dashboard(
    db: Path, problem: Problem | None = None, extra_state: dict[str, Any] | None = None
):
    """Start the dashboard with uvicorn in a thread on 127.0.0.1; return (Served, stop)."""
    store = Store(db)
    bus = Bus()
    # Open, as KOHAI_DASHBOARD_PUBLIC=1: these tests read the pages; sign-in has its own tests.
    state = {"store": store, "bus": bus, "dashboard_access": Access.open(), **(extra_state or {})}
    if problem is not None:
        state["problem"] = problem
    app = Litestar(route_handlers=ROUTES, state=State(state))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(
        target=lambda: loop.run_until_complete(server.serve(sockets=[sock])), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("dashboard server did not start")
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        loop.close()
        sock.close()
        store.close()

    return Served(f"http://127.0.0.1:{port}", loop, bus, store), stop
