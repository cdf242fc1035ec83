"""The dashboard's routes: HTML pages, the JSON API, the live event stream, static files.

`/` lists the labs (one per repository with a `kohai.toml`, one per declared
track); `/labs/{owner}/{repo}[/{track}]` is one lab's page, with that lab's own
metric and direction as stored at its last sync. With a single lab, `/` is that
lab's page too. Pages work with no internet and no JavaScript; one small script
(`static/live.js`) subscribes to `/events` and swaps in the sections that
changed, so an open page follows the lab as it works.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException
from litestar.response import ServerSentEvent, ServerSentEventMessage

from bot import queries
from bot.engine import labs
from bot.outbox.worker import budget_status
from bot.problem import Problem
from bot.store import Store
from webhooks.dashboard.pages import (
    DEFAULT_HTML_BASE,
    experiment_path,
    lab_path,
    render_experiment,
    render_index,
    render_labs,
)

STATIC_DIR = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0


def _store(state: State) -> Store:
    return state.store


def _problem(state: State, repo_id: int | None = None) -> Problem:
    """The lab's problem as stored at its last sync.

    A repository that never synced a kohai.toml falls back to the app's
    `problem` (a bot serving a database of one known problem), else the default.
    """
    if repo_id is not None:
        row = _store(state).one("SELECT problem_toml FROM repos WHERE id = ?", (repo_id,))
        if row and row["problem_toml"]:
            return labs.stored_problem_of(row["problem_toml"])
    problem = state.get("problem")
    return problem if isinstance(problem, Problem) else Problem()


def _html_base(state: State) -> str:
    return str(state.get("github_html_url") or DEFAULT_HTML_BASE).rstrip("/")


@get("/", media_type=MediaType.HTML, include_in_schema=False, sync_to_thread=False)
def dashboard_index(state: State) -> str:
    """The lab list; with one lab (or none yet), that lab's page below it."""
    store = _store(state)
    rows = labs.lab_rows(store)
    budgets = _budgets(state, store)
    if len(rows) > 1:
        return render_labs(store, rows, budgets)
    repo_id = rows[0].repo_id if rows else None
    problem = _problem(state, repo_id)
    return render_index(store, problem, _html_base(state), repo_id, lab_list=rows, budgets=budgets)


def _budgets(state: State, store: Store) -> list[dict[str, Any]] | None:
    """The installations' GitHub budgets, when the bot's context is there (not in previews)."""
    ctx = state.get("kohai")
    github = getattr(ctx, "github", None)
    return budget_status(github, store) if github is not None else None


def _lab_id(state: State, owner: str, repo: str, track: str | None = None) -> int:
    """The repository's id; 404 for an unknown repository or a track it does not declare."""
    row = _store(state).one(
        "SELECT id, problem_toml FROM repos WHERE full_name = ? COLLATE NOCASE",
        (f"{owner}/{repo}",),
    )
    if row is None:
        raise NotFoundException(f"no lab {owner}/{repo}")
    if track is not None and track.lower() not in _track_names(row["problem_toml"]):
        raise NotFoundException(f"no track {track[:60]} in {owner}/{repo}")
    return int(row["id"])


def _track_names(problem_toml: str | None) -> tuple[str, ...]:
    return labs.stored_problem_of(problem_toml).track_names


@get(
    ["/labs/{owner:str}/{repo:str}", "/labs/{owner:str}/{repo:str}/{track:str}"],
    media_type=MediaType.HTML,
    include_in_schema=False,
    sync_to_thread=False,
)
def dashboard_lab(state: State, request: Request) -> str:
    """One lab's page, with its own metric, direction, experiments and queue."""
    params = request.path_params
    track = (params.get("track") or "default").lower()
    repo_id = _lab_id(state, params["owner"], params["repo"], track)
    return render_index(
        _store(state),
        _problem(state, repo_id),
        _html_base(state),
        repo_id,
        scoped=True,
        track=track,
    )


@get(
    "/labs/{owner:str}/{repo:str}/experiments/{n:int}",
    media_type=MediaType.HTML,
    include_in_schema=False,
    sync_to_thread=False,
)
def dashboard_lab_experiment(state: State, request: Request) -> str:
    """An experiment's page within its lab: `n` is its PR number there, or its id with `?by=id`."""
    params = request.path_params
    repo_id = _lab_id(state, params["owner"], params["repo"])
    n = int(params["n"])
    by = request.query_params.get("by", "auto")
    detail = queries.experiment_detail(
        _store(state), n, by=by if by in ("pr", "id") else "auto", repo_id=repo_id
    )
    if detail is None:
        raise NotFoundException(f"no experiment {n} in {params['owner']}/{params['repo']}")
    return render_experiment(detail, _problem(state, repo_id), _html_base(state))


@get(
    "/experiments/{n:int}",
    media_type=MediaType.HTML,
    include_in_schema=False,
    sync_to_thread=False,
)
def dashboard_experiment(state: State, request: Request) -> str:
    """An experiment's page: `n` is its PR number, or its id with `?by=id`."""
    n = int(request.path_params["n"])
    by = request.query_params.get("by", "auto")
    detail = queries.experiment_detail(_store(state), n, by=by if by in ("pr", "id") else "auto")
    if detail is None:
        raise NotFoundException(f"no experiment {n}")
    return render_experiment(detail, _problem(state, detail.experiment.repo_id), _html_base(state))


@get("/api/experiments", sync_to_thread=False)
def api_experiments(state: State, request: Request) -> list[dict[str, Any]]:
    """Every experiment (of one lab with `?lab=owner/repo[:track]`) with its result, newest first."""
    html_base = _html_base(state)
    wanted = request.query_params.get("lab")
    repo_id, track = None, None
    if wanted:
        full_name, track = labs.split_lab_key(wanted)
        if ":" not in wanted:
            track = None  # the whole repository: every track
        owner, _, name = full_name.partition("/")
        repo_id = _lab_id(state, owner, name, track)
    return [
        {
            **asdict(exp),
            "lab": labs.lab_key(exp.repo, exp.track),
            "page": experiment_path(exp),
            "lab_page": experiment_path(exp, scoped=True),
            "pr_url": queries.pr_url(exp.repo, exp.pr_number, html_base),
        }
        for exp in queries.experiments(_store(state), repo_id, track)
    ]


@get("/api/labs", sync_to_thread=False)
def api_labs(state: State) -> list[dict[str, Any]]:
    """Every lab: metric and direction, baseline, best, experiments, share against weight."""
    return [asdict(row) | {"page": lab_path(row.lab)} for row in labs.lab_rows(_store(state))]


@get("/api/hosts", sync_to_thread=False)
def api_hosts(state: State) -> list[dict[str, Any]]:
    """Every registered student/host with its state and current job."""
    return [asdict(student) for student in queries.students(_store(state))]


_LAB_OF = {
    "experiment": "SELECT r.full_name, e.track FROM experiments e JOIN repos r "
    "ON r.id = e.repo_id WHERE e.id = ?",
    "job": "SELECT r.full_name, j.track FROM jobs j JOIN repos r ON r.id = j.repo_id "
    "WHERE j.id = ?",
    "progress": "SELECT r.full_name, j.track FROM jobs j JOIN repos r ON r.id = j.repo_id "
    "WHERE j.id = ?",
    "repo": "SELECT full_name, NULL AS track FROM repos WHERE id = ?",
    "lab": "SELECT full_name, NULL AS track FROM repos WHERE id = ?",
}


def lab_of(store: Store | None, message: dict[str, Any]) -> str | None:
    """The lab (`owner/repo`, or `owner/repo:track`) a bus message is about; None: no lab."""
    if store is None or not isinstance(message, dict):
        return None
    sql = _LAB_OF.get(str(message.get("topic")))
    key = message.get("job_id") if message.get("topic") == "progress" else message.get("id")
    if sql is None or not isinstance(key, int) or isinstance(key, bool):
        return None
    row = store.one(sql, (key,))
    if not row:
        return None
    track = row["track"] or message.get("track")
    return labs.lab_key(str(row["full_name"]), track if isinstance(track, str) else None)


async def _event_stream(
    bus: Any, store: Store | None = None
) -> AsyncIterator[ServerSentEventMessage]:
    async with bus.subscribe() as inbox:
        yield ServerSentEventMessage(data=json.dumps({"topic": "hello"}), retry=3000)
        while True:
            try:
                message = await asyncio.wait_for(inbox.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ServerSentEventMessage(comment="keepalive")
                continue
            lab = lab_of(store, message)
            if lab is not None and "lab" not in message:
                message = {**message, "lab": lab}
            yield ServerSentEventMessage(data=json.dumps(message, default=str))


@get("/events", include_in_schema=False)
async def dashboard_events(state: State) -> ServerSentEvent:
    """Bus messages as server-sent events, each with the lab it is about (`lab`, owner/repo).

    The first one (`hello`) confirms the subscription.
    """
    return ServerSentEvent(_event_stream(state.bus, state.get("store")))


STATIC_FILES = {
    "live.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


@get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)
def dashboard_static(name: str) -> Response[bytes]:
    """The page's script and stylesheet; nothing else under static/ is served."""
    if name not in STATIC_FILES:
        raise NotFoundException(f"no static file {name!r}")
    return Response(
        (STATIC_DIR / name).read_bytes(),
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "no-cache"},
    )


ROUTES: list = [
    dashboard_index,
    dashboard_lab,
    dashboard_lab_experiment,
    dashboard_experiment,
    api_experiments,
    api_labs,
    api_hosts,
    dashboard_events,
    dashboard_static,
]
