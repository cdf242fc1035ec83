"""The Claude student: Claude Code (the CLI bundled with claude-agent-sdk) edits the branch.

Runs on GPU hosts. The agent works in the job's worktree with file tools and a
syntax check only (`guard`), edits are accepted without prompts
(`acceptEdits`; `bypassPermissions` is refused when running as root), no
user or project settings are loaded (a branch cannot install hooks or
permissions of its own), and turns and dollars are capped. Afterwards the
editable-files rule puts back anything else it touched; the harness commits
and trains what is left.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agents.claude import briefs, guard
from agents.student import ImplementOutcome, changed_files, enforce_editable
from bot.problem import Problem
from bot.protocol import Implement

MODEL_ENV = "KOHAI_STUDENT_MODEL"  # e.g. claude-sonnet-5-5; unset: the CLI's default
MAX_TURNS_ENV = "KOHAI_STUDENT_MAX_TURNS"
BUDGET_ENV = "KOHAI_STUDENT_BUDGET_USD"
DEFAULT_MAX_TURNS = 30
DEFAULT_BUDGET_USD = 2.0
TIMEOUT_S = 1800.0
NOTES_CHARS = 1500
STDERR_LINES = 40

T = TypeVar("T")


@dataclass
class AgentRun:
    """What the agent reported: its final text, cost, turns, and how it ended."""

    result_text: str = ""
    cost_usd: float = 0.0
    turns: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


def implement(
    worktree: Path,
    spec: Implement,
    problem: Problem,
    *,
    model: str | None = None,
    max_turns: int | None = None,
    max_budget_usd: float | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> ImplementOutcome:
    """Let Claude Code implement `spec` in `worktree`; never raises for an agent failure.

    Limits left as None come from the host's environment (`KOHAI_STUDENT_MODEL`,
    `KOHAI_STUDENT_MAX_TURNS`, `KOHAI_STUDENT_BUDGET_USD`), else the defaults.
    `env` is added to the CLI's environment (the host's own environment is
    inherited): `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL` and the like.
    """
    worktree = Path(worktree).resolve()
    try:
        turns = max_turns or int(os.environ.get(MAX_TURNS_ENV) or DEFAULT_MAX_TURNS)
        budget = max_budget_usd or float(os.environ.get(BUDGET_ENV) or DEFAULT_BUDGET_USD)
    except ValueError as exc:
        return ImplementOutcome(error=f"{MAX_TURNS_ENV} or {BUDGET_ENV} is not a number: {exc}")
    start = _head(worktree)
    run = _run_sync(
        run_agent(
            worktree,
            spec,
            problem,
            model=model or os.environ.get(MODEL_ENV) or None,
            max_turns=turns,
            max_budget_usd=budget,
            env=env or {},
            timeout_s=timeout_s,
        )
    )
    try:
        reverted = enforce_editable(worktree, problem, since=start)
        changed = changed_files(worktree, since=start)
    except RuntimeError as exc:
        return ImplementOutcome(cost_usd=run.cost_usd, error=f"could not check the edits: {exc}")
    notes = _notes(run, reverted)
    error = run.error
    if error is None and not changed:
        error = (
            "the coding agent finished without changing an editable file "
            f"({', '.join(problem.editable)})"
        )
        if reverted:
            error += f"; its changes to {', '.join(reverted)} were reverted"
    return ImplementOutcome(
        changed_files=changed,
        reverted_files=reverted,
        cost_usd=run.cost_usd,
        notes=notes,
        error=error,
    )


async def run_agent(
    worktree: Path,
    spec: Implement,
    problem: Problem,
    *,
    model: str | None,
    max_turns: int,
    max_budget_usd: float,
    env: dict[str, str],
    timeout_s: float,
) -> AgentRun:
    """One Claude Code session in `worktree`; failures are returned in `AgentRun.error`."""
    run = AgentRun()
    try:
        import claude_agent_sdk as sdk  # the host extra; imported only when a Claude job runs
    except ImportError as exc:
        run.error = (
            f"claude-agent-sdk is not installed on this host (pip install 'kohai[host]'): {exc}"
        )
        return run
    with tempfile.TemporaryDirectory(prefix="kohai-pycache-") as pycache:
        options = sdk.ClaudeAgentOptions(
            cwd=str(worktree),
            setting_sources=[],
            permission_mode="acceptEdits",
            tools=list(guard.TOOLS),
            allowed_tools=list(guard.ALLOWED_RULES),
            max_turns=max_turns,
            max_budget_usd=max_budget_usd,
            system_prompt=briefs.system_prompt(problem),
            model=model,
            # py_compile writes bytecode; keep it out of the worktree.
            env={"PYTHONPYCACHEPREFIX": pycache, **env},
            hooks=_hooks(sdk, worktree, problem, run),
            stderr=lambda line: _keep_tail(run.stderr, line),
        )
        prompt = briefs.task_prompt(spec, problem, max_turns=max_turns, budget_usd=max_budget_usd)
        try:
            await asyncio.wait_for(_consume(sdk, prompt, options, run), timeout=timeout_s)
        except TimeoutError:
            run.error = f"the coding agent did not finish within {timeout_s:g}s"
        except sdk.ClaudeSDKError as exc:
            run.error = run.error or _cli_error(exc, run.stderr)  # the result says it best
    return run


async def _consume(sdk: Any, prompt: str, options: Any, run: AgentRun) -> None:
    """Read the session's messages; the result is recorded as soon as it arrives.

    A failed session yields its ResultMessage (with the cost so far) and then
    raises, so the cost must be kept before the exception ends the loop.
    """
    finished = False
    async for message in sdk.query(prompt=prompt, options=options):
        if isinstance(message, sdk.ResultMessage):
            finished = True
            run.cost_usd = float(message.total_cost_usd or 0.0)
            run.turns = message.num_turns
            run.result_text = (message.result or "").strip()
            if message.is_error:
                detail = "; ".join(message.errors or []) or run.result_text or "no detail"
                run.error = f"the coding agent stopped ({_why(message)}): {detail}"
    if not finished:
        run.error = _cli_error(RuntimeError("the CLI ended without a result"), run.stderr)


def _why(result: Any) -> str:
    """The result's subtype, or the failing API call's status for an API error."""
    if result.subtype != "success":
        return str(result.subtype)
    status = getattr(result, "api_error_status", None)
    return f"API error {status}" if status else "error"


def _hooks(sdk: Any, worktree: Path, problem: Problem, run: AgentRun) -> dict[str, Any]:
    async def before(data: dict[str, Any], tool_use_id: str | None, context: Any) -> dict[str, Any]:
        reason = guard.deny_reason(
            str(data.get("tool_name", "")), data.get("tool_input") or {}, worktree
        )
        if reason is None:
            return {}
        run.warnings.append(f"denied {data.get('tool_name')}: {reason}")
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }

    async def after(data: dict[str, Any], tool_use_id: str | None, context: Any) -> dict[str, Any]:
        note = guard.edit_warning(
            str(data.get("tool_name", "")), data.get("tool_input") or {}, worktree, problem
        )
        if not note:
            return {}
        return {"hookSpecificOutput": {"hookEventName": "PostToolUse", "additionalContext": note}}

    return {
        # The guard fails closed: a hook that errors blocks the call instead of allowing it.
        "PreToolUse": [sdk.HookMatcher(matcher=None, hooks=[before], on_failure="block")],
        "PostToolUse": [sdk.HookMatcher(matcher="Edit|Write", hooks=[after])],
    }


def _notes(run: AgentRun, reverted: list[str]) -> str:
    parts = []
    if run.result_text:
        text = run.result_text
        if len(text) > NOTES_CHARS:
            text = text[: NOTES_CHARS - 3] + "..."
        parts.append(text)
    parts.append(f"Claude Code: {run.turns} turn(s), ${run.cost_usd:.4f}.")
    if run.warnings:
        parts.append(f"Refused {len(run.warnings)} tool call(s): {run.warnings[0]}")
    if reverted:
        parts.append(f"Reverted changes outside the editable files: {', '.join(reverted)}.")
    return "\n".join(parts)


def _cli_error(exc: BaseException, stderr: list[str]) -> str:
    message = f"the Claude Code CLI failed: {type(exc).__name__}: {exc}"
    if stderr:
        message += "\n" + "\n".join(stderr[-10:])
    return message


def _keep_tail(lines: list[str], line: str) -> None:
    lines.append(line.rstrip())
    del lines[:-STDERR_LINES]


def _head(worktree: Path) -> str | None:
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "HEAD"], cwd=worktree, capture_output=True, text=True
    )
    return result.stdout.strip() if result.returncode == 0 else None


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` to completion, also when called from a thread that runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="kohai-claude-student")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
