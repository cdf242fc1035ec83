"""deploy/systemd/kohai-host@.service: its directives, and systemd's own verdict where it can run."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "kohai-host@.service"
SYSTEM_UNITS = next(
    (
        p
        for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
        if (p / "sysinit.target").exists()
    ),
    None,
)


def _unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser


def test_unit_runs_the_host_daemon_for_its_instance() -> None:
    service = _unit()["Service"]
    argv = service["ExecStart"].split()

    assert argv[0].startswith("/") and argv[0].endswith("/kohai")
    assert argv[1:3] == ["host", "run"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--name"] == "%i"
    assert flags["--bot-url"] == "${KOHAI_BOT_URL}"
    assert "--token" not in flags  # never on the command line
    assert "KOHAI_HOST_TOKEN" not in service["ExecStart"]
    # A credential file, not the environment (which /proc/PID/environ would keep).
    assert service["LoadCredential"] == "token:/etc/kohai/host-%i.token"
    assert flags["--token-file"] == "%d/token"
    assert "KOHAI_HOST_TOKEN" not in UNIT.read_text().split("[Service]")[1]
    assert flags["--gpus"] == "${KOHAI_GPUS}"
    assert service["EnvironmentFile"] == "/etc/kohai/host-%i.env"


def test_unit_restarts_runs_unprivileged_and_stops_gracefully() -> None:
    service = _unit()["Service"]

    assert service["Restart"] == "on-failure"
    assert service["RestartSec"]
    assert service["User"] == "kohai"
    assert service["KillSignal"] == "SIGTERM"
    assert service["KillMode"] == "mixed"  # the daemon, not its runs, gets the SIGTERM
    assert int(service["TimeoutStopSec"].removesuffix("s")) >= 120
    assert _unit()["Install"]["WantedBy"] == "multi-user.target"


def _verify(root: Path, unit_text: str) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of instance fern, in a root where its paths exist."""
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/kohai-host@.service").write_text(unit_text)
    (root / "etc/kohai").mkdir()
    (root / "etc/kohai/host-fern.env").write_text("KOHAI_BOT_URL=http://127.0.0.1:8000\n")
    (root / "etc/kohai/host-fern.token").write_text("khost_example\n")
    executable = root / "opt/kohai/bin/kohai"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\n")
    executable.chmod(0o755)
    (root / "usr/lib/systemd").mkdir(parents=True)
    os.symlink(SYSTEM_UNITS, root / "usr/lib/systemd/system")
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "kohai-host@fern.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze missing: `make test` installs Debian's systemd; only a bare pytest run skips",
)
@pytest.mark.skipif(
    SYSTEM_UNITS is None,
    reason="systemd's units missing: `make test` installs Debian's systemd; only a bare pytest run skips",
)
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    good = _verify(tmp_path / "good", UNIT.read_text())
    assert good.returncode == 0, good.stderr
    assert "kohai-host" not in good.stdout + good.stderr, good.stderr

    # The same check notices a broken unit, so its silence above means something.
    broken = UNIT.read_text().replace("KillMode=mixed", "KillMode=gently")
    bad = _verify(tmp_path / "bad", broken)
    assert "kohai-host@.service:" in bad.stderr and "gently" in bad.stderr
