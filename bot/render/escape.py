"""Untrusted text made inert: the one home for escaping what hosts, runs and people say.

A host reports strings (failure reasons, log tails, metric names, W&B URLs,
its GPU kind and name); a training script writes its own log; a person writes
an issue. All of it may reach a PR comment, the dashboard or the bot's log,
and none of it may act there: ping anyone (`@user`, `@org/team`), reference
an issue (`#12`, which GitHub back-links), open an HTML comment (`<!--`, which
hides the rest of the comment or poses as a bot marker), embed raw HTML or a
markdown image (a tracking pixel) or link, end a code fence early, or forge a
log line. Every renderer calls these functions instead of escaping again.

The URL rule (`https_url`) lives with the job protocol, which hosts share and
which drops a bad URL on receipt; it is re-exported here for the renderers.
"""

from __future__ import annotations

import html
import re

from bot.protocol import https_url

__all__ = ["ZWJ", "code_block", "defang", "for_log", "https_url", "plain"]

ZWJ = "\u200d"  # after "@" or "#", GitHub no longer links; the text still reads the same
_BACKTICKS = re.compile(r"`+")
# What GitHub links as a mention (`@user`, `@org/team`) or a reference (`#12`, `org/repo#12`).
_MENTION = re.compile(r"(?<![\w.])@(?=[A-Za-z0-9])")
_REFERENCE = re.compile(r"(?<![\w&])#(?=\d)")
# Markdown link and image openers (`[text](url)`, `![alt](url)`, `[text][ref]`) become
# character references: inert in markdown and in HTML alike.
_BRACKET_REFS = str.maketrans({"[": "&#91;", "]": "&#93;"})
# Control characters, line separators and bidirectional overrides (which can make a
# reason read differently from what it says).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _brackets(text: str) -> str:
    return text.translate(_BRACKET_REFS)


def _unlinked(text: str) -> str:
    """`text` with mentions and issue references broken by a zero-width joiner."""
    return _REFERENCE.sub("#" + ZWJ, _MENTION.sub("@" + ZWJ, text))


def plain(text: object, limit: int = 300) -> str:
    """Untrusted text on one line of markdown (a table cell, a heading, a summary).

    Whitespace collapses to single spaces, the text is clipped to `limit`
    characters, HTML is escaped (no tag, no `<!--`), pipes, backticks and
    brackets are escaped (no table cell ends, no code span, link or image
    opens), and mentions and references are broken.
    """
    flat = " ".join(_CONTROL.sub(" ", str(text)).split())
    if len(flat) > limit:
        flat = flat[: max(0, limit - 1)] + "…"
    escaped = html.escape(flat, quote=False).replace("|", "\\|").replace("`", "&#96;")
    return _unlinked(_brackets(escaped))


def defang(text: str) -> str:
    """Untrusted markdown kept as markdown (several lines, emphasis), but inert.

    No HTML (so no `<!--`, `<img>` or `<details>`), no link or image (their
    brackets show as brackets), no mention and no reference.
    """
    escaped = _CONTROL.sub(" ", text).replace("&", "&amp;").replace("<", "&lt;")
    return _unlinked(_brackets(escaped))


def code_block(text: str, info: str = "") -> str:
    """`text` verbatim in a fenced block that nothing inside it can close.

    The fence is one backtick longer than the longest run of backticks in the
    text (at least three), so a log line of ``` stays inside. In a code block
    GitHub renders `<!--`, `![x](y)` and `@user` as plain characters.
    """
    longest = max((len(m.group()) for m in _BACKTICKS.finditer(text)), default=0)
    fence = "`" * max(3, longest + 1)
    info = re.match(r"[\w+-]{0,20}", info).group()  # type: ignore[union-attr]  # one word
    return f"{fence}{info}\n{text}\n{fence}"


def for_log(text: object, limit: int = 500) -> str:
    """Untrusted text for one line of the bot's log: no newline or control character
    can start a forged line, and a flood is clipped."""
    shown = repr(str(text))[1:-1]  # newlines, tabs and control characters as escapes
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"
