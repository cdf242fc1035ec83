"""Helpers for the trainer's tests: tiny problems in real git repos, and a fake bot.

The fake bot is a real HTTP server on loopback that speaks the host API the
way the bot does (lease long-poll, events, complete, release), records every
request, and can be taken down and brought back on the same port.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from bot.github import bundles

TOKEN = "host-token-fern"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def write_problem(root: Path, script: str, *, budget: str = "5s", grace: str = "2s") -> None:
    """A problem repo layout: kohai.toml, a frozen prepare.py and an editable train.py."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "kohai.toml").write_text(
        textwrap.dedent(
            f"""
            [metric]
            name = "score"
            direction = "minimize"
            [train]
            command = "python train.py"
            budget = "{budget}"
            grace = "{grace}"
            [files]
            editable = ["train.py"]
            frozen = ["prepare.py"]
            [search]
            LR = {{ min = 0.001, max = 1.0, log = true }}
            """
        )
    )
    (root / "prepare.py").write_text("OFFSET = 1.0\n")
    (root / "train.py").write_text(textwrap.dedent(script))


# Writes a step line per step, then a final line; score depends on LR and the seed.
METRIC_SCRIPT = """
    import json, os, time
    LR = 0.1
    seed = int(os.environ["KOHAI_SEED"])
    path = os.environ["KOHAI_METRICS_FILE"]
    for step in range(1, 6):
        time.sleep(0.2)
        with open(path, "a") as fh:
            fh.write(json.dumps({"step": step, "train_loss": 2.0 / step}) + "\\n")
        print(f"step {step}", flush=True)
    with open(path, "a") as fh:
        fh.write(json.dumps({"final": True, "score": LR + seed / 100}) + "\\n")
"""


def make_origin(tmp_path: Path, script: str = METRIC_SCRIPT, **kw: str) -> tuple[Path, str]:
    """A bare repo holding one commit of the problem on `main`; (bare path, sha)."""
    src = tmp_path / "src"
    write_problem(src, script, **kw)
    git(src, "init", "--quiet", "--initial-branch=main")
    git(src, "add", "--all")
    git(src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "base")
    bare = tmp_path / "origin.git"
    git(tmp_path, "clone", "--quiet", "--bare", str(src), str(bare))
    return bare, git(src, "rev-parse", "HEAD")


def push_branch(tmp_path: Path, bare: Path, branch: str, edits: dict[str, str]) -> str:
    """Commit `edits` (path -> text) on a new branch of `bare`; its sha."""
    work = tmp_path / f"edit-{branch.replace('/', '-')}"
    git(tmp_path, "clone", "--quiet", str(bare), str(work))
    git(work, "checkout", "--quiet", "-b", branch)
    for path, text in edits.items():
        (work / path).write_text(text)
    git(work, "add", "--all")
    git(
        work,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "commit",
        "--quiet",
        "--allow-empty",
        "-m",
        branch,
    )
    git(work, "push", "--quiet", "origin", branch)
    return git(work, "rev-parse", "HEAD")


class FakeBot:
    """The bot's host API on loopback, scripted by the test."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.jobs: list[dict] = []
        self.requests: list[dict] = []
        self.completed: dict[int, dict] = {}
        self.released: list[int] = []
        self.cancel_jobs: set[int] = set()
        self.leased: dict[int, dict] = {}
        self.pushes: list[dict] = []
        self.on_event = None  # callable(job_id, body) run in the handler thread
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        bot = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # http.server's naming
                bot.handle(self)

            def do_GET(self) -> None:  # the host's start-up check: /livez, then its token
                bot.handle_check(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def down_for(self, seconds: float) -> None:
        """Take the bot down now and bring it back on the same port later."""

        def cycle() -> None:
            self.stop()
            time.sleep(seconds)
            self.start()

        threading.Thread(target=cycle, daemon=True).start()

    def kinds(self, job_id: int) -> list[str]:
        with self.lock:
            return [
                r["body"]["kind"]
                for r in self.requests
                if r["path"] == f"/api/jobs/{job_id}/events"
            ]

    def wait_for(self, predicate, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        raise AssertionError(f"timed out; requests: {[r['path'] for r in self.requests]}")

    def _reply(self, h: BaseHTTPRequestHandler, status: int, body: dict | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        h.send_response(status)
        if data:
            h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def handle_check(self, h: BaseHTTPRequestHandler) -> None:
        """What `kohai host run` asks before leasing: is the bot there, is the token good."""
        path = urlparse(h.path).path
        if path == "/livez":
            return self._reply(h, 200, {"ok": True})
        if path.startswith("/api/hosts/") and path.endswith("/whoami"):
            if h.headers.get("Authorization") != f"Bearer {self.token}":
                return self._reply(h, 401, {"error": "missing or invalid host token"})
            return self._reply(h, 200, {"student": path.split("/")[3]})
        return self._reply(h, 404, {"detail": "no such route"})

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        url = urlparse(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        is_push = url.path.endswith("/push")
        body = json.loads(raw) if raw and not is_push else None
        with self.lock:
            self.requests.append(
                {
                    "path": url.path,
                    "query": parse_qs(url.query),
                    "body": body,
                    "auth": h.headers.get("Authorization"),
                    "at": time.monotonic(),
                }
            )
        if h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._reply(h, 401, {"detail": "bad token"})
        parts = url.path.strip("/").split("/")
        if parts[:2] == ["api", "hosts"] and parts[-1] == "lease":
            with self.lock:
                job = self.jobs.pop(0) if self.jobs else None
            if job is None:
                time.sleep(0.2)  # a short long-poll keeps the tests quick
                return self._reply(h, 204)
            with self.lock:
                self.leased[job["id"]] = job
            return self._reply(h, 200, job)
        job_id = int(parts[2])
        if parts[-1] == "events":
            if self.on_event is not None:
                self.on_event(job_id, body)
            cancel = job_id in self.cancel_jobs
            return self._reply(h, 200, {"lease_expires_at": time.time() + 60, "cancel": cancel})
        if parts[-1] == "complete":
            with self.lock:
                self.completed[job_id] = body
            return self._reply(h, 200, {"ok": True})
        if parts[-1] == "push":
            return self._push(h, job_id, parse_qs(url.query).get("branch", [""])[0], raw)
        if parts[-1] == "release":
            with self.lock:
                self.released.append(job_id)
            return self._reply(h, 200, {"ok": True})
        return self._reply(h, 404, {"detail": "no such route"})

    def _push(self, h: BaseHTTPRequestHandler, job_id: int, branch: str, bundle: bytes) -> None:
        """What the bot does with a host's bundle: the same checks, then a push to the origin."""
        job = self.leased.get(job_id)
        if job is None:
            return self._reply(h, 409, {"error": f"job {job_id} is not leased"})
        refusal = bundles.branch_refusal(branch, job.get("head_ref"), job["kind"])
        if refusal is not None:
            return self._reply(h, 403, {"error": refusal})
        try:
            sha = bundles.publish_bundle(
                bundle,
                clone_url=job["clone_url"],
                branch=branch,
                base_ref=job["base_ref"],
                base_sha=job["base_sha"],
                token=None,
            ).tip
        except bundles.BundleRefused as exc:
            return self._reply(h, 422, {"error": str(exc)})
        with self.lock:
            self.pushes.append({"job": job_id, "branch": branch, "sha": sha})
        return self._reply(h, 200, {"status": "pushed", "branch": branch, "sha": sha})


def job_dict(bare: Path, base_sha: str, **overrides) -> dict:
    job = {
        "id": 7,
        "kind": "baseline",
        "student": "fern",
        "repo": "lab/toy",
        "clone_url": str(bare),
        "token": "ghs_pushtoken",
        "token_expires_at": "2099-01-01T00:00:00Z",
        "base_ref": "main",
        "base_sha": base_sha,
        "seeds": [1],
    }
    job.update(overrides)
    return job
