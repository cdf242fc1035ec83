"""The dashboard's routes: HTML pages, the JSON API, the live event stream, static files.

`/` lists the labs (one per repository with a `kohai.toml`, one per declared
track); `/labs/{owner}/{repo}[/{track}]` is one lab's page, with that lab's own
metric and direction as stored at its last sync. With a single lab, `/` is that
lab's page too. Pages work with no internet and no JavaScript; one small script
(`static/live.js`) subscribes to `/events` and swaps in the sections that
changed, so an open page follows the lab as it works.

Every page, the JSON API and the event stream run `signin.require_viewer`
first: unless the dashboard is public, a visitor signs in with GitHub and sees
only the labs whose repositories they can read (a lab they cannot read is a
404, as if it did not exist; lists and events leave it out).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.enums import MediaType
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.response import ServerSentEvent, ServerSentEventMessage

from bot import queries
from bot.engine import labs
from bot.outbox.worker import budget_status
from bot.problem import Problem
from bot.store import Store
from webhooks.dashboard import signin
from webhooks.dashboard.pages import (
    DEFAULT_HTML_BASE,
    experiment_path,
    lab_path,
    readable_names,
    render_experiment,
    render_index,
    render_labs,
    with_viewer,
)
from webhooks.dashboard.signin import visible_of

STATIC_DIR = Path(__file__).parent / "static"
KEEPALIVE_S = 15.0
VISIBLE_REFRESH_S = 60.0  # an open event stream re-asks what its viewer may read
GUARD = signin.require_viewer  # before every page, the JSON API and the event stream


def _shows(visible: frozenset[int] | None, repo_id: int | None) -> bool:
    """Whether a viewer who may read `visible` (None: everything) may see this repository."""
    return visible is None or (repo_id is not None and repo_id in visible)


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


@get(
    "/",
    media_type=MediaType.HTML,
    include_in_schema=False,
    sync_to_thread=False,
    before_request=GUARD,
)
def dashboard_index(state: State, request: Request) -> str:
    """The lab list; with one lab (or none yet), that lab's page below it."""
    store = _store(state)
    visible = visible_of(request)
    rows = [row for row in labs.lab_rows(store) if _shows(visible, row.repo_id)]
    viewer = signin.viewer_name(request)
    budgets = _budgets(state, store)
    if len(rows) > 1 or (visible is not None and not rows):
        return with_viewer(render_labs(store, rows, visible, budgets), viewer)
    repo_id = rows[0].repo_id if rows else None
    page = render_index(
        store,
        _problem(state, repo_id),
        _html_base(state),
        repo_id,
        lab_list=rows,
        visible=visible,
        budgets=budgets,
    )
    return with_viewer(page, viewer)


def _budgets(state: State, store: Store) -> list[dict[str, Any]] | None:
    """The installations' GitHub budgets, when the bot's context is there (not in previews)."""
    ctx = state.get("kohai")
    github = getattr(ctx, "github", None)
    return budget_status(github, store) if github is not None else None


def _lab_id(
    state: State,
    owner: str,
    repo: str,
    track: str | None = None,
    visible: frozenset[int] | None = None,
) -> int:
    """The repository's id; 404 for an unknown repository, one the viewer cannot read
    (the same answer: whether it exists is not theirs to know) or an undeclared track."""
    row = _store(state).one(
        "SELECT id, problem_toml FROM repos WHERE full_name = ? COLLATE NOCASE",
        (f"{owner}/{repo}",),
    )
    if row is None or not _shows(visible, int(row["id"])):
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
    before_request=GUARD,
)
def dashboard_lab(state: State, request: Request) -> str:
    """One lab's page, with its own metric, direction, experiments and queue."""
    params = request.path_params
    track = (params.get("track") or "default").lower()
    visible = visible_of(request)
    repo_id = _lab_id(state, params["owner"], params["repo"], track, visible)
    page = render_index(
        _store(state),
        _problem(state, repo_id),
        _html_base(state),
        repo_id,
        scoped=True,
        track=track,
        visible=visible,
    )
    return with_viewer(page, signin.viewer_name(request))


@get(
    "/labs/{owner:str}/{repo:str}/experiments/{n:int}",
    media_type=MediaType.HTML,
    include_in_schema=False,
    sync_to_thread=False,
    before_request=GUARD,
)
def dashboard_lab_experiment(state: State, request: Request) -> str:
    """An experiment's page within its lab: `n` is its PR number there, or its id with `?by=id`."""
    params = request.path_params
    repo_id = _lab_id(state, params["owner"], params["repo"], visible=visible_of(request))
    n = int(params["n"])
    by = request.query_params.get("by", "auto")
    detail = queries.experiment_detail(
        _store(state), n, by=by if by in ("pr", "id") else "auto", repo_id=repo_id
    )
    if detail is None:
        raise NotFoundException(f"no experiment {n} in {params['owner']}/{params['repo']}")
    page = render_experiment(detail, _problem(state, repo_id), _html_base(state))
    return with_viewer(page, signin.viewer_name(request))


@get(
    "/experiments/{n:int}",
    media_type=MediaType.HTML,
    include_in_schema=False,
    sync_to_thread=False,
    before_request=GUARD,
)
def dashboard_experiment(state: State, request: Request) -> str:
    """An experiment's page: `n` is its PR number, or its id with `?by=id`.

    A viewer who may read only some labs gets the first of those labs that has it.
    """
    n = int(request.path_params["n"])
    by = request.query_params.get("by", "auto")
    how = by if by in ("pr", "id") else "auto"
    visible = visible_of(request)
    store = _store(state)
    if visible is None:
        detail = queries.experiment_detail(store, n, by=how)
    else:
        found = (queries.experiment_detail(store, n, by=how, repo_id=r) for r in sorted(visible))
        detail = next((d for d in found if d is not None), None)
    if detail is None:
        raise NotFoundException(f"no experiment {n}")
    page = render_experiment(detail, _problem(state, detail.experiment.repo_id), _html_base(state))
    return with_viewer(page, signin.viewer_name(request))


@get("/api/experiments", sync_to_thread=False, before_request=GUARD)
def api_experiments(state: State, request: Request) -> list[dict[str, Any]]:
    """Every experiment (of one lab with `?lab=owner/repo[:track]`) with its result, newest first."""
    html_base = _html_base(state)
    visible = visible_of(request)
    wanted = request.query_params.get("lab")
    repo_id, track = None, None
    if wanted:
        full_name, track = labs.split_lab_key(wanted)
        if ":" not in wanted:
            track = None  # the whole repository: every track
        owner, _, name = full_name.partition("/")
        repo_id = _lab_id(state, owner, name, track, visible)
    return [
        {
            **asdict(exp),
            "lab": labs.lab_key(exp.repo, exp.track),
            "page": experiment_path(exp),
            "lab_page": experiment_path(exp, scoped=True),
            "pr_url": queries.pr_url(exp.repo, exp.pr_number, html_base),
        }
        for exp in queries.experiments(_store(state), repo_id, track)
        if _shows(visible, exp.repo_id)
    ]


@get("/api/labs", sync_to_thread=False, before_request=GUARD)
def api_labs(state: State, request: Request) -> list[dict[str, Any]]:
    """Every lab: metric and direction, baseline, best, experiments, share against weight."""
    visible = visible_of(request)
    return [
        asdict(row) | {"page": lab_path(row.lab)}
        for row in labs.lab_rows(_store(state))
        if _shows(visible, row.repo_id)
    ]


# What a student row says about its current job; hidden when the job's lab is not the viewer's.
_JOB_DETAILS = ("job_kind", "job_phase", "experiment_id", "pr_number", "title", "repo")


@get("/api/hosts", sync_to_thread=False, before_request=GUARD)
def api_hosts(state: State, request: Request) -> list[dict[str, Any]]:
    """Every registered student/host with its state and current job.

    Students are shared between labs: a viewer who may read only some labs sees
    every student, but the current job only when it is for one of those labs,
    and of the labs a student serves only those.
    """
    store = _store(state)
    visible = visible_of(request)
    rows = [asdict(student) for student in queries.students(store)]
    if visible is None:
        return rows
    names = readable_names(store, visible)
    for row in rows:
        if row["job_id"] is not None and str(row.get("repo") or "").lower() not in names:
            row.update(dict.fromkeys(_JOB_DETAILS))
        if row.get("labs"):
            kept = [
                lab
                for lab in str(row["labs"]).split(",")
                if labs.split_lab_key(lab.strip())[0].lower() in names
            ]
            row["labs"] = ",".join(kept)
    return rows


_EXPERIMENT = (
    "SELECT r.id AS repo_id, r.full_name, e.track FROM experiments e JOIN repos r "
    "ON r.id = e.repo_id WHERE e.id = ?"
)
_JOB = (
    "SELECT r.id AS repo_id, r.full_name, j.track FROM jobs j JOIN repos r "
    "ON r.id = j.repo_id WHERE j.id = ?"
)
_REPO = "SELECT id AS repo_id, full_name, NULL AS track FROM repos WHERE id = ?"
# topic -> (the query of its repository, the message field that keys it)
_LAB_OF: dict[str, tuple[str, str]] = {
    "experiment": (_EXPERIMENT, "id"),
    "review": (_EXPERIMENT, "experiment_id"),
    "job": (_JOB, "id"),
    "progress": (_JOB, "job_id"),
    "repo": (_REPO, "id"),
    "lab": (_REPO, "id"),
}


def _lab_row(store: Store | None, message: dict[str, Any]) -> dict[str, Any] | None:
    """The repository row (repo_id, full_name, track) a bus message is about, if any."""
    if store is None or not isinstance(message, dict):
        return None
    topic = str(message.get("topic"))
    if topic == "outbox" and isinstance(message.get("repo"), str):
        return store.one(
            "SELECT id AS repo_id, full_name, NULL AS track FROM repos "
            "WHERE full_name = ? COLLATE NOCASE",
            (message["repo"],),
        )
    sql, field = _LAB_OF.get(topic, (None, ""))
    key = message.get(field)
    if sql is None or not isinstance(key, int) or isinstance(key, bool):
        return None
    return store.one(sql, (key,))


def visible_message(
    store: Store | None, message: dict[str, Any], visible: frozenset[int] | None
) -> dict[str, Any] | None:
    """The message as a viewer who may read `visible` gets it, or None: not for them.

    Public (None): the whole message, with its lab. A message about a lab the
    viewer cannot read is dropped; one about no lab is cut to its topic (the
    page refreshes itself through the same filter, so nothing leaks by it).
    """
    row = _lab_row(store, message)
    if visible is not None:
        if row is None:
            return {"topic": message.get("topic")} if isinstance(message, dict) else None
        if int(row["repo_id"]) not in visible:
            return None
    if row is not None and "lab" not in message:
        track = row["track"] or message.get("track")
        lab = labs.lab_key(str(row["full_name"]), track if isinstance(track, str) else None)
        message = {**message, "lab": lab}
    return message


Refresh = Callable[[], Awaitable[frozenset[int] | None]]


async def _event_stream(
    bus: Any,
    store: Store | None = None,
    visible: frozenset[int] | None = None,
    refresh: Refresh | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    checked = time.monotonic()
    async with bus.subscribe() as inbox:
        yield ServerSentEventMessage(data=json.dumps({"topic": "hello"}), retry=3000)
        while True:
            try:
                message = await asyncio.wait_for(inbox.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                yield ServerSentEventMessage(comment="keepalive")
                continue
            if refresh is not None and time.monotonic() - checked > VISIBLE_REFRESH_S:
                visible, checked = await refresh(), time.monotonic()
            shown = visible_message(store, message, visible)
            if shown is not None:
                yield ServerSentEventMessage(data=json.dumps(shown, default=str))


@get("/events", include_in_schema=False, before_request=GUARD)
async def dashboard_events(state: State, request: Request) -> ServerSentEvent:
    """Bus messages as server-sent events, each with the lab it is about (`lab`, owner/repo).

    The first one (`hello`) confirms the subscription. A signed-in viewer gets
    only the messages of the labs they can read, re-checked every minute.
    """
    visible = visible_of(request)
    store = state.get("store")
    refresh: Refresh | None = None
    access = signin.access_of(state)
    viewer = request.state.get(signin.VIEWER)
    if (
        visible is not None
        and access is not None
        and isinstance(viewer, signin.Viewer)
        and isinstance(store, Store)
    ):

        async def refresh() -> frozenset[int] | None:
            return await signin.readable_repos(access, store, viewer)

    return ServerSentEvent(_event_stream(state.bus, store, visible, refresh))


STATIC_FILES = {
    "live.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}


@get("/static/{name:str}", include_in_schema=False, sync_to_thread=False)
def dashboard_static(name: FromPath[str]) -> Response[bytes]:
    """The page's script and stylesheet; nothing else under static/ is served."""
    if name not in STATIC_FILES:
        raise NotFoundException(f"no static file {name!r}")
    return Response(
        (STATIC_DIR / name).read_bytes(),
        media_type=STATIC_FILES[name],
        headers={"Cache-Control": "no-cache"},
    )


ROUTES: list = [
    *signin.ROUTES,
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
