"""Where and how spanet runs: the device a user's name means, and the process's host-memory policy.

Device: `auto` picks CUDA when torch sees a GPU, else the CPU. Under torchrun a plain `cuda` means the GPU of this
process's local rank, so N processes on one machine do not all land on GPU 0. Asking for CUDA on a machine without it
is a user mistake, reported as `SpanetError` instead of a failure deep inside the first `.to(device)`.

Host memory: glibc serves every allocation above 32 MiB (most activation and gradient tensors of a ResNet-50 batch)
with its own `mmap` and hands it back to the kernel with `munmap` the moment PyTorch frees it. The next training step
asks for the same sizes again and the kernel has to fault in and zero every page anew: at batch 48, 384×128 in fp32
that was 18.8 million page faults in four steps, and fp32 training ran at 3.9 instead of 6.2 images/s (benchmarks in
docs/training.md). Telling glibc to take large blocks from its heap and never to trim the heap lets the next step
reuse the same pages. The price is a larger resident size: freed memory stays with the process until it exits
(measured 6.4 → 8.5 GB peak at that batch). Only glibc has these knobs (`mallopt`); elsewhere this is a no-op.

torch is imported inside `resolve_device` only, so the CLI can set the memory policy before torch loads.
"""

from __future__ import annotations

import ctypes
import platform
from typing import TYPE_CHECKING

from spanet.errors import SpanetError

if TYPE_CHECKING:
    import torch

__all__ = ["resolve_device", "retain_freed_memory"]

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's <malloc.h>
_M_MMAP_MAX = -4
_NEVER_TRIM = -1  # "M_TRIM_THRESHOLD = -1 disables trimming completely" (man 3 mallopt)


def resolve_device(name: str | torch.device, *, local_rank: int = 0) -> torch.device:
    """`auto`, `cpu`, `cuda` or `cuda:N` (or a `torch.device`) -> the device to run on; `local_rank` picks the GPU."""
    import torch

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
            raise SpanetError(f"device {text!r} was asked for but CUDA is not available; use the device cpu or auto")
        if device.index is None:
            return torch.device("cuda", local_rank % torch.cuda.device_count())
    return device


def retain_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no per-tensor mmap, no heap trimming); True if it took effect.

    Process-wide and lasting; call it once before the first training step. Forked DataLoader workers inherit it.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
