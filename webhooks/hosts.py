"""The host API: GPU hosts lease jobs (long-poll), report progress and results.

Each endpoint takes the student's bearer token. A lease answers the moment a
job this student may run is queued: the handler waits on the student's wake-up
event, not on a sleep loop.
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any
from urllib.parse import urlsplit

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery

from bot import records
from bot.core import diffcheck
from bot.engine.evidence import lab_seed_correlation
from bot.engine.jobs import LeaseConflict, Leased, check_lease, hash_token
from bot.github import bundles
from bot.protocol import Implement, Job, JobEvent, JobResult
from webhooks.bodies import PUSH_MAX_BODY_BYTES, BodyTooLarge, read_capped, read_json

MAX_WAIT_S = 60.0
MAX_DEFENCES_CHARS = 600
_DEFENCE_KEY = re.compile(r"[a-z_]{1,20}")
_DEFENCE_VALUE = re.compile(r"[A-Za-z0-9 _.()/,+-]{1,80}")
# A defence held by a weaker fallback than the host could have: named in /healthz.
_WEAK = ("NONE", "RLIMIT_AS", "RLIMIT_NPROC", "not ")


def parse_defences(text: str) -> dict[str, Any]:
    """A host's `defences` lease parameter (`memory=cgroup v1;processes=...`), checked.

    What a host says about itself is a claim: only short `key=value` pairs of
    a plain alphabet are kept (the rest is dropped, never echoed), and the
    defences that run on a fallback are listed as `degraded`.
    """
    found: dict[str, str] = {}
    for pair in text[:MAX_DEFENCES_CHARS].split(";"):
        key, sep, value = pair.partition("=")
        if sep and _DEFENCE_KEY.fullmatch(key) and _DEFENCE_VALUE.fullmatch(value):
            found[key] = value
    degraded = sorted(k for k, v in found.items() if v.startswith(_WEAK))
    return {"defences": found, "degraded": degraded}


def clone_url(api_url: str, repo: str) -> str:
    """The smart-HTTP URL of a repo, derived from the API URL (github.com, GHES or the sandbox)."""
    if api_url.rstrip("/") == "https://api.github.com":
        return f"https://github.com/{repo}.git"
    parts = urlsplit(api_url)
    path = re.sub(r"/api/v3/?$", "", parts.path.rstrip("/"))
    return f"{parts.scheme}://{parts.netloc}{path}/{repo}.git"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def _student_for_token(ctx: Any, token: str | None) -> str | None:
    if not token:
        return None
    row = ctx.store.one("SELECT name FROM students WHERE token_hash = ?", (hash_token(token),))
    return row["name"] if row else None


def _error(status: int, message: str) -> Response[dict[str, str]]:
    return Response({"error": message}, status_code=status)


async def _job_payload(ctx: Any, leased: Leased) -> dict[str, Any]:
    job, repo, exp = leased.job, leased.repo, leased.experiment
    token, expires = await ctx.github.job_token(repo.installation_id, repo.full_name)
    implement = job.implement or None
    if (
        exp is not None
        and exp.implemented
        and not exp.feedback
        and not job.implement.get("onto_base")
    ):
        implement = None  # an earlier job implemented it; this one only trains
    student_row = ctx.store.one("SELECT gpus FROM students WHERE name = ?", (job.leased_by,))
    return Job(
        id=job.id,
        kind=job.kind,
        student=job.leased_by or "",
        repo=repo.full_name,
        clone_url=clone_url(ctx.settings.github_api_url, repo.full_name),
        token=token,
        token_expires_at=expires,
        base_ref=repo.base_branch,
        base_sha=job.base_sha or repo.base_sha or "",
        seeds=list(job.seeds),
        attempt=job.attempts,
        experiment_id=job.experiment_id,
        pr_number=exp.pr_number if exp else None,
        head_ref=exp.branch if exp else None,
        head_sha=exp.head_sha if exp else None,
        implement=Implement(**implement) if implement else None,
        wandb_group=(
            (f"pr-{exp.pr_number}" if exp.pr_number else f"experiment-{exp.id}")
            if exp
            else "baseline"
        ),
        gpus=list(range(student_row["gpus"])) if student_row and student_row["gpus"] else [],
        lease_id=job.lease_id or "",
        **_early_stop_fields(ctx, repo, job),
    ).to_dict()


def _early_stop_fields(ctx: Any, repo: Any, job: records.Job) -> dict[str, Any]:
    """What early stopping compares a candidate's progress with: its base's baseline curves.

    Each curve goes with its seed (a candidate seed is compared with its own
    seed's curve when there is one) and the lab's seed correlation (the paired
    band); nothing for baselines or when the problem has no `[train] early_stop`.
    """
    if job.kind == "baseline" or repo.problem.early_stop is None:
        return {}
    runs = [  # the curves only: a lease does not read log tails
        records.Run.from_row(row)
        for row in ctx.store.query(
            "SELECT id, repo_id, kind, seed, status, curve FROM runs WHERE repo_id = ? "
            "AND track = ? AND kind = 'baseline' AND status = 'ok' AND base_sha IS ? "
            "ORDER BY seed, id",
            (repo.id, repo.track, job.base_sha or repo.base_sha),
        )
    ]
    curves = [(run.seed, run.curve) for run in runs if run.curve]
    return {
        "baseline_curves": [curve for _, curve in curves],
        "baseline_curve_seeds": [seed for seed, _ in curves],
        "seed_correlation": lab_seed_correlation(ctx.store, repo.id, exclude=job.experiment_id),
    }


@post("/api/hosts/{name:str}/lease", status_code=200, summary="Long-poll for the next job")
async def lease(
    name: FromPath[str], request: Request, state: State, wait: FromQuery[float] = 0.0
) -> Response[Any]:
    ctx = state.kohai
    student = _student_for_token(ctx, _bearer(request))
    if student is None:
        return _error(401, "missing or invalid host token")
    if student != name:
        return _error(403, f"this token belongs to student {student}, not {name}")
    said = request.query_params.get("defences")
    if said is not None:  # listed per host in /healthz
        ctx.extra.setdefault("host_defences", {})[name] = parse_defences(said)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0.0, min(wait, MAX_WAIT_S))
    wake = ctx.waiters.event(name)
    while True:
        wake.clear()
        leased = ctx.jobs.take(name)
        if leased is not None:
            try:
                body = await _job_payload(ctx, leased)
            except Exception as exc:  # noqa: BLE001 - GitHub down: the job goes back, the host retries
                ctx.jobs.give_back(leased.job.id, count_attempt=False, lease_id=leased.job.lease_id)
                return _error(503, f"cannot mint a repository token right now: {exc}")
            return Response(body, status_code=200)
        remaining = deadline - loop.time()
        if remaining <= 0:
            return Response(None, status_code=204)
        try:
            await asyncio.wait_for(wake.wait(), timeout=remaining)
        except TimeoutError:
            pass


def _authorize_job(
    ctx: Any, request: Request, job_id: int
) -> tuple[str | None, Response[Any] | None, dict[str, Any]]:
    """(student, error, the job's lease columns). Hosts call this with every heartbeat, so
    it reads the four columns a lease check needs, not the job's whole row (its diff)."""
    student = _student_for_token(ctx, _bearer(request))
    if student is None:
        return None, _error(401, "missing or invalid host token"), {}
    job = ctx.store.one(
        "SELECT leased_by, state, lease_id, cancel FROM jobs WHERE id = ?", (job_id,)
    )
    if job is None:
        return None, _error(404, f"no job {job_id}"), {}
    if job["leased_by"] not in (None, student):
        return None, _error(403, f"job {job_id} is leased by another student"), job
    return student, None, job


async def _json_body(request: Request) -> dict[str, Any] | None:
    """The JSON object of the body, read within the route's cap (413 past it, by the app)."""
    data = await read_json(request)
    return data if isinstance(data, dict) else None


@post("/api/jobs/{job_id:int}/events", status_code=200, summary="Progress, log lines, heartbeat")
async def job_events(job_id: FromPath[int], request: Request, state: State) -> Response[Any]:
    """Extends the lease the event names; 409 when that lease is not the job's current one."""
    ctx = state.kohai
    student, error, job = _authorize_job(ctx, request, job_id)
    if error:
        return error
    data = await _json_body(request)
    if data is None or "kind" not in data:
        return _error(400, "expected a JSON event with a kind")
    try:
        event = JobEvent.from_dict(data)
        event.check()
    except (TypeError, ValueError) as exc:  # ProtocolError is a ValueError
        return _error(400, f"malformed event: {exc}")
    if not isinstance(event.lease_id, str):
        return _error(400, "lease_id must be a string")
    heartbeats = ctx.extra.get("heartbeats")
    if event.kind == "heartbeat" and heartbeats is not None:
        # Checked now (on the columns read above), written with the others
        # (webhooks.workers.Heartbeats).
        try:
            check_lease(job_id, job["lease_id"], event.lease_id)
        except LeaseConflict as exc:
            return _error(409, str(exc))
        if job["leased_by"] != student or job["state"] != "leased":
            return _error(409, f"job {job_id} is no longer leased to {student}")
        expires = heartbeats.note(job_id, event.lease_id, student, time.time())
        ctx.jobs.engine.bus.publish("progress", job_id=job_id, student=student, kind="heartbeat")
        return Response({"lease_expires_at": expires, "cancel": job["cancel"]}, status_code=200)
    try:
        answer = ctx.jobs.record_event(job_id, student, event)
    except LeaseConflict as exc:
        return _error(409, str(exc))
    return Response(answer, status_code=200)


@post("/api/jobs/{job_id:int}/complete", status_code=200, summary="Final result (idempotent)")
async def job_complete(job_id: FromPath[int], request: Request, state: State) -> Response[Any]:
    """Stores the result of the lease it names, once; 409 for any other lease, 400 if it does not fit."""
    ctx = state.kohai
    student, error, job = _authorize_job(ctx, request, job_id)
    if error:
        return error
    data = await _json_body(request)
    if data is None or "status" not in data:
        return _error(400, "expected a JSON result with a status")
    try:
        result = JobResult.from_dict(data)
        result.check()  # shas, texts, URLs: a host's report is a claim
    except (TypeError, ValueError, AttributeError) as exc:  # ProtocolError is a ValueError
        return _error(400, f"malformed result: {exc}")
    try:
        outcome = ctx.jobs.complete(job_id, student, result)
    except LeaseConflict as exc:
        return _error(409, str(exc))
    except KeyError:
        return _error(404, f"no job {job_id}")
    except ValueError as exc:
        return _error(400, f"result does not fit job {job_id}: {exc}")
    return Response({"status": outcome}, status_code=200)


@post("/api/jobs/{job_id:int}/release", status_code=200, summary="Give a job back (host shutdown)")
async def job_release(
    job_id: FromPath[int], request: Request, state: State, lease_id: FromQuery[str] = ""
) -> Response[Any]:
    """Gives back the lease it names (409 for any other), without counting an attempt."""
    ctx = state.kohai
    student, error, job = _authorize_job(ctx, request, job_id)
    if error:
        return error
    try:
        ctx.jobs.give_back(job_id, count_attempt=False, lease_id=lease_id)
    except LeaseConflict as exc:
        return _error(409, str(exc))
    return Response({"status": "released"}, status_code=200)


@post(
    "/api/jobs/{job_id:int}/push",
    status_code=200,
    request_max_body_size=PUSH_MAX_BODY_BYTES,
    summary="Publish a host's commit (a git bundle) to the experiment's branch",
)
async def job_push(
    job_id: FromPath[int],
    request: Request,
    state: State,
    branch: FromQuery[str] = "",
    lease_id: FromQuery[str] = "",
) -> Response[Any]:
    """The body is `git bundle` bytes with one head; the bot checks it and pushes as the App.

    Hosts hold read-only tokens, so this is the only way a commit of theirs
    reaches GitHub: onto the leased job's own experiment branch, as a
    fast-forward that contains the job's base, never forced, and changing only
    what the lab allows (`bot.core.diffcheck`, on the bot's own diff: 422 with
    the offending paths, and the job ends `refused` with them on the PR). The
    tip it pushed is recorded: it is what the job must report and what merges.
    """
    ctx = state.kohai
    student = _student_for_token(ctx, _bearer(request))
    if student is None:
        return _error(401, "missing or invalid host token")
    job = ctx.store.get(records.Job, job_id)
    if job is None:
        return _error(404, f"no job {job_id}")
    if job.leased_by != student or job.state != "leased":
        return _error(409, f"job {job_id} is not leased by {student}")
    if job.lease_id and lease_id != job.lease_id:
        return _error(409, f"lease {lease_id or '(none)'} is not the current lease of job {job_id}")
    exp = None
    if job.experiment_id:
        exp = ctx.store.get(records.Experiment, job.experiment_id)
    branch = branch or request.headers.get("x-kohai-branch", "")
    refusal = bundles.branch_refusal(branch, exp.branch if exp else None, job.kind)
    if refusal is not None:
        return _error(403, refusal)
    try:  # streamed: a body past the cap is dropped there, never held whole
        body = await read_capped(request, bundles.MAX_BUNDLE_BYTES)
    except BodyTooLarge:
        return _error(413, f"a bundle may hold at most {bundles.MAX_BUNDLE_BYTES} bytes")
    repo = ctx.jobs.engine.repo_by_id(job.repo_id, job.track)
    base_sha = job.base_sha or repo.base_sha or ""
    try:
        token = await ctx.github.push_token(repo.installation_id, repo.full_name)
    except Exception as exc:  # noqa: BLE001 - GitHub down: the host retries
        return _error(503, f"cannot mint a push token right now: {exc}")
    problem = repo.problem
    try:
        pushed = await asyncio.to_thread(
            bundles.publish_bundle,
            body,
            clone_url=clone_url(ctx.settings.github_api_url, repo.full_name),
            branch=branch,
            base_ref=repo.base_branch,
            base_sha=base_sha,
            token=token,
            check=lambda changes: diffcheck.findings(changes, problem),
        )
    except bundles.DiffRefused as exc:
        # The lab's rules, checked on the bot's own diff: the job ends here, the PR hears why.
        try:
            ctx.jobs.refuse_push(job_id, student, job.lease_id or "", str(exc))
        except LeaseConflict:
            pass  # the lease ended meanwhile: the refusal still stands for this push
        return _error(422, str(exc))
    except bundles.PushRejected as exc:
        ctx.github.forget_push_token(token)  # refused with it: the next push mints anew
        return _error(409, str(exc))
    except bundles.BundleRefused as exc:
        return _error(422, str(exc))
    except bundles.PushFailed as exc:
        ctx.github.forget_push_token(token)
        return _error(502, str(exc))
    try:
        ctx.jobs.accept_push(job_id, job.lease_id or "", pushed.tip, pushed.diff)
    except LeaseConflict as exc:
        return _error(409, str(exc))
    sha = pushed.tip
    return Response({"status": "pushed", "branch": branch, "sha": sha}, status_code=200)


@get("/api/hosts/{name:str}/whoami", summary="Check a host token without leasing anything")
async def whoami(name: FromPath[str], request: Request, state: State) -> Response[Any]:
    """200 when the token is this student's; 401/403 otherwise. `kohai host run` asks at start,
    so a wrong URL or token is one line then, not a retry loop later."""
    student = _student_for_token(state.kohai, _bearer(request))
    if student is None:
        return _error(401, "missing or invalid host token")
    if student != name:
        return _error(403, f"this token belongs to student {student}, not {name}")
    return Response({"student": student}, status_code=200)


ROUTES = [lease, job_events, job_complete, job_release, job_push, whoami]
