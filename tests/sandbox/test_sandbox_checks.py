"""Check runs in the sandbox, through githubkit exactly as the bot calls them.

The bot reports an invalid `kohai.toml` as a failing check run on the base
commit; every answer must parse as githubkit's `CheckRun` (the fidelity
rule), and the refusals GitHub makes must be made here too.
"""

from __future__ import annotations

from typing import Any

import pytest
from githubkit import GitHub
from githubkit.exception import RequestFailed
from sandbox_helpers import NAME, OWNER

from sandbox.server import SandboxServer


def _head(gh: GitHub[Any]) -> str:
    return gh.rest.repos.get_branch(OWNER, NAME, "main").parsed_data.commit.sha


def test_a_failing_check_run_with_an_annotation_round_trips(gh: GitHub[Any]) -> None:
    sha = _head(gh)
    created = gh.rest.checks.create(
        OWNER,
        NAME,
        data={
            "name": "kohai / kohai.toml",
            "head_sha": sha,
            "external_id": "config:abc",
            "conclusion": "failure",
            "output": {
                "title": "kohai.toml is invalid",
                "summary": "gate.screen: expected true or false",
                "annotations": [
                    {
                        "path": "kohai.toml",
                        "start_line": 3,
                        "end_line": 3,
                        "annotation_level": "failure",
                        "message": "gate.screen: expected true or false",
                    }
                ],
            },
        },
    ).parsed_data
    assert (created.status, created.conclusion, created.head_sha) == ("completed", "failure", sha)
    assert created.output.annotations_count == 1 and created.app is not None
    listed = gh.rest.checks.list_for_ref(
        OWNER, NAME, "main", check_name="kohai / kohai.toml"
    ).parsed_data
    assert listed.total_count == 1 and listed.check_runs[0].id == created.id
    assert listed.check_runs[0].external_id == "config:abc"
    assert gh.rest.checks.get(OWNER, NAME, created.id).parsed_data.output.title == (
        "kohai.toml is invalid"
    )
    notes = gh.rest.checks.list_annotations(OWNER, NAME, created.id).parsed_data
    assert [(n.path, n.start_line, n.annotation_level) for n in notes] == [
        ("kohai.toml", 3, "failure")
    ]
    other = gh.rest.checks.list_for_ref(OWNER, NAME, sha, check_name="something else")
    assert other.parsed_data.total_count == 0


def test_check_runs_are_refused_as_github_refuses_them(
    gh: GitHub[Any], sandbox: SandboxServer
) -> None:
    sha = _head(gh)
    # A sha that names no commit of the repository (422), a bad conclusion (422),
    # an annotation without its line (422), and a user's token: only Apps may (403).
    bad_bodies = [
        {"name": "x", "head_sha": "0" * 40, "conclusion": "failure"},
        {"name": "x", "head_sha": sha, "conclusion": "exploded"},
        {
            "name": "x",
            "head_sha": sha,
            "conclusion": "failure",
            "output": {
                "title": "t",
                "summary": "s",
                "annotations": [{"path": "kohai.toml", "annotation_level": "failure"}],
            },
        },
    ]
    for body in bad_bodies:
        with pytest.raises(RequestFailed) as refused:
            # Raw requests: githubkit would refuse these bodies before sending them.
            gh.request("POST", f"/repos/{OWNER}/{NAME}/check-runs", json=body)
        assert refused.value.response.status_code == 422, body
    user = GitHub(sandbox.user_token("alice"), base_url=sandbox.url)
    with pytest.raises(RequestFailed) as refused:
        user.rest.checks.create(
            OWNER, NAME, data={"name": "x", "head_sha": sha, "status": "queued"}
        )
    assert refused.value.response.status_code == 403
