"""The one escaping home (`bot.render.escape`), case by case.

Each row is something a host, a training script or an outsider could write on
purpose, and what it must not be able to do once shown.
"""

from __future__ import annotations

import re

import pytest

from bot.render.escape import ZWJ, code_block, defang, for_log, https_url, plain

TRACKER = "https://tracker.example/p.png"


@pytest.mark.parametrize(
    ("text", "forbidden"),
    [
        ("ping @octocat", r"(?<![\w.])@o"),  # a mention
        ("ping @org/team", r"(?<![\w.])@o"),  # a team mention
        ("see #1 and GH#2", r"(?<![\w&])#\d"),  # a back-link to an issue
        ("<!-- kohai:results:9 -->", r"<!--"),  # a comment hiding the rest, or a forged marker
        (f"<img src={TRACKER}>", r"<img"),  # raw HTML
        (f"![seen]({TRACKER})", r"!\["),  # a tracking image
        ("[click](https://evil.example)", r"\]\("),  # a link
        ("a | b", r"(?<!\\)\|"),  # a table cell ended early
        ("`code` span", r"`"),  # a code span opened
    ],
)
def test_plain_makes_each_trick_inert(text: str, forbidden: str) -> None:
    shown = plain(text)
    assert not re.search(forbidden, shown), shown
    assert "\n" not in plain(text + "\nsecond line")


def test_plain_keeps_the_words_readable_and_clips() -> None:
    assert plain("loss went up by 3%") == "loss went up by 3%"
    assert plain("@alice") == "@" + ZWJ + "alice"
    assert plain("x" * 500, limit=10) == "x" * 9 + "…"
    assert "\x1b" not in plain("colour \x1b[31mred")
    assert "\u202e" not in plain("ok \u202eevil") and "\u202e" not in defang("ok \u202eevil")


def test_defang_keeps_lines_but_no_html_image_or_mention() -> None:
    shown = defang(f"line one @bob\n![x]({TRACKER}) <!-- hide\n<details>")
    assert shown.count("\n") == 2
    assert "<" not in shown and "![" not in shown and "@bob" not in shown


@pytest.mark.parametrize(
    "text", ["```\nbreak out\n```", "``````", "a ```` b", "`", "no backticks at all"]
)
def test_a_code_block_cannot_be_closed_from_inside(text: str) -> None:
    block = code_block(text, info="text\n```evil")
    fence = block.split("\n", 1)[0].removesuffix("text")
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    assert len(fence) > longest and len(fence) >= 3
    assert block.endswith("\n" + fence)
    assert "evil" not in block.split("\n", 1)[0]  # the info string is a word, not a line


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("https://wandb.ai/team/project/runs/abc123", True),
        ("https://wandb.ai/x?y=1&z=2#frag", True),
        ("http://wandb.ai/x", False),  # not https
        ("javascript:alert(1)", False),
        ("data:text/html,hi", False),
        ("https://", False),
        ("https://wandb.ai/x) ![t](https://tracker/p.png)", False),  # ends the link
        ("https://wandb.ai/x <!--", False),  # spaces, angle brackets
        ('https://wandb.ai/x" onmouseover="a', False),  # ends an HTML attribute
        ("https://wandb.ai/[x]", False),
        ("https://wandb.ai/x\n@admin", False),
        ("https://wandb.ai/" + "a" * 3000, False),  # too long
        (None, False),
        (["https://wandb.ai"], False),
    ],
)
def test_only_safe_https_urls_are_kept(url: object, kept: bool) -> None:
    assert https_url(url) == (url if kept else None)


def test_a_log_line_cannot_be_forged() -> None:
    shown = for_log("d1\n2026-01-01 INFO kohai: admin logged in\x1b[2J", limit=200)
    assert "\n" not in shown and "\x1b" not in shown
    assert len(for_log("x" * 10_000, limit=100)) == 100
