"""The running bot honours `[gate]`: screening, sequential confirmation, the lab's pooled spread.

A real SQLite file, the real engine, job book and reviewer: baseline and
candidate jobs are leased and completed as a host would, the reviewer asks the
gate from the store (`bot.engine.evidence.gate_decision`), and what it decided
is read back from the decisions, the queued jobs and the outbox.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bot import records
from bot.engine import evidence
from bot.engine.engine import Engine
from bot.engine.jobs import JobBook
from bot.engine.review import Ask, Opinion, Reviewer
from bot.problem import GateConfig, loads_problem
from bot.protocol import Job, JobResult, RunResult
from bot.records import Experiment
from bot.store import Store

BASE_TOML = (
    '[metric]\nname = "loss"\ndirection = "minimize"\n'
    '[train]\ncommand = "true"\nseeds = 1\nconfirm_seeds = 3\nbaseline_seeds = 3\n'
)
BASELINE = (2.0, 2.1, 1.9)  # std 0.1: a screening margin of 0.5 is 0.05


class Lab:
    def __init__(self, tmp_path: Path, gate_toml: str) -> None:
        self.store = Store(tmp_path / "k.db")
        self.engine = Engine(self.store)
        self.jobs = JobBook(self.engine)
        self.reviewer = Reviewer(self.engine)
        with self.store.transaction():
            self.store.insert(
                "students", {"name": "fern", "token_hash": "x", "state": "idle", "created_at": 0}
            )
            self.repo_id = self.store.insert(
                "repos",
                {
                    "full_name": "lab/x",
                    "installation_id": 1,
                    "base_sha": "b" * 40,
                    "synced_at": 1.0,
                    "problem_toml": BASE_TOML + gate_toml,
                    "created_at": 0,
                },
            )

    @property
    def repo(self) -> Any:
        return self.engine.repo_by_id(self.repo_id)

    def exp(self, exp_id: int) -> Experiment:
        exp = self.store.get(Experiment, exp_id)
        assert exp is not None
        return exp

    def complete(self, values: tuple[float | str, ...], head: str | None = None) -> None:
        """Lease the next job and complete it: a float is an ok seed, a string its status."""
        leased = self.jobs.take("fern")
        assert leased is not None
        seeds = leased.job.seeds
        runs = [
            RunResult(
                seed=s,
                status="ok" if isinstance(v, float) else v,  # type: ignore[arg-type]
                metric=v if isinstance(v, float) else None,
                curve=[[step, v + 1.0 + s - step / 100] for step in (10, 20, 30)]
                if isinstance(v, float)
                else [],
            )
            for s, v in zip(seeds, values, strict=True)
        ]
        result = JobResult("ok", runs, head_sha=head, lease_id=leased.job.lease_id)
        assert self.jobs.complete(leased.job.id, "fern", result) == "stored"

    def baseline(self, *values: float | str) -> None:
        with self.store.transaction():
            self.engine.queue_baseline(self.repo)
        self.complete(values)

    def experiment(self, number: int, *values: float) -> int:
        """An implemented experiment with its first job run on seeds 0 .. len(values) - 1."""
        with self.store.transaction():
            exp_id = self.engine.open_experiment(
                self.repo, title=f"e{number}", hypothesis="h", student="fern", source="human"
            )
            head = f"{number % 10}" * 40
            self.store.update(
                "experiments", exp_id, {"pr_number": number, "head_sha": head, "implemented": 1}
            )
            self.engine.queue_experiment_job(
                self.repo, self.exp(exp_id), seeds=list(range(len(values)))
            )
        self.complete(values, head=head)
        return exp_id

    def review(self, exp_id: int) -> str:
        ask = self.reviewer.begin(self.exp(exp_id))
        if not isinstance(ask, Ask):
            return ask
        return self.reviewer.conclude(ask, Opinion(ask.gate.verdict, by="gate"))

    def last_decision(self, exp_id: int) -> dict[str, Any]:
        row = self.store.one(
            "SELECT * FROM decisions WHERE experiment_id = ? ORDER BY id DESC LIMIT 1", (exp_id,)
        )
        assert row is not None
        return {**row, "stats": json.loads(row["stats"])}

    def queued_seeds(self, exp_id: int) -> list[int] | None:
        row = self.store.one(
            "SELECT seeds FROM jobs WHERE experiment_id = ? AND state = 'queued' "
            "ORDER BY id DESC LIMIT 1",
            (exp_id,),
        )
        return json.loads(row["seeds"]) if row else None


# (name, [gate] table, first seed's value, review outcome, decision reason, seeds queued)
CASES = [
    (
        "screened out: ahead by 0.01, the margin is 0.05",
        "[gate]\nscreen = 0.5\n",
        1.99,
        "close",
        "screened out",
        None,
    ),
    (
        "screen off: barely ahead still gets its confirmation seeds",
        "[gate]\nscreen = 0\nsequential = false\n",
        1.99,
        "confirm",
        "confirming",
        [1, 2],
    ),
    (
        "ahead by more than the margin, all at once",
        "[gate]\nscreen = 0.5\nsequential = false\n",
        1.90,
        "confirm",
        "confirming",
        [1, 2],
    ),
    (
        "ahead by more than the margin, one seed at a time",
        "[gate]\nscreen = 0.5\nsequential = true\n",
        1.90,
        "confirm",
        "confirming",
        [1],
    ),
    (
        "not better closes with its reason, screening or not",
        "[gate]\nscreen = 0.5\n",
        2.05,
        "close",
        "not better",
        None,
    ),
]


@pytest.mark.parametrize(
    ("gate_toml", "first", "outcome", "reason", "seeds"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_the_reviewer_honours_the_gate_table(
    tmp_path: Path,
    gate_toml: str,
    first: float,
    outcome: str,
    reason: str,
    seeds: list[int] | None,
) -> None:
    lab = Lab(tmp_path, gate_toml)
    lab.baseline(*BASELINE)
    exp_id = lab.experiment(7, first)
    assert lab.review(exp_id) == outcome
    decision = lab.last_decision(exp_id)
    assert (decision["verdict"], decision["actor"]) == (outcome, "gate")
    assert decision["stats"]["reason"] == reason
    assert decision["stats"]["n_candidate"] == 1
    assert lab.queued_seeds(exp_id) == seeds
    if outcome == "close":
        assert lab.exp(exp_id).state == "closed"
        [comment] = [
            json.loads(r["args"])["body"]
            for r in lab.store.query("SELECT args FROM outbox WHERE op = 'comment'")
            if json.loads(r["args"])["kind"] == "decision"
        ]
        if reason == "screened out":
            assert "screening margin of 0.5" in comment
            assert "not worth its confirmation seeds" in decision["rationale"]


def test_sequential_confirmation_runs_to_the_test_one_seed_at_a_time(tmp_path: Path) -> None:
    lab = Lab(tmp_path, "[gate]\nscreen = 0.5\nsequential = true\npooled = false\n")
    lab.baseline(*BASELINE)
    exp_id = lab.experiment(7, 1.80)
    head = "7" * 40
    asked = []
    while (outcome := lab.review(exp_id)) == "confirm":
        seeds = lab.queued_seeds(exp_id)
        assert seeds is not None
        asked.append(seeds)
        lab.complete(tuple(v - 0.2 for v in BASELINE[seeds[0] : seeds[0] + 1]), head=head)
    assert asked == [[1], [2]]
    assert outcome == "merge"
    assert lab.last_decision(exp_id)["stats"]["n_candidate"] == 3


def test_sequential_confirmation_closes_as_soon_as_the_candidate_falls_behind(
    tmp_path: Path,
) -> None:
    lab = Lab(tmp_path, "[gate]\nsequential = true\n")
    lab.baseline(*BASELINE)
    exp_id = lab.experiment(7, 1.80)
    assert lab.review(exp_id) == "confirm"
    assert lab.queued_seeds(exp_id) == [1]
    lab.complete((2.5,), head="7" * 40)  # seed 1: 0.4 behind, the mean is now behind
    assert lab.review(exp_id) == "close"
    decision = lab.last_decision(exp_id)
    assert decision["stats"]["reason"] == "not better"
    assert decision["stats"]["n_candidate"] == 2  # the third seed was never bought


# Earlier comparisons of this lab: three seeds each, paired differences spread ~0.001.
HISTORY = [
    (-0.010, (0.001, -0.001, 0.000)),
    (0.020, (0.000, 0.001, -0.001)),
    (0.000, (-0.001, 0.000, 0.001)),
    (-0.030, (0.001, 0.001, -0.002)),
    (0.010, (-0.002, 0.001, 0.001)),
    (0.005, (0.000, -0.001, 0.001)),
]
# The candidate decided: three seeds, mean paired difference -0.02, its own spread 0.02.
CANDIDATE = (-0.02, -0.04, 0.0)


def _pooled_lab(tmp_path: Path, gate_toml: str, *, history_track: str = "default") -> Lab:
    lab = Lab(tmp_path, gate_toml)
    lab.baseline(*BASELINE)
    for number, (shift, noise) in enumerate(HISTORY, start=10):
        lab.experiment(number, *(b + shift + e for b, e in zip(BASELINE, noise, strict=True)))
    if history_track != "default":  # the same history, measured on another track of the repo
        with lab.store.transaction():
            lab.store.execute(
                "INSERT INTO runs (repo_id, kind, seed, commit_sha, base_sha, status, metric, "
                "gpu_kind, created_at, track) SELECT repo_id, kind, seed, commit_sha, base_sha, "
                "status, metric, gpu_kind, created_at, ? FROM runs WHERE kind = 'baseline'",
                (history_track,),
            )
            lab.store.execute(
                "UPDATE runs SET track = ? WHERE kind = 'candidate'", (history_track,)
            )
    return lab


@pytest.mark.parametrize(
    ("gate_toml", "history_track", "verdict", "df"),
    [
        ("[gate]\npooled = false\n", "default", "close", 2.0),  # t on 2 df: p ~ 0.11
        ("[gate]\npooled = true\n", "default", "merge", 14.0),  # the lab's 12 df join its 2
        ("[gate]\npooled = true\n", "fast", "close", 2.0),  # another track's noise is not ours
    ],
    ids=["pooled off", "pooled on", "pooled on, history on another track"],
)
def test_the_paired_test_pools_the_tracks_earlier_comparisons(
    tmp_path: Path, gate_toml: str, history_track: str, verdict: str, df: float
) -> None:
    lab = _pooled_lab(tmp_path, gate_toml, history_track=history_track)
    exp_id = lab.experiment(7, *(b + d for b, d in zip(BASELINE, CANDIDATE, strict=True)))
    exp = lab.exp(exp_id)
    repo = lab.repo
    spread = evidence.lab_paired_spread(lab.store, repo.id, "default", exclude=exp_id)
    assert (spread is None) == (history_track != "default")
    gate = evidence.gate_decision(
        lab.store,
        repo_id=repo.id,
        base_sha=repo.base_sha,
        problem=repo.problem,
        exp=exp,
        alpha=0.05,
        track=repo.track,
    )
    assert gate.method == "paired" and gate.n_matched == 3
    assert gate.verdict == verdict, gate.rationale
    assert gate.delta == pytest.approx(-0.02)
    expected_se = 0.02 / 3**0.5 if df == 2.0 else None
    if expected_se is not None:
        assert gate.delta_se == pytest.approx(expected_se)
    else:
        assert gate.delta_se is not None and gate.delta_se < 0.005


def test_the_lab_spread_leaves_out_the_experiment_being_decided(tmp_path: Path) -> None:
    lab = _pooled_lab(tmp_path, "[gate]\npooled = true\n")
    ids = [r["id"] for r in lab.store.query("SELECT id FROM experiments ORDER BY id")]
    with_all = evidence.lab_paired_spread(lab.store, lab.repo_id, "default")
    assert with_all is not None and with_all[1] == 12.0
    assert 0.0005 < with_all[0] < 0.003
    # Leaving one out: five comparisons of three seeds, 10 df, still enough.
    without_first = evidence.lab_paired_spread(lab.store, lab.repo_id, "default", exclude=ids[0])
    assert without_first is not None and without_first[1] == 10.0
    # Four comparisons (8 df) say too little about the lab's noise.
    with lab.store.transaction():
        lab.store.execute("DELETE FROM runs WHERE experiment_id IN (?, ?)", (ids[0], ids[1]))
    assert evidence.lab_paired_spread(lab.store, lab.repo_id, "default") is None


def test_the_problems_default_levers_reach_the_gate(tmp_path: Path) -> None:
    """Without `[gate]` the running bot uses the defaults the benchmark chose."""
    assert loads_problem(BASE_TOML).gate == GateConfig()
    lab = Lab(tmp_path, "")
    lab.baseline(*BASELINE)
    exp_id = lab.experiment(7, 1.80)
    assert lab.review(exp_id) == "confirm"
    default = GateConfig()
    assert lab.queued_seeds(exp_id) == ([1] if default.sequential else [1, 2])


def _job_basics() -> dict[str, Any]:
    return {
        "student": "fern",
        "repo": "lab/x",
        "clone_url": "",
        "token": "",
        "token_expires_at": "",
        "base_ref": "main",
        "base_sha": "b" * 40,
    }


def _queued_job(lab: Lab, exp_id: int, seeds: list[int]) -> records.Job:
    with lab.store.transaction():
        lab.engine.queue_experiment_job(lab.repo, lab.exp(exp_id), seeds=seeds)
    job = lab.store.first(records.Job, "experiment_id = ? AND state = 'queued'", (exp_id,))
    assert job is not None
    return job


def test_a_lease_carries_each_baseline_curve_with_its_seed_and_the_labs_correlation(
    tmp_path: Path,
) -> None:
    """What a host needs for paired early stopping comes with the job (webhooks/hosts.py)."""
    from webhooks.hosts import _early_stop_fields

    lab = _pooled_lab(tmp_path, "early_stop = { after = 0.3, band = 1 }\n")  # in [train]
    lab.experiment(16, *(b - 0.01 for b in BASELINE))  # 21 earlier pairs: a correlation
    exp_id = lab.experiment(7, 1.8)
    job = _queued_job(lab, exp_id, [1, 2])
    ctx = SimpleNamespace(store=lab.store)
    fields = _early_stop_fields(ctx, lab.repo, job)
    assert fields["baseline_curve_seeds"] == [0, 1, 2]
    assert [c[0][1] for c in fields["baseline_curves"]] == pytest.approx(
        [v + 1.0 + s - 0.1 for s, v in enumerate(BASELINE)]
    )
    rho = fields["seed_correlation"]
    assert rho is not None
    assert rho == evidence.lab_seed_correlation(lab.store, lab.repo_id, exclude=exp_id)
    wire = Job.from_dict(
        {**_job_basics(), **fields, "seeds": [1, 2], "kind": "experiment", "id": job.id}
    )
    assert wire.matched_curve(1) == fields["baseline_curves"][1]
    assert wire.matched_curve(5) is None
    assert wire.lab_seed_correlation() == rho
    # A baseline job gets none of it.
    assert _early_stop_fields(ctx, lab.repo, replace(job, kind="baseline")) == {}


def test_failed_baseline_seeds_send_no_curve_and_the_rest_keep_their_seeds(tmp_path: Path) -> None:
    from webhooks.hosts import _early_stop_fields

    lab = Lab(tmp_path, "early_stop = true\n")
    lab.baseline(*BASELINE)
    exp_id = lab.experiment(7, 1.8)
    job = _queued_job(lab, exp_id, [1, 2])
    with lab.store.transaction():  # seed 1 of the baseline turns out to have crashed
        lab.store.execute(
            "UPDATE runs SET status = 'crash', metric = NULL WHERE kind = 'baseline' AND seed = 1"
        )
    fields = _early_stop_fields(SimpleNamespace(store=lab.store), lab.repo, job)
    assert fields["baseline_curve_seeds"] == [0, 2]
    assert len(fields["baseline_curves"]) == 2
    assert fields["seed_correlation"] is None  # no earlier comparisons yet
    # Without [train] early_stop nothing is sent.
    (tmp_path / "plain").mkdir()
    plain = Lab(tmp_path / "plain", "")
    assert _early_stop_fields(SimpleNamespace(store=plain.store), plain.repo, job) == {}
