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

GitHub's hour is shortened (`--hour`, default 30 s) with the budget scaled to
keep GitHub's rate, 5,000 requests an hour (42 per 30 s): a run of a few
minutes then meets the limit as a busy hour would. The bot is told the
window. Experiments per hour sustained are those decided over every window
the installation used until all their writes were made, each window counted
whole (`sustained_per_hour`): decided experiments over the run time alone
would leave out the writes made after it. The bot's own content-creation pacing (80 a
minute, 500 an hour) is off: it binds first, and the bench prints the
ceiling it sets (500 / content-creating requests per experiment;
docs/scale.md).

After `--duration` the advisor proposes nothing more and the experiments in
flight are finished; then the hosts stop, the outbox gets one more window to
make what it deferred, and the bench reads the sandbox's record of every API request:
REST requests per decided experiment (by route), the outbox's writes per
experiment (by kind), any 403/429, and experiments per hour. It checks that
nothing a user sees was lost: every decided PR closed or merged as its
experiment, with its status comment, its results and no stale status label.

    python bench/github_budget.py [--experiments 0] [--hosts 3] [--hour 30] [--duration 180]
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
import shutil
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
CONTENT_PER_HOUR = 500  # GitHub's secondary limit on content-generating requests


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


SIM_KNOBS = 24  # extra knobs, so the offline advisor does not run out of one-knob moves


def simulated_problem(work: Path) -> Path:
    """The reference problem with `SIM_KNOBS` more knobs to search (constants in
    train.py, each declared in [search]): the offline advisor makes every one-knob move
    from the incumbent once (about 15 for the reference problem's five knobs) and then
    proposes nothing until a merge, which a real lab's advisor does not; the bench must
    measure GitHub's budget, not the end of a small search space. Training is
    simulated, so the knobs only need to be there."""
    problem = work / "problem"
    shutil.copytree(CHARLM, problem, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    names = [f"SIM_KNOB_{i:02d}" for i in range(SIM_KNOBS)]
    train = problem / "train.py"
    train.write_text(train.read_text() + "".join(f"{name} = 0.5\n" for name in names))
    toml = problem / "kohai.toml"
    declared = "".join(f"{name} = {{ min = 0.0, max = 1.0 }}\n" for name in names)
    text = toml.read_text()
    if "[search]\n" not in text:
        raise SystemExit("the reference problem has no [search] table to extend")
    toml.write_text(text.replace("[search]\n", "[search]\n" + declared, 1))
    return problem


# -- one run -------------------------------------------------------------------------


def finished(lab: Any) -> int:
    return int(
        lab.q("SELECT COUNT(*) AS n FROM experiments WHERE state IN ('merged', 'closed')")[0]["n"]
    )


def proposed(lab: Any) -> int:
    return int(lab.q("SELECT COUNT(*) AS n FROM experiments WHERE source = 'advisor'")[0]["n"])


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
    random.seed(1)
    logging.disable(logging.WARNING)
    budget = max(1, round(BUDGET * args.hour / 3600))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        problem = simulated_problem(work)
        CHARLM_BASE_TEXT_DIGEST = hashlib.sha256((problem / "train.py").read_bytes()).hexdigest()
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
        lab.add_repo(REPO, from_path=problem)
        stopping, workers = start_hosts(lab, args.hosts, work)
        resets: set[float] = set()  # the ends of the installation's windows, as seen
        try:
            while time.monotonic() < started + args.duration:
                resets.update(window_ends(lab))
                if args.experiments and finished(lab) >= args.experiments:
                    break
                time.sleep(0.25)
            elapsed = time.monotonic() - started
            # No new proposals; the experiments in flight are finished, so that every
            # request the run spent belongs to an experiment it counts.
            advisor = lab.ctx.extra.get("advisor_loop")
            if advisor is not None:
                advisor.max_experiments = proposed(lab)
            deadline = time.monotonic() + args.hour * 2
            while time.monotonic() < deadline and finished(lab) < proposed(lab):
                resets.update(window_ends(lab))
                time.sleep(0.25)
            done = finished(lab)
            in_flight = proposed(lab) - done
            stopping.set()
            for worker in workers:
                worker.join(timeout=30)
            # What waited for the budget is written once the window resets.
            deadline = time.monotonic() + args.hour + 30
            while time.monotonic() < deadline and not settled(lab):
                resets.update(window_ends(lab))
                time.sleep(0.25)
            drained = settled(lab)
            resets.update(window_ends(lab))
            settled_s = time.monotonic() - started
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
        "settled_s": settled_s,
        "in_flight": in_flight,
        "windows": len(resets),
        "hour_s": args.hour,
        "budget_per_window": budget,
        "hosts": args.hosts,
        "rest_counted": sum(1 for r in rest if r["counted"]),
        "rest_not_modified": sum(1 for r in rest if r["status"] == 304),
        "content": sum(1 for r in installation if r.get("content") and r["status"] < 400),
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


def window_ends(lab: Any) -> list[float]:
    """When the installation's current core window ends (the sandbox's `reset`)."""
    return [
        float(b["reset"])
        for b in lab.control.limits()["budgets"]
        if b["who"].startswith("installation:") and b["resource"] == "core"
    ]


def sustained_per_hour(decided: int, windows: int, window_s: float, settled_s: float) -> float:
    """Experiments per hour that the budget sustained: those decided while the hosts ran,
    over every window the installation used until all their writes were made (the
    drain after the run included), each counted whole, or over the time it took if
    longer. The sandbox lets the installation spend its budget and no more in a window,
    so no burst at the start and no write left for after the run can flatter it."""
    span = max(windows * window_s, settled_s)
    return decided / span * 3600 if span > 0 else 0.0


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
        "content_per_experiment": result.get("content", 0) / n,
        "per_hour_by_content": CONTENT_PER_HOUR * n / max(1, result.get("content", 0)),
        "per_hour": sustained_per_hour(
            result["experiments"],
            result.get("windows", 0),
            result["hour_s"],
            result.get("settled_s", result["elapsed_s"]),
        ),
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
        (
            "content-creating requests / experiment",
            lambda r, s: f"{s['content_per_experiment']:.1f}",
        ),
        ("500 / content-creating per experiment", lambda r, s: f"{s['per_hour_by_content']:.0f}"),
        (
            "windows used, until all written",
            lambda r, s: f"{r.get('windows', 0)} ({r.get('settled_s', 0):.0f} s)",
        ),
        ("exp/hour sustained (goal >= 400)", lambda r, s: f"{s['per_hour']:.0f}"),
        ("left undecided at the end", lambda r, s: f"{r.get('in_flight', '-')}"),
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
        default=0,
        help="the advisor proposes this many and the run ends when they are all decided "
        "(0: as many as the run has time for)",
    )
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument(
        "--duration",
        type=float,
        default=150.0,
        help="the advisor proposes for this long (then what is in flight is finished)",
    )
    parser.add_argument(
        "--hour",
        type=float,
        default=30.0,
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
