"""`retain_freed_memory`: a freed large tensor's pages are reused by the next one instead of faulted in again."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="the knobs exist only in glibc"
)

# allocates, fills and frees a 64 MiB tensor 4 times; prints the minor page faults of the last 3 rounds
_SCRIPT = """
import resource, sys, torch
from spanet.host_memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for round in range(4):
    if round == 1:
        start = faults()
    tensor = torch.ones(16 * 2**20)
    del tensor
print(faults() - start)
"""


def _page_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip().splitlines()[-1])


def test_retained_memory_is_reused_without_page_faults() -> None:
    pages_per_tensor = 64 * 2**20 // 4096  # 16384 with 4 KiB pages
    released, retained = _page_faults("release"), _page_faults("retain")
    assert released > 2 * pages_per_tensor  # glibc's default: every round faults the tensor in again
    assert retained < pages_per_tensor // 10  # retained: the first round's pages serve the next ones
