"""A lab under fire: the bot SIGKILLed and restarted, a host killed, GitHub answering faults.

Shared by the chaos test (`tests/e2e/test_chaos.py`, short) and `bench/chaos.py`
(longer). Everything is real and on loopback: the sandbox GitHub in this
process, the bot as a child process (`python -m bot.cli.chaos bot`) on
one SQLite file that outlives each kill, and two host daemons as children.
The problem is a tiny pure-Python one, so the minute goes to the bookkeeping
under test rather than to training.

`invariants` then checks what "nothing lost, nothing happens twice" means on
GitHub and in the store, and returns the number of violations of each.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bot.cli.lab import free_port

if TYPE_CHECKING:
    from bot.store import Store

ROOT = Path(__file__).resolve().parents[2]
REPO = "lab/chaos"
MARKER = re.compile(r"<!-- kohai:([\w.:/-]+?) -->")

TRAIN = """\
import json, os, time
LR = 0.1
seed = int(os.environ["KOHAI_SEED"])
time.sleep(0.3)
with open(os.environ["KOHAI_METRICS_FILE"], "a") as fh:
    fh.write(json.dumps({"step": 1, "train_loss": 1.0}) + "\\n")
print(f"loss: {abs(LR - 0.03) * 10 + 1 + seed / 1000:.6f}", flush=True)
"""

TOML = """\
[metric]
name = "loss"
direction = "minimize"

[train]
command = "python train.py"
budget = "20s"
grace = "5s"
seeds = 1
confirm_seeds = 2
baseline_seeds = 2

[files]
editable = ["train.py"]
frozen = ["prepare.py"]

[search]
LR = { min = 0.001, max = 1.0, log = true }
"""


def problem_files() -> dict[str, str]:
    return {
        "kohai.toml": TOML,
        "program.md": "Find the learning rate.\n",
        "prepare.py": "OFFSET = 1.0\n",
        "train.py": TRAIN,
    }


@dataclass
class ChaosLab:
    """The sandbox, a killable bot process and two host processes around one SQLite file."""

    tmp: Path
    lease_s: float = 12.0
    log: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        from sandbox.control import SandboxControl
        from sandbox.server import SandboxServer

        self.port = free_port()
        self.bot_url = f"http://127.0.0.1:{self.port}"
        self.sandbox = SandboxServer(
            self.tmp / "gh", webhook_url=f"{self.bot_url}/webhooks/github"
        ).start()
        self.control = SandboxControl(self.sandbox.url)
        self.db = self.tmp / "kohai.db"
        self.bot: subprocess.Popen[bytes] | None = None
        self.hosts: dict[str, subprocess.Popen[bytes]] = {}
        self.tokens: dict[str, str] = {}
        self.kills = {"bot": 0, "host": 0}
        self.sandbox.create_repo(REPO, files=problem_files())

    # ------------------------------------------------------------- processes

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "KOHAI_GITHUB_APP_ID": str(self.sandbox.app_id),
            "KOHAI_GITHUB_PRIVATE_KEY": self.sandbox.private_key_pem,
            "KOHAI_WEBHOOK_SECRET": self.sandbox.webhook_secret,
            "KOHAI_GITHUB_API_URL": self.sandbox.url,
            "KOHAI_DB": str(self.db),
            "KOHAI_ADVISOR": "off",  # reviews run; only the humans' issues open experiments
            "KOHAI_CHAOS_LEASE_S": str(self.lease_s),
            "KOHAI_CHAOS_PORT": str(self.port),
            "KOHAI_BOT_WAIT_S": "600",  # a host started while the bot is killed waits for it
            "WANDB_MODE": "disabled",
            "KOHAI_WANDB": "disabled",
        }

    def start_bot(self) -> None:
        out = open(self.tmp / "bot.log", "ab")  # the child keeps it
        self.bot = subprocess.Popen(
            [sys.executable, "-m", "bot.cli.chaos", "bot"],
            env=self.env(),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        self._wait_up()

    def _wait_up(self, timeout: float = 30.0) -> None:
        import httpx

        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if httpx.get(f"{self.bot_url}/livez", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.bot is not None and self.bot.poll() is not None:
                raise RuntimeError(f"the bot exited: see {self.tmp / 'bot.log'}")
            time.sleep(0.1)
        raise RuntimeError("the bot did not come up")

    def kill_bot(self) -> None:
        assert self.bot is not None
        self.bot.send_signal(signal.SIGKILL)
        self.bot.wait()
        self.kills["bot"] += 1
        self.log.append(f"{time.strftime('%X')} bot SIGKILLed")

    def add_host(self, name: str) -> None:
        from bot.engine.jobs import register_student
        from bot.store import Store

        if name not in self.tokens:
            store = Store(self.db)
            self.tokens[name] = register_student(store, name)
            store.close()
        from trainer.daemon import spawn

        out = open(self.tmp / f"host-{name}.log", "ab")
        self.hosts[name] = spawn(
            name,
            self.tokens[name],
            self.bot_url,
            self.tmp / f"host-{name}",
            env=self.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def wait_synced(self, timeout: float = 30.0) -> None:
        """Until the bot has read the repository (its knobs are known when issues arrive)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            store = self.store()
            row = store.one("SELECT problem_toml FROM repos WHERE full_name = ?", (REPO,))
            store.close()
            if row and row["problem_toml"]:
                return
            time.sleep(0.2)
        raise RuntimeError("the bot never synced the repository")

    def kill_host(self, name: str) -> None:
        self.hosts[name].send_signal(signal.SIGKILL)
        self.hosts[name].wait()
        self.kills["host"] += 1
        self.log.append(f"{time.strftime('%X')} host {name} SIGKILLed")

    def stop(self) -> None:
        for process in [*self.hosts.values(), self.bot]:
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait()
        self.control.disconnect()
        self.sandbox.stop()

    # ------------------------------------------------------------- looking

    def store(self) -> Store:
        from bot.store import Store

        return Store(self.db)

    def quiet(self) -> bool:
        """Nothing left to do: no pending delivery, write or job, no review waiting."""
        store = self.store()
        try:
            busy = store.one(
                "SELECT (SELECT COUNT(*) FROM inbox WHERE status = 'pending') "
                "+ (SELECT COUNT(*) FROM outbox WHERE state = 'pending') "
                "+ (SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased')) "
                "+ (SELECT COUNT(*) FROM experiments WHERE state NOT IN ('merged', 'closed', 'review')) "
                "+ (SELECT COUNT(*) FROM experiments WHERE state = 'review' AND review_requested = 1) "
                "+ (SELECT COUNT(*) FROM repos WHERE synced_at IS NULL) AS n"
            )
            return busy is not None and busy["n"] == 0
        finally:
            store.close()

    def invariants(self, issues: list[int]) -> dict[str, int]:
        """Violations of each invariant (all zero when nothing was lost or doubled)."""
        from bot.records import Delivery, Experiment, Run

        store = self.store()
        try:
            exps = store.rows(Experiment)
            runs = store.rows(Run, "kind = 'candidate'")
            pulls = self.control.pulls(REPO)
            numbers = {p["number"] for p in pulls} | set(issues)
            comments = {n: self.control.comments(REPO, n) for n in numbers}
            bot_login = "kohai[bot]"
            duplicated = 0
            for thread in comments.values():
                marks = Counter(
                    m
                    for c in thread
                    if (c.get("user") or {}).get("login", bot_login).endswith("[bot]")
                    for m in MARKER.findall(c.get("body") or "")
                )
                duplicated += sum(n - 1 for n in marks.values() if n > 1)
            prs_per_issue = Counter(
                int(m.group(1))
                for p in pulls
                if (m := re.search(r"Requested in #(\d+)", p.get("body") or ""))
            )
            issue_prs = sum(1 for n in issues if prs_per_issue.get(n, 0) != 1)
            by_pr = {e.pr_number: e for e in exps if e.pr_number}
            without_results = 0
            for exp_id in {r.experiment_id for r in runs}:
                # One sticky results comment per PR, edited as its jobs finish.
                exp = next(e for e in exps if e.id == exp_id)
                thread = comments.get(exp.pr_number, []) if exp.pr_number else []
                if not any(
                    f"<!-- kohai:results:{exp_id} -->" in (c.get("body") or "") for c in thread
                ):
                    without_results += 1
            seen = Counter((r.experiment_id, r.commit_sha, r.base_sha, r.seed) for r in runs)
            doubled = sum(n - 1 for n in seen.values() if n > 1)
            mismatched = 0
            for pull in pulls:
                known = by_pr.get(pull["number"])
                if known is None:
                    mismatched += 1  # a PR the store does not know
                    continue
                merged = bool(pull.get("merged") or pull.get("merged_at"))
                github = "merged" if merged else pull["state"]
                mine = {"merged": "merged", "closed": "closed"}.get(known.state, "open")
                if github != mine:
                    mismatched += 1
            routed = set()
            for delivery in store.rows(Delivery, "event = 'issue_comment' AND status = 'routed'"):
                routed.add((json.loads(delivery.payload).get("comment") or {}).get("id"))
            commands_lost = sum(
                1
                for thread in comments.values()
                for c in thread
                if not (c.get("user") or {}).get("login", "").endswith("[bot]")
                and (c.get("body") or "").startswith("/")
                and c.get("id") not in routed
            )
            stuck = 0 if self.quiet() else 1
            failed_writes = store.count("SELECT COUNT(*) AS n FROM outbox WHERE state = 'failed'")
            failed_deliveries = store.count(
                "SELECT COUNT(*) AS n FROM inbox WHERE status = 'failed'"
            )
            return {
                "duplicated markers": duplicated,
                "labelled issues without exactly one PR": issue_prs,
                "experiment results without their comment": without_results,
                "runs stored twice": doubled,
                "commands never carried out": commands_lost,
                "PR states differing from the store": mismatched,
                "stuck": stuck,
                "writes failed for good": failed_writes,
                "deliveries failed": failed_deliveries,
            }
        finally:
            store.close()


@dataclass
class ChaosReport:
    issues: int
    experiments: int
    runs: int
    kills: dict[str, int]
    violations: dict[str, int]
    seconds: float
    log: list[str]


def run_chaos(
    tmp: Path,
    *,
    issues: int = 3,
    bot_kills: int = 2,
    faults: int = 2,
    seed: int = 0,
    settle_s: float = 60.0,
    lease_s: float = 12.0,
) -> ChaosReport:
    """Open labelled issues, kill the bot `bot_kills` times and one host once, inject
    GitHub faults, then wait for the lab to go quiet and check the invariants."""
    rng = random.Random(seed)
    start = time.time()
    lab = ChaosLab(tmp, lease_s=lease_s)
    opened: list[int] = []
    try:
        lab.start_bot()
        lab.add_host("fern")
        lab.add_host("frieren")
        lab.wait_synced()
        lrs = [0.01, 0.03, 0.3, 0.05, 0.02, 0.5, 0.04, 0.2]
        for n in range(issues):
            student = ["student:fern", "student:frieren", "student:any"][n % 3]
            issue = lab.control.open_issue(
                REPO, f"Try LR {lrs[n % len(lrs)]}", f"LR = {lrs[n % len(lrs)]}", labels=[student]
            )
            opened.append(issue["number"])
        host_killed = False
        for kill in range(bot_kills):
            time.sleep(rng.uniform(1.0, 3.0))
            if kill == bot_kills - 1 or kill % 2 == 1:
                lab.control.fault(faults, "502")
                lab.control.fault(faults, "secondary_rate_limit", retry_after=1)
            lab.kill_bot()
            # While the bot is down a writer acts: the webhook fails and must be caught up.
            store = lab.store()
            pr = store.one(
                "SELECT pr_number FROM experiments WHERE pr_number IS NOT NULL "
                "AND state NOT IN ('merged', 'closed') ORDER BY id LIMIT 1"
            )
            store.close()
            if pr:
                lab.control.comment(REPO, pr["pr_number"], "/rerun")
                lab.log.append(f"{time.strftime('%X')} /rerun on #{pr['pr_number']} while down")
            time.sleep(rng.uniform(0.5, 1.5))
            lab.start_bot()
            if not host_killed:
                time.sleep(rng.uniform(0.5, 1.5))
                lab.kill_host("frieren")
                host_killed = True
                lab.add_host("frieren")  # it comes back (as a restarted pod would)
        deadline = time.time() + settle_s
        while time.time() < deadline and not lab.quiet():
            time.sleep(0.5)
        violations = lab.invariants(opened)
        store = lab.store()
        experiments = store.count("SELECT COUNT(*) AS n FROM experiments")
        runs = store.count("SELECT COUNT(*) AS n FROM runs")
        store.close()
        return ChaosReport(
            issues=len(opened),
            experiments=experiments,
            runs=runs,
            kills=dict(lab.kills),
            violations=violations,
            seconds=round(time.time() - start, 1),
            log=lab.log,
        )
    finally:
        lab.stop()


def bot_main() -> int:
    """The bot as the chaos test runs it: `kohai serve` without GitHub pacing, short leases."""
    import logging

    import uvicorn

    from bot.cli.serve import build_context
    from bot.config import Settings
    from bot.github.client import GitHubApp
    from webhooks.app import create_app

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    github = GitHubApp(
        settings.app_id,
        settings.private_key,
        settings.github_api_url,
        content_per_minute=None,
        content_per_hour=None,
        writes_per_minute=None,
    )
    ctx = build_context(settings, github=github)
    ctx.jobs.lease_seconds = float(os.environ.get("KOHAI_CHAOS_LEASE_S", "12"))
    ctx.extra["catch_up_every_s"] = 5.0
    app = create_app(ctx)
    uvicorn.run(
        app, host="127.0.0.1", port=int(os.environ["KOHAI_CHAOS_PORT"]), log_level="warning"
    )
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["bot"]:
        raise SystemExit(bot_main())
    report = run_chaos(Path(sys.argv[1]) if sys.argv[1:] else Path("/tmp/kohai-chaos"))
    print(json.dumps(report.__dict__, indent=2))
