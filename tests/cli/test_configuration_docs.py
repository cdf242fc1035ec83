"""Every `KOHAI_*` variable the code reads is in docs/configuration.md, and nothing stale is."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("bot", "webhooks", "trainer", "agents", "sandbox", "deploy")
# A variable as the code writes it: a string literal, a keyword (`KOHAI_SMOKE="1"`), or a
# shell/systemd reference (`${KOHAI_GPUS}`).
NAME = re.compile(r"""(?:["'{]|\b)(KOHAI_[A-Z0-9_]+)(?=["'}=])""")
DOC_NAME = re.compile(r"`(KOHAI_[A-Z0-9_]+)")


def code_variables() -> set[str]:
    found: set[str] = set()
    for top in SOURCES:
        for path in (ROOT / top).rglob("*"):
            if path.suffix in (".py", ".yaml", ".yml", ".service", ".toml", ".sh") or (
                path.name == "Dockerfile"
            ):
                found.update(NAME.findall(path.read_text(encoding="utf-8", errors="replace")))
    return found


def documented() -> set[str]:
    return set(DOC_NAME.findall((ROOT / "docs" / "configuration.md").read_text()))


def test_every_variable_the_code_reads_is_documented() -> None:
    found = code_variables()
    # A prefix of another name may be a family the code matches (`KOHAI_HOST*`), not a variable.
    missing = sorted(
        name
        for name in found - documented()
        if not any(other.startswith(name + "_") for other in found)
    )
    assert not missing, f"add these to docs/configuration.md: {missing}"


def test_the_table_names_no_variable_the_code_has_forgotten() -> None:
    # Variables the trainer hands to the training script are documented but set, not read.
    stale = sorted(documented() - code_variables())
    assert not stale, f"docs/configuration.md names variables no code uses: {stale}"
