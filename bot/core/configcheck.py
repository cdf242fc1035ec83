"""An invalid `kohai.toml` on a lab's base, reported where its writer looks.

When the file on the default branch does not parse, the lab stops (see
`bot.github.sync`); the writer learns why from a failing check run on that
commit, pointing at the line, and from one issue "kohai: configuration error"
that the bot edits while the error stands and closes when a valid file lands
(Renovate's onboarding does the same). Pure functions: which writes a sync
asks for, from what the bot last said (its outbox), and the line an error
names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.outbox import writes as w
from bot.problem import CONFIG_FILE
from bot.render import comments

CHECK_NAME = f"kohai / {CONFIG_FILE}"
ISSUE_KIND = "config-error"
ISSUE_KEY = CONFIG_FILE
ISSUE_TITLE = "kohai: configuration error"

_AT_LINE = re.compile(r"\bat line (\d+)")
_KEY_PATH = re.compile(r"^\[?([A-Za-z0-9_\-]+(?:\.[A-Za-z0-9_\-]+)*)\]?(?::|\s)")
_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(?:#.*)?$")
_ASSIGN = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=")


def _parts(dotted: str) -> list[str]:
    return [p.strip().strip("\"'") for p in dotted.split(".") if p.strip()]


def error_line(text: str, message: str) -> int | None:
    """The 1-based line of `text` that `message` (a `ProblemError`) is about, if found.

    A TOML syntax error names its line; a schema error names a dotted key
    (`gate.screen: expected ...`), found as the deepest table header or key
    assignment that matches the most of it. None when nothing matches.
    """
    found = _AT_LINE.search(message)
    if found:
        return int(found.group(1))
    head = message.removeprefix(f"{CONFIG_FILE}: ").strip()
    path_match = _KEY_PATH.match(head + " ")
    if path_match is None:
        return None
    path = _parts(path_match.group(1))
    best, best_depth = None, 0
    table: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group(1))
            full = table
        else:
            assign = _ASSIGN.match(line)
            if assign is None:
                continue
            full = table + _parts(assign.group(1))
        depth = 0
        for mine, theirs in zip(full, path, strict=False):
            if mine != theirs:
                break
            depth += 1
        if depth > best_depth and depth == min(len(full), len(path)):
            best, best_depth = number, depth
    return best


@dataclass(frozen=True)
class LastWord:
    """What the bot last asked for about this lab's configuration (from its outbox)."""

    issue_open: bool = False  # its last IssueReport opened (or kept open) the issue
    issue_body: str | None = None
    checked: frozenset[str] = frozenset()  # check-run keys already written


def check_key(sha: str) -> str:
    return f"{CONFIG_FILE}@{sha}"


def config_writes(
    repo: str,
    branch: str,
    sha: str,
    toml: str | None,
    error: str | None,
    last: LastWord,
) -> list[w.Write]:
    """The writes one sync of the default branch asks for (none when nothing changed).

    Invalid: a failing check run on `sha` with the error at its line, and the
    issue opened or brought up to date. Valid after the bot reported an error:
    a passing check run on `sha` and the issue closed with a note naming the
    commit. No file at all is no lab, not a configuration error: nothing.
    """
    if toml is None:
        return []
    found: list[w.Write] = []
    key = check_key(sha)
    if error is not None:
        line = error_line(toml, error)
        if key not in last.checked:
            found.append(
                w.CheckRun(
                    head_sha=sha,
                    name=CHECK_NAME,
                    key=key,
                    conclusion="failure",
                    title=f"{CONFIG_FILE} is invalid" + (f" (line {line})" if line else ""),
                    summary=comments.config_error_check(error, line),
                    path=CONFIG_FILE,
                    line=line or 1,
                    message=error,
                )
            )
        body = comments.config_error_issue(repo, branch, sha, error, line)
        if not last.issue_open or last.issue_body != body:
            found.append(
                w.IssueReport(kind=ISSUE_KIND, key=ISSUE_KEY, title=ISSUE_TITLE, body=body)
            )
        return found
    if last.issue_open:
        if key not in last.checked:
            found.append(
                w.CheckRun(
                    head_sha=sha,
                    name=CHECK_NAME,
                    key=key,
                    conclusion="success",
                    title=f"{CONFIG_FILE} is valid",
                    summary=f"`{CONFIG_FILE}` on `{branch}` parses; the lab runs again.",
                )
            )
        found.append(
            w.IssueReport(
                kind=ISSUE_KIND,
                key=ISSUE_KEY,
                title=ISSUE_TITLE,
                open=False,
                closing_note=comments.config_fixed_note(branch, sha),
                closing_key=f"fixed-{sha}",
            )
        )
    return found
