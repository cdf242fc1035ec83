"""`--gpus`: one meaning on every command (`hosts add`, `host run`, `--student NAME:GPUS:TOKEN_FILE`).

The value is a list of device ids, `0,1` (what `CUDA_VISIBLE_DEVICES` gets).
A bare number is a count, as Docker's `--gpus 4` is: the first N devices,
`0..N-1`, so `--gpus 0` means no GPU. One device other than the first is
written as a one-element list, `3,` (or Docker's spelling `device=3`);
`none` or nothing: no GPU.
Dependency-free: the host side parses it too.
"""

from __future__ import annotations

HELP = "GPU device ids, e.g. 0,1; a bare number N is a count (the first N: 0..N-1); 3, is GPU 3"


class GpuSpecError(ValueError):
    """A `--gpus` value that is neither a count nor a list of device ids."""


def parse_gpus(text: str | None) -> list[int]:
    """`"0,1"` -> [0, 1]; `"4"` -> [0, 1, 2, 3]; `"3,"` or `"device=3"` -> [3]; `""` -> []."""
    raw = (text or "").strip().replace(" ", "")
    listed = raw.startswith("device=")
    if listed:
        raw = raw.removeprefix("device=")
    if not raw or raw.lower() == "none":
        return []
    parts = raw.split(",")
    if not all(p.isdigit() for p in parts if p) or not any(parts):
        raise GpuSpecError(
            f"--gpus {text!r}: give device ids like 0,1 or a count like 4 (see `kohai host run -h`)"
        )
    if len(parts) == 1 and not listed:
        return list(range(int(parts[0])))  # a count
    ids = [int(p) for p in parts if p]
    if len(set(ids)) != len(ids):
        raise GpuSpecError(f"--gpus {text!r}: a device is listed twice")
    return ids


def format_gpus(ids: list[int]) -> str:
    """How `parse_gpus` reads the list back: `0,1`, `3,` for one device, `none`."""
    if not ids:
        return "none"
    return ",".join(str(i) for i in ids) + ("," if len(ids) == 1 else "")
