"""An invalid `kohai.toml` on main, reported on GitHub where its writer looks.

Against the sandbox GitHub over loopback: alice pushes a broken file to main;
the bot syncs it and reports it as a failing check run on that commit, with
an annotation at the offending line, and as one issue "kohai: configuration
error". A second broken push edits the same issue (no second one). The fix
closes the issue with a comment naming the commit and passes the check.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from githubkit import GitHub

from tests.e2e.conftest import Lab

GIT = ["git", "-c", "user.name=alice", "-c", "user.email=alice@example.com"]


def _clone(lab: Lab, tmp_path: Path) -> Path:
    token = lab.sandbox.user_token("alice")
    url = lab.sandbox.clone_url(lab.repo).replace("://", f"://x-access-token:{token}@", 1)
    work = tmp_path / "clone"
    subprocess.run([*GIT, "clone", "-q", url, str(work)], check=True, timeout=60)
    return work


def _push(work: Path, toml: str, message: str) -> str:
    (work / "kohai.toml").write_text(toml)
    subprocess.run([*GIT, "-C", str(work), "commit", "-qam", message], check=True)
    subprocess.run([*GIT, "-C", str(work), "push", "-q", "origin", "HEAD"], check=True, timeout=60)
    out = subprocess.run(
        ["git", "-C", str(work), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _config_issues(gh: GitHub[Any], state: str = "all") -> list[Any]:
    found = gh.rest.issues.list_for_repo("lab", "charlm", state=state).parsed_data  # type: ignore[arg-type]
    return [i for i in found if i.title == "kohai: configuration error"]


def _check(gh: GitHub[Any], sha: str) -> Any | None:
    runs = gh.rest.checks.list_for_ref("lab", "charlm", sha, check_name="kohai / kohai.toml")
    listed = runs.parsed_data.check_runs
    return listed[0] if listed else None


def test_an_invalid_kohai_toml_is_a_failing_check_and_one_issue_closed_by_the_fix(
    make_lab, tmp_path
) -> None:
    lab: Lab = make_lab()
    lab.wait(
        "the repository synced",
        lambda: lab.q("SELECT id FROM repos WHERE problem_toml IS NOT NULL"),
        timeout=60,
    )
    gh = GitHub(lab.sandbox.user_token("alice"), base_url=lab.sandbox.url)
    work = _clone(lab, tmp_path)
    good = (work / "kohai.toml").read_text()
    assert not _config_issues(gh), "a valid file opens no issue"

    typo = good + '\n[gate]\nscreen = "lots"\n'
    bad_line = typo.splitlines().index('screen = "lots"') + 1
    first = _push(work, typo, "a typo in the gate")
    run = lab.wait("the failing check run", lambda: _check(gh, first), timeout=90)
    assert (run.status, run.conclusion) == ("completed", "failure")
    assert f"line {bad_line}" in (run.output.title or "")
    assert "gate.screen" in (run.output.summary or "")
    notes = gh.rest.checks.list_annotations("lab", "charlm", run.id).parsed_data
    assert [(n.path, n.start_line, n.annotation_level) for n in notes] == [
        ("kohai.toml", bad_line, "failure")
    ]
    issue = lab.wait("the configuration issue", lambda: _config_issues(gh, "open"), timeout=60)[0]
    assert "gate.screen" in (issue.body or "") and first[:10] in (issue.body or "")
    assert issue.user is not None and issue.user.type == "Bot"

    # A different error on the next commit: the same issue, brought up to date.
    second = _push(work, good.replace("[metric]", "[metric\n", 1), "a broken header")
    run = lab.wait("the second failing check", lambda: _check(gh, second), timeout=90)
    assert run.conclusion == "failure" and "line" in (run.output.title or "")
    lab.wait(
        "the issue edited",
        lambda: (
            (found := _config_issues(gh, "open")) and second[:10] in (found[0].body or "") and found
        ),
        timeout=60,
    )
    assert [i.number for i in _config_issues(gh)] == [issue.number], "one issue, not two"

    fixed = _push(work, good, "fix kohai.toml")
    passed = lab.wait("the passing check", lambda: _check(gh, fixed), timeout=90)
    assert passed.conclusion == "success"
    closed = lab.wait(
        "the issue closed",
        lambda: [i for i in _config_issues(gh, "closed") if i.number == issue.number],
        timeout=60,
    )[0]
    assert closed.state_reason == "completed"
    said = gh.rest.issues.list_comments("lab", "charlm", issue.number).parsed_data
    assert any(fixed[:10] in (c.body or "") for c in said), "the closing note names the fix"
    assert not _config_issues(gh, "open")
