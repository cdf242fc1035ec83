"""Slash commands: one small unit each, with its own usage and help (like Prow's plugins).

A command is a line of an issue or PR comment starting with `/`. Parsing and
turning a command into intents are pure; who may run commands is decided by
the router from the sender's permission level, which the engine looks up.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from bot.core import intents as i

COMMAND_LINE = re.compile(r"^/([a-z][a-z-]*)(?:[ \t]+(.*))?$")
WRITE_LEVELS = frozenset({"write", "maintain", "admin"})


class CommandError(ValueError):
    """A command that cannot run as written; the message is the reply."""


@dataclass(frozen=True)
class Invocation:
    name: str
    args: tuple[str, ...]
    line: str


@dataclass(frozen=True)
class Target:
    """Where the command was written, and what kohai knows about it."""

    number: int
    is_experiment: bool
    title: str = ""
    body: str = ""
    is_pull_request: bool = False
    trusted: bool = True  # the issue's author has write permission (see OpenFromIssue)
    author: str = ""


Builder = Callable[[Invocation, Target, str, frozenset[str]], list[i.Intent]]


@dataclass(frozen=True)
class Command:
    name: str
    usage: str
    help: str
    needs_experiment: bool
    build: Builder
    example: str = ""  # a line a user may paste, shown in /help


def parse_commands(body: str) -> list[Invocation]:
    """Every command line in a comment, in order; code blocks and quotes are skipped."""
    found: list[Invocation] = []
    in_fence = False
    for raw in body.splitlines():
        line = raw.strip()
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        match = COMMAND_LINE.match(line)
        if match and match.group(1) in COMMANDS:
            args = tuple((match.group(2) or "").split())
            found.append(Invocation(match.group(1), args, line))
    return found


def _no_args(inv: Invocation) -> None:
    if inv.args:
        raise CommandError(f"`/{inv.name}` takes no arguments; usage: `{COMMANDS[inv.name].usage}`")


def _rerun(inv: Invocation, target: Target, actor: str, students: frozenset[str]) -> list[i.Intent]:
    seeds: int | None = None
    for arg in inv.args:
        match = re.fullmatch(r"seeds=(\d+)", arg)
        if not match or not 1 <= int(match.group(1)) <= 32:
            raise CommandError(f"`/rerun` takes `seeds=N` with N from 1 to 32, not `{arg}`")
        seeds = int(match.group(1))
    return [i.Rerun(target.number, seeds, actor)]


def _stop(inv: Invocation, target: Target, actor: str, students: frozenset[str]) -> list[i.Intent]:
    _no_args(inv)
    return [i.Stop(target.number, actor)]


def _assign(
    inv: Invocation, target: Target, actor: str, students: frozenset[str]
) -> list[i.Intent]:
    if len(inv.args) != 1:
        raise CommandError("usage: `/assign <student>` (or `/assign any`)")
    name = inv.args[0].removeprefix("student:")
    if name != "any" and name not in students:
        known = ", ".join(sorted(students)) or "none registered yet"
        raise CommandError(f"there is no student `{name}` (known: {known})")
    student = None if name == "any" else name
    if target.is_experiment:
        return [i.Assign(target.number, student, actor)]
    if target.is_pull_request:
        raise CommandError("this pull request is not a kohai experiment")
    return [
        i.OpenFromIssue(
            target.number,
            target.title,
            target.body,
            student,
            actor,
            trusted=target.trusted,
            author=target.author,
        )
    ]


def _review(
    inv: Invocation, target: Target, actor: str, students: frozenset[str]
) -> list[i.Intent]:
    _no_args(inv)
    return [i.Review(target.number, actor)]


def _merge(inv: Invocation, target: Target, actor: str, students: frozenset[str]) -> list[i.Intent]:
    _no_args(inv)
    return [i.Merge(target.number, actor)]


def _close(inv: Invocation, target: Target, actor: str, students: frozenset[str]) -> list[i.Intent]:
    _no_args(inv)
    return [i.Close(target.number, actor)]


def _hold(inv: Invocation, target: Target, actor: str, students: frozenset[str]) -> list[i.Intent]:
    _no_args(inv)
    return [i.SetHold(target.number, True, actor)]


def _unhold(
    inv: Invocation, target: Target, actor: str, students: frozenset[str]
) -> list[i.Intent]:
    _no_args(inv)
    return [i.SetHold(target.number, False, actor)]


def _status(
    inv: Invocation, target: Target, actor: str, students: frozenset[str]
) -> list[i.Intent]:
    _no_args(inv)
    return [i.PostStatus(target.number)]


def _help(inv: Invocation, target: Target, actor: str, students: frozenset[str]) -> list[i.Intent]:
    return [i.Reply(target.number, help_text(), key=f"help:{inv.line}")]


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command(
            "rerun",
            "/rerun [seeds=N]",
            "train this PR again on its current head",
            True,
            _rerun,
            "/rerun seeds=2",
        ),
        Command("stop", "/stop", "stop the running job and put the PR on hold", True, _stop),
        Command(
            "assign",
            "/assign <student>",
            "hand the work to a student (or `any`)",
            False,
            _assign,
            "/assign fern",
        ),
        Command("review", "/review", "ask the advisor to review now", True, _review),
        Command(
            "merge", "/merge", "merge now, overriding the gate (recorded as yours)", True, _merge
        ),
        Command("close", "/close", "close as a dead end", True, _close),
        Command("hold", "/hold", "start nothing new for this until `/unhold`", False, _hold),
        Command("unhold", "/unhold", "lift a hold", False, _unhold),
        Command("status", "/status", "refresh the status comment", True, _status),
        Command("help", "/help", "list the commands", False, _help),
    )
}


def help_text() -> str:
    rows = "\n".join(
        f"| `{c.usage}` | {c.help} | {f'`{c.example}`' if c.example else ''} |"
        for c in COMMANDS.values()
    )
    return (
        "**kohai commands** (one per line; write, maintain or admin permission needed)\n\n"
        "| command | does | example |\n|---|---|---|\n" + rows
    )


def build_intents(
    invocations: list[Invocation], target: Target, actor: str, students: frozenset[str]
) -> list[i.Intent]:
    """Intents for commands a permitted user wrote; a bad command yields a reply saying why."""
    out: list[i.Intent] = []
    for inv in invocations:
        command = COMMANDS[inv.name]
        if command.needs_experiment and not target.is_experiment:
            out.append(
                i.Reply(
                    target.number,
                    f"`/{inv.name}` works on a kohai experiment pull request only.",
                    key=f"refused:{inv.line}",
                )
            )
            continue
        try:
            out.extend(command.build(inv, target, actor, students))
        except CommandError as exc:
            out.append(i.Reply(target.number, f"`{inv.line}`: {exc}", key=f"refused:{inv.line}"))
    return out
