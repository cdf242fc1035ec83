"""Shared by the deployment tests: Kubernetes objects checked by the official client's models."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import kubernetes
import pytest

# kind -> the kubernetes client's model for it
MODELS: dict[str, str] = {
    "Namespace": "V1Namespace",
    "PersistentVolumeClaim": "V1PersistentVolumeClaim",
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "Ingress": "V1Ingress",
    "Secret": "V1Secret",
}
API_VERSIONS: dict[str, str] = {
    "Namespace": "v1",
    "PersistentVolumeClaim": "v1",
    "Deployment": "apps/v1",
    "Service": "v1",
    "Ingress": "networking.k8s.io/v1",
    "Secret": "v1",
}


@pytest.fixture(scope="session")
def k8s_model() -> Callable[[dict[str, Any]], Any]:
    """Deserialize an object into its client model and insist that nothing was lost.

    The client's models reject missing required fields; serializing the model
    back and comparing with the input catches misspelled or misplaced keys,
    which the models would otherwise drop without a word.
    """
    client = kubernetes.client.ApiClient()

    def validate(obj: dict[str, Any]) -> Any:
        kind = obj["kind"]
        assert kind in MODELS, f"unexpected kind {kind}"
        assert obj["apiVersion"] == API_VERSIONS[kind]
        model = client._ApiClient__deserialize(obj, MODELS[kind])
        assert client.sanitize_for_serialization(model) == obj
        return model

    return validate
