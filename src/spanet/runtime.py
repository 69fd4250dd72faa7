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

Precision: `amp="auto"` (every shipped config, every `--amp` flag) picks float16 autocast on CUDA, bfloat16 on a
CPU that computes it natively (AMX or AVX512-BF16), and float32 on every other CPU: on an AVX2-only host PyTorch
emulates bf16 and a training step ran 10x SLOWER than float32 (5.0 vs 46 images/s, ResNet-18 at 96x48).
`channels_last="auto"` follows the hardware too: NHWC with fp16 on CUDA and with bf16 on AMX CPUs (whose oneDNN
kernels want it), the plain layout elsewhere — on an AVX512-BF16 CPU without AMX, spanet's bf16 training step was
1.1-1.3x faster without channels_last (`spanet bench`, docs/training.md). An explicit `bf16` on a CPU without native
support still runs, with a warning. `choose_precision` says what it chose and why, for the log.

torch is imported inside the functions only, so the CLI can set the memory policy before torch loads.
"""

from __future__ import annotations

import ctypes
import functools
import platform
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from spanet.errors import SpanetError

if TYPE_CHECKING:
    import torch

__all__ = [
    "AMP_CHOICES", "CpuInfo", "Precision", "autocast_dtype", "choose_precision", "cpu_info", "resolve_device",
    "retain_freed_memory",
]

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
# bf16 autocast on a CPU without native bf16 (AVX2-only AMD EPYC, ResNet-18 training step at 96x48, batch 32):
# 5.0 images/s against 46 in float32 (issue "Fast on every CPU"); quoted in the warning.
_EMULATED_BF16_SLOWDOWN = "about 10x"

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


@dataclass(frozen=True)
class CpuInfo:
    """What this processor can do, as far as precision is concerned."""

    capability: str  # torch's CPU kernel level: DEFAULT, AVX2, AVX512, ...
    amx: bool  # AMX tiles (Sapphire Rapids and later): native bf16 matrix units
    avx512_bf16: bool  # AVX512-BF16 instructions (Cooper Lake, Zen 4 and later)
    name: str = field(default="", compare=False)  # the model name (/proc/cpuinfo, else the platform's): for records

    @property
    def native_bf16(self) -> bool:
        return self.amx or self.avx512_bf16

    def describe(self) -> str:
        names = [name for name, has in (("AMX", self.amx), ("AVX512-BF16", self.avx512_bf16)) if has]
        found = f" with {' and '.join(names)}" if names else " without native bf16 (no AMX, no AVX512-BF16)"
        return f"CPU {self.capability}{found}"

    def to_json(self) -> dict[str, Any]:
        return {"capability": self.capability, "amx": self.amx, "avx512_bf16": self.avx512_bf16,
                "native_bf16": self.native_bf16}  # fmt: skip


@functools.cache
def cpu_info() -> CpuInfo:
    """This CPU, from torch's own detection (cpuinfo) and, on Linux, the processor flags; computed once."""
    import torch

    name, flags = _proc_cpuinfo()
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    amx = bool(probe and probe()) or "amx_bf16" in flags
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    avx512_bf16 = bool(probe and probe()) or "avx512_bf16" in flags
    return CpuInfo(capability=torch.backends.cpu.get_cpu_capability(), amx=amx, avx512_bf16=avx512_bf16,
                   name=name or platform.processor() or platform.machine())  # fmt: skip


def _proc_cpuinfo() -> tuple[str, set[str]]:
    """The first processor's model name and flags in /proc/cpuinfo ("" and none where it cannot be read)."""
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name") and not name:
                    name = line.partition(":")[2].strip()
                elif line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    break
    except OSError:
        pass
    return name, flags


@dataclass(frozen=True)
class Precision:
    """The arithmetic one run uses: the autocast dtype ("none" = float32), the memory layout, and why."""

    amp: Literal["none", "bf16", "fp16"]
    channels_last: bool
    reason: str
    requested: str = "auto"  # what was asked for: auto, none, bf16, fp16, or "reduced" (amp=True)

    @property
    def dtype(self) -> Any:
        return autocast_dtype(self.amp)

    def autocast(self, device_type: str) -> Any:
        """`torch.autocast` for this precision (disabled for float32)."""
        import torch

        return torch.autocast(device_type, dtype=self.dtype, enabled=self.amp != "none")

    def describe(self) -> str:
        mode = {"none": "float32", "bf16": "bfloat16 autocast", "fp16": "float16 autocast"}[self.amp]
        return f"precision: {mode}{' + channels_last' if self.channels_last else ''} ({self.reason})"

    def to_json(self) -> dict[str, Any]:
        return {"amp": self.amp, "channels_last": self.channels_last, "requested": self.requested,
                "reason": self.reason}  # fmt: skip


def autocast_dtype(amp: str) -> Any:
    """The torch dtype of an `amp` name ("bf16", "fp16"), or None for float32 ("none")."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)


def choose_precision(
    requested: str | bool | None,
    device: torch.device,
    *,
    channels_last: bool | str | None = "auto",
    cpu: CpuInfo | None = None,
) -> Precision:
    """Resolve an `amp` setting on `device` ("auto", "none", "bf16", "fp16"; True = the device's reduced precision,
    None/False = float32) and a `channels_last` setting (True, False, or "auto"/None: on with fp16 on CUDA and with
    bf16 on AMX CPUs, where it was measured to help; off otherwise).

    An explicit bf16 on a CPU without native bf16 warns (it runs, much slower); fp16 on a CPU is refused.
    `cpu` replaces this machine's `cpu_info()` (tests).
    """
    text = requested if isinstance(requested, str) else ("reduced" if requested else "none")
    if text not in (*AMP_CHOICES, "reduced"):
        raise SpanetError(f"amp {requested!r} is not a precision; use one of {', '.join(AMP_CHOICES)}")
    if device.type == "cuda":
        amp, reason = _cuda_precision(text)
        helps = amp != "none"
    else:
        cpu = cpu or cpu_info()
        amp, reason = _cpu_precision(text, cpu)
        helps = amp == "bf16" and cpu.amx
    layout = helps if channels_last in (None, "auto") else bool(channels_last)
    return Precision(amp=amp, channels_last=layout, reason=reason, requested=text)


def _cuda_precision(text: str) -> tuple[str, str]:
    if text in ("auto", "reduced"):
        return "fp16", f"{text}: CUDA"
    if text == "none":
        return "none", "asked for float32"
    return text, f"asked for {text}"


def _cpu_precision(text: str, cpu: CpuInfo) -> tuple[str, str]:
    if text == "fp16":
        raise SpanetError("amp fp16 needs CUDA; on a CPU use amp auto, bf16 or none")
    if text == "none":
        return "none", "asked for float32"
    if text == "auto":
        if cpu.native_bf16:
            return "bf16", f"auto: {cpu.describe()}"
        return "none", f"auto: {cpu.describe()}, where bf16 is emulated and slower than float32"
    if not cpu.native_bf16:
        warnings.warn(
            f"bf16 was asked for on a {cpu.describe()}: PyTorch emulates it there, expect it to run "
            f"{_EMULATED_BF16_SLOWDOWN} slower than float32; use amp auto (float32 here) or none",
            RuntimeWarning, stacklevel=3,
        )  # fmt: skip
    return "bf16", f"asked for bf16 on a {cpu.describe()}"


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
