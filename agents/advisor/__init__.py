"""The advisor: `make_advisor` picks the implementation; the contract is `agents.advisor.contract`.

The offline search (`agents.offline.advisor`) and the Claude advisors
(`agents.claude.advisor`, `agents.claude.agent_advisor`) implement the contract
and import only it; this factory imports them on demand, so an offline bot
never loads the Claude modules.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from agents.advisor.contract import Advisor, AdvisorError, AdvisorMode, Proposal, Review

__all__ = ["Advisor", "AdvisorError", "AdvisorMode", "Proposal", "Review", "make_advisor"]


def make_advisor(api_key: str | None, **options: Any) -> Advisor:
    """The Claude advisor when a key is given, else the offline search.

    With a key, the agent form (Claude Code in a read-only checkout, with the
    notebook tools) is used where claude-agent-sdk is installed, else the
    single-call form; `engine="agent"|"messages"` (or `KOHAI_ADVISOR_ENGINE`)
    chooses. `options` go to the Claude advisor as they are (model, budgets,
    checkouts, ...); the offline advisor takes only `seed`. The Claude modules
    are imported here, on demand, so an offline bot never loads them.
    """
    if api_key:
        engine = options.pop("engine", None) or os.environ.get(ENGINE_ENV) or _default_engine()
        if engine == "agent":
            from agents.claude.agent_advisor import ClaudeAgentAdvisor

            return ClaudeAgentAdvisor(api_key=api_key, **options)
        from agents.claude.advisor import ClaudeAdvisor

        return ClaudeAdvisor(api_key=api_key, **options)
    from agents.offline.advisor import OfflineAdvisor

    return OfflineAdvisor(seed=int(options.get("seed", 0)))


ENGINE_ENV = "KOHAI_ADVISOR_ENGINE"


def _default_engine() -> str:
    return "agent" if importlib.util.find_spec("claude_agent_sdk") is not None else "messages"
