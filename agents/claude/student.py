"""The Claude student: Claude Code (the CLI bundled with claude-agent-sdk) edits the branch.

Runs on GPU hosts. The agent works in the job's worktree with file tools and
one tool of kohai's, `smoke_run` (`guard`, `smoke`), edits are accepted without prompts
(`acceptEdits`; `bypassPermissions` is refused when running as root), no
user or project settings are loaded (a branch cannot install hooks or
permissions of its own), and turns and dollars are capped. The CLI itself runs in the job sandbox
(`trainer.sandbox`): it sees the worktree (with `.git` read-only) and no other
file of the host, its environment holds only its model key and base URL, and
its network namespace is empty but for a relay to the model endpoint
(`relay`). Afterwards the editable-files rule puts back anything else it
touched; the harness commits and trains what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from agents.claude import briefs, guard, relay, smoke
from agents.student.rules import ImplementOutcome, changed_files, enforce_editable, head
from bot.problem import Problem
from bot.protocol import Implement
from trainer import sandbox

MODEL_ENV = "KOHAI_STUDENT_MODEL"  # e.g. claude-sonnet-5-5; unset: the CLI's default
MAX_TURNS_ENV = "KOHAI_STUDENT_MAX_TURNS"
BUDGET_ENV = "KOHAI_STUDENT_BUDGET_USD"
DEFAULT_MAX_TURNS = 30
DEFAULT_BUDGET_USD = 2.0
TIMEOUT_S = 1800.0
NOTES_CHARS = 1500
STDERR_LINES = 40
# What the CLI's sandbox takes from the environment the SDK gives it: its model key only
# (and the CLI's own settings); everything else comes from the allowlist.
CLI_KEYS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_MODEL")
CLI_PREFIXES = ("CLAUDE_CODE_", "CLAUDE_AGENT_SDK_", "DISABLE_")

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
    smoke_s: float = 0.0  # seconds spent in smoke runs
    smoke_runs: int = 0
    sandboxed: bool = True


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
    start = head(worktree)
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
        smoke_s=run.smoke_s,
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
    try:
        run.sandboxed = sandbox.use_sandbox()
    except sandbox.SandboxUnavailable as exc:
        run.error = f"the job sandbox cannot start, so the coding agent does not run: {exc}"
        return run
    base_url = env.get("ANTHROPIC_BASE_URL") or os.environ.get("ANTHROPIC_BASE_URL")
    try:
        with contextlib.ExitStack() as stack:
            cli_path = None
            if run.sandboxed:
                cli_path = stack.enter_context(_sandboxed_cli(sdk, worktree, base_url))
            options = sdk.ClaudeAgentOptions(
                cwd=str(worktree),
                cli_path=cli_path,
                setting_sources=[],
                permission_mode="acceptEdits",
                tools=list(guard.TOOLS),
                allowed_tools=list(guard.ALLOWED_RULES),
                mcp_servers={guard.MCP_SERVER: _smoke_server(sdk, worktree, problem, run)},
                max_turns=max_turns,
                max_budget_usd=max_budget_usd,
                system_prompt=briefs.system_prompt(problem),
                model=model,
                env=dict(env),
                hooks=_hooks(sdk, worktree, problem, run),
                stderr=lambda line: _keep_tail(run.stderr, line),
            )
            prompt = briefs.task_prompt(
                spec, problem, max_turns=max_turns, budget_usd=max_budget_usd
            )
            try:
                await asyncio.wait_for(_consume(sdk, prompt, options, run), timeout=timeout_s)
            except TimeoutError:
                run.error = f"the coding agent did not finish within {timeout_s:g}s"
            except sdk.ClaudeSDKError as exc:
                run.error = run.error or _cli_error(exc, run.stderr)  # the result says it best
    except (OSError, ValueError) as exc:
        run.error = f"could not start the coding agent's sandbox: {exc}"
    return run


def _smoke_server(sdk: Any, worktree: Path, problem: Problem, run: AgentRun) -> Any:
    """The in-process MCP server with kohai's one tool for the agent: `smoke_run`."""

    @sdk.tool(
        guard.SMOKE_TOOL_NAME,
        f"Run the training command `{problem.command}` for about {smoke.SMOKE_BUDGET_S:g} "
        "seconds in the job sandbox (no network) and return its exit status and the last "
        "lines of its output. Use it after editing to catch crashes before the real run.",
        {"type": "object", "properties": {}},
    )
    async def smoke_run(args: dict[str, Any]) -> dict[str, Any]:
        result = await asyncio.to_thread(
            smoke.smoke_run, worktree, problem, sandboxed=run.sandboxed
        )
        run.smoke_s += result.seconds
        run.smoke_runs += 1
        failed = result.exit_code not in (0, None)
        return {"content": [{"type": "text", "text": result.report()}], "is_error": failed}

    return sdk.create_sdk_mcp_server(guard.MCP_SERVER, tools=[smoke_run])


def bundled_cli(sdk: Any) -> str:
    """The Claude Code CLI that ships with claude-agent-sdk, else one on PATH."""
    bundled = Path(sdk.__file__).parent / "_bundled" / "claude"
    if bundled.is_file():
        return str(bundled)
    found = shutil.which("claude")
    if found is None:
        raise OSError("the Claude Code CLI is neither bundled with claude-agent-sdk nor on PATH")
    return found


@contextlib.contextmanager
def _sandboxed_cli(sdk: Any, worktree: Path, base_url: str | None) -> Iterator[str]:
    """A `cli_path` that starts the CLI in the job sandbox, with a relay to the model only.

    The SDK runs `cli_path` with the host's whole environment plus its own
    settings; the wrapper keeps only the model key and the CLI's settings,
    and execs bwrap with that environment (so the key is on no command line).
    """
    plan = relay.plan(base_url)
    with relay.ModelRelay(plan) as model, tempfile.TemporaryDirectory(prefix="kohai-cli-") as tmp:
        relay_file = Path(relay.__file__).resolve()
        inside = sandbox.allowlisted_env(os.environ, plan.inside_env)
        box = sandbox.Sandbox(
            work=worktree, readonly=(relay_file, model.directory), env=inside, network=False
        )
        command = [
            sys.executable,
            "-I",
            str(relay_file),
            str(plan.listen_port),
            str(model.socket_path),
            "--",
            bundled_cli(sdk),
        ]
        spec = {
            "argv": box.exec_args(command, cwd=worktree),
            "env": inside,
            "keys": list(CLI_KEYS),
            "prefixes": list(CLI_PREFIXES),
        }
        wrapper = Path(tmp) / "claude-sandboxed"
        wrapper.write_text(
            f"#!{sys.executable} -I\n"
            "import json, os, sys\n"
            f"spec = json.loads({json.dumps(json.dumps(spec))})\n"
            "env = {k: v for k, v in os.environ.items()\n"
            "       if k in spec['keys'] or k.startswith(tuple(spec['prefixes']))}\n"
            "env.update(spec['env'])\n"
            "os.execve(spec['argv'][0], spec['argv'] + sys.argv[1:], env)\n"
        )
        wrapper.chmod(0o700)
        yield str(wrapper)


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


def _hooks(sdk: Any, worktree: Path, problem: Problem, run: AgentRun) -> Any:
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
    if run.smoke_runs:
        parts.append(f"Smoke runs: {run.smoke_runs}, {run.smoke_s:.1f} s.")
    if not run.sandboxed:
        parts.append("The coding agent ran unsandboxed (the host was started --unsandboxed).")
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
