"""Repeated reads are conditional, and counted as GitHub counts them (against the sandbox).

The client sends every GET it has an ETag for with `If-None-Match`; the
sandbox answers 304 while nothing changed and does not count it, exactly as
GitHub does for an authorised request. The caller sees the kept answer, the
budget the 304's headers state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.github.client import GitHubApp
from sandbox.control import SandboxControl
from sandbox.server import SandboxServer

REPO = "lab/reads"


@pytest.fixture
def box(tmp_path: Path) -> Iterator[SandboxServer]:
    with SandboxServer(tmp_path / "gh") as server:
        server.create_repo(REPO, files={"README.md": "# reads\n"})
        yield server


@pytest.fixture
def control(box: SandboxServer) -> Iterator[SandboxControl]:
    with SandboxControl(box.url) as c:
        yield c


def comment_reads(control: SandboxControl) -> list[tuple[int, bool]]:
    return [
        (r["status"], r["counted"])
        for r in control.requests()
        if r["route"] == "GET /repos/{owner}/{repo}/issues/{n}/comments"
    ]


async def test_a_repeated_read_is_a_free_304_until_something_changes(
    box: SandboxServer, control: SandboxControl
) -> None:
    app = GitHubApp(box.app_id, box.private_key_pem, box.url)
    installation = box.installation_id(REPO)
    assert installation is not None
    issue = control.open_issue(REPO, "reads")["number"]
    control.comment(REPO, issue, "first")
    path = f"/repos/{REPO}/issues/{issue}/comments"

    first = await app.paginate(installation, path)
    used = app.budget(installation)
    again = await app.paginate(installation, path)
    assert [c["body"] for c in again] == [c["body"] for c in first] == ["first"]
    assert app.not_modified == 1
    kept = app.budget(installation)
    assert used is not None and kept is not None
    assert (kept.used, kept.remaining) == (used.used, used.remaining)  # the 304 cost nothing

    control.comment(REPO, issue, "second")
    changed = await app.paginate(installation, path)
    assert [c["body"] for c in changed] == ["first", "second"]
    assert comment_reads(control) == [(200, True), (304, False), (200, True)]
    after = app.budget(installation)
    assert after is not None and after.used == used.used + 1

    # Typed calls go through the same door: the PR-less issue read twice, parsed twice.
    owner, name = REPO.split("/")
    for _ in range(2):
        reply = await app.call(
            installation,
            lambda gh: gh.rest.issues.async_get(owner, name, issue),
            method="GET",
        )
        assert reply.parsed_data.title == "reads"
    issue_reads = [
        (r["status"], r["counted"])
        for r in control.requests()
        if r["route"] == "GET /repos/{owner}/{repo}/issues/{n}"
    ]
    assert issue_reads == [(200, True), (304, False)]
    await app.aclose()


async def test_every_answer_updates_the_installations_budget(
    box: SandboxServer, control: SandboxControl
) -> None:
    control.set_limits(budget=50, reset=True)
    app = GitHubApp(box.app_id, box.private_key_pem, box.url)
    installation = box.installation_id(REPO)
    assert installation is not None
    assert app.budget(installation) is None
    await app.request(installation, "GET", f"/repos/{REPO}")
    seen = app.budget(installation)
    assert seen is not None and (seen.limit, seen.remaining, seen.used) == (50, 49, 1)
    assert app.budgets()[(installation, "core")] == seen
    # A refused read (404) is counted by GitHub, and its headers are read too.
    with pytest.raises(Exception, match="404"):
        await app.request(installation, "GET", f"/repos/{REPO}/issues/999")
    refused = app.budget(installation)
    assert refused is not None and refused.used == 2
    await app.aclose()
