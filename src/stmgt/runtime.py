"""Process-level settings that make CPU training fast: threads, the OpenMP wait policy, and freed memory.

**Threads.** PyTorch's CPU kernels run on OpenMP threads, one per core by default, and OpenMP's
workers spin for a while at the end of every parallel region waiting for the next one. Alone on a
machine that is fast; with another CPU-bound process on one of the cores the spinning workers and
the descheduled ones wait on each other (measured, 2 cores, the other busy: STMGT 9.5 training
samples/s with 2 spinning threads against 15.2 with one). So :func:`passive_wait_policy` sets
``OMP_WAIT_POLICY=PASSIVE`` before torch loads OpenMP (``import stmgt`` does it, unless the user set
their own), and :func:`choose_threads` takes the CPUs this process may use (its affinity mask) less
those other processes keep busy; :class:`ThreadGovernor` re-checks that during a training.
An explicit count (``train.num_threads``, ``--threads`` or ``OMP_NUM_THREADS``) is always kept as is.

**Freed memory.**

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
import os
import sys
import time

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
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def passive_wait_policy() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP workers sleep instead of spinning) unless the user
    set a policy; True when it is in effect. OpenMP reads it once, when torch is first imported, so
    this must run before that (``import stmgt`` calls it); afterwards it changes nothing."""
    if "OMP_WAIT_POLICY" not in os.environ and "torch" not in sys.modules:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"


class CpuLoad:
    """How many of this process's usable CPUs other processes kept busy since the last reading.

    Reads ``/proc/stat`` (busy time of each usable CPU) and ``/proc/self/stat`` (this process's own
    CPU time, all threads): others' busy CPUs = (all busy time - this process's) / wall time.
    :meth:`others` returns None where ``/proc`` is not there (not Linux)."""

    def __init__(self):
        self.cpus = _affinity()
        self.last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        try:
            busy = 0
            with open("/proc/stat") as f:
                for line in f:
                    name, *fields = line.split()
                    if not name.startswith("cpu") or name == "cpu":
                        continue
                    if self.cpus is not None and int(name[3:]) not in self.cpus:
                        continue
                    v = [int(x) for x in fields[:8]]  # user nice system idle iowait irq softirq steal
                    busy += sum(v) - v[3] - v[4]
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()
            mine = int(own[11]) + int(own[12])  # utime + stime (fields 14, 15)
        except (OSError, ValueError, IndexError):
            return None
        return time.monotonic(), busy / _HZ, mine / _HZ

    def others(self, min_interval: float = 0.0) -> float | None:
        """Busy CPUs (0 .. usable) of other processes since the previous call (or construction);
        waits until ``min_interval`` seconds have passed since then."""
        if self.last is None:
            return None
        wait = min_interval - (time.monotonic() - self.last[0])
        if wait > 0:
            time.sleep(wait)
        now = self._read()
        if now is None:
            return None
        (t0, b0, m0), (t1, b1, m1) = self.last, now
        self.last = now
        if t1 - t0 <= 0:
            return 0.0
        return max(0.0, ((b1 - b0) - (m1 - m0)) / (t1 - t0))


_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def explicit_threads(requested: int | None = None) -> int | None:
    """The thread count the user asked for: ``requested`` (``train.num_threads``, ``--threads``), else
    ``OMP_NUM_THREADS`` when set to a positive integer, else None (the automatic policy)."""
    if requested:
        return int(requested)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def threads_for(others_busy: float | None, usable: int | None = None) -> int:
    """Threads for this process: its usable CPUs less the ones other processes keep busy (rounded),
    at least one; all usable CPUs when the load is unknown (``others_busy`` None)."""
    usable = usable_cpus() if usable is None else usable
    if others_busy is None:
        return usable
    return max(1, min(usable, round(usable - others_busy)))


def choose_threads(requested: int | None = None, sample_seconds: float = 0.25) -> int:
    """Set and return torch's intra-op thread count: an explicit request (:func:`explicit_threads`)
    as is, else :func:`threads_for` the load of the other processes over ``sample_seconds``."""
    import torch

    n = explicit_threads(requested)
    if n is None:
        usable = usable_cpus()
        n = 1 if usable == 1 else threads_for(CpuLoad().others(sample_seconds), usable)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


class ThreadGovernor:
    """Re-chooses the thread count of a long computation every ``period`` seconds from the other
    processes' load (:class:`CpuLoad`), so that a training that started alone backs off to the
    free cores when another job starts, and takes them back when it ends.

    Call :meth:`tick` between steps (it costs two small file reads when the period is up, nothing
    otherwise); ``counts`` holds every count used, in order.
    """

    def __init__(self, period: float = 20.0):
        self.period, self.load = period, CpuLoad()
        self.counts: list[int] = []
        self.next = time.monotonic() + period

    def tick(self) -> int | None:
        """The new thread count when it changed (and was set), else None."""
        import torch

        if not self.counts:
            self.counts.append(torch.get_num_threads())
        now = time.monotonic()
        if now < self.next:
            return None
        self.next = now + self.period
        n = threads_for(self.load.others())
        if n == torch.get_num_threads():
            return None
        torch.set_num_threads(n)
        self.counts.append(n)
        return n
