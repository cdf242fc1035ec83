"""`kohai demo`: the whole lab on this machine, end to end, on its embedded defaults.

On loopback, in a work directory: the GitHub sandbox with two problem repos,
two labs (the reference problem, and the same problem with a model twice as
wide, weighted 2 to 1), the App installed on both, the bot pointed at them,
local students as host daemons on the CPU shared between the labs by weight,
and the advisor (offline without an Anthropic key). Scripted humans act along the way: a writer opens an issue
for fern, a writer's `/rerun` is accepted, a read-only user's is refused.
Everything goes through the real path: webhooks, outbox, leases, git over HTTP.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.cli.lab import LabError, LocalLab, port_free
from bot.records import Experiment
from bot.render import numbers

ROOT = Path(__file__).resolve().parents[2]
CHARLM = ROOT / "trainer" / "examples" / "charlm"
STUDENT_NAMES = ["fern", "frieren", "himmel", "heiter", "eisen", "stark", "ubel", "lawine"]
REPO = "lab/charlm"
WIDE_REPO = "lab/charlm-wide"
WIDE_EMBD = 128  # the second lab's model: twice the reference width
DEADLINE_S = 20 * 60
# The demo's lab starts from a deliberately timid learning rate, so that there is
# something real to find within a few minutes of CPU time.
START_LEARNING_RATE = "1e-3"
HUMAN_HYPOTHESIS = (
    "The loss curves are still falling steeply when the budget runs out: the model is "
    "under-trained, not over-fitted. A larger learning rate should reach a lower val_bpb "
    "within the same time budget.\n\nLEARNING_RATE = 3e-3\n"
)


class DemoError(LabError):
    """A part of the demo could not start; the message says which and why."""


def preflight(port: int) -> None:
    for module, why in (
        ("torch", "the reference problem trains with it"),
        ("uvicorn", "serves the bot"),
    ):
        if importlib.util.find_spec(module) is None:
            raise DemoError(
                f"missing package {module!r} ({why}); `make demo` installs it into .venv"
            )
    if shutil.which("git") is None:
        raise DemoError("git is not installed; the sandbox keeps real git repositories")
    if port and not port_free(port):
        raise DemoError(f"port {port} is in use; pick another with --port")
    if not CHARLM.is_dir():
        raise DemoError(f"the reference problem is missing at {CHARLM}")


def cpu_shares(students: int, cpus: set[int] | None = None) -> list[set[int]]:
    """Disjoint cores for each student's host, so no run shares a core with another run.

    On a laptop the students are CPU "GPUs": a candidate trained beside another
    run under a time budget would take fewer steps than a baseline trained
    alone, and the gate would read contention as the idea's effect. Giving each
    student its own cores keeps every run's conditions alike without changing
    the problem's time budget. With fewer cores than students they share all.
    """
    available = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    if len(available) < students:
        return [set(available) for _ in range(students)]
    return [set(available[i::students]) for i in range(students)]


def problem_files(budget: str) -> dict[str, str]:
    """The reference problem with the demo's budget."""
    files = {p.name: p.read_text() for p in CHARLM.iterdir() if p.is_file()}
    toml = files["kohai.toml"]
    toml = re.sub(r"^budget = .*$", f'budget = "{budget}"', toml, count=1, flags=re.M)
    toml = re.sub(r"^confirm_seeds = .*$", "confirm_seeds = 3", toml, flags=re.M)
    toml = re.sub(r"^baseline_seeds = .*$", "baseline_seeds = 3", toml, flags=re.M)
    files["kohai.toml"] = toml
    files["train.py"] = re.sub(
        r"^LEARNING_RATE = .*$",
        f"LEARNING_RATE = {START_LEARNING_RATE}",
        files["train.py"],
        flags=re.M,
    )
    return files


def wide_problem_files(budget: str) -> dict[str, str]:
    """The second lab: the reference problem with a wider model and twice the weight."""
    files = problem_files(budget)
    files["train.py"] = re.sub(
        r"^N_EMBD = .*$", f"N_EMBD = {WIDE_EMBD}", files["train.py"], count=1, flags=re.M
    )
    files["kohai.toml"] += "\n[lab]\nweight = 2  # this lab gets two thirds of the students' time\n"
    return files


def lab_repos(labs: int) -> list[str]:
    """The demo's labs: the reference problem first, then the wide one."""
    return [REPO, WIDE_REPO][: max(1, min(labs, 2))]


def per_lab_experiments(experiments: int, labs: int) -> int:
    """Advisor experiments per lab so that the labs together finish about `experiments`."""
    return max(1, -(-experiments // max(1, labs)))


@dataclass
class Demo:
    args: argparse.Namespace
    work: Path
    hosts: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    acted: set[str] = field(default_factory=set)
    t0: float = field(default_factory=time.time)

    # ---------------------------------------------------------------- start

    def start(self) -> None:
        from trainer import sandbox

        self.repos = lab_repos(getattr(self.args, "labs", 2))
        self.per_lab = per_lab_experiments(self.args.experiments, len(self.repos))
        self.lab = LocalLab(
            self.work,
            port=self.args.port or None,
            advisor=True,
            anthropic_api_key=os.environ.get("ANTHROPIC_API_KEY") or None,
            max_experiments=self.per_lab,
            graceful_s=3,
            dashboard_public=True,  # KOHAI_DASHBOARD_PUBLIC=1: the local demo has no sign-in
        )
        self.lab.start()
        self.sandbox, self.control, self.store = self.lab.sandbox, self.lab.control, self.lab.store
        self.ctx, self.bot_url, self.hosts = self.lab.ctx, self.lab.bot_url, self.lab.hosts
        self.lab.add_repo(REPO, files=problem_files(self.args.budget))
        if WIDE_REPO in self.repos:
            self.lab.add_repo(WIDE_REPO, files=wide_problem_files(self.args.budget))
        names = STUDENT_NAMES[: self.args.students] + [
            f"student-{i}" for i in range(len(STUDENT_NAMES), self.args.students)
        ]
        # The demo runs the lab's own reference problem; where bubblewrap cannot
        # start, it still runs, and its results say "unsandboxed".
        unsandboxed = sandbox.probe() is not None
        env = {"WANDB_DIR": str(self.work), "WANDB_SILENT": "true"}
        for name, cpus in zip(names, cpu_shares(len(names)), strict=True):
            self.lab.add_host(name, env=env, cpus=cpus, unsandboxed=unsandboxed)

    # --------------------------------------------------------------- humans

    def act_as_humans(self) -> None:
        """What people do in the demo's story, each once, when its moment comes."""
        baseline = self.store.count(
            "SELECT COUNT(*) AS n FROM runs u JOIN repos r ON r.id = u.repo_id "
            "WHERE u.kind = 'baseline' AND r.full_name = ?",
            (REPO,),
        )
        if "issue" not in self.acted and baseline:
            self.acted.add("issue")
            issue = self.control.open_issue(
                REPO,
                "Raise the learning rate to 3e-3",
                HUMAN_HYPOTHESIS,
                labels=["student:fern"],
                as_user="bob",
            )
            self.say(f"bob opened issue #{issue['number']} labelled student:fern")
        human = self.store.first(
            Experiment,
            "source = 'human' AND pr_number IS NOT NULL AND state = 'training' "
            "AND repo_id = (SELECT id FROM repos WHERE full_name = ?)",
            (REPO,),
            order_by="id",
        )
        if "rerun" not in self.acted and human is not None and human.pr_number is not None:
            self.acted.add("rerun")
            number = human.pr_number
            self.control.comment(REPO, number, "/rerun", as_user="carol")
            self.say(f"carol (read-only) commented /rerun on #{number}")
            self.control.comment(REPO, number, "/rerun seeds=2", as_user="bob")
            self.say(f"bob (writer) commented /rerun seeds=2 on #{number}")

    # ------------------------------------------------------------- progress

    def say(self, text: str) -> None:
        print(f"[{time.time() - self.t0:6.1f}s] {text}", flush=True)

    def snapshot(self) -> dict[str, Any]:
        from bot import queries
        from bot.engine import labs
        from bot.engine.engine import Repo
        from bot.records import Repository

        found = self.store.first(Repository, "full_name = ?", (REPO,))
        problem = Repo.of(found).problem if found and found.problem_toml else None
        exps = queries.experiments(self.store)
        done = [e for e in exps if e.state in ("merged", "closed")]
        students = queries.students(self.store)
        best = (
            queries.best_over_experiments(self.store, problem, found.id)
            if found and problem
            else None
        )
        return {
            "experiments": exps,
            "done": done,
            "students": students,
            "best": best,
            "problem": problem,
            "labs": labs.lab_rows(self.store),
        }

    def render(self, snap: dict[str, Any]) -> str:
        lines = [f"kohai demo — {time.time() - self.t0:5.0f}s — dashboard {self.bot_url}"]
        for s in snap["students"]:
            what = f"PR #{s.pr_number} {s.title[:40]}" if s.pr_number else (s.job_kind or "")
            where = f"{s.repo:<16} " if getattr(s, "repo", None) else ""
            lines.append(f"  {s.name:<9} {s.state:<13} {where}{what}")
        for lab in snap.get("labs") or []:
            base = numbers.number(lab.baseline) if lab.baseline is not None else "measuring"
            lines.append(
                f"  lab {lab.lab:<16} baseline {base} · best {numbers.number(lab.best)} · "
                f"{lab.experiments} experiments · GPU share {100 * lab.measured_share:3.0f}% "
                f"(weight {lab.weight:g} → {100 * lab.target_share:.0f}%)"
            )
        merged = sum(1 for e in snap["done"] if e.state == "merged")
        lines.append(
            f"  experiments finished {len(snap['done'])}/{self.target()} (merged {merged})"
        )
        return "\n".join(lines)

    def target(self) -> int:
        return self.per_lab * len(self.repos) + 1  # the advisor's in each lab plus the human's

    def run(self) -> int:
        last = ""
        tty = sys.stdout.isatty()
        drawn = 0
        while True:
            self._check_hosts()
            self.act_as_humans()
            snap = self.snapshot()
            text = self.render(snap)
            if tty:
                if drawn:
                    sys.stdout.write(f"\x1b[{drawn}F\x1b[J")
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
                drawn = text.count("\n") + 1
            elif text.split("\n", 1)[1] != last:
                print(text, flush=True)
                last = text.split("\n", 1)[1]
            if len(snap["done"]) >= self.target() and self._quiet():
                return self.finish(snap)
            if time.time() - self.t0 > DEADLINE_S:
                print(f"kohai demo: stopped after {DEADLINE_S // 60} minutes", file=sys.stderr)
                self.finish(snap)
                return 1
            time.sleep(1.0)

    def _quiet(self) -> bool:
        """No job queued or running and no GitHub write pending: the story is told."""
        busy = self.store.count(
            "SELECT (SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased')) + "
            "(SELECT COUNT(*) FROM outbox WHERE state = 'pending') AS n"
        )
        return busy == 0

    def _check_hosts(self) -> None:
        for name, process in self.hosts.items():
            if process.poll() is not None:
                log = (self.work / f"host-{name}.log").read_text(errors="replace")[-2000:]
                raise DemoError(f"the host of student {name} exited ({process.returncode}):\n{log}")

    # -------------------------------------------------------------- the end

    def finish(self, snap: dict[str, Any]) -> int:
        from bot import queries
        from bot.cli.history import format_table
        from bot.engine import labs
        from bot.render.report import write_report

        problem = snap["problem"]
        metric = problem.metric if problem else "metric"
        for lab in labs.lab_rows(self.store):
            found = labs.stored_problem(self.store, lab.lab)
            rows = queries.leaderboard(
                self.store, lab.repo_id, problem=found[1] if found else problem
            )
            print(
                f"\nLeaderboard of {lab.lab} (merged winners; GPU share "
                f"{100 * lab.measured_share:.0f}% for weight {lab.weight:g})"
            )
            if rows:
                print(
                    format_table(
                        [
                            "rank",
                            "PR",
                            "title",
                            "student",
                            lab.metric,
                            "seeds",
                            "claimed Δ",
                            "measured Δ",
                        ],
                        [
                            [
                                r.rank,
                                f"#{r.pr_number}",
                                r.title[:48],
                                r.student,
                                numbers.number(r.mean),
                                r.seeds,
                                numbers.number(r.claimed_gain, "+.4f"),
                                numbers.number(r.measured_gain, "+.4f"),
                            ]
                            for r in rows
                        ],
                    )
                )
            else:
                print("  none merged: no experiment beat the baseline by more than seed noise")
        print("\nExperiments")
        print(
            format_table(
                ["lab", "PR", "state", "student", "source", metric, "seeds", "decision"],
                [
                    [
                        e.repo,
                        f"#{e.pr_number}",
                        e.state,
                        e.student,
                        e.source,
                        numbers.number(e.mean),
                        e.seeds,
                        (e.verdict or "") + (f" ({e.actor})" if e.actor else ""),
                    ]
                    for e in reversed(snap["experiments"])
                ],
            )
        )
        report = write_report(self.store, problem, self.work / "report", html_base=self.sandbox.url)
        repo_path = self.sandbox.repo_path(REPO)
        log = subprocess.run(
            ["git", "log", "--oneline", "-n", "10", "main"],
            cwd=repo_path,
            capture_output=True,
            text=True,
        ).stdout
        print(f"\nReport: {report}")
        print(f"Sandbox repository (git history holds the merged winners): {repo_path}")
        print(log.rstrip())
        print(
            f"Database: {self.work / 'kohai.db'}   "
            f"(try: KOHAI_DB={self.work / 'kohai.db'} kohai status, "
            f"or kohai history --repo {REPO})"
        )
        return 0

    def stop(self) -> None:
        import logging

        logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)  # open long-polls at exit
        if hasattr(self, "lab"):
            self.lab.stop()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM cleans up like Ctrl-C does."""
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    for noisy in ("httpx", "httpx2", "kohai", "bot"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        preflight(args.port)
    except DemoError as exc:
        print(f"kohai demo: {exc}", file=sys.stderr)
        return 2
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="kohai-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"kohai demo: {args.students} students shared by {min(max(args.labs, 1), 2)} labs, "
        f"{args.experiments} advisor experiments + 1 human, budget {args.budget}; "
        f"work directory {work}",
        flush=True,
    )
    demo = Demo(args, work)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        demo.start()
        code = demo.run()
        if args.keep_serving:
            print(f"\nDashboard: {demo.bot_url}  (Ctrl-C to stop)", flush=True)
            while True:
                time.sleep(3600)
        return code
    except DemoError as exc:
        print(f"kohai demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nkohai demo: interrupted; stopping the students and servers", file=sys.stderr)
        return 130
    finally:
        demo.stop()
