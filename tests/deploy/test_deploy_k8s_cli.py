"""`kohai deploy k8s` end to end through the CLI, against a recording kubectl on PATH."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cli import main

FAKE_KUBECTL = Path(__file__).with_name("fake_kubectl.py")
REPO = Path(__file__).resolve().parents[2]
Validate = Callable[[dict[str, Any]], Any]


class Cluster:
    """The fake kubectl's view: what was called and applied."""

    def __init__(self, state: Path, db: Path) -> None:
        self.state = state
        self.db = db

    def calls(self) -> list[dict[str, Any]]:
        path = self.state / "calls.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def applied(self) -> list[dict[str, Any]]:
        path = self.state / "applied.json"
        return json.loads(path.read_text()) if path.exists() else []


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cluster:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f"#!{sys.executable}\n" + FAKE_KUBECTL.read_text())
    kubectl.chmod(0o755)
    state = tmp_path / "kubectl-state"
    state.mkdir()
    db = tmp_path / "bot-pod" / "kohai.db"
    db.parent.mkdir()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KUBECTL_DIR", str(state))
    monkeypatch.setenv("FAKE_KUBECTL_DB", str(db))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("FAKE_KUBECTL_SECRETS", "")
    return Cluster(state, db)


def test_dry_run_prints_valid_manifests_and_touches_nothing(
    cluster: Cluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    k8s_model: Validate,
) -> None:
    local_db = tmp_path / "local.db"
    monkeypatch.setenv("KOHAI_DB", str(local_db))
    monkeypatch.chdir(tmp_path)

    code = main(
        ["deploy", "k8s", "--students", "5", "--gpus-per-student", "2", "--image", "reg/kohai:3"]
        + ["--namespace", "lab", "--dry-run"]
    )

    assert code == 0
    objects = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    for obj in objects:
        k8s_model(obj)
    students = [
        o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] != "kohai-bot"
    ]
    assert [s["metadata"]["name"] for s in students] == [
        f"kohai-student-{n}" for n in ["fern", "frieren", "himmel", "heiter", "eisen"]
    ]
    for student in students:
        (container,) = student["spec"]["template"]["spec"]["containers"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert all(o["kind"] != "Secret" for o in objects)
    assert cluster.calls() == []
    assert not local_db.exists() and not (tmp_path / "kohai.db").exists()


def test_without_kubectl_it_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    code = main(["deploy", "k8s", "--students", "1"])

    assert code == 1
    err = capsys.readouterr().err
    assert "kubectl is not on PATH" in err and "--dry-run" in err


def test_missing_github_secret_stops_before_any_student(
    cluster: Cluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["deploy", "k8s", "--students", "2", "--namespace", "lab"])

    assert code == 1
    err = capsys.readouterr().err
    assert "kohai-github" in err and "create secret generic kohai-github" in err
    applied = cluster.applied()
    assert [o["kind"] for o in applied] == [
        "Namespace",
        "PersistentVolumeClaim",
        "Deployment",
        "Service",
    ]
    assert not any(c["argv"][2] == "exec" for c in cluster.calls())


def test_apply_registers_students_in_the_bots_store_and_hands_tokens_to_secrets(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_SECRETS", "kohai-github")
    args = ["deploy", "k8s", "--students", "3", "--gpus-per-student", "2", "--namespace", "lab"]

    assert main(args) == 0

    out = capsys.readouterr()
    applied = cluster.applied()
    secrets = {o["metadata"]["name"]: o for o in applied if o["kind"] == "Secret"}
    assert set(secrets) == {"kohai-host-fern", "kohai-host-frieren", "kohai-host-himmel"}
    tokens = {name: s["stringData"]["token"] for name, s in secrets.items()}
    assert len(set(tokens.values())) == 3 and all(tokens.values())
    rows = sqlite3.connect(cluster.db).execute("SELECT name, token_hash, gpus FROM students")
    stored = {name: (token_hash, gpus) for name, token_hash, gpus in rows}
    assert set(stored) == {"fern", "frieren", "himmel"}
    for name, (token_hash, gpus) in stored.items():
        assert gpus == 2
        assert token_hash and token_hash != tokens[f"kohai-host-{name}"]
    # Tokens travel over stdin only: never on a command line, never printed.
    for token in tokens.values():
        assert token not in out.out + out.err
        assert all(token not in " ".join(c["argv"]) for c in cluster.calls())
    kinds = [o["kind"] for o in applied]
    assert kinds.count("Deployment") == 4
    assert max(i for i, k in enumerate(kinds) if k == "Secret") < len(kinds) - 3

    # Applying again registers nobody twice and leaves the tokens alone.
    exec_calls = sum(c["argv"][2] == "exec" for c in cluster.calls())
    assert main(args) == 0
    assert sum(c["argv"][2] == "exec" for c in cluster.calls()) == exec_calls
    assert sum(o["kind"] == "Secret" for o in cluster.applied()) == 3


def test_registration_that_returns_no_tokens_fails_clearly(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bot image without the registration helper: the error says what failed, nothing applied."""
    monkeypatch.setenv("FAKE_KUBECTL_SECRETS", "kohai-github")
    monkeypatch.setattr(
        "bot.cli.deploy.REGISTER_SCRIPT", "import sys; sys.exit('no register_student here')"
    )

    assert main(["deploy", "k8s", "--students", "1", "--namespace", "lab"]) == 1

    assert "kubectl exec" in capsys.readouterr().err
    assert not any(o["kind"] == "Secret" for o in cluster.applied())
    assert not any(o["metadata"]["name"].startswith("kohai-student") for o in cluster.applied())


def test_a_fleet_of_no_students_is_just_the_bot(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_KUBECTL_SECRETS", "kohai-github")

    assert main(["deploy", "k8s", "--students", "0", "--namespace", "lab"]) == 0

    assert [o["metadata"]["name"] for o in cluster.applied() if o["kind"] == "Deployment"] == [
        "kohai-bot"
    ]
    assert not any(c["argv"][2] == "exec" for c in cluster.calls())
