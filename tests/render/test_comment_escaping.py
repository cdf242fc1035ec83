"""Hostile run output in the bot's comments: it may not break a fence, hide text or ping anyone.

A training script controls its own log; the results comment shows the tail.
Each case below is a log or reason an experiment could print on purpose.
"""

from __future__ import annotations

import re

import pytest

from bot.records import Run
from bot.render.comments import ZWJ, code_block, plain, results_comment, status_comment
from tests.support.markdown import outside_code

MENTION = re.compile(r"(?<![\w`])@[A-Za-z0-9]")  # what GitHub would link as a mention


HOSTILE = [
    ("a fence in the log", "step 1\n```\n# Injected heading\n```\nstep 2"),
    ("a longer fence", "``````\n**bold** outside?\n``````"),
    ("an HTML comment", "<!-- kohai:results:99 -->\nall results hidden <!--"),
    ("a mention", "ping @octocat and @admin-team/reviewers please"),
    ("all at once", "````\n<!-- x -->\n@alice\n```"),
]


def _results(tail: str, reason: str) -> str:
    return results_comment(
        title="t",
        metric="val_bpb",
        minimize=True,
        runs=[
            Run(id=1, repo_id=1, kind="candidate", seed=0, status="ok", metric=1.0),
            Run(
                id=1,
                repo_id=1,
                kind="candidate",
                seed=1,
                status="crash",
                metric=None,
                log_tail=tail,
                reason=reason,
            ),
        ],
        baseline=[1.0, 1.1],
        head_sha="a" * 40,
        base_sha="b" * 40,
        student="fern",
        job_status="ok",
    )


@pytest.mark.parametrize("tail", [t for _, t in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_log_tail_stays_in_its_block(tail: str) -> None:
    body = _results(tail, reason="exit 1")
    outside = outside_code(body)
    assert tail.strip() not in outside  # the tail is inside the block, whole
    assert "<!--" not in outside
    assert not MENTION.search(outside)
    assert "Injected heading" not in outside and "bold" not in outside
    assert "</details>" in outside  # the block closed before the details did


@pytest.mark.parametrize("reason", [t for _, t in HOSTILE], ids=[n for n, _ in HOSTILE])
def test_reason_in_the_summary_is_inert(reason: str) -> None:
    body = _results("log", reason=reason)
    outside = outside_code(body)
    assert "<!--" not in outside
    assert not MENTION.search(outside)
    summary = next(line for line in body.splitlines() if line.startswith("<details>"))
    assert summary.endswith("</summary>") and summary.count("<") == 3  # nothing opened inside


def test_code_block_fence_outgrows_the_text() -> None:
    assert code_block("plain") == "```\nplain\n```"
    assert code_block("a ```` b").startswith("`````\n")


def test_plain_keeps_the_words() -> None:
    assert plain("ping @bob <b>x</b> | y") == f"ping @{ZWJ}bob &lt;b&gt;x&lt;/b&gt; \\| y"
    assert plain("a\n\nb") == "a b"
    assert len(plain("x" * 1000, 50)) == 50
    assert plain("mail me at a@b.c") == "mail me at a@b.c"  # an address is not a mention


def test_status_comment_defangs_hypothesis_and_decision() -> None:
    body = status_comment(
        state="review",
        student="fern",
        hypothesis="<!-- kohai:status:1 --> @everyone look",
        metric="val_bpb",
        baseline=[1.0],
        candidate=[0.9],
        hold=False,
        decision="close (advisor): cc @maintainer <!--",
    )
    assert "<!--" not in body and not MENTION.search(body)


def test_an_unsealed_result_says_so_and_a_sealed_one_does_not() -> None:
    from bot.render.comments import results_comment

    def body(sealed: bool) -> str:
        return results_comment(
            title="t",
            metric="val_bpb",
            minimize=True,
            runs=[
                Run(
                    id=1,
                    repo_id=1,
                    kind="candidate",
                    seed=0,
                    status="ok",
                    metric=1.0,
                    sealed=sealed,
                )
            ],
            baseline=[1.1],
            head_sha="a" * 40,
            base_sha="b" * 40,
            student="fern",
            job_status="ok",
        )

    assert "**unsealed**" in body(False)
    assert "unsealed" not in body(True)


def test_trust_notes_name_what_a_result_lacks() -> None:
    from dataclasses import replace

    from bot.queries import trust_note
    from bot.records import Run

    run = Run(
        id=1, repo_id=1, experiment_id=1, job_id=1, kind="candidate", student="fern", seed=0,
        commit_sha=None, base_sha=None, status="ok", metric=1.0, metrics={}, curve=[],
        duration_s=1.0, peak_mem_mb=1.0, gpu_hours=0.0, cost_usd=0.0, reason="", log_tail="",
        wandb_url="", created_at=0.0,
    )  # fmt: skip
    assert trust_note([run]) == ""
    assert trust_note([run, replace(run, sealed=False)]) == "unsealed"
    assert trust_note([replace(run, sealed=False, sandboxed=False)]) == "unsealed, unsandboxed"
    assert trust_note([replace(run, status="cancelled", sealed=False)]) == ""
