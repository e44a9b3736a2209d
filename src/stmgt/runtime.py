"""Process-level settings that make CPU training fast: keep freed memory instead of unmapping it.

glibc's ``malloc`` serves every block above ``M_MMAP_THRESHOLD`` (at most 32 MiB) with a fresh
``mmap`` and gives it back with ``munmap`` on ``free``. A training step of a graph model allocates
and frees hundreds of such blocks (edge-level activations of ``B*T`` graphs are 100-400 MB at
Los-loop's 207 roads), so every step pays page faults for memory it just released: measured on
Los-loop, STMGT batch 32, 1 thread, 57 s of kernel time against 51 s of user time over 5 steps,
and 2.5x shorter steps with mapping disabled (20.7 s -> 8.2 s), for ~20% more resident memory
(freed blocks stay in the heap for the next step, as PyTorch's CUDA caching allocator does on GPU).

:func:`keep_freed_memory` sets ``M_MMAP_MAX = 0`` (no mmap-backed blocks) and ``M_TRIM_THRESHOLD = -1``
(never give the top of the heap back) through ``mallopt``; the same effect as starting Python with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=-1``. A finite trim threshold is not enough: mallopt takes an
``int``, and at 2 GiB the heap of a Los-loop step was still trimmed and faulted back in every few steps
(2 GB of page faults, +3 s on a 5 s step). It is a no-op off glibc (macOS, Windows, musl).
``stmgt train``, ``benchmark`` and ``bench`` call it unless ``train.keep_freed_memory`` is false.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_DONE: bool | None = None


def keep_freed_memory() -> bool:
    """Tell glibc's allocator to keep freed memory for reuse; True when it took effect."""
    global _DONE
    if _DONE is None:
        _DONE = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):  # not glibc
                return False
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _DONE = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
    return _DONE


def require_cuda(what: str) -> None:
    """Raise a one-line :class:`~stmgt.errors.ConfigError` naming ``what`` asked for CUDA (e.g.
    ``"train.accelerator is 'cuda'"``) when torch sees no usable CUDA device."""
    import torch

    from stmgt.errors import ConfigError

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        raise ConfigError(f"{what} but this machine has no usable CUDA device (torch {torch.__version__}, {build});"
                          " use the CPU, or install a CUDA build of torch (README, 'On a GPU machine')")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16 on x86)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, accelerator: str = "cpu") -> str:
    """``train.precision`` made concrete: ``"auto"`` is bf16 autocast on a CPU with native bfloat16
    (:func:`cpu_has_bf16`), on CUDA devices that support it, and float32 elsewhere."""
    if precision != "auto":
        return precision
    if accelerator in ("gpu", "cuda"):
        import torch

        return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32"
    return "bf16-mixed" if cpu_has_bf16() else "32"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; containers and ``taskset`` narrow it)."""
    try:
        import os

        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        import os

        return max(1, os.cpu_count() or 1)
