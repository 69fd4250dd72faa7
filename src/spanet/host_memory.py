"""Keeping freed CPU memory inside the process, so training steps stop paying for page faults.

glibc serves every allocation above 32 MiB (most activation and gradient tensors of a ResNet-50 batch) with its own
`mmap` and hands it back to the kernel with `munmap` the moment PyTorch frees it. The next training step asks for the
same sizes again and the kernel has to fault in and zero every page anew: at batch 48, 384×128 in fp32 that was
18.8 million page faults in four steps, and fp32 training ran at 3.9 instead of 6.2 images/s (benchmarks in
docs/training.md). Telling glibc to take large blocks from its heap and never to trim the heap lets the next step
reuse the same pages. The price is a larger resident size: freed memory stays with the process until it exits
(measured 6.4 → 8.5 GB peak at that batch).

Only glibc has these knobs (`mallopt`); elsewhere this is a no-op.
"""

from __future__ import annotations

import ctypes
import platform

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's <malloc.h>
_M_MMAP_MAX = -4
_NEVER_TRIM = -1  # "M_TRIM_THRESHOLD = -1 disables trimming completely" (man 3 mallopt)


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
