"""The advisor's two answer forms, as tool schemas, and the checks on what comes back.

The advisor is forced to answer through a tool, so its answer is JSON with a
known shape rather than prose to be scraped. The model can still return
something off-schema (a missing field, a wrong type); `parse_*` turns that
into a `MalformedAnswer` naming the field, never into a half-filled proposal.
"""

from __future__ import annotations

from typing import Any

from agents.advisor.contract import AdvisorError

PROPOSE = "propose_experiment"
REVIEW = "review_experiment"
VERDICTS = ("merge", "close", "changes")

PROPOSE_TOOL: dict[str, Any] = {
    "name": PROPOSE,
    "description": (
        "Propose the next experiment: one hypothesis, to be implemented by a student in the "
        "editable files and trained under the fixed budget."
    ),
    "input_schema": {
        "type": "object",
        "properties": {
            "title": {
                "type": "string",
                "description": "Pull-request title, imperative, under 70 characters.",
            },
            "hypothesis": {
                "type": "string",
                "description": "What to change in which editable file, and the expected effect.",
            },
            "knobs": {
                "type": "object",
                "description": "Exact values for knobs declared in [search]; {} for none.",
                "additionalProperties": {"type": ["number", "integer", "string", "boolean"]},
            },
            "rationale": {
                "type": "string",
                "description": "Why this is the best next experiment, given the history.",
            },
            "difference": {
                "type": "string",
                "description": (
                    "Only when told the proposal repeats an earlier experiment and you still "
                    "want it: what is different this time (it goes on the PR). Else omit."
                ),
            },
        },
        "required": ["title", "hypothesis", "knobs", "rationale"],
    },
}

REVIEW_TOOL: dict[str, Any] = {
    "name": REVIEW,
    "description": "Review a finished experiment: merge it, close it, or ask for changes.",
    "input_schema": {
        "type": "object",
        "properties": {
            "verdict": {"type": "string", "enum": list(VERDICTS)},
            "rationale": {
                "type": "string",
                "description": "Two or three sentences for the pull request, citing the numbers.",
            },
            "feedback": {
                "type": "string",
                "description": "For 'changes': concrete instructions for the student; else ''.",
            },
        },
        "required": ["verdict", "rationale", "feedback"],
    },
}

# Both tools go into every request, in this order, so that propose and review
# calls share one cached prefix (tools, then the system prompt).
TOOLS = [PROPOSE_TOOL, REVIEW_TOOL]


class MalformedAnswer(AdvisorError):
    """The model's tool call did not match the schema; the message says how.

    `call` is the advisor's record of the call (model, tokens, cost) once known.
    """

    call: Any = None


def tool_input(content: list[Any], name: str) -> dict[str, Any]:
    """The input of the first `name` tool call among the response's content blocks."""
    for block in content:
        if getattr(block, "type", None) == "tool_use" and getattr(block, "name", None) == name:
            value = getattr(block, "input", None)
            if not isinstance(value, dict):
                raise MalformedAnswer(f"{name}: the tool input is not a JSON object: {value!r}")
            return value
    kinds = [getattr(b, "type", "?") for b in content]
    raise MalformedAnswer(f"expected a {name} tool call, the answer held {kinds or 'nothing'}")


def parse_proposal(data: dict[str, Any]) -> dict[str, Any]:
    """title, hypothesis, knobs, rationale (and difference) from a propose_experiment input."""
    fields = {key: _text(data, key, PROPOSE) for key in ("title", "hypothesis", "rationale")}
    knobs = data.get("knobs", {})
    if knobs is None:
        knobs = {}
    if not isinstance(knobs, dict):
        raise MalformedAnswer(f"{PROPOSE}.knobs: expected an object, got {knobs!r}")
    difference = data.get("difference") or ""
    if not isinstance(difference, str):
        raise MalformedAnswer(f"{PROPOSE}.difference: expected a string, got {difference!r}")
    return {**fields, "knobs": knobs, "difference": difference.strip()}


def parse_review(data: dict[str, Any]) -> dict[str, str]:
    """verdict, rationale, feedback from a review_experiment input, checked."""
    verdict = data.get("verdict")
    if verdict not in VERDICTS:
        raise MalformedAnswer(f"{REVIEW}.verdict: expected one of {VERDICTS}, got {verdict!r}")
    feedback = data.get("feedback") or ""
    if not isinstance(feedback, str):
        raise MalformedAnswer(f"{REVIEW}.feedback: expected a string, got {feedback!r}")
    return {"verdict": verdict, "rationale": _text(data, "rationale", REVIEW), "feedback": feedback}


def _text(data: dict[str, Any], key: str, tool: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise MalformedAnswer(f"{tool}.{key}: expected a non-empty string, got {value!r}")
    return value.strip()
