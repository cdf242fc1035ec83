"""Everything a host says is checked and escaped; no body is read past its cap.

A rogue host (or the code it runs) controls every string of its reports: the
W&B URL, the failure reason, the log tail, its name and GPU kind, the student's
notes. The bot runs as the litestar app on loopback with its SQLite file; the
hostile reports go through the host API over real HTTP, and what the bot would
post on the PR (the outbox's comment) must be inert. Oversize bodies are
streamed over a raw socket, chunk by chunk, while the bot's memory is traced.
"""

from __future__ import annotations

import json
import re
import select
import socket
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from bot.cli.lab import ServerThread
from bot.config import Settings
from bot.engine.jobs import register_student
from bot.github import bundles
from bot.protocol import JobResult, RunResult
from bot.records import Experiment
from tests.conftest import sign
from tests.support.markdown import outside_code
from webhooks.app import create_app
from webhooks.context import BotContext

HEAD = "a" * 40
CAP = 256 * 1024  # the app's default body cap in these tests (KOHAI_MAX_BODY_BYTES)
MENTION = re.compile(r"(?<![\w`])@[A-Za-z0-9]")  # what GitHub would link as a mention


@pytest.fixture
def bot(tmp_path: Path, pem: str):
    settings = Settings(
        app_id=1,
        private_key=pem,
        webhook_secret="s",
        github_api_url="http://127.0.0.1:9",  # nothing listens: no GitHub call is needed
        db_path=str(tmp_path / "kohai.db"),
        max_body_bytes=CAP,
    )
    ctx = BotContext.build(settings)
    ctx.workers = []
    store, engine = ctx.store, ctx.engine
    with store.transaction():
        store.insert(
            "repos",
            {
                "full_name": "lab/x",
                "installation_id": 1,
                "base_sha": "b" * 40,
                "synced_at": 1.0,
                "problem_toml": '[metric]\nname = "loss"\n[train]\ncommand = "true"\nseeds = 1\n',
                "created_at": 0,
            },
        )
        repo = engine.repo("lab/x")
        exp_id = engine.open_experiment(
            repo, title="t", hypothesis="h", student=None, source="human"
        )
        store.update("experiments", exp_id, {"pr_number": 4, "head_sha": HEAD, "implemented": 1})
        exp = store.get(Experiment, exp_id)
        engine.queue_experiment_job(repo, exp, seeds=[0])
    token = register_student(store, "fern")
    with ServerThread(create_app(ctx, run_workers=False)) as server:
        leased = ctx.jobs.take("fern")
        assert leased is not None
        yield ctx, server.url, token, leased.job


def call(url: str, token: str, path: str, body: Any, **params: Any) -> httpx.Response:
    return httpx.post(
        f"{url}{path}",
        json=body,
        params=params,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


# What a rogue host put in its report, field by field (the reproduction:
# a mention, a tracking image and an open HTML comment in the W&B URL).
TRACKER = "https://tracker.example/pixel.png"
HOSTILE_URL = f"https://wandb.ai/x) ![seen]({TRACKER}) <!-- @admin"
HOSTILE_TEXT = f"oops @octocat #1 <img src={TRACKER}> ![x]({TRACKER}) [click](https://evil) <!--"


def hostile_result(job: Any) -> dict[str, Any]:
    run = RunResult(
        seed=0,
        status="crash",
        reason=HOSTILE_TEXT,
        log_tail="``````\n" + HOSTILE_TEXT + "\n```",
        wandb_url=HOSTILE_URL,
        host="fern <!--",
        gpu_kind="<script>alert(1)</script>",
    )
    return JobResult(
        status="ok",
        runs=[run],
        head_sha=HEAD,
        lease_id=job.lease_id,
        notes="the student says @team please look " + HOSTILE_TEXT,
    ).to_dict()


def test_a_hostile_host_report_reaches_the_pr_comment_inert(bot) -> None:
    ctx, url, token, job = bot
    done = call(url, token, f"/api/jobs/{job.id}/complete", hostile_result(job))
    assert done.status_code == 200, done.text
    run = ctx.store.one("SELECT wandb_url, gpu_kind, host FROM runs")
    assert run["wandb_url"] == ""  # dropped on receipt: never stored, never linked
    # Names are plain labels: nothing in them can end a code span or open a tag.
    assert run["gpu_kind"] == "?script?alert(1)?/script?" and run["host"] == "fern ??--"
    row = ctx.store.one(
        "SELECT args FROM outbox WHERE op IN ('comment', 'sticky') AND args LIKE '%Results%'"
    )
    body = json.loads(row["args"])["body"]
    prose = outside_code(body)
    assert "<!--" not in prose  # nothing hides the rest of the comment or poses as a marker
    assert "<img" not in prose  # no raw HTML
    assert "![" not in prose and "](https://evil)" not in prose  # no image, no link
    assert not MENTION.search(prose)  # nobody is pinged
    assert not re.search(r"(?<![\w&])#\d", prose)  # no issue is back-linked
    assert "dropped" in body  # and the comment says the link was dropped
    # The log tail is shown verbatim, in a fence its backticks cannot close.
    assert HOSTILE_TEXT in body


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("result", lambda r: r.update(head_sha="abc")),
        ("result", lambda r: r.update(head_sha="g" * 40)),
        ("result", lambda r: r.update(head_sha="A" * 40)),
        ("result", lambda r: r.update(head_sha=HEAD + "\n@admin")),
        ("result", lambda r: r["runs"][0].update(reason={"not": "text"})),
        ("result", lambda r: r["runs"][0].update(curve=[["1", "x"]])),
        ("result", lambda r: r["runs"][0].update(metrics={"x" * 500: 1.0})),
        ("event", lambda e: e.update(head_sha="deadbeef")),
        ("event", lambda e: e.update(phase="training <!--")),
        ("event", lambda e: e.update(metrics={"loss": "low"})),
    ],
)
def test_a_report_that_does_not_fit_the_protocol_is_400_and_changes_nothing(
    bot, where: str, change: Any
) -> None:
    ctx, url, token, job = bot
    if where == "result":
        body = JobResult(
            status="ok",
            runs=[RunResult(seed=0, status="ok", metric=1.0)],
            head_sha=HEAD,
            lease_id=job.lease_id,
        ).to_dict()
        path = f"/api/jobs/{job.id}/complete"
    else:
        body = {"kind": "phase", "phase": "training", "head_sha": HEAD, "lease_id": job.lease_id}
        path = f"/api/jobs/{job.id}/events"
    change(body)
    answer = call(url, token, path, body)
    assert answer.status_code == 400, answer.text
    assert ctx.store.query("SELECT * FROM runs") == []
    exp = ctx.store.one("SELECT head_sha FROM experiments")
    assert exp["head_sha"] == HEAD
    assert ctx.store.one("SELECT state, phase FROM jobs") == {"state": "leased", "phase": None}


def test_a_decision_quoting_host_or_agent_text_cannot_forge_a_marker_or_ping(bot) -> None:
    ctx, _, _, _ = bot
    exp = ctx.store.get(Experiment, 1)
    assert exp is not None
    rationale = "looks good <!-- kohai:results:1 --> @admin ![x](https://tracker.example/p.png)"
    with ctx.store.transaction():
        ctx.engine.decision_comment(ctx.engine.repo("lab/x"), exp, "Merging", rationale, key="k")
    row = ctx.store.one("SELECT args FROM outbox WHERE args LIKE '%Merging%'")
    body = json.loads(row["args"])["body"]
    assert body.startswith("### Merging\n\nlooks good")
    assert "<!--" not in body and "![" not in body and not MENTION.search(body)


@pytest.mark.parametrize(
    ("event", "delivery"),
    [("ping", "d1\n2026-01-01 INFO forged log line"), ("ping <!--", "d1"), ("ping", "x" * 300)],
)
def test_unsigned_webhook_headers_must_be_words(bot, event: str, delivery: str) -> None:
    ctx, url, _, _ = bot
    body = b'{"zen": "hi"}'
    answer = httpx.post(
        f"{url}/webhooks/github",
        content=body,
        headers={
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery.replace("\n", " "),  # HTTP itself forbids raw newlines
            "X-Hub-Signature-256": sign("s", body),
        },
        timeout=30,
    )
    assert answer.status_code == 400
    assert ctx.store.query("SELECT * FROM inbox") == []


def test_a_webhook_channel_event_past_the_cap_is_refused_like_a_post(bot) -> None:
    from webhooks.relay import relay_one

    ctx, _, _, _ = bot
    payload = {"zen": "x" * (26 * 1024 * 1024)}
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    event = {
        "x-github-event": "ping",
        "x-github-delivery": "big-1",
        "x-hub-signature-256": sign("s", body),  # signed: only its size is wrong
        "body": payload,
    }
    assert relay_one(ctx, json.dumps(event)) == 413
    assert ctx.store.query("SELECT * FROM inbox") == []


# -- bodies past their cap ------------------------------------------------------------


def stream(
    url: str, path: str, token: str, total: int, *, chunk: int = 64 * 1024
) -> tuple[int, int]:
    """POST `total` bytes chunked over a raw socket, stopping as soon as the bot answers.

    Returns the answer's status (0: none came) and how many bytes were sent.
    """
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.settimeout(10)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
    )
    data, sent = b"x" * chunk, 0
    try:
        while sent < total:
            if select.select([sock], [], [], 0)[0]:
                break  # the bot answered: stop sending
            sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            sent += len(data)
        else:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError, TimeoutError):
        pass  # the bot stopped reading: its answer is waiting
    answer = b""
    try:
        while b"\r\n" not in answer:
            part = sock.recv(65536)
            if not part:
                break
            answer += part
    except (ConnectionResetError, TimeoutError):
        pass
    sock.close()
    match = re.match(rb"HTTP/1\.1 (\d{3})", answer)
    return (int(match.group(1)) if match else 0), sent


def traced_peak(action: Any) -> tuple[Any, int]:
    """`action()`'s value and the most memory Python held meanwhile (the server included)."""
    tracemalloc.start()
    try:
        value = action()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


TOTAL = 24 * 1024 * 1024  # what the host sends: far past every cap in these tests


@pytest.mark.parametrize("endpoint", ["complete", "events"])
def test_an_oversize_streamed_report_is_413_without_being_read_whole(bot, endpoint: str) -> None:
    ctx, url, token, job = bot
    (status, sent), peak = traced_peak(
        lambda: stream(url, f"/api/jobs/{job.id}/{endpoint}", token, TOTAL)
    )
    assert status == 413
    # The bot stopped at its cap: it neither read nor held the 24 MB.
    assert peak < TOTAL // 4, f"{peak} bytes held for a body capped at {CAP}"
    assert ctx.store.query("SELECT * FROM runs") == []
    # A report within the cap is still taken.
    ok = call(
        url, token, f"/api/jobs/{job.id}/events", {"kind": "heartbeat", "lease_id": job.lease_id}
    )
    assert ok.status_code == 200


def test_a_declared_length_over_the_cap_is_refused_before_a_byte_is_read(bot) -> None:
    ctx, url, token, job = bot
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(
            (
                f"POST /api/jobs/{job.id}/complete HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: {10**10}\r\n\r\n"
            ).encode()
        )
        # No body was sent: an answer means the bot did not wait for one.
        head, _, body = sock.recv(65536).partition(b"\r\n\r\n")
        match = re.search(rb"content-length: (\d+)", head, re.I)
        assert match is not None
        while len(body) < int(match.group(1)):
            body += sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 413")
    assert b"larger than" in body


def test_an_oversize_pushed_bundle_is_cut_off_at_the_bundle_cap(
    bot, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx, url, token, job = bot
    monkeypatch.setattr(bundles, "MAX_BUNDLE_BYTES", 1024 * 1024)
    exp = ctx.store.one("SELECT branch FROM experiments")
    path = f"/api/jobs/{job.id}/push?branch={exp['branch']}&lease_id={job.lease_id}"
    (status, _), peak = traced_peak(lambda: stream(url, path, token, TOTAL))
    assert status == 413
    assert peak < TOTAL // 4, f"{peak} bytes held for a bundle capped at 1 MiB"


def test_the_body_cap_is_a_setting(pem: str) -> None:
    from bot.config import DEFAULT_MAX_BODY_BYTES, ConfigError

    env = {"KOHAI_GITHUB_APP_ID": "1", "KOHAI_GITHUB_PRIVATE_KEY": pem, "KOHAI_WEBHOOK_SECRET": "s"}
    assert Settings.from_env(env).max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert Settings.from_env({**env, "KOHAI_MAX_BODY_BYTES": "1048576"}).max_body_bytes == 2**20
    with pytest.raises(ConfigError, match="KOHAI_MAX_BODY_BYTES"):
        Settings.from_env({**env, "KOHAI_MAX_BODY_BYTES": "10"})
