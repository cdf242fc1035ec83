"""`kohai app manifest` and `kohai deploy k8s`: print or apply what `bot.deploy` renders.

Applying a fleet needs host tokens registered in the store of the bot that
will check them, and that bot runs in the cluster with its SQLite file on a
volume there. So the students are registered inside the bot's pod (through
`kubectl exec`, with `bot.engine.jobs.register_student`), and their tokens go
straight from that pod's output into Kubernetes Secrets, over stdin: they are
never printed, written to disk or put on a command line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from bot import deploy

ROLLOUT_TIMEOUT = "300s"
KUBECTL_TIMEOUT_S = 600.0

# Run by the bot's own Python inside its pod: registers students, prints {name: token}.
REGISTER_SCRIPT = """\
import json, os, sys
from bot.engine.jobs import register_student
from bot.store import Store
wanted = json.load(sys.stdin)
store = Store(os.environ.get("KOHAI_DB", "kohai.db"))
try:
    tokens = {name: register_student(store, name, int(gpus)) for name, gpus in wanted.items()}
finally:
    store.close()
print(json.dumps(tokens))
"""


class DeployError(Exception):
    """A step of applying the fleet failed; the message says which and what to do."""


def manifest_main(args: argparse.Namespace) -> int:
    try:
        manifest = deploy.app_manifest(args.url, args.name)
    except ValueError as exc:
        print(f"kohai app manifest: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(manifest, indent=2))
    return 0


def k8s_main(args: argparse.Namespace) -> int:
    try:
        students = deploy.student_names(args.students)
        fleet = deploy.render_fleet(students, args.gpus_per_student, args.image, args.namespace)
    except ValueError as exc:
        print(f"kohai deploy k8s: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(deploy.to_yaml(fleet))
        return 0
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print(
            "kohai deploy k8s: kubectl is not on PATH; install it and point it at your cluster, "
            "or add --dry-run to print the manifests instead",
            file=sys.stderr,
        )
        return 1
    try:
        apply_fleet(Kubectl(kubectl, args.namespace), students, args)
    except DeployError as exc:
        print(f"kohai deploy k8s: {exc}", file=sys.stderr)
        return 1
    return 0


class Kubectl:
    """kubectl, always in one namespace; a failed command raises DeployError with its stderr."""

    def __init__(self, executable: str, namespace: str) -> None:
        self.executable = executable
        self.namespace = namespace

    def run(self, args: Sequence[str], stdin: str | None = None, check: bool = True) -> str:
        command = [self.executable, "--namespace", self.namespace, *args]
        try:
            done = subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                timeout=KUBECTL_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired as exc:
            raise DeployError(f"kubectl {' '.join(args[:2])} timed out") from exc
        if check and done.returncode != 0:
            raise DeployError(
                f"kubectl {' '.join(args[:3])} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout if done.returncode == 0 else ""

    def apply(self, objects: list[dict[str, Any]]) -> str:
        if not objects:
            return ""  # kubectl refuses an empty apply
        return self.run(["apply", "-f", "-"], stdin=deploy.to_yaml(objects))

    def exists(self, kind: str, name: str) -> bool:
        return bool(self.run(["get", kind, name, "-o", "name"], check=False).strip())


def apply_fleet(kubectl: Kubectl, students: list[str], args: argparse.Namespace) -> None:
    """Bot first, then tokens for the students that have none, then the students."""
    namespace = args.namespace
    print(kubectl.apply(deploy.render_bot(args.image, namespace)), end="")
    if not kubectl.exists("secret", deploy.GITHUB_SECRET):
        raise DeployError(
            f"the Secret {deploy.GITHUB_SECRET} is missing in namespace {namespace}; "
            "the bot cannot start without it. Create it, then run this again:\n"
            f"  kubectl -n {namespace} create secret generic {deploy.GITHUB_SECRET} "
            "--from-literal=app-id=APP_ID --from-file=private-key=APP.private-key.pem "
            "--from-literal=webhook-secret=SECRET"
        )
    kubectl.run(
        ["rollout", "status", f"deployment/{deploy.BOT_NAME}", f"--timeout={ROLLOUT_TIMEOUT}"]
    )
    missing = [s for s in students if not kubectl.exists("secret", deploy.host_secret_name(s))]
    tokens = register_in_bot(kubectl, missing, args.gpus_per_student) if missing else {}
    secrets = [deploy.host_token_secret(s, tokens[s], namespace) for s in missing]
    rendered = deploy.render_students(students, args.gpus_per_student, args.image, namespace)
    print(kubectl.apply(secrets + rendered), end="")
    for student in missing:
        print(f"registered {student} ({args.gpus_per_student} GPU) in the bot's store")


def register_in_bot(kubectl: Kubectl, students: list[str], gpus: int) -> dict[str, str]:
    """Register students in the running bot's own store; their tokens, by name."""
    output = kubectl.run(
        ["exec", "-i", f"deployment/{deploy.BOT_NAME}", "--", "python", "-c", REGISTER_SCRIPT],
        stdin=json.dumps({name: gpus for name in students}),
    )
    lines = output.strip().splitlines()
    try:
        tokens = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        tokens = None
    if not isinstance(tokens, dict) or set(tokens) != set(students):
        raise DeployError("registering the students in the bot's store gave no tokens back")
    return {str(name): str(token) for name, token in tokens.items()}
