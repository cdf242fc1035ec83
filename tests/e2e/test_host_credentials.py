"""A host's credentials cannot write the base: read-only tokens, commits through the bot.

Real parts on loopback: the sandbox GitHub (real git over smart HTTP), the bot
with its host API, and git. The test plays a hostile host: it leases jobs and
tries to push with the token it was given.
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Lab
from trainer import workspace

pytestmark = pytest.mark.timeout(120)


def git(cwd: Path, *args: str, token: str | None = None, check: bool = True) -> str:
    env = workspace.auth_env(token)
    proc = subprocess.run(
        ["git", "-c", "user.name=h", "-c", "user.email=h@h", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc.stdout.strip() + proc.stderr.strip()


def lease(lab: Lab, name: str, token: str) -> dict:
    """The next job for `name`; a busy machine may take a while to sync the new repository."""
    for _ in range(3):
        reply = httpx.post(
            f"{lab.bot_url}/api/hosts/{name}/lease",
            params={"wait": 20},
            headers={"Authorization": f"Bearer {token}"},
            timeout=40,
        )
        if reply.status_code != 204:
            break
    assert reply.status_code == 200, (reply.text, lab.q("SELECT * FROM jobs"))
    return reply.json()


def push_bundle(
    lab: Lab, job: dict, token: str, branch: str, data: bytes, lease_id: str | None = None
) -> httpx.Response:
    return httpx.post(
        f"{lab.bot_url}/api/jobs/{job['id']}/push",
        params={"branch": branch, "lease_id": job["lease_id"] if lease_id is None else lease_id},
        content=data,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def test_a_host_token_cannot_push_and_the_bot_publishes_only_the_experiment_branch(
    make_lab, tmp_path: Path
) -> None:
    lab: Lab = make_lab()
    lab.sandbox.create_repo("lab/other", files={"README.md": "another repository\n"})
    fern = lab.register("fern")
    frieren = lab.register("frieren")

    # The baseline job: a read-only token for this one repository.
    baseline = lease(lab, "fern", fern)
    assert baseline["kind"] == "baseline"
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "--quiet", baseline["clone_url"], str(clone), token=baseline["token"])
    (clone / "train.py").write_text("print('owned')\n")
    git(clone, "commit", "--quiet", "-am", "straight to main")
    refused = git(clone, "push", "origin", "HEAD:main", token=baseline["token"], check=False)
    assert "403" in refused or "denied" in refused, refused
    other = baseline["clone_url"].replace("lab/charlm", "lab/other")
    denied = git(
        tmp_path, "clone", other, str(tmp_path / "o"), token=baseline["token"], check=False
    )
    assert "not found" in denied.lower() or "403" in denied, denied
    # Nor does the bot push anything for a baseline job.
    bundle = workspace.bundle(clone, [baseline["base_sha"]])
    reply = push_bundle(lab, baseline, fern, "main", bundle)
    assert reply.status_code == 403 and "nothing to push" in reply.json()["error"]

    # An experiment's job: the host may publish to that experiment's branch only.
    lab.control.open_issue(
        lab.repo, "Lower the LR", "LEARNING_RATE = 0.001", labels=["student:frieren"], as_user="bob"
    )
    exp = lab.wait(
        "the draft PR",
        lambda: lab.q(
            "SELECT * FROM experiments WHERE pr_number IS NOT NULL AND head_sha IS NOT NULL"
        ),
        timeout=30,
    )[0]
    job = lease(lab, "frieren", frieren)
    assert job["head_ref"] == exp["branch"]
    work = tmp_path / "work"
    git(tmp_path, "clone", "--quiet", job["clone_url"], str(work), token=job["token"])
    git(work, "checkout", "--quiet", "--detach", job["head_sha"])
    (work / "train.py").write_text((work / "train.py").read_text() + "\n# implemented\n")
    git(work, "commit", "--quiet", "-am", "implement")
    tip = git(work, "rev-parse", "HEAD")
    direct = git(work, "push", "origin", f"HEAD:{exp['branch']}", token=job["token"], check=False)
    assert "403" in direct or "denied" in direct, direct
    data = workspace.bundle(work, [job["head_sha"], job["base_sha"]])
    for branch in ("main", "kohai/999-someone-else"):
        reply = push_bundle(lab, job, frieren, branch, data)
        assert reply.status_code == 403, reply.text
    # Another student's host token cannot push for this job, nor an old lease of it.
    assert push_bundle(lab, job, fern, exp["branch"], data).status_code == 409
    stale = push_bundle(lab, job, frieren, exp["branch"], data, lease_id="an-old-lease")
    assert stale.status_code == 409 and "not the current lease" in stale.json()["error"]
    reply = push_bundle(lab, job, frieren, exp["branch"], data)
    assert reply.status_code == 200, reply.text
    assert reply.json()["sha"] == tip
    ref = lab.sandbox.world.repo_path(lab.repo)
    assert git(ref, "rev-parse", f"refs/heads/{exp['branch']}") == tip
    assert git(ref, "rev-parse", "refs/heads/main") == job["base_sha"]
    # The bot pushed with a write token of its own, kept in the bot for its next push
    # (docs/trust.md): neither token a host was given can write.
    tokens = lab.sandbox.world.data["tokens"]
    writers = {
        value
        for value, t in tokens.items()
        if t.get("permissions", {}).get("contents") == "write" and t.get("repos")
    }
    assert writers, "the bot pushed without a repository-scoped write token"
    assert not writers & {job["token"], baseline["token"]}
    # A bundle that rewrites the branch is refused, and so is garbage.
    git(work, "reset", "--quiet", "--hard", job["base_sha"])
    (work / "train.py").write_text("print('rewritten')\n")
    git(work, "commit", "--quiet", "-am", "rewrite history")
    reply = push_bundle(lab, job, frieren, exp["branch"], workspace.bundle(work, [job["base_sha"]]))
    assert reply.status_code == 422 and "fast-forward" in reply.json()["error"]
    reply = push_bundle(lab, job, frieren, exp["branch"], base64.b64encode(b"not a bundle"))
    assert reply.status_code == 422
    assert git(ref, "rev-parse", f"refs/heads/{exp['branch']}") == tip
