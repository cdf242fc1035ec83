"""GitHub's API budget: REST requests per experiment, and experiments per hour per installation.

A simulated lab on loopback: the GitHub sandbox with GitHub's rate limits on,
the bot with the offline advisor, and N simulated hosts. A host is the real
host daemon's student loop (lease, fetch, the offline student's knob change
committed and pushed as a bundle, the diff, phases, completion) with training
replaced by an instant, plausible result: each seed's metric is the base's
value, plus a per-seed noise shared by every run of that seed (so the paired
gate has something to pair), plus the change's own effect (a hash of its
train.py: most changes do nothing or harm, a few help). So the advisor
proposes, candidates get confirmation seeds, some merge, baselines are
re-measured, others close: GitHub sees what a real lab makes it see, faster.

GitHub's hour is shortened (`--hour`, default 60 s) with the budget scaled to
keep GitHub's rate, 5,000 requests an hour (83 a minute): a run of a few
minutes then meets the limit as a busy hour would, and the experiments it
decides per wall-clock hour are what one installation sustains. The bot is
told the window. The bot's own content-creation pacing (80 a minute, 500 an
hour) is off, as in the other benchmarks: it would bind first (docs/scale.md).

At the end the hosts stop, the outbox gets one more window to make what it
deferred, and the bench reads the sandbox's record of every API request:
REST requests per decided experiment (by route), the outbox's writes per
experiment (by kind), any 403/429, and experiments per hour. It checks that
nothing a user sees was lost: every decided PR closed or merged as its
experiment, with its status comment, its results and no stale status label.

    python bench/github_budget.py [--experiments 20] [--hosts 3] [--hour 60]
    python bench/github_budget.py --compare /path/to/other/checkout   # side by side

`--compare DIR` runs the bot (and the host code) of another checkout
against this checkout's sandbox, then this checkout's, and prints both.
Goal: <= 12 requests per experiment, >= 400 experiments per hour per installation,
no 403/429.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHARLM = ROOT / "trainer" / "examples" / "charlm"
REPO = "lab/charlm"
BUDGET = 5000
GOAL_REQUESTS = 12
GOAL_PER_HOUR = 400


# -- the simulated host's training -------------------------------------------------


def plausible_metric(tree: Path, seed: int) -> float:
    """val_bpb for the code in `tree` and `seed`: base value + seed noise + the change's effect.

    The effect is a function of train.py's text, so the same change always
    measures the same (up to seed noise): 60 % do nothing, 25 % harm, 15 % help.
    """
    text = (tree / "train.py").read_bytes() if (tree / "train.py").exists() else b""
    digest = int(hashlib.sha256(text).hexdigest()[:8], 16)
    pick = digest % 100
    base = CHARLM_BASE_TEXT_DIGEST == hashlib.sha256(text).hexdigest()
    if base or pick < 60:
        effect = 0.0
    elif pick < 85:
        effect = 0.02 + (digest % 7) * 0.005
    else:
        effect = -(0.03 + (digest % 5) * 0.01)
    seed_noise = random.Random(seed).gauss(0.0, 0.01)
    return 2.0 + seed_noise + effect + random.gauss(0.0, 0.003)


CHARLM_BASE_TEXT_DIGEST = ""


def instant_run(repo_dir: Path, problem: Any, seed: int, **kw: Any) -> Any:
    """Stands for `trainer.harness.run_once`: no training, a plausible sealed result."""
    from bot.protocol import RunResult

    metric = plausible_metric(Path(repo_dir), seed)
    curve = [[step, 3.0 - step / 1000 + (metric - 2.0)] for step in range(100, 1001, 300)]
    return RunResult(
        seed=seed,
        status="ok",
        metric=metric,
        metrics={"val_bpb": metric},
        curve=curve,
        duration_s=300.0,
        peak_mem_mb=512.0,
        gpu_hours=300 / 3600,
        exit_code=0,
        sealed=True,
        sandboxed=True,
        train_s=300.0,
        eval_s=5.0,
        host=str(kw.get("host", "")),
        gpu_kind="simulated",
    )


def start_hosts(lab: Any, count: int, work: Path) -> tuple[threading.Event, list[Any]]:
    """`count` students, each the daemon's real loop in a thread, training instantly."""
    from trainer import jobrunner
    from trainer.daemon import StudentSpec, StudentWorker

    jobrunner.run_once = instant_run  # type: ignore[assignment]
    jobrunner.log_run = lambda *a, **k: ""  # type: ignore[assignment]
    stopping = threading.Event()
    workers = []
    for i in range(count):
        name = f"sim{i}"
        spec = StudentSpec(name=name, token=lab.register(name), gpus=[])
        worker = StudentWorker(spec, lab.bot_url, work / "hosts", stopping, sandboxed=False)
        worker.start()
        workers.append(worker)
    return stopping, workers


# -- one run -------------------------------------------------------------------------


def finished(lab: Any) -> int:
    return int(
        lab.q("SELECT COUNT(*) AS n FROM experiments WHERE state IN ('merged', 'closed')")[0]["n"]
    )


def settled(lab: Any) -> bool:
    pending = lab.q("SELECT COUNT(*) AS n FROM outbox WHERE state = 'pending'")[0]["n"]
    return pending == 0 and lab.sandbox.wait_deliveries(timeout=1)


def lost(lab: Any) -> list[str]:
    """What a user would miss on GitHub: every finished experiment's PR is checked."""
    from bot.outbox.writes import marker

    problems = []
    rows = lab.q(
        "SELECT id, state, pr_number FROM experiments WHERE state IN ('merged', 'closed')"
        " AND pr_number IS NOT NULL"
    )
    for row in rows:
        number = row["pr_number"]
        pull = lab.control.pull(REPO, number)
        if (row["state"] == "merged") != bool(pull.get("merged")) or pull["state"] != "closed":
            problems.append(f"#{number}: the PR is {pull['state']}, the experiment {row['state']}")
        bodies = [c["body"] for c in lab.control.comments(REPO, number)]
        if not any(b.startswith(marker("status", number)) for b in bodies):
            problems.append(f"#{number}: no status comment")
        ran = lab.q(
            "SELECT COUNT(*) AS n FROM runs WHERE experiment_id = ? AND status = 'ok'", (row["id"],)
        )[0]["n"]
        if ran and not any(b.startswith("<!-- kohai:result") for b in bodies):
            problems.append(f"#{number}: results not posted")
        stale = [name for name in lab.control.labels_of(REPO, number) if name.startswith("status:")]
        if stale:
            problems.append(f"#{number}: stale label(s) {stale}")
    return problems


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """One run: the lab works for `--duration` seconds (or until `--experiments` finished),
    then the hosts stop and the outbox is given a window to write what it deferred."""
    from bot.cli.lab import LocalLab

    global CHARLM_BASE_TEXT_DIGEST
    CHARLM_BASE_TEXT_DIGEST = hashlib.sha256((CHARLM / "train.py").read_bytes()).hexdigest()
    random.seed(1)
    logging.disable(logging.WARNING)
    budget = max(1, round(BUDGET * args.hour / 3600))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lab = LocalLab(
            work,
            advisor=True,
            max_experiments=args.experiments or 100_000,
            pacing=False,
            catch_up=False,
        ).start()
        # GitHub's hour, shortened: the same requests per second, a window that resets
        # within the run, so that the run meets the limit (the bot is told the window).
        lab.ctx.github.rate_window_s = args.hour
        limits: dict[str, Any] = {
            "budget": budget,
            "graphql_budget": budget,
            "window_s": args.hour,
            "reset": True,
        }
        if args.secondary:
            limits["secondary_per_minute"] = args.secondary
        lab.control.set_limits(**limits)
        lab.control.clear_requests()
        started = time.monotonic()
        lab.add_repo(REPO, from_path=CHARLM)
        stopping, workers = start_hosts(lab, args.hosts, work)
        try:
            while time.monotonic() < started + args.duration:
                if args.experiments and finished(lab) >= args.experiments:
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - started
            done = finished(lab)
            stopping.set()
            for worker in workers:
                worker.join(timeout=30)
            # What waited for the budget is written once the window resets.
            deadline = time.monotonic() + args.hour + 30
            while time.monotonic() < deadline and not settled(lab):
                time.sleep(0.5)
            drained = settled(lab)
            missing = lost(lab) if done else ["no experiment finished"]
            record = lab.control.requests()
            outbox = lab.q("SELECT op, state, COUNT(*) AS n FROM outbox GROUP BY op, state")
        finally:
            stopping.set()
            lab.stop()
    installation = [r for r in record if r["who"].startswith("installation:")]
    rest = [r for r in installation if r["resource"] == "core"]
    return {
        "experiments": done,
        "elapsed_s": elapsed,
        "hour_s": args.hour,
        "budget_per_window": budget,
        "hosts": args.hosts,
        "rest_counted": sum(1 for r in rest if r["counted"]),
        "rest_not_modified": sum(1 for r in rest if r["status"] == 304),
        "graphql": sum(1 for r in installation if r["resource"] == "graphql" and r["counted"]),
        "app_jwt": sum(1 for r in record if r["who"] == "app"),
        "limited": sum(1 for r in record if r["status"] in (403, 429)),
        "limited_routes": Counter(
            f"{r['who'].split(':')[0]} {r['route']}" for r in record if r["status"] in (403, 429)
        ),
        "by_route": Counter(r["route"] for r in rest if r["counted"]),
        "writes": sum(row["n"] for row in outbox if row["state"] == "done"),
        "writes_by_op": {
            row["op"]: row["n"] for row in outbox if row["state"] in ("done", "failed")
        },
        "drained": drained,
        "lost": missing,
    }


# -- reporting -------------------------------------------------------------------------


def summary(result: dict[str, Any]) -> dict[str, float]:
    """Per-experiment figures. The run's window has GitHub's rate (5,000 requests an
    hour) but resets sooner, so experiments per wall-clock hour is what one installation
    sustains; 5,000 / requests per experiment is the ceiling the budget alone sets."""
    n = max(1, result["experiments"])
    per_exp = result["rest_counted"] / n
    return {
        "requests_per_experiment": per_exp,
        "writes_per_experiment": result["writes"] / n,
        "graphql_per_experiment": result["graphql"] / n,
        "per_hour_by_budget": BUDGET / per_exp if per_exp else float("inf"),
        "per_hour": result["experiments"] / max(1e-9, result["elapsed_s"]) * 3600,
    }


def report(results: dict[str, dict[str, Any]]) -> None:
    names = list(results)
    summaries = {name: summary(results[name]) for name in names}
    width = max(24, *(len(n) + 2 for n in names))
    print()
    print(f"{'':44}" + "".join(f"{name:>{width}}" for name in names))
    rows = [
        ("finished experiments", lambda r, s: f"{r['experiments']}"),
        ("hosts", lambda r, s: f"{r['hosts']}"),
        ("budget", lambda r, s: f"{r['budget_per_window']}/{r['hour_s']:.0f} s"),
        ("run time", lambda r, s: f"{r['elapsed_s']:.0f} s"),
        ("REST requests counted", lambda r, s: f"{r['rest_counted']}"),
        ("  of which 304 (free)", lambda r, s: f"{r['rest_not_modified']}"),
        (
            "REST requests / experiment  (goal <= 12)",
            lambda r, s: f"{s['requests_per_experiment']:.1f}",
        ),
        ("outbox writes / experiment", lambda r, s: f"{s['writes_per_experiment']:.1f}"),
        ("GraphQL calls / experiment", lambda r, s: f"{s['graphql_per_experiment']:.1f}"),
        ("App (JWT) requests", lambda r, s: f"{r['app_jwt']}"),
        ("403/429 answers", lambda r, s: f"{r['limited']}"),
        ("5,000 / requests per experiment", lambda r, s: f"{s['per_hour_by_budget']:.0f}"),
        ("exp/hour sustained (goal >= 400)", lambda r, s: f"{s['per_hour']:.0f}"),
        ("deferred writes all made", lambda r, s: "yes" if r["drained"] else "no"),
        ("lost on GitHub", lambda r, s: f"{len(r['lost'])}"),
    ]
    for label, cell in rows:
        print(f"{label:44}" + "".join(f"{cell(results[n], summaries[n]):>{width}}" for n in names))
    for name in names:
        result = results[name]
        n = max(1, result["experiments"])
        print(f"\n{name}: REST requests per experiment by route")
        for route, count in Counter(result["by_route"]).most_common():
            print(f"  {count / n:6.2f}  {route}")
        print(f"{name}: outbox rows by op (done or failed) per experiment")
        for op, count in sorted(result["writes_by_op"].items(), key=lambda kv: -kv[1]):
            print(f"  {count / n:6.2f}  {op}")
        for route, count in Counter(result.get("limited_routes", {})).most_common():
            print(f"  403/429 x{count}: {route}")
        for problem in result["lost"][:10]:
            print(f"  LOST: {problem}")


def run_child(code: Path | None, args: argparse.Namespace, label: str) -> dict[str, Any]:
    """This benchmark in a fresh interpreter whose `bot` (and host code) come from `code`,
    and whose `sandbox` is always this checkout's (the one that records requests)."""
    with tempfile.TemporaryDirectory() as links:
        (Path(links) / "sandbox").symlink_to(ROOT / "sandbox")
        path = [links, str(code or ROOT)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
        out = Path(links) / "result.json"
        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--experiments",
            str(args.experiments),
            "--hosts",
            str(args.hosts),
            "--secondary",
            str(args.secondary),
            "--duration",
            str(args.duration),
            "--hour",
            str(args.hour),
            "--json",
            str(out),
        ]
        print(f"running {label} ({code or ROOT}) ...", flush=True)
        subprocess.run(command, env=env, check=True, cwd=links)
        return dict(json.loads(out.read_text()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiments",
        type=int,
        default=20,
        help="the advisor proposes this many; the run ends when they are all decided",
    )
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--duration", type=float, default=170.0, help="at most this long")
    parser.add_argument(
        "--hour",
        type=float,
        default=60.0,
        help="the rate-limit window in seconds (GitHub: 3600); the budget keeps GitHub's "
        "rate (5,000 an hour), so a short window makes a short run meet the limit",
    )
    parser.add_argument(
        "--secondary", type=int, default=0, help="the sandbox's content-creation limit per minute"
    )
    parser.add_argument("--compare", type=Path, help="another checkout, measured first")
    parser.add_argument("--json", type=Path, help="write the raw figures here")
    args = parser.parse_args()
    if args.compare:
        results = {
            "other": run_child(args.compare.resolve(), args, "the other checkout"),
            "this": run_child(None, args, "this checkout"),
        }
    else:
        results = {"this": measure(args)}
    if args.json:
        args.json.write_text(json.dumps(results["this"], default=list))
        return 0
    report(results)
    return 0 if all(r["experiments"] and not r["lost"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
