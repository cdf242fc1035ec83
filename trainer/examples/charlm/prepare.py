"""Data and evaluation for the charlm problem. FROZEN: the trainer rejects runs that change it.

The corpus is the text of Python's own help topics (`pydoc_data.topics`), which
ships with every CPython, so the problem needs no download. Tokens are bytes,
so the loss in nats per token converts directly to bits per byte, a metric
that stays comparable whatever the model looks like.

What is fixed here, and therefore comparable across experiments:
- the corpus, its order and the train/validation split (last 10% held out);
- the evaluation slice (the first EVAL_BYTES bytes of the held-out part);
- the evaluation itself (`evaluate_bpb`): every byte of that slice is scored once.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

VOCAB_SIZE = 256  # bytes
VAL_FRACTION = 0.1
EVAL_BYTES = 32_768
EVAL_BATCH = 32


def load_corpus() -> bytes:
    """The corpus, in a fixed order (sorted topic names) so every machine sees the same bytes."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics)).encode("utf-8")


def load_splits() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) as int64 tensors of byte values; deterministic."""
    data = torch.frombuffer(bytearray(load_corpus()), dtype=torch.uint8).to(torch.long)
    cut = int(len(data) * (1.0 - VAL_FRACTION))
    return data[:cut], data[cut:]


def get_batch(
    data: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows of `seq_len` inputs and their next-byte targets."""
    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len)
    x = data[starts[:, None] + offsets]
    y = data[starts[:, None] + offsets + 1]
    return x, y


@torch.no_grad()
def evaluate_bpb(model: torch.nn.Module, val: torch.Tensor, seq_len: int, device: str) -> float:
    """Bits per byte over the fixed held-out slice.

    The slice is cut into consecutive windows of the model's context length;
    each byte is predicted once from the bytes before it in its window. The
    number of scored bytes is the same for every model (up to the last partial
    window), so longer context helps honestly and nothing else changes.
    """
    was_training = model.training
    model.eval()
    slice_ = val[: EVAL_BYTES + 1]
    n_windows = (len(slice_) - 1) // seq_len
    x_all = slice_[: n_windows * seq_len].view(n_windows, seq_len)
    y_all = slice_[1 : n_windows * seq_len + 1].view(n_windows, seq_len)
    total_nats, total_bytes = 0.0, 0
    for start in range(0, n_windows, EVAL_BATCH):
        x = x_all[start : start + EVAL_BATCH].to(device)
        y = y_all[start : start + EVAL_BATCH].to(device)
        logits = model(x)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), reduction="sum"
        )
        total_nats += loss.item()
        total_bytes += y.numel()
    if was_training:
        model.train()
    return total_nats / (total_bytes * math.log(2))
