"""`retain_freed_memory`: a freed large tensor's pages are reused by the next one instead of faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the knobs exist only in glibc"
)

# a "training step" allocates a few large tensors (48-96 MiB), computes, frees them all; 8 steps; prints the minor
# page faults of the last 3 (the first ones may still grow the heap until freed blocks coalesce)
_SCRIPT = """
import resource, sys, torch
from spanet.runtime import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for step in range(8):
    if step == 5:
        start = faults()
    tensors = [torch.ones(n * 2**20) for n in (16, 12, 24)]
    total = tensors[0] + tensors[0]
    del tensors, total
print(faults() - start)
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def test_retained_memory_is_reused_without_page_faults() -> None:
    pages_per_step = (16 + 12 + 24 + 16) * 2**20 * 4 // 4096  # 69632 with 4 KiB pages
    released, retained = _page_faults("release"), _page_faults("retain")
    assert released > 2 * pages_per_step  # glibc's default: every step faults its tensors in again
    assert retained < pages_per_step // 4  # retained: earlier steps' pages serve (nearly all of) the later ones
