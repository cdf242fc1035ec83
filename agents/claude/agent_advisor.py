"""The Claude advisor as an agent: Claude Code in a read-only checkout of the lab's base.

Where the single-call advisor (`agents.claude.advisor`) sees a bounded summary,
this one works like a researcher: it reads `train.py` and friends with
Read/Grep/Glob, looks things up in the lab notebook through in-process tools
(list and search experiments, show one with its diff, seeds, curve against
the baseline's and failure log, the leaderboard, the baseline), and ends by
calling `propose_experiment` or `review_experiment`, whose arguments are the
answer. It has no tool that writes or runs anything.

Limits come from the bot's settings: turns and dollars per call
(`KOHAI_ADVISOR_MAX_TURNS`, `KOHAI_ADVISOR_BUDGET_USD`). The system prompt
(the rules, program.md, kohai.toml) is the same for every call on a lab, so
Claude Code's prompt caching bills it at the cache-read price after the first
call. Every call's cost is recorded, failed ones included: an `AdvisorError`
carries `cost_usd`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import prompts
from agents import notebook
from agents.advisor.contract import AdvisorError, Proposal, Review
from agents.claude import messages, tools
from agents.claude.student import _sandboxed_cli as sandboxed_cli
from agents.claude.verdicts import feedback_with_failure, reconcile
from agents.context import AdvisorContext, ExperimentRecord
from bot.core.gate import GateDecision
from trainer import sandbox

MODEL_ENV = "KOHAI_ADVISOR_MODEL"
MAX_TURNS_ENV = "KOHAI_ADVISOR_MAX_TURNS"
BUDGET_ENV = "KOHAI_ADVISOR_BUDGET_USD"
DEFAULT_MAX_TURNS = 25
DEFAULT_BUDGET_USD = 1.0
TIMEOUT_S = 900.0
SERVER = "notebook"
FILE_TOOLS = ("Read", "Grep", "Glob")


class Checkouts(Protocol):
    """Where the advisor's files come from: the bot's read-only view of a lab's repository."""

    async def checkout(self, repo: str, sha: str) -> Path: ...

    async def diff(self, repo: str, base_sha: str, head_sha: str) -> str: ...


@dataclass
class Session:
    """One advisor call: the answer it gave through its tool, what it cost, how it ended."""

    answer: dict[str, Any] | None = None
    answer_error: str = ""
    cost_usd: float = 0.0
    turns: int = 0
    error: str | None = None
    tool_calls: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    sandboxed: bool = False  # the CLI ran in the job sandbox (where one can start)


class ClaudeAgentAdvisor:
    """See `agents.advisor.Advisor`; built by `make_advisor` when claude-agent-sdk is installed."""

    def __init__(
        self,
        *,
        api_key: str,
        model: str | None = None,
        base_url: str | None = None,
        max_turns: int | None = None,
        max_budget_usd: float | None = None,
        checkouts: Checkouts | None = None,
        timeout_s: float = TIMEOUT_S,
        home: Path | None = None,
        **_: Any,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL")
        self.model = model or os.environ.get(MODEL_ENV) or None
        self.max_turns = max_turns or int(os.environ.get(MAX_TURNS_ENV) or DEFAULT_MAX_TURNS)
        self.max_budget_usd = max_budget_usd or float(
            os.environ.get(BUDGET_ENV) or DEFAULT_BUDGET_USD
        )
        self.checkouts = checkouts
        self.timeout_s = timeout_s
        self.home = home
        self.sessions: list[Session] = []

    @property
    def total_cost_usd(self) -> float:
        return sum(s.cost_usd for s in self.sessions)

    async def propose(self, ctx: AdvisorContext, student: str) -> Proposal:
        question = (
            messages.propose_question(ctx, student) + "\n\n" + prompts.load("advisor_agent_propose")
        )
        session = await self._run(ctx, question, tools.PROPOSE)
        fields = self._parsed(session, tools.parse_proposal, "propose")
        return Proposal(**fields, mode="claude", cost_usd=session.cost_usd, model=self.model or "")

    async def review(
        self, ctx: AdvisorContext, experiment: ExperimentRecord, gate: GateDecision
    ) -> Review:
        question = (
            messages.review_question(ctx, experiment, gate)
            + "\n\n"
            + prompts.load("advisor_agent_review", label=experiment.label)
        )
        session = await self._run(ctx, question, tools.REVIEW)
        fields = self._parsed(session, tools.parse_review, "review")
        verdict, rationale, feedback = fields["verdict"], fields["rationale"], fields["feedback"]
        audit = (session.answer or {}).get("audit") or {}
        if verdict == "merge" and audit.get("passed") is False:
            finding = str(audit.get("finding") or "the diff does more than the hypothesis says")
            verdict = "changes"
            rationale = f"{rationale}\n\nHypothesis-vs-diff audit failed: {finding}"
            feedback = f"Keep the change to the hypothesis alone: {finding}"
        decided = reconcile(verdict, gate, experiment)
        if decided.overruled:
            rationale = f"{rationale}\n\n{decided.note}"
        if decided.verdict == "changes":
            feedback = feedback_with_failure(feedback or rationale, experiment)
        return Review(
            verdict=decided.verdict,  # type: ignore[arg-type]
            rationale=rationale,
            feedback=feedback,
            mode="claude",
            cost_usd=session.cost_usd,
            model=self.model or "",
        )

    async def close(self) -> None:
        return None

    # ------------------------------------------------------------------ session

    def _parsed(
        self, session: Session, parse: Callable[[dict[str, Any]], dict[str, Any]], action: str
    ) -> dict[str, Any]:
        if session.answer is None:
            why = (
                session.error or session.answer_error or "it ended without calling its answer tool"
            )
            raise _failed(f"the advisor's {action} session gave no answer: {why}", session)
        try:
            return parse(session.answer)
        except AdvisorError as exc:
            raise _failed(f"the advisor's {action} answer is malformed: {exc}", session) from exc

    async def _run(self, ctx: AdvisorContext, question: str, answer_tool: str) -> Session:
        session = Session()
        self.sessions.append(session)
        try:
            import claude_agent_sdk as sdk
        except ImportError as exc:  # make_advisor checks first; this is the last word
            raise AdvisorError(f"claude-agent-sdk is not installed: {exc}") from exc
        workdir, cleanup = await self._workdir(ctx)
        home = self.home or Path(tempfile.mkdtemp(prefix="kohai-advisor-home-"))
        try:
            with contextlib.ExitStack() as stack:
                cli_path = None
                # The CLI in the job sandbox, its network the model endpoint only; a
                # bot where no sandbox can start still advises (it reads, never runs).
                if sandbox.probe() is None:
                    cli_path = stack.enter_context(
                        sandboxed_cli(sdk, workdir.resolve(), self.base_url)
                    )
                session.sandboxed = cli_path is not None
                await self._session(
                    sdk, ctx, question, answer_tool, session, workdir, home, cli_path
                )
        finally:
            cleanup()
            if self.home is None:
                shutil.rmtree(home, ignore_errors=True)
        return session

    async def _session(
        self,
        sdk: Any,
        ctx: AdvisorContext,
        question: str,
        answer_tool: str,
        session: Session,
        workdir: Path,
        home: Path,
        cli_path: str | None,
    ) -> None:
        server = sdk.create_sdk_mcp_server(
            SERVER, tools=self._tools(sdk, ctx, session, answer_tool)
        )
        allowed = [*FILE_TOOLS, *(f"mcp__{SERVER}__{t}" for t in NOTEBOOK_TOOLS)]
        allowed.append(f"mcp__{SERVER}__{answer_tool}")
        env = {"ANTHROPIC_API_KEY": self.api_key, "HOME": str(home)}
        if self.base_url:
            env["ANTHROPIC_BASE_URL"] = self.base_url
        options = sdk.ClaudeAgentOptions(
            cwd=str(workdir),
            cli_path=cli_path,
            setting_sources=[],
            permission_mode="acceptEdits",
            tools=list(FILE_TOOLS),
            allowed_tools=allowed,
            mcp_servers={SERVER: server},
            max_turns=self.max_turns,
            max_budget_usd=self.max_budget_usd,
            system_prompt=_system_prompt(ctx),
            model=self.model,
            env=env,
            hooks=_hooks(sdk, workdir, set(allowed), session),
            stderr=lambda line: _keep_tail(session.stderr, line),
        )
        try:
            await asyncio.wait_for(_consume(sdk, question, options, session), self.timeout_s)
        except TimeoutError:
            session.error = f"the advisor did not finish within {self.timeout_s:g}s"
        except sdk.ClaudeSDKError as exc:
            session.error = session.error or f"the Claude Code CLI failed: {exc}"

    async def _workdir(self, ctx: AdvisorContext) -> tuple[Path, Callable[[], None]]:
        """A read-only checkout of the lab's base; without one, just its program and contract."""
        note = "(no checkout of the repository is available to this advisor)"
        if self.checkouts is not None and ctx.repo and ctx.base_sha:
            try:
                return await self.checkouts.checkout(ctx.repo, ctx.base_sha), lambda: None
            except Exception as exc:  # noqa: BLE001 - the notebook still works without files
                note = f"(the checkout of {ctx.base_sha[:12]} failed: {exc})"
        tmp = Path(tempfile.mkdtemp(prefix="kohai-advisor-"))
        (tmp / "program.md").write_text(ctx.program_md or note)
        (tmp / "kohai.toml").write_text(ctx.config_toml)
        (tmp / "NOTE.txt").write_text(note + "\n")
        return tmp, lambda: shutil.rmtree(tmp, ignore_errors=True)

    def _tools(
        self, sdk: Any, ctx: AdvisorContext, session: Session, answer_tool: str
    ) -> list[Any]:
        def reply(text: str, error: bool = False) -> dict[str, Any]:
            out: dict[str, Any] = {"content": [{"type": "text", "text": text}]}
            if error:
                out["is_error"] = True
            return out

        async def list_experiments(args: dict[str, Any]) -> dict[str, Any]:
            session.tool_calls.append("list_experiments")
            return reply(notebook.list_experiments(ctx, str(args.get("query") or "")))

        async def show_experiment(args: dict[str, Any]) -> dict[str, Any]:
            session.tool_calls.append("show_experiment")
            record = notebook.find(ctx, args.get("experiment", ""))
            if record is None:
                return reply(
                    f"No experiment {args.get('experiment')!r}; see list_experiments.", True
                )
            return reply(notebook.show_experiment(ctx, record, await self._diff(ctx, record)))

        async def leaderboard(args: dict[str, Any]) -> dict[str, Any]:
            session.tool_calls.append("leaderboard")
            return reply(notebook.leaderboard(ctx))

        async def baseline(args: dict[str, Any]) -> dict[str, Any]:
            session.tool_calls.append("baseline")
            return reply(notebook.baseline(ctx))

        async def answer(args: dict[str, Any]) -> dict[str, Any]:
            session.tool_calls.append(answer_tool)
            parse = tools.parse_proposal if answer_tool == tools.PROPOSE else tools.parse_review
            try:
                parse(args)
            except AdvisorError as exc:
                session.answer_error = str(exc)
                return reply(f"Not recorded: {exc}. Call {answer_tool} again, corrected.", True)
            session.answer = dict(args)
            return reply("Recorded. You are done: end your turn now.")

        schema = (tools.PROPOSE_TOOL if answer_tool == tools.PROPOSE else REVIEW_WITH_AUDIT)[
            "input_schema"
        ]
        return [
            sdk.tool(
                "list_experiments",
                "List the lab's experiments, newest first, optionally filtered by words.",
                {"type": "object", "properties": {"query": {"type": "string"}}},
            )(list_experiments),
            sdk.tool(
                "show_experiment",
                "One experiment in full: hypothesis, diff against its base, per-seed metrics, "
                "training curve against the baseline's, failure log tail, verdicts and feedback.",
                {
                    "type": "object",
                    "properties": {
                        "experiment": {"type": "string", "description": "#PR or exp-ID"}
                    },
                    "required": ["experiment"],
                },
            )(show_experiment),
            sdk.tool("leaderboard", "Measured experiments, best first.", {})(leaderboard),
            sdk.tool("baseline", "The current baseline and the best so far.", {})(baseline),
            sdk.tool(answer_tool, _answer_description(answer_tool), schema)(answer),
        ]

    async def _diff(self, ctx: AdvisorContext, record: ExperimentRecord) -> str:
        if self.checkouts is None or not (record.base_sha and record.head_sha and ctx.repo):
            return record.diff_summary or ""
        try:
            return await self.checkouts.diff(ctx.repo, record.base_sha, record.head_sha)
        except Exception as exc:  # noqa: BLE001 - a missing diff is said, not fatal
            return f"(diff unavailable: {exc})"


NOTEBOOK_TOOLS = ("list_experiments", "show_experiment", "leaderboard", "baseline")

REVIEW_WITH_AUDIT: dict[str, Any] = json.loads(json.dumps(tools.REVIEW_TOOL))
REVIEW_WITH_AUDIT["input_schema"]["properties"]["audit"] = {
    "type": "object",
    "description": (
        "The hypothesis-vs-diff audit: does the diff implement the hypothesis and touch "
        "nothing else that can move the metric (seeds, data order, the budget, evaluation)?"
    ),
    "properties": {
        "passed": {"type": "boolean"},
        "finding": {"type": "string", "description": "What else the diff changes, if anything."},
    },
    "required": ["passed", "finding"],
}
REVIEW_WITH_AUDIT["input_schema"]["required"] = ["verdict", "rationale", "feedback", "audit"]


def _answer_description(answer_tool: str) -> str:
    if answer_tool == tools.PROPOSE:
        return str(tools.PROPOSE_TOOL["description"]) + " Call it once, last."
    return str(tools.REVIEW_TOOL["description"]) + " Include the audit. Call it once, last."


def _system_prompt(ctx: AdvisorContext) -> str:
    blocks = messages.system_blocks(ctx)
    return "\n\n".join(b["text"] for b in blocks) + "\n\n" + prompts.load("advisor_agent_system")


def _failed(message: str, session: Session) -> AdvisorError:
    exc = AdvisorError(message)
    exc.cost_usd = session.cost_usd  # type: ignore[attr-defined]
    return exc


async def _consume(sdk: Any, prompt: str, options: Any, session: Session) -> None:
    """Read the session; its cost is kept even when the CLI then raises."""

    async def stream() -> Any:
        yield {"type": "user", "message": {"role": "user", "content": prompt}}

    async for message in sdk.query(prompt=stream(), options=options):
        if isinstance(message, sdk.ResultMessage):
            session.cost_usd = float(message.total_cost_usd or 0.0)
            session.turns = message.num_turns
            if message.is_error and session.answer is None:
                detail = "; ".join(message.errors or []) or (message.result or "no detail")
                session.error = f"the advisor stopped ({message.subtype}): {detail}"


def _hooks(sdk: Any, workdir: Path, allowed: set[str], session: Session) -> dict[str, Any]:
    root = workdir.resolve()

    async def before(data: dict[str, Any], tool_use_id: str | None, context: Any) -> dict[str, Any]:
        name = str(data.get("tool_name", ""))
        reason = None
        if name not in allowed:
            reason = f"{name} is not one of the advisor's tools"
        else:
            raw = (data.get("tool_input") or {}).get("file_path") or (
                data.get("tool_input") or {}
            ).get("path")
            if raw:
                target = (root / str(raw)).resolve()
                if target != root and root not in target.parents:
                    reason = "the advisor reads only the lab's checkout"
        if reason is None:
            return {}
        session.tool_calls.append(f"denied {name}")
        return {
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": "deny",
                "permissionDecisionReason": reason,
            }
        }

    return {"PreToolUse": [sdk.HookMatcher(matcher=None, hooks=[before], on_failure="block")]}


def _keep_tail(lines: list[str], line: str) -> None:
    lines.append(line.rstrip())
    del lines[:-40]
