"""Two labs on one App installation, against the sandbox GitHub over loopback.

The sandbox installs the App on a second repository (GitHub's
`installation_repositories` event), the bot syncs both through githubkit, and
the advisor loop proposes in each. Removing the App from one repository (a
signed delivery, as GitHub sends it) stops that lab: its queued work is
cancelled with the reason and it gets no more proposals.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx

from agents.loop import AdvisorLoop
from agents.offline.advisor import OfflineAdvisor
from bot.store import now
from tests.conftest import sign
from tests.e2e.conftest import Lab, problem_files

WIDE = "lab/wide"


def _wide_files() -> dict[str, str]:
    files = problem_files()
    files["kohai.toml"] += "\n[lab]\nweight = 2\n"
    return files


def _idle(lab: Lab, *names: str) -> None:
    """Students whose hosts are polling now (what `idle_students` looks for)."""
    for name in names:
        lab.register(name)
        lab.store.execute("UPDATE students SET last_seen = ? WHERE name = ?", (now(), name))


def test_two_repositories_are_two_labs_and_removing_one_stops_it(make_lab) -> None:
    lab: Lab = make_lab()
    lab.sandbox.create_repo(WIDE, files=_wide_files())
    synced = lab.wait(
        "both repositories synced",
        lambda: (
            (
                rows := lab.q(
                    "SELECT * FROM repos WHERE base_sha IS NOT NULL AND problem_toml IS NOT NULL"
                )
            )
            and len(rows) == 2
            and rows
        ),
        timeout=60,
    )
    assert {r["full_name"] for r in synced} == {lab.repo, WIDE}
    # Each lab has its own baseline queued; here they count as measured.
    baselines = lab.q("SELECT repo_id FROM jobs WHERE kind = 'baseline'")
    assert {b["repo_id"] for b in baselines} == {r["id"] for r in synced}
    lab.store.execute("UPDATE jobs SET state = 'done' WHERE kind = 'baseline'")

    loop = AdvisorLoop(lab.engine(), OfflineAdvisor(seed=1))
    _idle(lab, "fern", "frieren", "stark")
    assert asyncio.run(loop.propose_for_idle()) == 3
    per_lab = {
        r["full_name"]: r["n"]
        for r in lab.q(
            "SELECT r.full_name, COUNT(*) AS n FROM experiments e JOIN repos r "
            "ON r.id = e.repo_id WHERE e.source = 'advisor' GROUP BY r.full_name"
        )
    }
    # Weights 1 and 2: the wider lab gets two of the three students, the other one.
    assert per_lab == {lab.repo: 1, WIDE: 2}
    for repo in (lab.repo, WIDE):
        lab.wait(f"a draft PR in {repo}", lambda r=repo: lab.control.pulls(r), timeout=60)

    installation = lab.sandbox.installation_id(WIDE)
    body = json.dumps(
        {
            "action": "removed",
            "installation": {"id": installation},
            "repository_selection": "selected",
            "repositories_added": [],
            "repositories_removed": [{"full_name": WIDE, "name": "wide", "private": False}],
            "sender": {"login": "alice", "type": "User"},
        }
    ).encode()
    secret = lab.sandbox.webhook_secret
    reply = httpx.post(
        f"{lab.bot_url}/webhooks/github",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-GitHub-Event": "installation_repositories",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": sign(secret, body),
        },
        timeout=10,
    )
    assert reply.status_code < 300
    wide_id = next(r["id"] for r in synced if r["full_name"] == WIDE)
    lab.wait(
        "the wide lab stopped",
        lambda: lab.q("SELECT id FROM repos WHERE id = ? AND active = 0", (wide_id,)),
        timeout=30,
    )
    cancelled = lab.q("SELECT * FROM jobs WHERE repo_id = ? AND kind = 'experiment'", (wide_id,))
    assert cancelled and all(j["state"] == "cancelled" for j in cancelled)
    assert all(
        "App was removed from lab/wide" in json.loads(j["result"])["reason"] for j in cancelled
    )
    running = lab.q("SELECT * FROM jobs WHERE repo_id != ? AND state = 'queued'", (wide_id,))
    assert running, "the other lab's queued work is untouched"

    _idle(lab, "himmel", "heiter")
    assert asyncio.run(loop.propose_for_idle()) == 2
    after = lab.q("SELECT e.repo_id FROM experiments e WHERE e.student IN ('himmel', 'heiter')")
    assert after and all(r["repo_id"] != wide_id for r in after)


def _push_to_main(lab: Lab, tmp_path: Path, message: str, change: Callable[[Path], None]) -> int:
    """Once the lab synced with its baseline queued, alice pushes `change` to main.

    Returns the repository's id.
    """
    repo = lab.wait(
        "the repository synced with its baseline queued",
        lambda: lab.q(
            "SELECT r.* FROM repos r JOIN jobs j ON j.repo_id = r.id "
            "WHERE r.problem_toml IS NOT NULL AND j.kind = 'baseline' AND j.state = 'queued'"
        ),
        timeout=60,
    )[0]
    token = lab.sandbox.user_token("alice")
    url = lab.sandbox.clone_url(lab.repo).replace("://", f"://x-access-token:{token}@", 1)
    work = tmp_path / "clone"
    git = ["git", "-c", "user.name=alice", "-c", "user.email=alice@example.com"]
    subprocess.run([*git, "clone", "-q", url, str(work)], check=True, timeout=60)
    change(work)
    subprocess.run([*git, "-C", str(work), "commit", "-qam", message], check=True)
    subprocess.run([*git, "-C", str(work), "push", "-q", "origin", "HEAD"], check=True, timeout=60)
    return int(repo["id"])


def _cancelled_baseline_reason(lab: Lab, repo_id: int) -> str:
    job = lab.wait(
        "the baseline cancelled",
        lambda: lab.q(
            "SELECT * FROM jobs WHERE repo_id = ? AND kind = 'baseline' AND state = 'cancelled'",
            (repo_id,),
        ),
        timeout=60,
    )[0]
    return str(json.loads(job["result"])["reason"])


def test_kohai_toml_leaving_the_default_branch_stops_the_lab(make_lab, tmp_path) -> None:
    """A push that deletes kohai.toml: the sync finds no problem, the queued baseline is cancelled."""
    lab: Lab = make_lab()
    repo_id = _push_to_main(
        lab, tmp_path, "no longer a lab", lambda work: (work / "kohai.toml").unlink()
    )
    assert "kohai.toml is no longer on main" in _cancelled_baseline_reason(lab, repo_id)
    stopped = lab.q("SELECT problem_toml FROM repos WHERE id = ?", (repo_id,))[0]
    assert stopped["problem_toml"] is None
    _idle(lab, "fern")
    assert asyncio.run(AdvisorLoop(lab.engine(), OfflineAdvisor()).propose_for_idle()) == 0
    assert not lab.q("SELECT id FROM experiments")


def test_an_invalid_kohai_toml_stops_the_lab_with_its_reason(make_lab, tmp_path) -> None:
    """A push that breaks kohai.toml: nothing runs on a default problem in its place."""

    def typo(work: Path) -> None:
        toml = work / "kohai.toml"
        toml.write_text(toml.read_text() + '\n[gate]\nscreen = "lots"\n')

    lab: Lab = make_lab()
    repo_id = _push_to_main(lab, tmp_path, "a typo", typo)
    reason = _cancelled_baseline_reason(lab, repo_id)
    assert "kohai.toml on main is invalid" in reason and "gate.screen" in reason
    assert not lab.q("SELECT id FROM jobs WHERE repo_id = ? AND state = 'queued'", (repo_id,)), (
        "no baseline is queued for a problem that does not parse"
    )
    _idle(lab, "fern")
    assert asyncio.run(AdvisorLoop(lab.engine(), OfflineAdvisor()).propose_for_idle()) == 0
