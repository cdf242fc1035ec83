"""deploy/k8s/base: every file a valid object, in step with what `kohai deploy k8s` renders."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot import deploy

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"
Validate = Callable[[dict[str, Any]], Any]


def _kustomization() -> dict[str, Any]:
    return yaml.safe_load((BASE / "kustomization.yaml").read_text())


def _base_objects() -> list[dict[str, Any]]:
    objects = []
    for resource in _kustomization()["resources"]:
        objects += [d for d in yaml.safe_load_all((BASE / resource).read_text()) if d]
    return objects


def test_kustomization_lists_every_manifest_in_the_base() -> None:
    listed = set(_kustomization()["resources"])
    on_disk = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}

    assert listed == on_disk
    assert _kustomization()["namespace"] == "kohai"


def test_every_base_object_is_valid(k8s_model: Validate) -> None:
    objects = _base_objects()

    for obj in objects:
        k8s_model(obj)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        ["Namespace", "PersistentVolumeClaim", "Deployment", "Deployment", "Service", "Ingress"]
    )


def test_base_matches_the_renderer() -> None:
    """The static base and `kohai deploy k8s` describe the same bot and student."""
    base = {(o["kind"], o["metadata"]["name"]): o for o in _base_objects()}
    rendered = deploy.render_fleet(["fern"], 1, "ghcr.io/kohai/kohai", "kohai")

    for obj in rendered:
        assert base[(obj["kind"], obj["metadata"]["name"])] == obj


def test_ingress_routes_to_the_bot_service(k8s_model: Validate) -> None:
    (ingress,) = [o for o in _base_objects() if o["kind"] == "Ingress"]
    model = k8s_model(ingress)
    backends = [p.backend.service for r in model.spec.rules for p in r.http.paths]

    assert backends and all(b.name == deploy.BOT_NAME for b in backends)
    assert all(b.port.name == "http" for b in backends)


def test_base_holds_no_secret_values() -> None:
    text = "\n".join(p.read_text() for p in BASE.glob("*.yaml"))

    assert "kind: Secret" not in text
    assert "BEGIN RSA PRIVATE KEY" not in text and "stringData" not in text


@pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl is not a Debian package here; without it, test_base_matches_the_renderer still checks the base",
)
def test_kustomize_builds_the_base(k8s_model: Validate) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(BASE)], capture_output=True, text=True, timeout=60
    )

    assert built.returncode == 0, built.stderr
    objects = [d for d in yaml.safe_load_all(built.stdout) if d]
    assert len(objects) == len(_base_objects())
    for obj in objects:
        k8s_model(obj)
        assert obj["metadata"].get("namespace", "kohai") == "kohai"
