"""A repository with two research tracks, against the sandbox GitHub over loopback.

The repository declares `[tracks.wide]` (its base branch exists, with a
program file of its own) and `[tracks.deep]` (no base branch yet: the bot
creates it from the default branch through the outbox). Each track gets its
own baseline and proposals; PRs open against, and merge into, the track's
base; a human issue labelled `track:wide` lands in that track, an unknown
track is answered; the dashboard and its JSON show each track.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
from typing import Any

import httpx

from agents.loop import AdvisorLoop
from agents.offline.advisor import OfflineAdvisor
from bot.records import Experiment
from bot.store import now
from tests.e2e.conftest import Lab, make_lab, problem_files

__all__ = ["make_lab"]  # the sandbox lab fixture, shared with the end-to-end tests

TRACKS = """
[tracks.wide]
base = "track/wide"
program = "tracks/wide.md"
weight = 1

[tracks.deep]
weight = 1
"""


def _files() -> dict[str, str]:
    files = problem_files()
    files["kohai.toml"] += TRACKS
    files["tracks/wide.md"] = "# The wide track\n\nTry wider models only.\n"
    return files


def _git(lab: Lab, *args: str) -> str:
    bare = lab.sandbox.repo_path(lab.repo)
    return subprocess.run(
        ["git", *args], cwd=bare, capture_output=True, text=True, check=True, timeout=30
    ).stdout.strip()


def _branch_sha(lab: Lab, branch: str) -> str | None:
    try:
        return _git(lab, "rev-parse", "--verify", "-q", f"refs/heads/{branch}")
    except subprocess.CalledProcessError:
        return None


def _idle(lab: Lab, *names: str) -> None:
    for name in names:
        lab.register(name)
        lab.store.execute("UPDATE students SET last_seen = ? WHERE name = ?", (now(), name))


def _synced_tracks(lab: Lab) -> dict[str, dict[str, Any]]:
    rows = lab.q("SELECT * FROM tracks WHERE base_sha IS NOT NULL")
    return {r["name"]: r for r in rows} if len(rows) == 2 else {}


def test_two_tracks_have_their_own_bases_proposals_issues_merges_and_pages(make_lab) -> None:
    lab: Lab = make_lab(files=_files())
    # track/wide does not exist either until the bot makes it: both are created from main.
    tracks = lab.wait("both tracks synced", lambda: _synced_tracks(lab), timeout=90)
    main_sha = _branch_sha(lab, "main")
    assert _branch_sha(lab, "track/deep") == main_sha, "created from the default branch"
    assert tracks["deep"]["base_branch"] == "track/deep", "the default base is track/<name>"
    assert tracks["wide"]["program_md"].startswith("# The wide track")
    created = lab.q("SELECT args FROM outbox WHERE op = 'create_branch' AND state = 'done'")
    assert len(created) == 2

    # Each line has its own baseline job on its own base.
    baselines = lab.wait(
        "three baselines",
        lambda: (
            (rows := lab.q("SELECT * FROM jobs WHERE kind = 'baseline'"))
            and len(rows) == 3
            and rows
        ),
        timeout=30,
    )
    assert {b["track"] for b in baselines} == {"default", "wide", "deep"}
    lab.store.execute("UPDATE jobs SET state = 'done' WHERE kind = 'baseline'")

    # Proposals for each track: three lines of weight 1, three idle students.
    loop = AdvisorLoop(lab.engine(), OfflineAdvisor(seed=3))
    _idle(lab, "fern", "frieren", "stark")
    assert asyncio.run(loop.propose_for_idle()) == 3
    per_track = {r["track"]: r for r in lab.q("SELECT * FROM experiments")}
    assert set(per_track) == {"default", "wide", "deep"}
    pulls = lab.wait(
        "three draft PRs",
        lambda: (ps := lab.control.pulls(lab.repo)) and len(ps) == 3 and ps,
        timeout=60,
    )
    by_branch = {p["head"]["ref"]: p for p in pulls}
    for track, base in (("default", "main"), ("wide", "track/wide"), ("deep", "track/deep")):
        pull = by_branch[per_track[track]["branch"]]
        assert pull["base"]["ref"] == base, track
        assert pull["title"].startswith(f"[{track}] ") == (track != "default"), pull["title"]
    wide_pr = by_branch[per_track["wide"]["branch"]]
    assert "track:wide" in lab.control.labels_of(lab.repo, wide_pr["number"])

    # A human issue labelled track:wide lands in track wide: its PR's base is track/wide.
    issue = lab.control.open_issue(
        lab.repo, "Widen the MLP", "LEARNING_RATE = 0.002", labels=["track:wide", "student:any"]
    )
    human = lab.wait(
        "the human experiment's PR",
        lambda: lab.q(
            "SELECT * FROM experiments WHERE issue_number = ? AND pr_number IS NOT NULL",
            (issue["number"],),
        ),
        timeout=60,
    )[0]
    assert human["track"] == "wide"
    pull = lab.control.pull(lab.repo, human["pr_number"])
    assert pull["base"]["ref"] == "track/wide"
    assert pull["title"] == "[wide] Widen the MLP"
    job = lab.q("SELECT * FROM jobs WHERE experiment_id = ?", (human["id"],))[0]
    assert job["track"] == "wide" and job["base_sha"] == tracks["wide"]["base_sha"]
    status = lab.wait(
        "the status comment names the track",
        lambda: [
            c["body"]
            for c in lab.control.comments(lab.repo, human["pr_number"])
            if "kohai:status" in c["body"] and "| track | **wide**" in c["body"]
        ],
        timeout=30,
    )
    assert "track/wide" in status[0]

    # An unknown track gets a clear reply, and nothing opens.
    unknown = lab.control.open_issue(
        lab.repo, "Go deeper", "", labels=["track:nope", "student:any"]
    )
    reply = lab.wait(
        "the unknown-track reply",
        lambda: [
            c["body"]
            for c in lab.control.comments(lab.repo, unknown["number"])
            if "There is no track `nope`" in c["body"]
        ],
        timeout=30,
    )
    assert "`wide`" in reply[0] and "`deep`" in reply[0] and "`default`" in reply[0]
    assert not lab.q("SELECT id FROM experiments WHERE issue_number = ?", (unknown["number"],))

    # A merge in the wide track lands on track/wide; main does not move.
    engine = lab.engine()
    with lab.store.transaction():
        exp = engine.store.get(Experiment, human["id"])
        assert exp is not None
        repo = engine.repo_by_id(exp.repo_id, exp.track)
        engine.decide(exp.id, "merge", "human:alice", "merged in the test")
        engine.merge(repo, exp, title="Widen the MLP", check_base=False)
    lab.wait(
        "track/wide moved",
        lambda: _branch_sha(lab, "track/wide") != tracks["wide"]["base_sha"],
        timeout=60,
    )
    assert _branch_sha(lab, "main") == main_sha
    assert _branch_sha(lab, "track/deep") == main_sha
    merge = lab.q("SELECT args FROM outbox WHERE op = 'merge'")[0]
    assert '"base":"track/wide"' in merge["args"]
    # The bot reads the new base back and measures the wide track's baseline on it.
    new_sha = _branch_sha(lab, "track/wide")
    lab.wait(
        "a baseline on the new wide base",
        lambda: lab.q(
            "SELECT id FROM jobs WHERE kind = 'baseline' AND track = 'wide' AND base_sha = ?",
            (new_sha,),
        ),
        timeout=60,
    )
    assert not lab.q(
        "SELECT id FROM jobs WHERE kind = 'baseline' AND track != 'wide' AND base_sha = ?",
        (new_sha,),
    )

    # The dashboard and its JSON show each track.
    page = httpx.get(f"{lab.bot_url}/labs/{lab.repo}/wide", timeout=10)
    assert page.status_code == 200
    assert "lab/charlm:wide" in page.text and "Widen the MLP" in page.text
    shown = {int(n) for n in re.findall(r'data-experiment="(\d+)"', page.text)}
    assert shown == {human["id"], per_track["wide"]["id"]}, "the wide track's experiments only"
    assert httpx.get(f"{lab.bot_url}/labs/{lab.repo}/nope", timeout=10).status_code == 404
    index = httpx.get(f"{lab.bot_url}/", timeout=10)
    assert 'href="/labs/lab/charlm/wide"' in index.text
    assert 'href="/labs/lab/charlm/deep"' in index.text
    rows = httpx.get(f"{lab.bot_url}/api/labs", timeout=10).json()
    assert {r["lab"] for r in rows} == {"lab/charlm", "lab/charlm:wide", "lab/charlm:deep"}
    assert all(abs(r["target_share"] - 1 / 3) < 1e-9 for r in rows)
    wide = httpx.get(
        f"{lab.bot_url}/api/experiments", params={"lab": "lab/charlm:wide"}, timeout=10
    ).json()
    assert {e["lab"] for e in wide} == {"lab/charlm:wide"}
    assert {e["id"] for e in wide} == {human["id"], per_track["wide"]["id"]}
