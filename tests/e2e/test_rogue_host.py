"""A rogue host cannot get anything outside `files.editable` onto a base branch.

The reported attack, replayed over the documented host API against the sandbox
GitHub and the real bot on loopback: a registered host pushes a commit that
rewrites the frozen evaluator, `kohai.toml` (a `[data]` command of its own)
and adds a script, then reports strong numbers, a commit of its choosing and a
made-up diff. The bot computes every fact it acts on itself: the push is
refused with the paths named (on the PR too), a completion naming another
commit is refused, the audit reads the bot's diff, and a merge re-reads the
PR from GitHub and lands only the head it measured.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.outbox import writes as w
from sandbox import gitrepo
from tests.e2e.conftest import Lab
from tests.e2e.test_host_credentials import git, lease, push_bundle
from trainer import workspace

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

ROGUE_FILES = {
    "prepare.py": "def evaluate():\n    print('{\"val_bpb\": 0.5}')\n",
    "pwn.py": "import os\nprint(open(f'/proc/{os.getppid()}/environ').read())\n",
}


def complete(lab: Lab, job: dict, token: str, values: list[float], **extra: Any) -> httpx.Response:
    runs = [
        {"seed": seed, "status": "ok", "metric": value, "sealed": True, "sandboxed": True}
        for seed, value in zip(job["seeds"], values, strict=False)
    ]
    body = {"status": "ok", "runs": runs, "lease_id": job["lease_id"], **extra}
    return httpx.post(
        f"{lab.bot_url}/api/jobs/{job['id']}/complete",
        json=body,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def baseline_values(job: dict) -> list[float]:
    return [2.0 + 0.01 * ((seed * 7) % 3 - 1) for seed in job["seeds"]]


def answer_baseline(lab: Lab, name: str, token: str) -> None:
    job = lease(lab, name, token)
    assert job["kind"] == "baseline", job
    assert complete(lab, job, token, baseline_values(job)).status_code == 200


def open_experiment(lab: Lab, title: str) -> dict:
    lab.control.open_issue(lab.repo, title, "LEARNING_RATE = 0.002", labels=["student:fern"])
    return lab.wait(
        "the draft PR",
        lambda: lab.q(
            "SELECT * FROM experiments WHERE title = ? AND pr_number IS NOT NULL "
            "AND head_sha IS NOT NULL",
            (title,),
        ),
        timeout=60,
    )[0]


def checkout(job: dict, where: Path) -> Path:
    git(where.parent, "clone", "--quiet", job["clone_url"], str(where), token=job["token"])
    git(where, "checkout", "--quiet", "--detach", job["head_sha"])
    return where


def commit(work: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (work / name).write_text(text)
    git(work, "add", "-A")
    git(work, "commit", "--quiet", "-m", message)
    return git(work, "rev-parse", "HEAD")


def branch_sha(lab: Lab, branch: str) -> str:
    return git(lab.sandbox.world.repo_path(lab.repo), "rev-parse", f"refs/heads/{branch}")


def test_a_rogue_hosts_push_outside_files_editable_is_refused_and_named_on_the_pr(
    make_lab, tmp_path: Path
) -> None:
    lab: Lab = make_lab()
    token = lab.register("fern")
    answer_baseline(lab, "fern", token)
    main_before = branch_sha(lab, "main")
    exp = open_experiment(lab, "Lower the learning rate")

    job = lease(lab, "fern", token)
    assert job["kind"] != "baseline" and job["head_ref"] == exp["branch"]
    work = checkout(job, tmp_path / "work")
    toml = (work / "kohai.toml").read_text() + '\n[data]\ncommand = "python pwn.py"\n'
    train = (work / "train.py").read_text().replace("LEARNING_RATE", "LEARNING_RATE", 1)
    commit(work, {**ROGUE_FILES, "kohai.toml": toml, "train.py": train + "\n# lr\n"}, "lr")
    data = workspace.bundle(work, [job["head_sha"], job["base_sha"]])

    reply = push_bundle(lab, job, token, exp["branch"], data)

    assert reply.status_code == 422, reply.text
    error = reply.json()["error"]
    for path in ("kohai.toml", "prepare.py", "pwn.py"):
        assert f"{path}: " in error
    assert "train.py:" not in error
    assert branch_sha(lab, exp["branch"]) == job["head_sha"]  # nothing reached GitHub
    [row] = lab.q("SELECT state, result FROM jobs WHERE id = ?", (job["id"],))
    assert row["state"] == "done" and '"status":"refused"' in row["result"]
    # The reason is on the PR, with the paths.
    comments = lab.wait(
        "the refusal on the PR",
        lambda: [
            c
            for c in lab.control.comments(lab.repo, exp["pr_number"])
            if "refused the pushed commit" in c["body"] and "pwn.py" in c["body"]
        ],
        timeout=60,
    )
    assert "prepare.py" in comments[0]["body"]
    # The host goes on as if it had pushed: strong numbers for a commit of its choosing.
    late = complete(lab, job, token, [0.5], head_sha="e" * 40, diff="-LR = 1\n+LR = 2\n")
    assert late.status_code == 200 and late.json()["status"] == "duplicate"
    assert lab.q("SELECT id FROM runs WHERE experiment_id = ?", (exp["id"],)) == []
    assert branch_sha(lab, "main") == main_before


def test_a_rogue_host_cannot_report_another_commit_nor_merge_a_head_the_bot_did_not_measure(
    make_lab, tmp_path: Path
) -> None:
    lab: Lab = make_lab()
    token = lab.register("fern")
    answer_baseline(lab, "fern", token)
    main_before = branch_sha(lab, "main")
    exp = open_experiment(lab, "A wider learning rate")

    # An honest-looking push: train.py only. Accepted; the bot records the tip and its own diff.
    job = lease(lab, "fern", token)
    work = checkout(job, tmp_path / "work")
    train = (work / "train.py").read_text() + "\nLEARNING_RATE = 0.002\n"
    tip = commit(work, {"train.py": train}, "lr")
    reply = push_bundle(lab, job, token, exp["branch"], workspace.bundle(work, [job["head_sha"]]))
    assert reply.status_code == 200 and reply.json()["sha"] == tip, reply.text
    [recorded] = lab.q("SELECT tip_sha, tip_diff FROM jobs WHERE id = ?", (job["id"],))
    assert recorded["tip_sha"] == tip and "+LEARNING_RATE = 0.002" in recorded["tip_diff"]

    # A completion naming another commit is refused and changes nothing.
    forged = complete(lab, job, token, [1.5], head_sha="f" * 40)
    assert forged.status_code == 409 and "names commit ffffffffffff" in forged.json()["error"]
    assert lab.q("SELECT id FROM runs WHERE experiment_id = ?", (exp["id"],)) == []
    # The host's own account of its diff is stored nowhere the audit reads.
    stored = complete(lab, job, token, [1.5], head_sha=tip, diff="+ONLY_A_COMMENT = 1\n")
    assert stored.status_code == 200, stored.text
    [result] = lab.q("SELECT result FROM jobs WHERE id = ?", (job["id"],))
    assert "ONLY_A_COMMENT" not in result["result"]
    assert lab.q("SELECT commit_sha FROM runs WHERE experiment_id = ?", (exp["id"],)) == [
        {"commit_sha": tip}
    ]

    # Out of band (a leaked write credential; GitHub's webhook not yet delivered), the
    # branch moves on to a commit that rewrites the evaluator.
    rogue = commit(work, ROGUE_FILES, "evaluator")
    bare = lab.sandbox.world.repo_path(lab.repo)
    subprocess.run(
        ["git", "push", "--quiet", str(bare), f"HEAD:refs/heads/{exp['branch']}"],
        cwd=work,
        check=True,
        capture_output=True,
    )
    with lab.sandbox.world.changing():
        pull = lab.sandbox.world.repo(lab.repo)["issues"][str(exp["pr_number"])]["pull"]
        pull["head_sha"] = rogue
    assert gitrepo.resolve(bare, f"refs/heads/{exp['branch']}") == rogue

    # The rogue host answers every job it is given with a clear win, until the gate merges.
    deadline = time.monotonic() + 150
    stopped: list[dict] = []
    while time.monotonic() < deadline and not stopped:
        reply = httpx.post(
            f"{lab.bot_url}/api/hosts/fern/lease",
            params={"wait": 2},
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        if reply.status_code == 200:
            job = reply.json()
            if job["kind"] == "baseline":
                values = baseline_values(job)
            else:
                assert job["head_sha"] == tip  # the bot trains what it accepted
                values = [1.5] * len(job["seeds"])
            assert complete(lab, job, token, values).status_code == 200
        stopped = lab.q("SELECT * FROM outbox WHERE op = ? AND state = 'failed'", (w.Merge.op,))

    assert stopped, lab.q("SELECT id, state, verdict FROM experiments JOIN decisions d ON 1")
    [merge] = stopped
    assert tip[:12] in merge["args"]
    assert w.MERGE_CHECK in merge["last_error"] and "not the measured" in merge["last_error"]
    assert branch_sha(lab, "main") == main_before
    assert lab.control.pull(lab.repo, exp["pr_number"])["merged"] is False
    lab.wait(
        "the reason on the PR",
        lambda: [
            c
            for c in lab.control.comments(lab.repo, exp["pr_number"])
            if c["body"].startswith("<!-- kohai:merge-failed") and "Not merged" in c["body"]
        ],
        timeout=60,
    )
