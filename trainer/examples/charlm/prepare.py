"""Data and the sealed evaluation of the charlm problem. FROZEN: runs that change it are invalid.

The corpus is the text of Python's own help topics (`pydoc_data.topics`, part of
every CPython), so the problem needs no download. Tokens are bytes, so the loss
in nats per byte converts directly to bits per byte, a metric that stays
comparable whatever the model looks like.

Three entry points, each run by the kohai harness, never by the training run:

  python prepare.py data       writes the training split to $KOHAI_DATA_DIR/train.bin
                               (before training, from the base commit; training
                               reads only that file and cannot open the corpus)
  python prepare.py evaluate   the sealed evaluator (after training, from the base
                               commit): scores the artefact in $KOHAI_ARTIFACT_DIR
                               and writes {"val_bpb": ...} or {"invalid": ...} to
                               $KOHAI_EVAL_FILE
  python prepare.py serve-model
                               the model side of the evaluation: a child process,
                               in the job sandbox, that imports the candidate's
                               train.py, loads its weights and answers with logits

Why this shape: the model's code is what experiments change, so it is
untrusted. It runs only in the child, which receives input bytes and returns
logits; the evaluator computes the loss itself from those logits against
targets the child is never sent before it has answered (windows go out in
strided batches, so no batch holds the byte that follows another window).

It also probes causality, in a way a model cannot spot: for random windows,
at random positions (new ones every run), a twin whose bytes after that
position are replaced by another window's text is answered by a *fresh* model
process, which never saw the original; the predictions up to the position
must be the same as the first process gave. The first process's batches
also carry decoy rows (spliced copies that share a prefix with a row of the
same batch, checked the same way), so "two rows share a prefix" marks
nothing, and the fresh process answers some original windows again, in
requests of the same shape, which must get the same answer. Each process is a new sandbox with nothing writable that
outlives it, so no state passes between them. A model that reads the future,
or that reads it only when it is not being watched, is invalid.
"""

from __future__ import annotations

import json
import math
import os
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np  # the evaluator's own arithmetic; torch is imported only where a model runs

VOCAB_SIZE = 256  # bytes
VAL_FRACTION = 0.1
EVAL_BYTES = 32_768
EVAL_BATCH = 32  # windows per request to the model child
CAUSALITY_PROBES = 16  # twins answered by the fresh probe process
DECOYS_PER_BATCH = 4  # spliced copies of windows of the same batch, in every batch
COVER_WINDOWS = 32  # at least: original windows the probe process answers again
CAUSALITY_TOLERANCE = 1e-3  # max |change| of a log-probability that still counts as causal
ARTIFACT = "model.safetensors"
TRAIN_FILE = "train.bin"
MIN_CONTEXT, MAX_CONTEXT = 4, 4096


class Invalid(Exception):
    """The run cannot be scored; the message says which check failed."""


def load_corpus() -> bytes:
    """The corpus, in a fixed order (sorted topic names) so every machine sees the same bytes."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[name] for name in sorted(topics)).encode("utf-8")


def split(corpus: bytes) -> tuple[bytes, bytes]:
    """(train, validation): the last VAL_FRACTION of the corpus is held out."""
    cut = int(len(corpus) * (1.0 - VAL_FRACTION))
    return corpus[:cut], corpus[cut:]


def load_train() -> "torch.Tensor":
    """The training split as int64 byte values, from the file the harness prepared.

    Outside kohai (no KOHAI_DATA_DIR) it is cut from the corpus directly.
    """
    import torch

    data_dir = os.environ.get("KOHAI_DATA_DIR")
    raw = (Path(data_dir) / TRAIN_FILE).read_bytes() if data_dir else split(load_corpus())[0]
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).to(torch.long)


def get_batch(
    data: "torch.Tensor", batch_size: int, seq_len: int, generator: "torch.Generator"
) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Random windows of `seq_len` inputs and their next-byte targets."""
    import torch

    starts = torch.randint(0, len(data) - seq_len - 1, (batch_size,), generator=generator)
    offsets = torch.arange(seq_len)
    x = data[starts[:, None] + offsets]
    y = data[starts[:, None] + offsets + 1]
    return x, y


def save_artifact(model: "torch.nn.Module", run_dir: str | os.PathLike[str]) -> Path:
    """The trained weights as safetensors (tensors only: the scorer never unpickles code)."""
    from safetensors.torch import save_model

    path = Path(run_dir) / ARTIFACT
    tmp = path.with_suffix(".tmp")
    save_model(model, str(tmp))
    tmp.replace(path)  # a SIGKILL mid-write leaves no half artefact behind
    return path


# --------------------------------------------------------------- data step


def write_data() -> None:
    out = Path(os.environ["KOHAI_DATA_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    (out / TRAIN_FILE).write_bytes(split(load_corpus())[0])


# ------------------------------------------------------- the model's side


def serve_model() -> None:
    """Answer logits for windows of bytes, one request at a time, over stdin/stdout.

    Runs the candidate's code, so it runs in the job sandbox. Anything the
    candidate prints goes to stderr: stdout carries only the protocol.
    """
    proto = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    candidate = os.environ["KOHAI_CANDIDATE_DIR"]
    sys.path.insert(0, candidate)
    import torch
    from safetensors.torch import load_model

    import train  # the candidate's model code

    torch.set_grad_enabled(False)
    model = train.build_model()
    load_model(model, str(Path(os.environ["KOHAI_ARTIFACT_DIR"]) / ARTIFACT), strict=True)
    model.eval()
    context = int(getattr(train, "SEQ_LEN"))
    proto.write((json.dumps({"context": context, "vocab": VOCAB_SIZE}) + "\n").encode())
    proto.flush()
    while True:
        header = requests.read(8)
        if len(header) < 8:
            return
        n, t = struct.unpack("<ii", header)
        if n == 0:
            return
        x = torch.frombuffer(bytearray(requests.read(n * t)), dtype=torch.uint8).to(torch.long)
        logits = model(x.view(n, t)).float().contiguous()
        proto.write(logits.cpu().numpy().tobytes())
        proto.flush()


# ----------------------------------------------------------- the evaluator


class ModelChild:
    """The sandboxed child that runs the candidate's model."""

    def __init__(self, base_dir: Path) -> None:
        prefix = json.loads(os.environ.get("KOHAI_SANDBOX") or "[]")
        env = {
            k: v
            for k, v in os.environ.items()
            if k in ("PATH", "LANG", "HOME", "TMPDIR", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
            or k.startswith(("KOHAI_ARTIFACT", "KOHAI_CANDIDATE"))
        }
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, str(base_dir / "prepare.py"), "serve-model"],
            cwd=os.environ["KOHAI_CANDIDATE_DIR"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        line = self.proc.stdout.readline()
        try:
            hello = json.loads(line)
            self.context = int(hello["context"])
            vocab = int(hello["vocab"])
        except (ValueError, KeyError, TypeError):
            self.close()
            raise Invalid(
                f"the model could not be loaded from the artefact (exit code {self.proc.returncode}); "
                "see the evaluation log"
            ) from None
        if vocab != VOCAB_SIZE or not MIN_CONTEXT <= self.context <= MAX_CONTEXT:
            self.close()
            raise Invalid(f"the model declares vocab {vocab} and context {self.context}")

    def logits(self, x: np.ndarray) -> np.ndarray:
        n, t = x.shape
        self.proc.stdin.write(struct.pack("<ii", n, t) + x.astype(np.uint8).tobytes())
        self.proc.stdin.flush()
        size = n * t * VOCAB_SIZE * 4
        raw = self.proc.stdout.read(size)
        if len(raw) != size:
            raise Invalid("the model stopped answering during evaluation")
        out = np.frombuffer(raw, dtype=np.float32).reshape(n, t, VOCAB_SIZE)
        if not np.isfinite(out).all():
            raise Invalid("the model returned non-finite logits")
        return out

    def close(self) -> None:
        try:
            if self.proc.stdin:
                self.proc.stdin.write(struct.pack("<ii", 0, 0))
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def splice(x_all: np.ndarray, w: int, cut: int, rng: random.Random) -> np.ndarray:
    """Window `w` with its bytes after `cut` replaced by the same span of another window.

    The twin reads like any other window (text, not noise), but its byte at
    `cut + 1` differs from the original's, so a model that reads one byte
    ahead answers differently at `cut`.
    """
    x = x_all[w].copy()
    want = x[cut + 1]
    for _ in range(16):
        other = rng.randrange(len(x_all))
        if other != w and x_all[other][cut + 1] != want:
            x[cut + 1 :] = x_all[other][cut + 1 :]
            break
    if x[cut + 1] == want:  # no window differs there: change that one byte
        x[cut + 1] = (int(want) + 1 + rng.randrange(VOCAB_SIZE - 1)) % VOCAB_SIZE
    return x


def _change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max())


def _not_causal(cut: int, change: float) -> Invalid:
    return Invalid(
        f"the model is not causal: replacing the bytes after position {cut} of a window "
        f"changed its predictions up to that position (max |change of log p| = {change:.3g})"
    )


def score(open_child: Callable[[], ModelChild], val: bytes, rng: random.Random) -> dict[str, float]:
    """Bits per byte over the fixed held-out slice, with the causality probe around it.

    The slice is cut into consecutive windows of the model's context length;
    each byte is predicted once from the bytes before it in its window, by
    the first model process. A second, fresh process then answers the probe's
    twins and some original windows again (see the module's docstring).
    """
    child = open_child()
    try:
        t = child.context
        data = np.frombuffer(val[: EVAL_BYTES + 1], dtype=np.uint8).astype(np.int64)
        n_windows = (len(data) - 1) // t
        if n_windows < 1 or t < 2:
            raise Invalid(f"context {t} is longer than the evaluation slice")
        x_all = data[: n_windows * t].reshape(n_windows, t)
        y_all = data[1 : n_windows * t + 1].reshape(n_windows, t)
        n_batches = max(1, math.ceil(n_windows / EVAL_BATCH))
        # The second process's requests have the shape of the first's (the same kernels
        # answer both, so an honest model's numbers agree to the last bit): as many
        # cover windows as fill its last request.
        size = len(range(0, n_windows, n_batches))
        size += min(DECOYS_PER_BATCH, size)
        n_probes = min(CAUSALITY_PROBES, n_windows)
        wanted = math.ceil((n_probes + COVER_WINDOWS) / size) * size
        picked = rng.sample(range(n_windows), min(n_windows, wanted))
        probes = {w: rng.randrange(0, t - 1) for w in picked[:n_probes]}
        cover = picked[n_probes:]
        kept: dict[int, np.ndarray] = {}  # the first process's answers to the picked windows
        total_nats, total_bytes, worst = 0.0, 0, 0.0
        for b in range(n_batches):
            windows = list(range(b, n_windows, n_batches))  # strided: no neighbours in one batch
            decoys = rng.sample(windows, min(DECOYS_PER_BATCH, len(windows)))
            rows = [(w, None) for w in windows] + [(w, rng.randrange(0, t - 1)) for w in decoys]
            rng.shuffle(rows)
            batch = [x_all[w] if cut is None else splice(x_all, w, cut, rng) for w, cut in rows]
            logp = log_softmax(child.logits(np.stack(batch)))
            original = {w: i for i, (w, cut) in enumerate(rows) if cut is None}
            for i, (w, cut) in enumerate(rows):
                if cut is None:
                    total_nats -= float(logp[i, np.arange(t), y_all[w]].sum())
                    total_bytes += t
                    if w in probes or w in cover:
                        kept[w] = logp[i]
                else:
                    change = _change(logp[i, : cut + 1], logp[original[w], : cut + 1])
                    worst = max(worst, change)
                    if change > CAUSALITY_TOLERANCE:
                        raise _not_causal(cut, change)
    finally:
        child.close()
    # The fresh process: the twins, and cover windows it must answer as the first one did.
    rows = [(w, cut) for w, cut in probes.items()] + [(w, None) for w in cover]
    rng.shuffle(rows)
    child = open_child()
    try:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            batch = [x_all[w] if cut is None else splice(x_all, w, cut, rng) for w, cut in chunk]
            logp = log_softmax(child.logits(np.stack(batch)))
            for i, (w, cut) in enumerate(chunk):
                end = t if cut is None else cut + 1
                change = _change(logp[i, :end], kept[w][:end])
                worst = max(worst, change)
                if change > CAUSALITY_TOLERANCE and cut is not None:
                    raise _not_causal(cut, change)
                if change > CAUSALITY_TOLERANCE:
                    raise Invalid(
                        "the model is not consistent: a second model process answered a window "
                        f"differently from the first (max |change of log p| = {change:.3g})"
                    )
    finally:
        child.close()
    return {
        "val_bpb": round(total_nats / (total_bytes * math.log(2)), 6),
        "eval_bytes": total_bytes,
        "causality_probes": len(probes),
        "causality_max_change": worst,
        "model_processes": 2,
    }


def evaluate() -> dict[str, object]:
    artifact = Path(os.environ["KOHAI_ARTIFACT_DIR"]) / ARTIFACT
    if not artifact.is_file():
        raise Invalid(f"training left no {ARTIFACT} in its run directory")
    with artifact.open("rb") as fh:  # safetensors: an 8-byte header length, then a JSON header
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        raise Invalid(f"{ARTIFACT} is not a safetensors file")
    val = split(load_corpus())[1]
    base_dir = Path(__file__).resolve().parent
    return score(lambda: ModelChild(base_dir), val, random.SystemRandom())


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "data":
        write_data()
    elif command == "serve-model":
        serve_model()
    elif command == "evaluate":
        try:
            result: dict[str, object] = evaluate()
        except Invalid as exc:
            result = {"invalid": str(exc)}
        Path(os.environ["KOHAI_EVAL_FILE"]).write_text(json.dumps(result) + "\n")
        print(json.dumps(result))
    else:
        raise SystemExit("usage: python prepare.py data | evaluate | serve-model")


if __name__ == "__main__":
    main()
