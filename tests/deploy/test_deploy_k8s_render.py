"""The fleet `kohai deploy k8s` renders: valid Kubernetes objects with the right shape."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import pytest

from bot import deploy
from bot.gpus import parse_gpus

Validate = Callable[[dict[str, Any]], Any]
STUDENTS = ["fern", "frieren", "himmel"]


def _fleet(gpus: int = 2) -> list[dict[str, Any]]:
    return deploy.render_fleet(STUDENTS, gpus, "registry.example.com:5000/lab/kohai:1.2", "lab")


def _by_name(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def test_every_object_is_a_valid_kubernetes_object(k8s_model: Validate) -> None:
    fleet = _fleet()
    kinds = [o["kind"] for o in fleet]

    for obj in fleet:
        k8s_model(obj)
    assert kinds.count("Deployment") == 1 + len(STUDENTS)
    assert kinds[0] == "Namespace"  # applied first, so the rest has somewhere to go
    assert all(o["metadata"].get("namespace") == "lab" for o in fleet[1:])


def test_bot_keeps_its_sqlite_file_on_a_claim_and_is_never_doubled(k8s_model: Validate) -> None:
    fleet = _fleet()
    bot = k8s_model(_by_name(fleet, "Deployment", deploy.BOT_NAME))
    claim = k8s_model(_by_name(fleet, "PersistentVolumeClaim", deploy.DATA_CLAIM))
    pod = bot.spec.template.spec
    (container,) = pod.containers

    assert bot.spec.replicas == 1
    assert bot.spec.strategy.type == "Recreate"
    assert claim.spec.access_modes == ["ReadWriteOnce"]
    env = {e.name: e for e in container.env}
    db_dir = str(PurePosixPath(env["KOHAI_DB"].value).parent)
    (mount,) = [m for m in container.volume_mounts if m.mount_path == db_dir]
    (volume,) = [v for v in pod.volumes if v.name == mount.name]
    assert volume.persistent_volume_claim.claim_name == deploy.DATA_CLAIM
    assert container.image == "registry.example.com:5000/lab/kohai-bot:1.2"
    assert container.command == ["kohai", "serve", "--host", "0.0.0.0", "--port", "8000"]


def test_bot_probes_health_and_the_service_reaches_it(k8s_model: Validate) -> None:
    fleet = _fleet()
    bot = k8s_model(_by_name(fleet, "Deployment", deploy.BOT_NAME))
    service = k8s_model(_by_name(fleet, "Service", deploy.BOT_NAME))
    (container,) = bot.spec.template.spec.containers

    assert container.readiness_probe.http_get.path == "/healthz"  # 503 while anything is wrong
    assert container.liveness_probe.http_get.path == "/livez"  # 200 while the process serves
    for probe in (container.liveness_probe, container.readiness_probe):
        assert probe.http_get.port == 8000
    # The single bot stays reachable to hosts while not ready (GitHub down: 503).
    assert service.spec.publish_not_ready_addresses is True
    assert service.spec.selector == bot.spec.template.metadata.labels
    assert service.spec.selector == bot.spec.selector.match_labels
    (port,) = service.spec.ports
    assert port.port == 8000 and port.target_port == container.ports[0].name
    assert deploy.BOT_URL == f"http://{service.metadata.name}:{port.port}"


def test_github_credentials_are_referenced_never_embedded(k8s_model: Validate) -> None:
    fleet = _fleet()
    bot = k8s_model(_by_name(fleet, "Deployment", deploy.BOT_NAME))
    (container,) = bot.spec.template.spec.containers
    env = {e.name: e for e in container.env}

    for variable in ("KOHAI_GITHUB_APP_ID", "KOHAI_GITHUB_PRIVATE_KEY", "KOHAI_WEBHOOK_SECRET"):
        assert env[variable].value is None
        assert env[variable].value_from.secret_key_ref.name == "kohai-github"
    assert {o["kind"] for o in fleet}.isdisjoint({"Secret", "ConfigMap"})
    assert "stringData" not in deploy.to_yaml(fleet)


@pytest.mark.parametrize("gpus", [1, 2, 4])
def test_students_request_their_gpus_and_read_their_own_token(
    gpus: int, k8s_model: Validate
) -> None:
    fleet = _fleet(gpus)

    for name in STUDENTS:
        student = k8s_model(_by_name(fleet, "Deployment", f"kohai-student-{name}"))
        (container,) = student.spec.template.spec.containers
        assert container.resources.limits["nvidia.com/gpu"] == str(gpus)
        assert container.resources.requests["nvidia.com/gpu"] == str(gpus)
        assert container.image == "registry.example.com:5000/lab/kohai-host:1.2"
        # The token: the Secret's file on the daemon's standard input, not its environment.
        assert "KOHAI_HOST_TOKEN" not in {e.name for e in container.env}
        volumes = {v.name: v for v in student.spec.template.spec.volumes}
        assert volumes["host-token"].secret.secret_name == f"kohai-host-{name}"
        mounts = {m.name: m for m in container.volume_mounts}
        assert mounts["host-token"].read_only
        script = container.command[container.command.index("-c") + 1]
        assert "--token-file -" in script
        assert f"< {mounts['host-token'].mount_path}/token" in script
        args = container.args
        assert args[args.index("--name") + 1] == name
        assert args[args.index("--bot-url") + 1] == "http://kohai-bot:8000"
        assert "--token" not in args and "KOHAI_HOST_TOKEN" not in " ".join(args)
        assert parse_gpus(args[args.index("--gpus") + 1]) == list(range(gpus))
        assert student.spec.strategy.type == "Recreate"
        assert student.spec.template.spec.termination_grace_period_seconds >= 60


def test_a_cpu_student_asks_for_no_gpu(k8s_model: Validate) -> None:
    student = k8s_model(deploy.student_deployment("fern", 0, "img:1", "kohai"))
    (container,) = student.spec.template.spec.containers

    assert "nvidia.com/gpu" not in container.resources.limits
    assert container.args[container.args.index("--gpus") + 1] == ""


def test_every_pod_runs_as_a_non_root_user(k8s_model: Validate) -> None:
    for obj in _fleet():
        if obj["kind"] != "Deployment":
            continue
        pod = k8s_model(obj).spec.template.spec
        assert pod.security_context.run_as_non_root is True
        assert pod.security_context.run_as_user not in (None, 0)
        for container in pod.containers:
            assert container.security_context.allow_privilege_escalation is False
            assert container.security_context.capabilities.drop == ["ALL"]


def test_student_pods_allow_the_job_sandbox_in_their_own_user_namespace(
    k8s_model: Validate,
) -> None:
    """bubblewrap needs namespaces and a fresh /proc; the pod pays with hostUsers: false."""
    pod = k8s_model(deploy.student_deployment("fern", 1, "img:1", "kohai")).spec.template.spec
    (container,) = pod.containers
    assert pod.host_users is False
    assert container.security_context.seccomp_profile.type == "Unconfined"
    assert container.security_context.app_armor_profile.type == "Unconfined"
    assert container.security_context.proc_mount == "Unmasked"
    assert container.security_context.privileged is None
    bot = k8s_model(deploy.bot_deployment("img:1", "kohai")).spec.template.spec
    assert bot.containers[0].security_context.seccomp_profile is None  # the bot keeps the default


def test_host_token_secret_is_a_valid_secret(k8s_model: Validate) -> None:
    secret = k8s_model(deploy.host_token_secret("fern", "tok-123", "kohai"))

    assert secret.metadata.name == "kohai-host-fern"
    assert secret.string_data == {"token": "tok-123"}


def test_student_names_run_through_the_list_then_number() -> None:
    names = deploy.student_names(len(deploy.STUDENT_NAMES) + 2)

    assert names[:8] == ["fern", "frieren", "himmel", "heiter", "eisen", "stark", "ubel", "lawine"]
    assert len(set(names)) == len(names)
    n = len(deploy.STUDENT_NAMES)
    assert names[n:] == [f"student-{n + 1}", f"student-{n + 2}"]
    assert deploy.student_names(0) == []
    with pytest.raises(ValueError):
        deploy.student_names(-1)


@pytest.mark.parametrize(
    ("image", "bot", "host"),
    [
        (
            "ghcr.io/kohai/kohai",
            "ghcr.io/kohai/kohai-bot:latest",
            "ghcr.io/kohai/kohai-host:latest",
        ),
        ("kohai:v1", "kohai-bot:v1", "kohai-host:v1"),
        (
            "localhost:5000/kohai",
            "localhost:5000/kohai-bot:latest",
            "localhost:5000/kohai-host:latest",
        ),
        ("localhost:5000/k:2", "localhost:5000/k-bot:2", "localhost:5000/k-host:2"),
    ],
)
def test_image_pair(image: str, bot: str, host: str) -> None:
    assert deploy.image_pair(image) == (bot, host)


def test_image_by_digest_and_repeated_students_are_refused() -> None:
    with pytest.raises(ValueError, match="digest"):
        deploy.image_pair("kohai@sha256:abc")
    with pytest.raises(ValueError, match="repeat"):
        deploy.render_fleet(["fern", "fern"], 1, "kohai", "kohai")
