"""Research tracks: `[tracks.*]` parsing, `track:` labels, shares by weight, `--labs repo:track`.

The pure parts are tested over tables; the scheduler's choice of job and the
lab list are tested on a real SQLite store.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.core import intents as i
from bot.core import labels
from bot.core.events import Event
from bot.core.router import RouteState, route, track_of
from bot.engine import labs
from bot.engine.engine import Engine
from bot.engine.jobs import JobBook, register_student
from bot.problem import DEFAULT_TRACK, ProblemError, Track, loads_problem
from bot.store import Store, now

METRIC = '\n[metric]\nname = "loss"\n'  # after the tables: root keys stay root keys

# ------------------------------------------------------------------ parsing


def test_tracks_parse_with_their_defaults() -> None:
    problem = loads_problem(
        '[tracks.wide]\nbase = "track/wide"\nprogram = "tracks/wide.md"\nweight = 2\n'
        "[tracks.deep-2]\n" + METRIC
    )
    assert problem.tracks == (
        Track("wide", "track/wide", "tracks/wide.md", 2.0),
        Track("deep-2", "track/deep-2", "program.md", 1.0),
    )
    assert problem.track_names == (DEFAULT_TRACK, "wide", "deep-2")
    assert problem.track("WIDE") is not None and problem.track("default") is None
    assert loads_problem(METRIC).tracks == ()


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[tracks.default]\n", "reserved"),
        ("[tracks.Wide]\n", "lowercase"),
        ('[tracks."wide track"]\n', "lowercase"),
        ('[tracks."-x"]\n', "lowercase"),
        ('[tracks."a/b"]\n', "lowercase"),
        ("[tracks." + "a" * 41 + "]\n", "at most 40"),
        ("tracks = 3\n", "[tracks] must be a table"),
        ("[tracks]\nwide = 3\n", "[tracks.wide] must be a table"),
        ("[tracks.wide]\nbase = 3\n", "tracks.wide.base"),
        ('[tracks.wide]\nbase = "a..b"\n', "tracks.wide.base"),
        ('[tracks.wide]\nbase = "a b"\n', "tracks.wide.base"),
        ('[tracks.wide]\nbase = "x.lock"\n', "tracks.wide.base"),
        ('[tracks.wide]\nbase = "-x"\n', "tracks.wide.base"),
        ('[tracks.wide]\nbase = "a~1"\n', "tracks.wide.base"),
        ('[tracks.wide]\nprogram = "../secret.md"\n', "tracks.wide.program"),
        ('[tracks.wide]\nprogram = "/etc/passwd"\n', "tracks.wide.program"),
        ("[tracks.wide]\nweight = 0\n", "tracks.wide.weight"),
        ("[tracks.wide]\nweight = -1\n", "tracks.wide.weight"),
        ("[tracks.wide]\nweight = inf\n", "tracks.wide.weight"),
        ("[tracks.wide]\nweight = nan\n", "tracks.wide.weight"),
        ('[tracks.wide]\nweight = "2"\n', "tracks.wide.weight"),
        ("[tracks.wide]\nweight = true\n", "tracks.wide.weight"),
        ("[tracks.wide]\nweigth = 2\n", "tracks.wide.weigth: unknown key; did you mean `weight`?"),
        ('[tracks.a]\nbase = "same"\n[tracks.b]\nbase = "same"\n', "share a base branch"),
        ("".join(f"[tracks.t{n}]\n" for n in range(17)), "at most 16"),
    ],
)
def test_bad_tracks_are_refused_naming_the_field(toml: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message.replace("[", r"\[").replace(".", r"\.")):
        loads_problem(toml + METRIC)


# ------------------------------------------------------------------ labels and routing


def test_track_label_helpers() -> None:
    assert labels.track_label("wide") == "track:wide"
    assert labels.track_label_spec("wide")["name"] == "track:wide"
    assert labels.is_kohai_label("track:wide")
    assert track_of(("student:any", "track:Wide")) == "wide"
    assert track_of(("student:any", "bug")) is None


def _issue(label: str, labels_on: tuple[str, ...]) -> Event:
    return Event(
        name="issues",
        action="labeled",
        delivery_id="d1",
        repo="lab/charlm",
        number=7,
        title="Widen",
        body="",
        sender="bob",
        author="bob",
        label=label,
        labels=labels_on,
    )


STATE = RouteState(
    bot_login="kohai[bot]",
    students=frozenset({"fern"}),
    sender_permission="write",
    tracks={"wide": "track/wide"},
)


@pytest.mark.parametrize(
    ("label", "labels_on", "track"),
    [
        ("student:any", ("student:any",), "default"),
        ("student:any", ("student:any", "track:wide"), "wide"),
        ("student:fern", ("track:WIDE", "student:fern"), "wide"),
        ("student:any", ("student:any", "track:default"), "default"),
    ],
)
def test_a_student_label_opens_in_the_issues_track(
    label: str, labels_on: tuple[str, ...], track: str
) -> None:
    (intent,) = route(_issue(label, labels_on), STATE)
    assert isinstance(intent, i.OpenFromIssue) and intent.track == track


@pytest.mark.parametrize(
    ("label", "labels_on"),
    [
        ("student:any", ("student:any", "track:nope")),
        ("track:nope", ("track:nope",)),
        ("student:any", ("student:any", "track:`<b>`")),
    ],
)
def test_an_unknown_track_is_answered_and_nothing_opens(
    label: str, labels_on: tuple[str, ...]
) -> None:
    (intent,) = route(_issue(label, labels_on), STATE)
    assert isinstance(intent, i.Reply)
    assert "There is no track" in intent.body and "`wide`" in intent.body
    assert "`default`" in intent.body


def test_a_known_track_label_alone_waits_for_a_student_label() -> None:
    (intent,) = route(_issue("track:wide", ("track:wide",)), STATE)
    assert isinstance(intent, i.Ignore)


@pytest.mark.parametrize(
    ("ref", "track"),
    [("refs/heads/main", "default"), ("refs/heads/track/wide", "wide"), ("refs/heads/x", None)],
)
def test_a_push_to_a_tracks_base_moves_that_track(ref: str, track: str | None) -> None:
    event = Event(
        name="push", action=None, delivery_id="d", repo="lab/charlm", ref=ref, after="a" * 40
    )
    (intent,) = route(event, STATE)
    if track is None:
        assert isinstance(intent, i.Ignore)
    else:
        assert isinstance(intent, i.BaseMoved) and intent.track == track


# ------------------------------------------------------------------ shares and the queue


def test_lab_keys_and_serving_tracks() -> None:
    assert labs.lab_key("o/r", "default") == "o/r"
    assert labs.lab_key("o/r", "wide") == "o/r:wide"
    assert labs.split_lab_key("o/r:Wide") == ("o/r", "wide")
    assert labs.split_lab_key("o/r") == ("o/r", "default")
    assert labs.may_serve(("o/r:wide",), "o/r", "wide")
    assert not labs.may_serve(("o/r:wide",), "o/r", "default")
    assert not labs.may_serve(("o/r:wide",), "o/r", "deep")
    assert labs.may_serve(("o/r",), "o/r", "deep"), "owner/repo allows every track"


TOML = '[metric]\nname = "loss"\n[train]\nbudget = "60s"\n[lab]\nweight = 1\n[tracks.wide]\nweight = 3\n[tracks.deep]\n'


def test_repo_labs_expand_tracks_with_their_weights() -> None:
    lines = labs.repo_labs(1, "o/r", TOML, None)
    assert [(lab.key, lab.weight) for lab in lines] == [
        ("o/r", 1.0),
        ("o/r:wide", 3.0),
        ("o/r:deep", 1.0),
    ]
    assert [lab.key for lab in labs.repo_labs(1, "o/r", TOML, {"deep"})] == ["o/r", "o/r:deep"]


def test_shares_follow_the_track_weights_over_a_backlog() -> None:
    """Stride scheduling across tracks: GPU time ends within 10 % of weights 1 : 3 : 1."""
    weights = {lab.key: lab.weight for lab in labs.repo_labs(1, "o/r", TOML, None)}
    lengths = {"o/r": 60.0, "o/r:wide": 90.0, "o/r:deep": 30.0}  # jobs of unequal length
    usage: dict[str, float] = {}
    for _ in range(600):
        key = labs.pick_lab(list(weights), usage, weights)
        assert key is not None
        usage[key] = usage.get(key, 0.0) + lengths[key]
    table = labs.shares(usage, weights)
    for key, row in table.items():
        assert abs(row["measured"] - row["target"]) <= 0.1 * row["target"], (key, row)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "kohai.db")


def _seed(store: Store) -> int:
    t = now()
    repo_id = store.insert(
        "repos",
        {
            "full_name": "o/r",
            "installation_id": 1,
            "base_sha": "a" * 40,
            "problem_toml": TOML,
            "created_at": t,
            "synced_at": t,
        },
    )
    for name, sha in (("wide", "b" * 40), ("deep", "c" * 40)):
        store.insert(
            "tracks",
            {
                "repo_id": repo_id,
                "name": name,
                "base_branch": f"track/{name}",
                "base_sha": sha,
                "synced_at": t,
                "created_at": t,
            },
        )
    return repo_id


def test_a_student_limited_to_a_track_serves_only_it(store: Store) -> None:
    engine = Engine(store)
    _seed(store)
    with store.transaction():
        for track in ("default", "wide", "deep"):
            engine.queue_baseline(engine.repo_by_id(1, track))
    queued = store.query("SELECT track, base_sha FROM jobs ORDER BY id")
    assert [(j["track"], j["base_sha"][0]) for j in queued] == [
        ("default", "a"),
        ("wide", "b"),
        ("deep", "c"),
    ]
    register_student(store, "fern")
    store.execute("UPDATE students SET labs = 'o/r:deep' WHERE name = 'fern'")
    leased = JobBook(engine).take("fern")
    assert leased is not None and leased.job.track == "deep"
    assert leased.repo.base_branch == "track/deep" and leased.repo.base_sha == "c" * 40
    assert JobBook(engine).take("fern") is None, "one job at a time"


def test_the_lab_list_has_a_row_per_track_with_its_share(store: Store) -> None:
    repo_id = _seed(store)
    t = now()
    for track, seconds in (("default", 100.0), ("wide", 300.0), ("deep", 100.0)):
        job = store.insert(
            "jobs",
            {
                "kind": "baseline",
                "repo_id": repo_id,
                "track": track,
                "state": "done",
                "created_at": t,
                "updated_at": t,
            },
        )
        store.insert(
            "runs",
            {
                "repo_id": repo_id,
                "track": track,
                "job_id": job,
                "kind": "baseline",
                "seed": 0,
                "status": "ok",
                "metric": {"default": 2.0, "wide": 1.5, "deep": 1.8}[track],
                "base_sha": {"default": "a", "wide": "b", "deep": "c"}[track] * 40,
                "duration_s": seconds,
                "created_at": t,
            },
        )
    rows = {row.lab: row for row in labs.lab_rows(store)}
    assert set(rows) == {"o/r", "o/r:wide", "o/r:deep"}
    assert rows["o/r:wide"].baseline == 1.5 and rows["o/r"].baseline == 2.0
    assert rows["o/r:wide"].target_share == pytest.approx(0.6)
    assert rows["o/r:wide"].measured_share == pytest.approx(0.6)
    assert rows["o/r:deep"].track == "deep" and rows["o/r:deep"].full_name == "o/r"
    # A track that left kohai.toml stops: its queued work is cancelled with the reason.
    store.insert(
        "jobs",
        {
            "kind": "baseline",
            "repo_id": repo_id,
            "track": "deep",
            "state": "queued",
            "created_at": t,
            "updated_at": t,
        },
    )
    assert labs.stop_track(store, repo_id, "deep", "track deep is no longer declared") == 1
    job = store.one("SELECT * FROM jobs WHERE track = 'deep' AND state = 'cancelled'")
    assert job and "no longer declared" in json.loads(job["result"])["reason"]


def test_status_and_history_take_a_track(
    store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bot.cli import main

    repo_id = _seed(store)
    t = now()
    for track, title in (("default", "plain idea"), ("wide", "wide idea")):
        store.insert(
            "experiments",
            {
                "repo_id": repo_id,
                "track": track,
                "state": "review",
                "source": "advisor",
                "title": title,
                "created_at": t,
                "updated_at": t,
            },
        )
    monkeypatch.setenv("KOHAI_DB", store.path)
    assert main(["status", "--json", "--repo", "o/r:wide"]) == 0
    snapshot = json.loads(capsys.readouterr().out)
    assert snapshot["repo"] == "o/r:wide" and snapshot["track"] == "wide"
    assert [e["title"] for e in snapshot["experiments"]] == ["wide idea"]
    assert {row["lab"] for row in snapshot["labs"]} == {"o/r", "o/r:wide", "o/r:deep"}
    assert main(["status", "--repo", "o/r"]) == 0
    table = capsys.readouterr().out
    assert "o/r:wide" in table and "plain idea" in table and "wide idea" in table
    assert main(["history", "--repo", "o/r:nope"]) == 1
    assert "has no track 'nope'" in capsys.readouterr().err
