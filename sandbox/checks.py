"""Check runs: the App's verdict on a commit, as GitHub's Checks API keeps it.

Only a GitHub App may create a check run (a user token is refused, as on
GitHub); it belongs to the commit `head_sha` names, which must exist. A run
created with a `conclusion` is `completed`. Each run keeps its output (title,
summary, text) and its annotations (a path and the lines they point at).
Listing a ref's runs answers GitHub's `{total_count, check_runs}` with the
`check_name` filter and the newest first.
"""

from __future__ import annotations

from typing import Any

from sandbox import gitrepo
from sandbox.auth import Principal
from sandbox.errors import ApiError, not_found, validation_failed
from sandbox.paging import page
from sandbox.render import node_id
from sandbox.state import now_iso
from sandbox.world import World

STATUSES = {"queued", "in_progress", "completed", "waiting", "requested", "pending"}
CONCLUSIONS = {
    "success",
    "failure",
    "neutral",
    "cancelled",
    "skipped",
    "stale",
    "timed_out",
    "action_required",
}
LEVELS = {"notice", "warning", "failure"}
MAX_ANNOTATIONS = 50  # GitHub takes at most 50 annotations per request


def _runs(repo: dict[str, Any]) -> dict[str, Any]:
    return repo.setdefault("check_runs", {})


def _annotations(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's annotations, refused the way GitHub refuses malformed ones."""
    given = (body.get("output") or {}).get("annotations") or []
    if not isinstance(given, list) or len(given) > MAX_ANNOTATIONS:
        raise validation_failed(resource="CheckRun", field="annotations", code="invalid")
    found = []
    for item in given:
        if not isinstance(item, dict):
            raise validation_failed(resource="CheckRun", field="annotations", code="invalid")
        for key in ("path", "start_line", "end_line", "annotation_level", "message"):
            if item.get(key) in (None, ""):
                raise validation_failed(resource="CheckRun", field=key, code="missing_field")
        if item["annotation_level"] not in LEVELS:
            raise validation_failed(resource="CheckRun", field="annotation_level", code="invalid")
        start, end = item["start_line"], item["end_line"]
        if not isinstance(start, int) or not isinstance(end, int) or not 1 <= start <= end:
            raise validation_failed(resource="CheckRun", field="start_line", code="invalid")
        found.append(
            {
                "path": str(item["path"]),
                "start_line": start,
                "end_line": end,
                "annotation_level": item["annotation_level"],
                "message": str(item["message"]),
                "title": item.get("title"),
            }
        )
    return found


def create_check_run(world: World, p: Principal, full: str, body: dict[str, Any]) -> dict[str, Any]:
    with world.changing():
        if p.kind != "installation":
            raise ApiError(403, "You must authenticate via a GitHub App.")
        repo = world.authorize(p, full, "checks", "write")
        name, head_sha = body.get("name"), body.get("head_sha")
        if not name:
            raise validation_failed(resource="CheckRun", field="name", code="missing_field")
        if (
            not isinstance(head_sha, str)
            or gitrepo.object_type(world.repo_path(full), head_sha) != "commit"
        ):
            raise validation_failed("No commit found for SHA: " + str(head_sha))
        conclusion = body.get("conclusion")
        status = "completed" if conclusion else body.get("status", "queued")
        if status not in STATUSES or (conclusion and conclusion not in CONCLUSIONS):
            raise validation_failed(resource="CheckRun", field="conclusion", code="invalid")
        if status == "completed" and not conclusion:
            raise validation_failed(resource="CheckRun", field="conclusion", code="missing_field")
        output = body.get("output") or {}
        if output and (not output.get("title") or not output.get("summary")):
            raise validation_failed(resource="CheckRun", field="output", code="missing_field")
        stamp = now_iso()
        run = {
            "id": world.state.next_id("check_run", start=9_000_001),
            "suite_id": world.state.next_id("check_suite", start=8_000_001),
            "name": str(name),
            "head_sha": head_sha,
            "external_id": body.get("external_id") or "",
            "details_url": body.get("details_url"),
            "status": status,
            "conclusion": conclusion,
            "started_at": body.get("started_at") or stamp,
            "completed_at": (body.get("completed_at") or stamp) if conclusion else None,
            "title": output.get("title"),
            "summary": output.get("summary"),
            "text": output.get("text"),
            "annotations": _annotations(body),
        }
        _runs(repo)[str(run["id"])] = run
        return render(world, full, run)


def get_check_run(world: World, p: Principal, full: str, run_id: int) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "checks", "read")
        run = _runs(repo).get(str(run_id))
        if run is None:
            raise not_found()
        return render(world, full, run)


def list_for_ref(
    world: World, p: Principal, full: str, ref: str, query: dict[str, str]
) -> dict[str, Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "checks", "read")
        sha = gitrepo.resolve(world.repo_path(full), ref)
        if sha is None:
            raise validation_failed("No commit found for SHA: " + ref)
        wanted = query.get("check_name")
        chosen = [
            run
            for run in _runs(repo).values()
            if run["head_sha"] == sha and (wanted is None or run["name"] == wanted)
        ]
        chosen.sort(key=lambda run: run["id"], reverse=True)
        shown = page([render(world, full, run) for run in chosen], query)
        return {"total_count": len(chosen), "check_runs": shown}


def list_annotations(
    world: World, p: Principal, full: str, run_id: int, query: dict[str, str]
) -> list[Any]:
    with world.state.lock:
        repo = world.authorize(p, full, "checks", "read")
        run = _runs(repo).get(str(run_id))
        if run is None:
            raise not_found()
        blob = f"{world.render.web}/{full}/blob/{run['head_sha']}"
        return page(
            [
                {
                    **{k: v for k, v in a.items() if k != "title"},
                    "title": a.get("title"),
                    "blob_href": f"{blob}/{a['path']}",
                    "start_column": None,
                    "end_column": None,
                    "raw_details": None,
                }
                for a in run["annotations"]
            ],
            query,
        )


def render(world: World, full: str, run: dict[str, Any]) -> dict[str, Any]:
    """GitHub's check-run object (githubkit's `CheckRun`)."""
    api = f"{world.render.api}/repos/{full}"
    return {
        "id": run["id"],
        "head_sha": run["head_sha"],
        "node_id": node_id("CheckRun", run["id"]),
        "external_id": run["external_id"],
        "url": f"{api}/check-runs/{run['id']}",
        "html_url": f"{world.render.web}/{full}/runs/{run['id']}",
        "details_url": run["details_url"],
        "status": run["status"],
        "conclusion": run["conclusion"],
        "started_at": run["started_at"],
        "completed_at": run["completed_at"],
        "output": {
            "title": run["title"],
            "summary": run["summary"],
            "text": run["text"],
            "annotations_count": len(run["annotations"]),
            "annotations_url": f"{api}/check-runs/{run['id']}/annotations",
        },
        "name": run["name"],
        "check_suite": {"id": run["suite_id"]},
        "app": world.render.app(),
        "pull_requests": [],
    }
