"""Reading markdown the way GitHub does, for tests of what reaches a PR."""

from __future__ import annotations

import re


def outside_code(markdown: str) -> str:
    """The lines of `markdown` outside fenced code blocks, by CommonMark's fence rules."""
    out, fence = [], None
    for line in markdown.split("\n"):
        stripped = line.strip()
        if fence is None:
            m = re.match(r"^(`{3,})", stripped)
            if m:
                fence = m.group(1)
                continue
            out.append(line)
        elif re.fullmatch(rf"`{{{len(fence)},}}", stripped):
            fence = None
    assert fence is None, "a fence was left open"
    return "\n".join(out)
