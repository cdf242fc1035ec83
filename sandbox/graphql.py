"""POST /graphql: the two draft-state mutations REST cannot do.

A full GraphQL engine is not needed: kohai sends
`markPullRequestReadyForReview` and `convertPullRequestToDraft` with a pull
request's node id, either inline or through variables. Anything else is
answered with a GraphQL error, as GitHub answers an unknown field.
"""

from __future__ import annotations

import re
from typing import Any

from sandbox import pulls
from sandbox.auth import Principal
from sandbox.errors import ApiError
from sandbox.world import World

MUTATIONS = {"markPullRequestReadyForReview": False, "convertPullRequestToDraft": True}
CALL = re.compile(
    r"(?P<name>markPullRequestReadyForReview|convertPullRequestToDraft)\s*\(\s*input\s*:\s*"
    r"(?:(?P<var>\$\w+)|\{(?P<fields>[^}]*)\})",
)
FIELD = re.compile(r"(?P<key>\w+)\s*:\s*(?:\"(?P<literal>(?:[^\"\\]|\\.)*)\"|\$(?P<var>\w+))")


def parse_call(query: str, variables: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(mutation name, input object) of the first supported mutation in `query`."""
    match = CALL.search(query)
    if match is None:
        return None
    if match["var"]:
        value = variables.get(match["var"][1:])
        return match["name"], dict(value) if isinstance(value, dict) else {}
    fields: dict[str, Any] = {}
    for field in FIELD.finditer(match["fields"] or ""):
        fields[field["key"]] = (
            field["literal"] if field["literal"] is not None else variables.get(field["var"])
        )
    return match["name"], fields


def execute(world: World, p: Principal, body: dict[str, Any]) -> dict[str, Any]:
    query = str(body.get("query") or "")
    variables = body.get("variables") or {}
    call = parse_call(query, variables)
    if call is None:
        return {
            "errors": [
                {
                    "message": "This sandbox answers only markPullRequestReadyForReview and convertPullRequestToDraft",
                    "type": "UNSUPPORTED",
                }
            ]
        }
    name, payload = call
    pull_id = payload.get("pullRequestId")
    if not pull_id:
        return {"errors": [{"message": "Argument 'pullRequestId' is required", "type": "INVALID"}]}
    try:
        pull = pulls.set_draft(world, p, str(pull_id), MUTATIONS[name])
    except ApiError as exc:
        kind = (
            "NOT_FOUND"
            if exc.status == 404
            else "FORBIDDEN"
            if exc.status == 403
            else "UNPROCESSABLE"
        )
        return {
            "data": {name: None},
            "errors": [{"type": kind, "path": [name], "message": exc.message}],
        }
    result: dict[str, Any] = {"pullRequest": pull}
    if "clientMutationId" in payload:
        result["clientMutationId"] = payload["clientMutationId"]
    return {"data": {name: result}}
