"""Text people wrote, as HTML the dashboard can show: Markdown and diffs, rendered on the server.

Hypotheses and rationales are Markdown written by agents and people
(`**Why**`, lists, code). They are rendered with markdown-it-py in CommonMark
mode with raw HTML disabled: a `<script>` in a hypothesis stays text, and
markdown-it refuses `javascript:`, `vbscript:`, `file:` and `data:` links.

Diffs are highlighted by Pygments' diff lexer into spans with classes
(`gi` added, `gd` removed, `gu` hunk, `gh` file header; the dashboard's
stylesheet colours them), so no script is needed and every character of the
diff is escaped by the formatter.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

MAX_DIFF_CHARS = 200_000  # a diff longer than this is cut (the PR on GitHub has all of it)
MAX_MARKDOWN_CHARS = 50_000


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # "commonmark" has no raw-HTML extension on, but `html` is set False explicitly:
    # text from agents must never become markup.
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable("image")  # no requests to hosts an agent names
    return md


def markdown_html(text: str) -> str:
    """`text` (Markdown) as HTML, raw HTML in it shown as text."""
    clipped = text[:MAX_MARKDOWN_CHARS]
    return _markdown().render(clipped)


_FORMATTER = HtmlFormatter(cssclass="diff", wrapcode=True)


def diff_html(diff: str) -> str:
    """A unified diff, syntax highlighted (added, removed, hunk and file lines by class)."""
    shown = diff[:MAX_DIFF_CHARS]
    cut = len(diff) > MAX_DIFF_CHARS
    html = highlight(shown, DiffLexer(), _FORMATTER)
    if cut:
        html += (
            f'<p class="muted">The diff is cut at {MAX_DIFF_CHARS:,} characters; '
            "the pull request shows all of it.</p>"
        )
    return html
