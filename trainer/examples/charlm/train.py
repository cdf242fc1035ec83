"""Train a tiny byte-level transformer on Python's help text. EDITABLE.

The knobs below are plain module-level constants so that a search strategy can
set them by name. The run stops itself when KOHAI_BUDGET_S seconds have passed
since it started (or at the harness's SIGTERM, whichever comes first) and saves
its weights to KOHAI_RUN_DIR with prepare.save_artifact. It does not score
itself: the harness runs the frozen evaluator (`python prepare.py evaluate`)
on that artefact, which imports this file's `build_model()` in a sandboxed
child process.

Environment (set by the kohai trainer; all optional):
  KOHAI_SEED          random seed (default 0)
  KOHAI_BUDGET_S      time budget in seconds, counted from process start (default 30)
  KOHAI_RUN_DIR       where the artefact goes (default: the current directory)
  KOHAI_DATA_DIR      where the harness put the training split (prepare.load_train)
  KOHAI_METRICS_FILE  where to append JSON lines: progress points, then one final line
  KOHAI_MAX_STEPS     stop after this many steps instead (benchmarks); also --max-steps
Runs on CUDA when available and under `torchrun` (DDP when WORLD_SIZE > 1).
"""

from __future__ import annotations

import signal
import time

_started_at = time.time()  # before the imports: the budget counts from process start
_stop = {"requested": False}


def request_stop(signum: int, frame: object) -> None:
    """The harness's SIGTERM at the budget: finish the step, save, exit."""
    _stop["requested"] = True


signal.signal(signal.SIGTERM, request_stop)  # early: a SIGTERM during the imports still saves

import argparse
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from prepare import VOCAB_SIZE, get_batch, load_train, save_artifact

# --- knobs ---------------------------------------------------------------
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 0.01
WARMUP_STEPS = 20
N_LAYER = 2
N_HEAD = 4
N_EMBD = 64
BATCH_SIZE = 32
SEQ_LEN = 64
DROPOUT = 0.0
GRAD_CLIP = 1.0
LOG_EVERY = 10
# -------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.dropout = dropout
        self.ln1 = nn.LayerNorm(n_embd)
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.n_head, c // self.n_head).permute(2, 0, 3, 1, 4)
        drop = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=drop)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attend(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB_SIZE, N_EMBD)
        self.pos = nn.Embedding(SEQ_LEN, N_EMBD)
        self.blocks = nn.ModuleList(Block(N_EMBD, N_HEAD, DROPOUT) for _ in range(N_LAYER))
        self.ln = nn.LayerNorm(N_EMBD)
        self.head = nn.Linear(N_EMBD, VOCAB_SIZE, bias=False)
        self.head.weight = self.tok.weight  # tied embeddings
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.size(1)
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def build_model() -> CharLM:
    """The model this file's knobs describe; the evaluator loads the artefact into it."""
    return CharLM()


class AdamW:
    """Plain AdamW with decoupled weight decay.

    torch.optim's first use imports the compiler stack, which costs seconds of
    startup; under a 30 s budget that is time not spent training.
    """

    def __init__(
        self, params, lr: float, betas=(0.9, 0.95), eps: float = 1e-8, weight_decay: float = 0.0
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        beta1, beta2 = self.betas
        bias1, bias2 = 1 - beta1**self.t, 1 - beta2**self.t
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            if p.grad is None:
                continue
            if self.weight_decay:
                p.mul_(1 - self.lr * self.weight_decay)
            m.lerp_(p.grad, 1 - beta1)
            v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
            p.addcdiv_(m, (v / bias2).sqrt_().add_(self.eps), value=-self.lr / bias1)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None


def lr_at(step: int, progress: float) -> float:
    """Linear warmup, then linear decay to 10% as the budget (or step limit) runs out."""
    if step < WARMUP_STEPS:
        return LEARNING_RATE * (step + 1) / WARMUP_STEPS
    return LEARNING_RATE * max(0.1, 1.0 - 0.9 * progress)


def append_metrics(path: str, record: dict) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")


def main() -> None:
    t_start = _started_at
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--max-steps", type=int, default=int(os.environ.get("KOHAI_MAX_STEPS", "0"))
    )
    args = parser.parse_args()

    seed = int(os.environ.get("KOHAI_SEED", "0"))
    budget_s = float(os.environ.get("KOHAI_BUDGET_S", "30"))
    metrics_file = os.environ.get("KOHAI_METRICS_FILE", "")
    run_dir = os.environ.get("KOHAI_RUN_DIR", ".")

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    ddp = world_size > 1
    if torch.cuda.is_available():
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    else:
        device = "cpu"
        # Small models gain little from threads and lose a lot to contention on a
        # busy small machine: one thread per two cores, at most four.
        cores = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
        torch.set_num_threads(max(1, min(4, cores // (2 * world_size))))
    if ddp:
        torch.distributed.init_process_group(backend="nccl" if device != "cpu" else "gloo")
    master = rank == 0

    torch.manual_seed(seed)
    train_data = load_train()
    model = build_model().to(device)
    n_params = sum(p.numel() for p in model.parameters())
    trained = model
    if ddp:
        trained = nn.parallel.DistributedDataParallel(
            model, device_ids=[local_rank] if device != "cpu" else None
        )
    optimizer = AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    batches = torch.Generator().manual_seed(seed * 1000 + rank)
    use_amp = device.startswith("cuda")

    step, loss_value = 0, float("nan")
    t_train = time.time()
    while True:
        elapsed = time.time() - t_start  # the budget counts from process start
        progress = step / args.max_steps if args.max_steps else elapsed / budget_s
        stop = progress >= 1.0 or _stop["requested"]
        if ddp:  # every rank must stop at the same step
            flag = torch.tensor([1.0 if stop else 0.0], device=device)
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
            stop = flag.item() > 0
        if stop:
            break
        optimizer.lr = lr_at(step, progress)
        x, y = get_batch(train_data, BATCH_SIZE, SEQ_LEN, batches)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = trained(x)
            loss = F.cross_entropy(logits.reshape(-1, VOCAB_SIZE).float(), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        if GRAD_CLIP:
            nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        step += 1
        if step % LOG_EVERY == 0 or step == 1:
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise SystemExit(f"training diverged at step {step}: loss {loss_value}")
            if master:
                append_metrics(metrics_file, {"step": step, "train_loss": round(loss_value, 4)})
    training_seconds = time.time() - t_train

    if master:
        save_artifact(model, run_dir)
        final = {
            "final": True,
            "train_loss": round(loss_value, 4),
            "steps": step,
            "training_seconds": round(training_seconds, 2),
            "num_params": n_params,
        }
        if device != "cpu":
            final["peak_mem_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        append_metrics(metrics_file, final)
        print("---")
        print(f"training_seconds: {training_seconds:.1f}")
        print(f"total_seconds: {time.time() - t_start:.1f}")
        print(f"num_steps: {step}")
        print(f"num_params_M: {n_params / 1e6:.3f}")
    if ddp:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
