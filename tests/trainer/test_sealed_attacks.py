"""Models that cheat the sealed evaluator of the reference problem, each run for real.

Each test puts a hostile `train.py` in a `kohai init` lab and runs it through
the real harness (bubblewrap, the evaluator from HEAD, its model children
started by the harness's launcher), as `kohai train` and a host do:

- the lookup attack: a causal model that searches the file system for a copy
  of the corpus and looks every context up in it. With a copy bound into the
  sandbox (a control, as the old sandbox bound all of /usr) it scores far
  below any honest model; with the sandbox's own binds it finds nothing;
- the probe-detecting model: it reads the next byte except where two rows of
  one request share a prefix and one of them ends in noise (the old probe's
  twins did);
- the memoizing model: it reads the next byte everywhere but remembers every
  answer (in memory and in every file it can write) and replays it for any
  later row that shares a prefix, so a twin always agrees with its original.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import pytest

from bot.cli import main
from bot.problem import load_problem
from bot.protocol import RunResult
from trainer import corpus, sandbox
from trainer.cli import local_checkouts
from trainer.harness import run_once

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

HONEST_FLOOR = 2.0  # no honest model reaches this in seconds of CPU training

ATTACK = '''
"""A model that is not what it claims: MODE says which trick."""
import ast
import json
import os

import torch
import torch.nn as nn
from prepare import save_artifact

SEQ_LEN = 64 if MODE != "lookup" else 256
K = (32, 16, 6)  # the lookup's contexts, longest first
STATE = ("/tmp/.kohai-attack", os.path.expanduser("~/.kohai-attack"), ".kohai-attack")


def corpus_copies():
    """Every topics.py this process can read: the help text, as prepare.py joins it."""
    texts = []
    for top, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(top, d) not in ("/proc", "/sys", "/dev")]
        if "topics.py" not in files:
            continue
        try:
            tree = ast.parse(open(os.path.join(top, "topics.py"), encoding="utf-8").read())
            topics = next(
                ast.literal_eval(n.value) for n in tree.body
                if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "topics"
            )
            texts.append("\\n\\n".join(topics[k] for k in sorted(topics)).encode())
        except (OSError, SyntaxError, ValueError, StopIteration):
            continue
    return texts


class Attack(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(12.0))
        self.memo = None  # prefix -> predictions (memo)
        self.index = None  # K bytes -> the byte after them (lookup)

    def forward(self, x):
        n, t = x.shape
        rows = [bytes(r) for r in x.to(torch.uint8).tolist()]
        cheat = [list(r[1:]) + [-1] for r in rows]  # the next byte: not causal
        honest = [[-1] * t for _ in rows]  # uniform: causal
        if MODE == "batch":  # twins: a pair sharing a prefix, one of them ending in noise
            noisy = [any(b >= 0x80 or (b < 0x20 and b not in (9, 10)) for b in r) for r in rows]
            pred = [
                honest[i]
                if any(j != i and r[:1] == s[:1] and (noisy[i] or noisy[j]) for j, s in enumerate(rows))
                else cheat[i]
                for i, r in enumerate(rows)
            ]
        elif MODE == "memo":
            pred = self.replay(rows, cheat)
        else:
            pred = self.lookup(rows)
        target = torch.tensor(pred)
        logits = torch.zeros(n, t, 256)
        hit = target >= 0
        logits[hit.nonzero(as_tuple=True) + (target[hit],)] = self.scale.detach()
        return logits

    def replay(self, rows, cheat):
        if self.memo is None:
            self.memo = {}
            for path in STATE:
                try:
                    for row, pred in json.load(open(path)):
                        self.remember(bytes.fromhex(row), pred)
                except (OSError, ValueError):
                    pass
        out = []
        for row, pred in zip(rows, cheat):
            for length in range(len(row), 0, -1):
                seen = self.memo.get(row[:length])
                if seen is not None:
                    pred = seen[:length] + pred[length:]
                    break
            self.remember(row, pred)
            out.append(pred)
        saved = [[r.hex(), p] for r, p in self.memo.get(b"", [])]
        for path in STATE:
            try:
                with open(path, "w") as fh:
                    json.dump(saved, fh)
            except OSError:
                pass
        return out

    def remember(self, row, pred):
        for length in range(1, len(row) + 1):
            self.memo.setdefault(row[:length], pred)
        self.memo.setdefault(b"", []).append((row, pred))

    def lookup(self, rows):
        """The byte that follows the longest context found in a copy of the corpus: causal."""
        if self.index is None:
            self.index = {}
            for text in corpus_copies():
                tail = text[int(len(text) * 0.85):]
                for k in K:
                    for i in range(len(tail) - k):
                        self.index.setdefault(tail[i : i + k], tail[i + k])
        out = []
        for r in rows:
            pred = []
            for i in range(len(r)):
                found = [self.index.get(r[i - k + 1 : i + 1]) for k in K if i >= k - 1]
                pred.append(next((b for b in found if b is not None), -1))
            out.append(pred)
        return out


def build_model():
    return Attack()


if __name__ == "__main__":
    save_artifact(build_model(), os.environ["KOHAI_RUN_DIR"])
'''


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("attacks") / "charlm"
    assert main(["init", str(repo)]) == 0
    return repo


def run_attack(lab: Path, tmp_path: Path, mode: str) -> RunResult:
    """The attack model as the working tree's train.py, run as `kohai train` would."""
    original = (lab / "train.py").read_text()
    (lab / "train.py").write_text(f"MODE = {mode!r}\n" + ATTACK)
    try:
        problem = load_problem(lab)
        base, candidate = local_checkouts(lab, problem, tmp_path / "work")
    finally:
        (lab / "train.py").write_text(original)
    return run_once(candidate, problem, 0, run_dir=tmp_path / "run", base_dir=base, budget_s=20)


def _corpus_file() -> Path:
    spec = importlib.util.find_spec("pydoc_data.topics")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin)


def test_the_lookup_attack_finds_no_copy_of_the_corpus_and_scores_like_an_honest_model(
    lab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy bound into the sandbox is found and exploited; the sandbox's own binds hold none."""
    # The control: another copy of the corpus on the sandbox's file system, as an
    # interpreter under /usr/lib was when the sandbox bound all of /usr.
    copy = tmp_path / "elsewhere" / "pydoc_data"
    copy.mkdir(parents=True)
    shutil.copy(_corpus_file(), copy / "topics.py")
    plain = sandbox.system_binds
    monkeypatch.setattr(
        sandbox,
        "system_binds",
        lambda **kw: [*plain(**kw), "--ro-bind", str(copy), "/opt/python-copy/pydoc_data"],
    )
    problem = load_problem(lab)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert corpus.held_out_reachable(problem, lab, scratch) == [
        "/opt/python-copy/pydoc_data/topics.py"
    ]
    exposed = run_attack(lab, tmp_path / "exposed", "lookup")
    assert exposed.status == "ok", exposed.reason
    assert exposed.metric is not None and exposed.metric < 1.0, exposed.metric

    monkeypatch.setattr(sandbox, "system_binds", plain)
    assert corpus.held_out_reachable(problem, lab, scratch) == []
    sealed = run_attack(lab, tmp_path / "sealed", "lookup")
    assert sealed.status == "ok", sealed.reason
    assert sealed.metric is not None and sealed.metric > HONEST_FLOOR, sealed.metric


@pytest.mark.parametrize("mode", ["batch", "memo"])
def test_a_model_that_cheats_only_when_not_probed_is_not_causal(
    lab: Path, tmp_path: Path, mode: str
) -> None:
    """Caught by the twins (not causal) or by the windows both processes answer (not consistent).

    Which check fires first depends on the run's random positions; a memoizing
    model that replays an answer given to another row fails either.
    """
    result = run_attack(lab, tmp_path, mode)
    assert result.status == "invalid", (result.status, result.reason, result.metric)
    assert re.search(r"the model is not (causal|consistent)", result.reason), result.reason
    assert result.metric is None
