"""Deployment renderers: the GitHub App manifest and the Kubernetes objects of a fleet.

Pure functions from a few settings to plain dicts, so that what `kohai app
manifest` and `kohai deploy k8s` print can be tested without a cluster or
GitHub, and so that the App's permissions and events are read from the
routing table instead of being written down a second time.

The Kubernetes layout is one bot (a single replica: its state is one SQLite
file on a persistent volume, and two writers on one file would be wrong) and
one Deployment per student, each holding its GPUs and its own host token.
"""

from __future__ import annotations

from typing import Any

import yaml

from bot.core import router

# Students are named; a fleet larger than this list continues as student-<i>.
STUDENT_NAMES: tuple[str, ...] = (
    "fern",
    "frieren",
    "himmel",
    "heiter",
    "eisen",
    "stark",
    "ubel",
    "lawine",
    "kanne",
    "sein",
    "denken",
    "wirbel",
)

# GitHub Apps always receive these events; a manifest that lists them is refused.
ALWAYS_DELIVERED_EVENTS: frozenset[str] = frozenset({"installation", "installation_repositories"})

# The permission GitHub requires before an App may subscribe to an event.
EVENT_PERMISSION: dict[str, str] = {
    "issues": "issues",
    "issue_comment": "issues",
    "label": "metadata",
    "pull_request": "pull_requests",
    "pull_request_review": "pull_requests",
    "pull_request_review_comment": "pull_requests",
    "push": "contents",
    "create": "contents",
    "delete": "contents",
    "check_run": "checks",
    "check_suite": "checks",
}

BOT_NAME = "kohai-bot"
BOT_PORT = 8000
BOT_URL = f"http://{BOT_NAME}:{BOT_PORT}"
DATA_CLAIM = "kohai-data"
DATA_DIR = "/data"
DB_PATH = f"{DATA_DIR}/kohai.db"
GITHUB_SECRET = "kohai-github"
KEYS_SECRET = "kohai-keys"  # optional: ANTHROPIC_API_KEY, WANDB_API_KEY
CONFIG_MAP = "kohai-config"  # optional: KOHAI_PUBLIC_URL, KOHAI_GITHUB_API_URL
HOST_WORK_DIR = "/work"
RUN_AS = 10001  # the `kohai` user of both images
# Long enough for a host to stop its run (the trainer's own grace) and hand the job back.
HOST_STOP_GRACE_S = 120

# The bot's environment variable -> key of the `kohai-github` Secret that holds it.
GITHUB_SECRET_KEYS: dict[str, str] = {
    "KOHAI_GITHUB_APP_ID": "app-id",
    "KOHAI_GITHUB_PRIVATE_KEY": "private-key",
    "KOHAI_WEBHOOK_SECRET": "webhook-secret",
}
HOST_TOKEN_KEY = "token"
HOST_TOKEN_DIR = "/var/run/kohai"  # the host token's Secret, mounted as a file
# The daemon reads its token on standard input from the Secret's file: not in its
# environment, where /proc/PID/environ would keep it for the daemon's whole life.
HOST_COMMAND = [
    "tini",
    "--",
    "/bin/sh",
    "-c",
    f'exec kohai host run --token-file - "$@" < {HOST_TOKEN_DIR}/{HOST_TOKEN_KEY}',
    "kohai-host",
]


def student_names(count: int) -> list[str]:
    """The first `count` student names: the named ones, then student-<i> (1-based)."""
    if count < 0:
        raise ValueError(f"students must be >= 0, not {count}")
    return [
        STUDENT_NAMES[i] if i < len(STUDENT_NAMES) else f"student-{i + 1}" for i in range(count)
    ]


def host_secret_name(student: str) -> str:
    return f"kohai-host-{student}"


def student_deployment_name(student: str) -> str:
    return f"kohai-student-{student}"


# --- the GitHub App manifest ---------------------------------------------------------------


def app_manifest(url: str, name: str) -> dict[str, Any]:
    """The manifest GitHub's App-from-manifest flow takes, derived from the routing table.

    `installation` and `installation_repositories` are delivered to every App
    whether or not it asks, and GitHub rejects a manifest whose
    `default_events` names them, so they are left out here although the
    router subscribes to them.
    """
    base = url.rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise ValueError(f"the public URL must start with https:// or http://, not {url!r}")
    permissions = dict(router.REQUIRED_PERMISSIONS)
    events = [e for e in router.SUBSCRIBED_EVENTS if e not in ALWAYS_DELIVERED_EVENTS]
    for event in events:
        needed = EVENT_PERMISSION.get(event)
        if needed is not None and needed not in permissions:
            raise ValueError(
                f"event {event!r} needs the {needed!r} permission, which is not declared"
            )
    return {
        "name": name,
        "url": base,
        "hook_attributes": {"url": f"{base}/webhooks/github", "active": True},
        "redirect_url": f"{base}/",
        # The dashboard's GitHub sign-in (the App's own OAuth client). Users are never
        # asked to authorize the App when it is installed: only when they open the dashboard.
        "callback_urls": [f"{base}/auth/callback"],
        "request_oauth_on_install": False,
        "setup_url": f"{base}/",
        "setup_on_update": False,
        "description": "An autonomous ML research lab that works through pull requests.",
        "public": False,
        "default_permissions": permissions,
        "default_events": events,
    }


# --- Kubernetes objects --------------------------------------------------------------------


def image_pair(image: str) -> tuple[str, str]:
    """The bot and host images of one image name: REPO[:TAG] -> REPO-bot:TAG, REPO-host:TAG."""
    if "@" in image:
        raise ValueError(f"give the image as REPO[:TAG], not by digest: {image!r}")
    repo, tag = image, "latest"
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repo, tag = image.rsplit(":", 1)
    if not repo or not tag:
        raise ValueError(f"not an image name: {image!r}")
    return f"{repo}-bot:{tag}", f"{repo}-host:{tag}"


def _labels(component: str, student: str | None = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/name": "kohai", "app.kubernetes.io/component": component}
    if student is not None:
        labels["kohai.dev/student"] = student
    return labels


def _meta(name: str, namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": dict(labels)}


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def _host_container_security() -> dict[str, Any]:
    """What bubblewrap needs to build the job sandbox inside the host's container.

    bwrap creates user, PID, mount and network namespaces and mounts a fresh
    /proc. The runtime's default seccomp profile refuses `unshare`/`clone`
    with namespace flags, its default AppArmor profile refuses the mounts,
    and a masked /proc (the default procMount) forbids mounting a new one.
    So the host container runs with seccomp and AppArmor unconfined and an
    unmasked /proc, and pays for it with a pod in its own user namespace
    (`hostUsers: false`): its root is nobody on the node. Capabilities stay
    dropped and privilege escalation off: bwrap needs neither (it is not
    setuid; unprivileged user namespaces do the work).
    """
    return {
        **_container_security(),
        "seccompProfile": {"type": "Unconfined"},
        "appArmorProfile": {"type": "Unconfined"},
        "procMount": "Unmasked",
    }


def _secret_env(variable: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _optional_env_sources() -> list[dict[str, Any]]:
    return [
        {"configMapRef": {"name": CONFIG_MAP, "optional": True}},
        {"secretRef": {"name": KEYS_SECRET, "optional": True}},
    ]


def namespace_object(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {"app.kubernetes.io/name": "kohai"}},
    }


def bot_claim(namespace: str, size: str = "1Gi") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(DATA_CLAIM, namespace, _labels("bot")),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def bot_deployment(image: str, namespace: str) -> dict[str, Any]:
    """The bot: one replica, replaced (never rolled) so two never share the SQLite file."""
    labels = _labels("bot")
    probe = {"httpGet": {"path": "/healthz", "port": BOT_PORT}}
    env = [{"name": "KOHAI_DB", "value": DB_PATH}]
    env += [_secret_env(var, GITHUB_SECRET, key) for var, key in GITHUB_SECRET_KEYS.items()]
    container = {
        "name": "bot",
        "image": image,
        "command": ["kohai", "serve", "--host", "0.0.0.0", "--port", str(BOT_PORT)],
        "ports": [{"name": "http", "containerPort": BOT_PORT}],
        "env": env,
        "envFrom": _optional_env_sources(),
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 3},
        # Liveness is the process serving (/livez); readiness is everything working (/healthz,
        # 503 while GitHub rejects the App): a bot waiting for GitHub is not restarted for it.
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": BOT_PORT},
            "initialDelaySeconds": 15,
            "periodSeconds": 15,
            "failureThreshold": 4,
        },
        "resources": {
            "requests": {"cpu": "250m", "memory": "256Mi"},
            "limits": {"memory": "1Gi"},
        },
        "securityContext": _container_security(),
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(BOT_NAME, namespace, labels),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "securityContext": _pod_security(),
                    "containers": [container],
                    "volumes": [
                        {"name": "data", "persistentVolumeClaim": {"claimName": DATA_CLAIM}}
                    ],
                },
            },
        },
    }


def bot_service(namespace: str) -> dict[str, Any]:
    """The bot's address in the cluster.

    `publishNotReadyAddresses`: the one bot stays reachable while its readiness
    (`/healthz`) fails, say while GitHub is down; there is no other replica to
    send hosts to, and they must still report their results.
    """
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(BOT_NAME, namespace, _labels("bot")),
        "spec": {
            "selector": _labels("bot"),
            "publishNotReadyAddresses": True,
            "ports": [{"name": "http", "port": BOT_PORT, "targetPort": "http"}],
        },
    }


def student_deployment(student: str, gpus: int, image: str, namespace: str) -> dict[str, Any]:
    """One student's host: its GPUs requested from the device plugin, its token from a Secret.

    Inside the container the device plugin numbers the granted GPUs from 0,
    so the host is given the count (`--gpus N`: devices 0..N-1). `Recreate`, because a
    second pod with the same token would compete for the same student's jobs.
    """
    if gpus < 0:
        raise ValueError(f"gpus per student must be >= 0, not {gpus}")
    labels = _labels("student", student)
    resources: dict[str, Any] = {
        "requests": {"cpu": "2", "memory": "8Gi"},
        "limits": {"memory": "32Gi"},
    }
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
    # The token reaches the daemon on standard input from the Secret's file (HOST_COMMAND),
    # never as an argument or in the environment.
    args = [
        "--name",
        student,
        "--gpus",
        str(gpus) if gpus else "",
        "--bot-url",
        BOT_URL,
        "--work-dir",
        HOST_WORK_DIR,
    ]
    container = {
        "name": "host",
        "image": image,
        "command": list(HOST_COMMAND),
        "args": args,
        "env": [{"name": "KOHAI_BOT_URL", "value": BOT_URL}],
        "envFrom": [{"secretRef": {"name": KEYS_SECRET, "optional": True}}],
        "volumeMounts": [
            {"name": "work", "mountPath": HOST_WORK_DIR},
            {"name": "shm", "mountPath": "/dev/shm"},
            {"name": "host-token", "mountPath": HOST_TOKEN_DIR, "readOnly": True},
        ],
        "resources": resources,
        "securityContext": _host_container_security(),
    }
    pod_spec: dict[str, Any] = {
        "hostUsers": False,
        "securityContext": _pod_security(),
        "terminationGracePeriodSeconds": HOST_STOP_GRACE_S,
        "containers": [container],
        "volumes": [
            {"name": "work", "emptyDir": {}},
            {"name": "shm", "emptyDir": {"medium": "Memory"}},
            {
                "name": "host-token",
                "secret": {"secretName": host_secret_name(student), "defaultMode": 0o440},
            },
        ],
    }
    if gpus:
        pod_spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(student_deployment_name(student), namespace, labels),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def host_token_secret(student: str, token: str, namespace: str) -> dict[str, Any]:
    """The Secret a student's Deployment reads its host token from."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _meta(host_secret_name(student), namespace, _labels("student", student)),
        "stringData": {HOST_TOKEN_KEY: token},
    }


def render_bot(image: str, namespace: str) -> list[dict[str, Any]]:
    """The namespace and the bot: its volume, Deployment and Service."""
    bot_image, _ = image_pair(image)
    return [
        namespace_object(namespace),
        bot_claim(namespace),
        bot_deployment(bot_image, namespace),
        bot_service(namespace),
    ]


def render_students(
    students: list[str], gpus_per_student: int, image: str, namespace: str
) -> list[dict[str, Any]]:
    _, host_image = image_pair(image)
    return [student_deployment(s, gpus_per_student, host_image, namespace) for s in students]


def render_fleet(
    students: list[str], gpus_per_student: int, image: str, namespace: str
) -> list[dict[str, Any]]:
    """Everything `kohai deploy k8s` applies, host tokens aside (they are Secrets, made apart)."""
    if len(set(students)) != len(students):
        raise ValueError(f"student names repeat: {students}")
    return render_bot(image, namespace) + render_students(
        students, gpus_per_student, image, namespace
    )


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-objects out in full: anchors and aliases confuse readers of manifests."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Multi-document YAML, in the order given (kubectl applies it top to bottom)."""
    return yaml.dump_all(objects, Dumper=_PlainDumper, sort_keys=False, default_flow_style=False)
