"""Shared fixtures: one sandbox per module, a webhook receiver, githubkit clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from githubkit import AppAuthStrategy, AppInstallationAuthStrategy, GitHub
from sandbox_helpers import REPO, Receiver

from sandbox.control import SandboxControl
from sandbox.server import SandboxServer


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


@pytest.fixture(scope="module")
def sandbox(
    tmp_path_factory: pytest.TempPathFactory, receiver: Receiver
) -> Iterator[SandboxServer]:
    data = tmp_path_factory.mktemp("sandbox")
    with SandboxServer(data, webhook_url=receiver.url) as server:
        server.create_repo(
            REPO,
            files={"README.md": "# charlm\n", "train.py": "lr = 0.01\ndepth = 2\n"},
        )
        yield server


@pytest.fixture(scope="module")
def control(sandbox: SandboxServer) -> Iterator[SandboxControl]:
    with SandboxControl(sandbox.url) as c:
        yield c


@pytest.fixture(scope="module")
def app_gh(sandbox: SandboxServer) -> GitHub[Any]:
    return GitHub(AppAuthStrategy(sandbox.app_id, sandbox.private_key_pem), base_url=sandbox.url)


@pytest.fixture(scope="module")
def gh(sandbox: SandboxServer) -> GitHub[Any]:
    installation_id = sandbox.installation_id(REPO)
    assert installation_id is not None
    strategy = AppInstallationAuthStrategy(sandbox.app_id, sandbox.private_key_pem, installation_id)
    return GitHub(strategy, base_url=sandbox.url)
