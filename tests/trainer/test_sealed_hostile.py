"""Hostile training scripts against the sealed path, one test per trick.

Each runs the reference problem (`kohai init`) through the real harness the
way `kohai train` and a host do: the evaluator and frozen files from HEAD, the
training code from the working tree. Every trick ends with a clear reason and
no metric better than the honest one.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli import main
from bot.problem import load_problem
from bot.protocol import RunResult
from trainer.cli import local_checkouts
from trainer.harness import run_once

BUDGET_S = 4.0
HONEST_FLOOR = 2.0  # a 4 s charlm run on two busy cores scores well above this

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("hostile") / "charlm"
    assert main(["init", str(repo)]) == 0
    return repo


@pytest.fixture
def honest(lab: Path) -> str:
    return (lab / "train.py").read_text()


def run_with(lab: Path, tmp_path: Path, train_py: str, **kw: float) -> RunResult:
    """Put `train_py` in the working tree and run it as `kohai train` would."""
    original = (lab / "train.py").read_text()
    (lab / "train.py").write_text(train_py)
    try:
        problem = load_problem(lab)
        base, candidate = local_checkouts(lab, problem, tmp_path / "work")
    finally:
        (lab / "train.py").write_text(original)
    return run_once(
        candidate,
        problem,
        0,
        run_dir=tmp_path / "run",
        base_dir=base,
        budget_s=kw.get("budget", BUDGET_S),
    )


def before_main(source: str, code: str) -> str:
    """`code` inserted into train.py just before `main()` runs."""
    return source.replace('if __name__ == "__main__":\n', code + '\nif __name__ == "__main__":\n')


def assert_no_gain(result: RunResult) -> None:
    assert result.metric is None or result.metric > HONEST_FLOOR, result


def test_forged_metrics_file_is_progress_not_the_result(
    lab: Path, tmp_path: Path, honest: str
) -> None:
    forged = honest.replace(
        "        append_metrics(metrics_file, final)",
        '        final["val_bpb"] = 0.0123\n        append_metrics(metrics_file, final)',
    )
    result = run_with(lab, tmp_path, forged)
    assert result.status == "ok" and result.sealed, result.reason
    assert result.metrics["reported_val_bpb"] == 0.0123  # kept, labelled as the script's claim
    assert result.metric is not None and result.metric > HONEST_FLOOR


def test_a_forged_final_line_without_training_is_a_crash(lab: Path, tmp_path: Path) -> None:
    script = (
        "import json, os\n"
        "open(os.environ['KOHAI_METRICS_FILE'], 'a').write(json.dumps({'final': True, 'val_bpb': 0.0123}) + '\\n')\n"
    )
    result = run_with(lab, tmp_path, script)
    assert result.status == "crash"
    assert "left no artefact" in result.reason
    assert result.metric is None


def test_forged_summary_line_is_ignored(lab: Path, tmp_path: Path, honest: str) -> None:
    forged = honest.replace(
        '        print("---")', '        print("---")\n        print("val_bpb: 0.0123")'
    )
    result = run_with(lab, tmp_path, forged)
    assert result.status == "ok", result.reason
    assert result.metrics["reported_val_bpb"] == 0.0123
    assert_no_gain(result)


def test_monkeypatching_the_evaluator_from_train_py_changes_nothing(
    lab: Path, tmp_path: Path, honest: str
) -> None:
    patched = before_main(
        honest,
        "import prepare\n"
        "prepare.score = lambda *a, **k: {'val_bpb': 0.0123}\n"
        "prepare.evaluate = lambda: {'val_bpb': 0.0123}\n",
    )
    result = run_with(lab, tmp_path, patched)
    assert result.status == "ok", result.reason
    assert_no_gain(result)


def test_non_causal_attention_is_invalid(lab: Path, tmp_path: Path, honest: str) -> None:
    bidirectional = honest.replace("is_causal=True", "is_causal=False")
    assert bidirectional != honest
    result = run_with(lab, tmp_path, bidirectional)
    assert result.status == "invalid", result.reason
    assert "not causal" in result.reason
    assert result.metric is None


def test_training_cannot_read_the_validation_data(lab: Path, tmp_path: Path, honest: str) -> None:
    peek = before_main(
        honest,
        "try:\n"
        "    from pydoc_data.topics import topics\n"
        "    print('LEAKED', len(topics))\n"
        "except ImportError as exc:\n"
        "    print('HIDDEN', exc)\n",
    )
    result = run_with(lab, tmp_path, peek)
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "LEAKED" not in log and "HIDDEN" in log
    assert result.status == "ok", result.reason


def test_rewriting_a_frozen_file_during_the_run_is_invalid(
    lab: Path, tmp_path: Path, honest: str
) -> None:
    rewrite = before_main(
        honest,
        "from pathlib import Path\n"
        "_p = Path('prepare.py')\n"
        "_p.write_text(_p.read_text().replace('EVAL_BYTES = 32_768', 'EVAL_BYTES = 64'))\n",
    )
    result = run_with(lab, tmp_path, rewrite)
    assert result.status == "invalid", result.reason
    assert "changed prepare.py" in result.reason
    assert result.metric is None


@pytest.mark.parametrize(
    "where", ["runs/cache.bin", "__pycache__/prepare.cpython-311.pyc", "wandb/x"]
)
def test_a_file_dropped_under_an_ignored_directory_is_invalid(
    lab: Path, tmp_path: Path, honest: str, where: str
) -> None:
    drop = before_main(
        honest,
        "from pathlib import Path\n"
        f"Path({where!r}).parent.mkdir(parents=True, exist_ok=True)\n"
        f"Path({where!r}).write_bytes(b'x')\n",
    )
    result = run_with(lab, tmp_path, drop)
    assert result.status == "invalid", result.reason
    assert f"new file {where}" in result.reason


def test_training_past_the_budget_is_cut_at_the_budget(lab: Path, tmp_path: Path) -> None:
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(120)\n"
    )
    result = run_with(lab, tmp_path, stubborn, budget=2.0)
    grace = load_problem(lab).grace_s
    assert result.status == "timeout"
    assert "SIGKILL" in result.reason
    assert 2.0 + grace - 0.5 <= result.train_s < 2.0 + grace + 3.0
    assert result.metric is None


def test_sigterm_at_the_budget_stops_an_honest_run_on_time(
    lab: Path, tmp_path: Path, honest: str
) -> None:
    # A script that ignores KOHAI_BUDGET_S and would train for ever still stops
    # at the budget: the harness's SIGTERM, not the script, decides.
    greedy = honest.replace(
        'budget_s = float(os.environ.get("KOHAI_BUDGET_S", "30"))', "budget_s = 1e9"
    )
    assert greedy != honest
    result = run_with(lab, tmp_path, greedy, budget=3.0)
    assert result.status == "ok", result.reason
    # It stopped at the SIGTERM and saved: no SIGKILL was needed (a busy machine
    # may spend part of the grace still importing torch before it can stop).
    assert result.train_s < 3.0 + load_problem(lab).grace_s


def test_a_pickle_artefact_is_never_unpickled(lab: Path, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    evil = (
        "import os, pickle\n"
        "class Evil:\n"
        "    def __reduce__(self):\n"
        f"        return (os.system, ('touch {canary}',))\n"
        "blob = pickle.dumps(Evil())\n"
        "run = os.environ['KOHAI_RUN_DIR']\n"
        "open(os.path.join(run, 'model.safetensors'), 'wb').write(blob)\n"
        "open(os.path.join(run, 'model.pt'), 'wb').write(blob)\n"
    )
    result = run_with(lab, tmp_path, evil)
    assert result.status == "invalid", result.reason
    assert "not a safetensors file" in result.reason
    assert not canary.exists()


def test_the_sealed_metric_is_the_bits_per_byte_of_the_saved_model(
    lab: Path, tmp_path: Path, honest: str
) -> None:
    """The honest path: the sealed number equals a direct, in-process evaluation of the weights."""
    result = run_with(lab, tmp_path, honest)
    assert result.status == "ok" and result.sealed, result.reason
    assert result.metrics["causality_max_change"] <= 1e-3
    artefact = tmp_path / "run" / "train" / "model.safetensors"
    direct = subprocess.run(
        [sys.executable, "-c", DIRECT_EVAL, str(tmp_path / "work" / "candidate"), str(artefact)],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"},
    ).stdout
    expected = float(direct.strip())
    assert math.isclose(result.metric, expected, abs_tol=2e-4), (result.metric, expected)


# Today's evaluation, written out: consecutive windows of SEQ_LEN over the
# first 32 KiB of the held-out tenth, each byte predicted once.
DIRECT_EVAL = """
import math, sys
sys.path.insert(0, sys.argv[1])
import torch, torch.nn.functional as F
from safetensors.torch import load_model
import prepare, train
model = train.build_model(); load_model(model, sys.argv[2]); model.eval()
val = prepare.split(prepare.load_corpus())[1][: prepare.EVAL_BYTES + 1]
data = torch.frombuffer(bytearray(val), dtype=torch.uint8).long()
t = train.SEQ_LEN; n = (len(data) - 1) // t
x = data[: n * t].view(n, t); y = data[1 : n * t + 1].view(n, t)
with torch.no_grad():
    nats = F.cross_entropy(model(x).reshape(-1, 256).float(), y.reshape(-1), reduction="sum").item()
print(nats / (n * t * math.log(2)))
"""


def test_kohai_train_prints_the_status_and_fails_on_invalid(
    lab: Path, capsys: pytest.CaptureFixture[str], honest: str
) -> None:
    (lab / "train.py").write_text(honest.replace("is_causal=True", "is_causal=False"))
    try:
        code = main(["train", str(lab), "--budget", "3s"])
    finally:
        (lab / "train.py").write_text(honest)
    out = capsys.readouterr().out
    assert code == 1
    assert "status: invalid" in out.splitlines()
    assert re.search(r"^reason: evaluation: the model is not causal", out, re.M)


def test_kohai_train_refuses_a_changed_frozen_file(
    lab: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prepare = lab / "prepare.py"
    original = prepare.read_text()
    prepare.write_text(original + "\n# tweaked\n")
    try:
        code = main(["train", str(lab), "--budget", "3s"])
    finally:
        prepare.write_text(original)
    captured = capsys.readouterr()
    assert code == 1
    assert "status: refused" in captured.out
    assert "prepare.py" in captured.err and "not in files.editable" in captured.err


def test_an_unsealed_problem_says_so(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "kohai.toml").write_text(
        '[metric]\nname = "val_bpb"\n[train]\ncommand = "python train.py"\nbudget = "5s"\n'
    )
    (repo / "train.py").write_text("print('val_bpb: 0.5')\n")
    result = run_once(repo, load_problem(repo), 0, run_dir=tmp_path / "run")
    assert result.status == "ok" and result.metric == 0.5
    assert result.sealed is False
