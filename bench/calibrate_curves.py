"""Measure how seed luck and idea gaps build up over real charlm training curves.

bench/lab.py simulates learning curves; its curve model has two constants that only
real training can give: how well a seed's deviation from the mean at fraction x of a
run predicts its deviation at the end, and how well an idea's paired gap at x
predicts its final gap. This script trains the reference problem
(trainer/examples/charlm) in-process on one thread for a fixed number of steps (so
the learning-rate schedule is the same on every machine), for a few ideas on the same
seeds, scores the held-out bytes at 10 %, 20 %, ... 100 % of training, writes the
curves to bench/data/charlm_curves.json, and prints the fit:

- (a) corr(seed deviation at x, seed deviation at the end), pooled over ideas, each
  idea's curves centred on their per-checkpoint mean;
- (b) corr(paired gap at x, paired gap at the end) across seeds, per idea against the
  base, and the mean gap at each x relative to the final one (the transient);
- the correlation of matched seeds' final values across ideas (rho).

    python bench/calibrate_curves.py [--seeds 5] [--steps 300] [--fit-only]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PROBLEM = ROOT / "trainer" / "examples" / "charlm"
DATA = ROOT / "bench" / "data" / "charlm_curves.json"
CHECKPOINTS = tuple(i / 10 for i in range(1, 11))
# The base and two ideas a researcher would try first: a lower learning rate and a wider model.
IDEAS: dict[str, dict[str, float]] = {
    "base": {},
    "lr 2e-3": {"LEARNING_RATE": 2e-3},
    "width 96": {"N_EMBD": 96},
}
VAL_WINDOWS = 256  # held-out windows of SEQ_LEN bytes, the same for every run


def train_curve(knobs: dict[str, float], seed: int, steps: int) -> list[float]:
    """Held-out bits per byte at each checkpoint of one run of charlm with `knobs`."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    sys.path.insert(0, str(PROBLEM))
    train = importlib.import_module("train")
    prepare = importlib.import_module("prepare")
    defaults = {"LEARNING_RATE": 3e-3, "N_EMBD": 64}
    for name, value in {**defaults, **knobs}.items():
        setattr(train, name, type(getattr(train, name))(value))
    corpus = prepare.load_corpus()
    train_bytes, val_bytes = prepare.split(corpus)
    data = torch.frombuffer(bytearray(train_bytes), dtype=torch.uint8).to(torch.long)
    val = torch.frombuffer(bytearray(val_bytes), dtype=torch.uint8).to(torch.long)
    vx, vy = prepare.get_batch(val, VAL_WINDOWS, train.SEQ_LEN, torch.Generator().manual_seed(7))
    torch.manual_seed(seed)
    model = train.build_model()
    optimizer = train.AdamW(
        model.parameters(), lr=train.LEARNING_RATE, weight_decay=train.WEIGHT_DECAY
    )
    batches = torch.Generator().manual_seed(seed * 1000)  # as train.py: init and data order
    marks = {round(x * steps): x for x in CHECKPOINTS}
    curve: list[float] = []
    for step in range(steps):
        optimizer.lr = train.lr_at(step, step / steps)
        x, y = prepare.get_batch(data, train.BATCH_SIZE, train.SEQ_LEN, batches)
        loss = F.cross_entropy(model(x).reshape(-1, prepare.VOCAB_SIZE), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.GRAD_CLIP)
        optimizer.step()
        if step + 1 in marks:
            with torch.no_grad():
                logits = model(vx).reshape(-1, prepare.VOCAB_SIZE)
                val_loss = F.cross_entropy(logits, vy.reshape(-1)).item()
            curve.append(round(val_loss / math.log(2), 5))
    return curve


def fit(runs: dict[str, list[list[float]]]) -> dict[str, object]:
    """The two correlations per checkpoint, the transient and rho, from {idea: [seed][x]}."""
    names = list(runs)
    curves = {name: np.asarray(runs[name]) for name in names}  # seeds x checkpoints
    # (a) a seed's deviation from its idea's mean, at x against at the end, pooled over ideas
    deviations = np.concatenate([c - c.mean(axis=0) for c in curves.values()])
    seed_corr = [float(np.corrcoef(deviations[:, i], deviations[:, -1])[0, 1]) for i in range(10)]
    base = curves[names[0]]
    gaps: dict[str, dict[str, list[float]]] = {}
    for name in names[1:]:
        gap = curves[name] - base  # paired on the seed
        gaps[name] = {
            "mean_gap": [float(v) for v in gap.mean(axis=0)],
            "corr_with_final": [float(np.corrcoef(gap[:, i], gap[:, -1])[0, 1]) for i in range(10)],
        }
    finals = np.stack([c[:, -1] for c in curves.values()])  # ideas x seeds
    centred = finals - finals.mean(axis=1, keepdims=True)
    pairs = [(a, b) for i, a in enumerate(centred) for b in centred[i + 1 :]]
    rho = float(
        sum(float(a @ b) for a, b in pairs)
        / math.sqrt(sum(float(a @ a) for a, _ in pairs) * sum(float(b @ b) for _, b in pairs))
    )
    matched = {
        f"{a} / {b}": [
            float(np.corrcoef(curves[a][:, i], curves[b][:, i])[0, 1]) for i in range(10)
        ]
        for j, a in enumerate(names)
        for b in names[j + 1 :]
    }
    sigma = float(np.sqrt(np.mean([c[:, -1].var(ddof=1) for c in curves.values()])))
    # An idea's early transient: its mean gap at the first checkpoint beyond what the effect
    # growing as sqrt(x) explains, in final seed sigmas, as the bench's (1 - x)**2 at x = 0.
    transients = [
        (gaps[n]["mean_gap"][0] - gaps[n]["mean_gap"][-1] * math.sqrt(CHECKPOINTS[0]))
        / sigma
        / (1 - CHECKPOINTS[0]) ** 2
        for n in gaps
    ]
    # The model's luck(x) = x**a luck(1) + sqrt(1 - x**(2a)) path: a from (a), least squares
    # on log corr = a log x over the checkpoints whose correlation is positive.
    xs = np.asarray(CHECKPOINTS[:-1])
    cs = np.asarray(seed_corr[:-1])
    keep = cs > 0.05
    exponent = float(np.sum(np.log(cs[keep]) * np.log(xs[keep])) / np.sum(np.log(xs[keep]) ** 2))
    return {
        "seed_deviation_corr_with_final": seed_corr,
        "idea_gaps": gaps,
        "rho_final": rho,
        "matched_seed_corr_by_checkpoint": matched,
        "transient_sigmas": transients,
        "final_seed_sigma_bpb": sigma,
        "luck_exponent": exponent,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--fit-only", action="store_true", help="refit the recorded curves")
    args = parser.parse_args(argv)
    if args.fit_only:
        record = json.loads(DATA.read_text())
    else:
        started = time.perf_counter()
        runs: dict[str, list[list[float]]] = {}
        for name, knobs in IDEAS.items():
            runs[name] = []
            for seed in range(args.seeds):
                runs[name].append(train_curve(knobs, seed, args.steps))
                print(f"{name} seed {seed}: {runs[name][-1]}", flush=True)
        record = {
            "problem": "trainer/examples/charlm",
            "steps": args.steps,
            "threads": 1,
            "metric": "held-out bits per byte on 256 fixed windows",
            "checkpoints": list(CHECKPOINTS),
            "ideas": IDEAS,
            "runs": runs,
            "seconds": round(time.perf_counter() - started, 1),
        }
    record["fit"] = fit(record["runs"])
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps(record["fit"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
