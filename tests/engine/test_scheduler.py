"""Students shared by weight: the pure choices, a simulated backlog, and the real store.

Fair sharing is stride scheduling over GPU time (bot.engine.labs): the lab furthest
behind its weight gets the next job. The simulation gives labs different job
lengths on purpose: shares are of GPU time, not of job counts.
"""

from __future__ import annotations

import heapq
from pathlib import Path

import pytest

from bot.engine import handlers, labs
from bot.engine.engine import Engine
from bot.engine.jobs import JobBook, register_student
from bot.problem import ProblemError, loads_problem
from bot.records import Job
from bot.store import Store, now

METRIC = '\n[metric]\nname = "loss"\n'  # after the tables: root keys stay root keys

# ------------------------------------------------------------------ pure parts


@pytest.mark.parametrize(
    ("toml", "weight"),
    [
        ("", 1.0),
        ("[train]\nseeds = 2\n", 1.0),
        ("[lab]\nweight = 3\n", 3.0),
        ("[lab]\nweight = 0.5\n", 0.5),
        ("[lab]\nweight = 1000\n", 1000.0),
    ],
)
def test_lab_weight(toml: str, weight: float) -> None:
    assert loads_problem(toml + METRIC).weight == weight
    assert labs.repo_labs(1, "o/r", toml + METRIC, None)[0].weight == weight


@pytest.mark.parametrize(
    ("toml", "why"),
    [
        ("[lab]\nweight = 0\n", "zero would starve the lab"),
        ("[lab]\nweight = -2\n", "negative"),
        ("[lab]\nweight = 'lots'\n", "a string"),
        ("[lab]\nweight = true\n", "a boolean is not a number"),
        ("[lab]\nweight = inf\n", "infinity would take every student"),
        ("[lab]\nweight = nan\n", "nan compares with nothing"),
        ("[lab]\nweight = 1e12\n", "more than any share needs"),
        ("lab = 5\n", "lab must be a table"),
        ("[lab]\nwieght = 2\n", "a misspelt key"),
    ],
)
def test_a_bad_lab_weight_is_a_clear_error_and_no_lab(toml: str, why: str) -> None:
    with pytest.raises(ProblemError, match=r"\blab\b"):
        loads_problem(toml + METRIC)
    assert not labs.valid_problem(toml + METRIC), why


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        (None, None),
        ("", None),
        ("all", None),
        ("lab/charlm", ("lab/charlm",)),
        ("lab/charlm, lab/wide:big ,lab/charlm", ("lab/charlm", "lab/wide:big")),
    ],
)
def test_parse_lab_list(text: str | None, parsed: tuple[str, ...] | None) -> None:
    assert labs.parse_lab_list(text) == parsed


@pytest.mark.parametrize(
    "bad",
    ["charlm", "lab/charlm:", "lab/char lm", "lab/x;rm -rf /", "../x/y", "a/b/c", "lab/x:t:u"],
)
def test_parse_lab_list_refuses_what_is_not_owner_repo_track(bad: str) -> None:
    with pytest.raises(labs.LabListError):
        labs.parse_lab_list(bad)


@pytest.mark.parametrize(
    ("allowed", "name", "track", "ok"),
    [
        (None, "lab/a", None, True),
        (("lab/a",), "lab/a", None, True),
        (("lab/a",), "LAB/A", None, True),
        (("lab/a",), "lab/b", None, False),
        (("lab/a:wide",), "lab/a", None, False),
        (("lab/a:wide",), "lab/a", "wide", True),
        (("lab/a:default",), "lab/a", None, True),
        ((), "lab/a", None, False),
    ],
)
def test_may_serve(allowed, name, track, ok) -> None:
    assert labs.may_serve(allowed, name, track) is ok


@pytest.mark.parametrize(
    ("candidates", "usage", "weights", "chosen"),
    [
        ([], {}, {}, None),
        (["a", "b"], {}, {}, "a"),  # equals: the first in order
        (["a", "b"], {"a": 10}, {}, "b"),
        (["a", "b"], {"a": 10, "b": 20}, {"b": 3}, "b"),  # 20/3 < 10/1
        (["a", "b"], {"a": 10, "b": 40}, {"b": 3}, "a"),
        (["b"], {"a": 0, "b": 1e9}, {}, "b"),  # the only candidate, however far ahead
    ],
)
def test_pick_lab(candidates, usage, weights, chosen) -> None:
    assert labs.pick_lab(candidates, usage, weights) == chosen


def _job(job_id: int, lab: str, priority: int = 0, student: str | None = None) -> tuple[str, Job]:
    return lab, Job(
        id=job_id, kind="experiment", repo_id=1, state="queued", priority=priority, student=student
    )


@pytest.mark.parametrize(
    ("jobs", "usage", "chosen", "why"),
    [
        ([], {}, None, "nothing queued"),
        ([_job(1, "a"), _job(2, "b")], {"a": 100}, 2, "b is behind"),
        ([_job(1, "a", 10), _job(2, "b")], {"a": 100}, 1, "human work first, whatever the share"),
        ([_job(1, "a", 20), _job(2, "b", 10)], {"a": 100}, 1, "a baseline before human work"),
        (
            [_job(1, "a", 0, "fern"), _job(2, "b", 0)],
            {"a": 100},
            1,
            "the student's own job before anyone's",
        ),
        ([_job(1, "a"), _job(3, "a"), _job(2, "b")], {"b": 100}, 1, "oldest within the lab"),
    ],
)
def test_choose_job(jobs, usage, chosen, why) -> None:
    picked = labs.choose_job(jobs, usage, {})
    assert (picked[1].id if picked else None) == chosen, why


def simulate(
    weights: dict[str, float],
    durations: dict[str, float],
    students: int,
    horizon_s: float,
) -> dict[str, float]:
    """GPU seconds per lab when `students` serve an endless backlog of every lab.

    Each free student takes the job `choose_job` picks, charged at its
    duration while it runs (as `gpu_usage` charges work in flight).
    """
    usage = dict.fromkeys(weights, 0.0)
    busy: list[tuple[float, int]] = [(0.0, s) for s in range(students)]
    heapq.heapify(busy)
    while busy:
        t, student = heapq.heappop(busy)
        if t >= horizon_s:
            continue
        backlog = [_job(i, lab) for i, lab in enumerate(sorted(weights))]
        picked = labs.choose_job(backlog, usage, weights)
        assert picked is not None
        lab = picked[0]
        usage[lab] += durations[lab]
        heapq.heappush(busy, (t + durations[lab], student))
    return usage


@pytest.mark.parametrize(
    ("weights", "durations", "students"),
    [
        ({"a": 1, "b": 1}, {"a": 60, "b": 60}, 2),
        ({"a": 1, "b": 3}, {"a": 60, "b": 60}, 4),
        ({"a": 1, "b": 3}, {"a": 300, "b": 40}, 3),  # long jobs in the light lab
        ({"a": 2, "b": 1, "c": 1}, {"a": 30, "b": 90, "c": 45}, 5),
        ({"a": 1, "b": 0.25}, {"a": 50, "b": 50}, 1),  # one student, a small lab still served
    ],
)
def test_shares_follow_the_weights_over_a_simulated_backlog(weights, durations, students) -> None:
    usage = simulate(weights, durations, students, horizon_s=40 * 3600)
    share = labs.shares(usage, weights)
    for lab, row in share.items():
        assert row["measured"] > 0, f"{lab} starved"
        assert abs(row["measured"] - row["target"]) <= 0.1 * row["target"], (lab, share)


# ------------------------------------------------------------------ the store


def _repo(store: Store, name: str, weight: float, budget: str = "60s") -> int:
    toml = (
        f'[metric]\nname = "loss"\n[train]\ncommand = "true"\nbudget = "{budget}"\n'
        f'grace = "1s"\n[lab]\nweight = {weight}\n'
    )
    return store.insert(
        "repos",
        {
            "full_name": name,
            "installation_id": 1,
            "base_sha": "b" * 40,
            "synced_at": 1.0,
            "problem_toml": toml,
            "created_at": 0,
        },
    )


def _queue(store: Store, repo_id: int, n: int) -> None:
    t = now()
    for _ in range(n):
        store.insert(
            "jobs",
            {
                "kind": "baseline",
                "repo_id": repo_id,
                "state": "queued",
                "seeds": "[0]",
                "base_sha": "b" * 40,
                "created_at": t,
                "updated_at": t,
            },
        )


def test_the_job_book_shares_students_by_weight_over_the_real_store(tmp_path: Path) -> None:
    """Three students drain two labs' backlogs through `JobBook.take`; each run takes 60 s."""
    store = Store(tmp_path / "kohai.db")
    engine = Engine(store)
    book = JobBook(engine)
    with store.transaction():
        light = _repo(store, "lab/light", 1)
        heavy = _repo(store, "lab/heavy", 3)
        _queue(store, light, 150)
        _queue(store, heavy, 150)
    students = ["fern", "frieren", "stark"]
    for name in students:
        register_student(store, name)
    taken = {light: 0, heavy: 0}
    for _ in range(40):  # rounds: every student takes one job, then all finish
        leased = [book.take(name) for name in students]
        with store.transaction():
            for lease in leased:
                assert lease is not None
                taken[lease.repo.id] += 1
                store.insert(
                    "runs",
                    {
                        "repo_id": lease.repo.id,
                        "job_id": lease.job.id,
                        "kind": "baseline",
                        "student": lease.job.leased_by,
                        "seed": 0,
                        "status": "ok",
                        "metric": 1.0,
                        "duration_s": 60.0,
                        "created_at": now(),
                    },
                )
                store.update("jobs", lease.job.id, {"state": "done"})
    share = labs.lab_shares(store)
    assert taken[light] > 0 and taken[heavy] > 0
    for name, row in share.items():
        assert abs(row["measured"] - row["target"]) <= 0.1 * row["target"], (name, share)
    assert share["lab/heavy"]["target"] == pytest.approx(0.75)


def test_a_student_limited_to_one_lab_never_takes_another(tmp_path: Path) -> None:
    store = Store(tmp_path / "kohai.db")
    book = JobBook(Engine(store))
    with store.transaction():
        a = _repo(store, "lab/a", 1)
        b = _repo(store, "lab/b", 100)
        _queue(store, a, 2)
        _queue(store, b, 2)
    register_student(store, "fern")
    store.update("students", "fern", {"labs": "lab/a"})
    first = book.take("fern")
    assert first is not None and first.repo.full_name == "lab/a"
    store.update("jobs", first.job.id, {"state": "done"})
    second = book.take("fern")
    assert second is not None and second.repo.full_name == "lab/a"
    store.update("jobs", second.job.id, {"state": "done"})
    assert book.take("fern") is None  # lab/b's jobs wait for a student that may serve it


def test_a_deleted_installation_stops_its_labs_and_cancels_their_queued_jobs(
    tmp_path: Path,
) -> None:
    """GitHub's own `installation.deleted` delivery, through the router and the engine."""
    import json

    from bot.core.events import parse_event
    from bot.core.router import route

    fixture = (
        Path(__file__).resolve().parents[1]
        / "fixtures/github-webhooks/installation/deleted.payload.json"
    )
    payload = json.loads(fixture.read_text())
    installation = payload["installation"]["id"]
    store = Store(tmp_path / "kohai.db")
    engine = Engine(store)
    with store.transaction():
        gone = _repo(store, "octocat/Hello-World", 1)
        kept = _repo(store, "lab/kept", 1)
        store.update("repos", gone, {"installation_id": installation})
        store.update("repos", kept, {"installation_id": installation + 1})
        _queue(store, gone, 2)
        _queue(store, kept, 1)
        store.execute(
            "UPDATE jobs SET state = 'leased', leased_by = 'fern' WHERE id = "
            "(SELECT MIN(id) FROM jobs WHERE repo_id = ?)",
            (gone,),
        )
    event = parse_event("installation", payload)
    handlers.apply(engine, event, route(event, engine.snapshot(event)))
    jobs = {r["id"]: r for r in store.query("SELECT * FROM jobs")}
    mine = [j for j in jobs.values() if j["repo_id"] == gone]
    leased = [j for j in mine if j["state"] == "leased"]
    cancelled = [j for j in mine if j["state"] == "cancelled"]
    assert len(leased) == 1 and leased[0]["cancel"] == 1  # the host is told to stop
    assert len(cancelled) == 1
    # The delivery names the installation's repositories: each lab's reason names its own.
    reason = json.loads(cancelled[0]["result"])["reason"]
    assert reason == "the App was removed from octocat/Hello-World"
    assert [j["state"] for j in jobs.values() if j["repo_id"] == kept] == ["queued"]
    assert [lab.full_name for lab in labs.active_labs(store)] == ["lab/kept"]


def test_gpu_usage_charges_work_in_flight_at_its_estimate_or_its_elapsed_time(
    tmp_path: Path,
) -> None:
    """Summed by SQLite per lab: a leased job at max(seeds x (budget + grace), elapsed),
    a queued job bound to a student only when asked, an unbound one never; plus runs."""
    store = Store(tmp_path / "kohai.db")
    t = 10_000.0
    short = '[metric]\nname = "m"\n[train]\ncommand = "x"\nbudget = "60s"\ngrace = "10s"\n'
    long = '[metric]\nname = "m"\n[train]\ncommand = "x"\nbudget = "5m"\ngrace = "60s"\n'
    with store.transaction():
        for repo_id, (name, toml) in enumerate((("lab/a", short), ("lab/b", long)), start=1):
            store.insert(
                "repos",
                {"id": repo_id, "full_name": name, "problem_toml": toml, "created_at": t},
            )

        def job(repo_id: int, state: str, seeds: str, updated: float, student: str | None) -> None:
            store.insert(
                "jobs",
                {
                    "kind": "experiment",
                    "repo_id": repo_id,
                    "state": state,
                    "seeds": seeds,
                    "student": student,
                    "created_at": updated,
                    "updated_at": updated,
                },
            )

        job(1, "leased", "[0, 1]", t - 30, "fern")  # 2 x 70 s, 30 s elapsed: 140
        job(1, "leased", "[0]", t - 500, "frieren")  # 70 s estimate, 500 s elapsed: 500
        job(1, "queued", "[0]", t, "fern")  # bound: 70 with include_queued
        job(2, "leased", "not json", t - 10, "himmel")  # unreadable seeds count as one: 360
        job(2, "queued", "[0, 1, 2]", t, None)  # unbound: never charged
        job(2, "done", "[0]", t - 10, "himmel")
        store.insert(
            "runs",
            {
                "repo_id": 2,
                "kind": "candidate",
                "seed": 0,
                "status": "ok",
                "duration_s": 42.0,
                "created_at": t - 100,
            },
        )
    assert labs.gpu_usage(store, at=t) == {
        labs.lab_key("lab/a", None): 640.0,
        labs.lab_key("lab/b", None): 402.0,
    }
    with_queued = labs.gpu_usage(store, at=t, include_queued=True)
    assert with_queued[labs.lab_key("lab/a", None)] == 710.0
    store.close()
