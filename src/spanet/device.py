"""Turning a user's device name into a `torch.device`, one rule for every command and library entry point.

`auto` picks CUDA when torch sees a GPU, else the CPU. Under torchrun a plain `cuda` means the GPU of this process's
local rank, so N processes on one machine do not all land on GPU 0. Asking for CUDA on a machine without it is a
user mistake, reported as `SpanetError` instead of a failure deep inside the first `.to(device)`.
"""

from __future__ import annotations

import torch

from spanet.errors import SpanetError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device, *, local_rank: int = 0) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` (or a `torch.device`) -> the device to run on; `local_rank` picks the GPU."""
    text = str(name)
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise SpanetError(f"device {text!r} is not a device name spanet runs on; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpanetError(f"device {text!r} was asked for but CUDA is not available; use --device cpu or auto")
        if device.index is None:
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    return device
