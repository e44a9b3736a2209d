"""Optional compiled kernels, built on first use with the C++ compiler torch uses for extensions.

Each kernel has a plain-PyTorch implementation that it is tested against; nothing requires a
kernel. :func:`selective_scan_extension` builds ``selective_scan.cpp`` (the Mamba recurrence,
forward and backward, fused per sequence), :func:`graph_attention_extension` builds
``graph_attention.cpp`` (GATv2's edge scores and weighted sums without edge-sized features) and
:func:`gelu_dropout_extension` builds ``gelu_dropout.cpp`` (a feed-forward's GELU and dropout in one
pass, its mask a hash of a seed), each with ``torch.utils.cpp_extension.load``: it needs
``g++`` (or the compiler in ``$CXX``) and ``ninja`` and takes about a minute once; the library
is cached under ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) under a name
that hashes the source, the flags and this CPU's instruction-set flags, so a changed source or a
different machine never loads a stale build.
"""

from __future__ import annotations

import hashlib
import platform
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from stmgt.errors import ConfigError

_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd"]


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(stem: str, what: str, fallback: str):
    """Compile (once per machine, cached) and load ``<stem>.cpp`` of this folder.

    Raises:
        ConfigError: it cannot be built here (no compiler, no ninja, a build error); the message
            names the cause and ``fallback``, the plain-PyTorch alternative.
    """
    import torch
    from torch.utils import cpp_extension

    source = Path(__file__).with_name(f"{stem}.cpp")
    src = source.read_bytes()
    key = hashlib.sha256(src + " ".join(_FLAGS).encode() + _cpu_flags().encode()
                         + torch.__version__.encode()).hexdigest()[:12]
    name = f"stmgt_{stem}_{key}"
    from stmgt.console import notice

    try:  # a private helper of torch: only used to say that a build is coming and to clear a stale lock
        build_dir = Path(cpp_extension._get_build_directory(name, verbose=False))
    except Exception:
        build_dir = None
    built = build_dir is not None and any(build_dir.glob(f"{name}*.so"))
    if not built:  # on a line of its own, the training's status line cleared first
        notice(f"stmgt: compiling the CPU {what} kernels (once per machine, about a minute)...")
    try:
        with _build_lock(build_dir, notice):
            return cpp_extension.load(name=name, sources=[str(source)], extra_cflags=_FLAGS, verbose=False)
    except Exception as e:  # compiler missing, ninja missing, build failure
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"the compiled {what} could not be built ({reason[:200]}); install g++ and "
                          f"ninja, or use {fallback} (plain PyTorch, same results)") from None


def usable(extension, instead: str) -> bool:
    """Whether ``extension()`` (one of this module's builders) works here; where it cannot be built, a warning
    naming the cause and ``instead`` (what the caller uses in its place), and False. Callers cache the answer."""
    import warnings

    try:
        extension()
        return True
    except ConfigError as e:
        warnings.warn(f"{e}; using {instead}", stacklevel=3)
        return False


@contextmanager
def _build_lock(build_dir: Path | None, notice):
    """Hold this build folder's ``flock`` (released by the kernel when its holder dies) while torch builds
    or loads it. torch's own lock is a plain file (``BUILD_DIR/lock``) that a build killed midway leaves
    behind, and every later start then waits for it forever; every stmgt builder takes this lock
    first, so a ``lock`` file found while holding it is stale and is removed."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own lock alone
        fcntl = None
    if build_dir is None or fcntl is None:
        yield
        return
    with open(build_dir.parent / f"{build_dir.name}.stmgt-lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            notice("stmgt: waiting for another process that is building the same kernels...")
            fcntl.flock(f, fcntl.LOCK_EX)
        stale = build_dir / "lock"
        if stale.exists():
            stale.unlink(missing_ok=True)
            notice(f"stmgt: removed {stale}, left by a kernel build that was interrupted")
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@lru_cache(maxsize=1)
def selective_scan_extension():
    """The compiled selective-scan module (``forward``, ``backward``), built once per machine.

    Raises:
        ConfigError: the kernel cannot be built here; the message names the cause and the
            fallback (``model.scan: chunked``).
    """
    return _build("selective_scan", "selective-scan", "model.scan: chunked")


@lru_cache(maxsize=1)
def graph_attention_extension():
    """The compiled GATv2 edge kernels (``score_forward/backward``, ``aggregate_forward/backward``).

    Raises:
        ConfigError: the kernel cannot be built here; the message names the cause and the
            fallback (``model.fused_attention: false``).
    """
    return _build("graph_attention", "graph-attention", "model.fused_attention: false")


@lru_cache(maxsize=1)
def gelu_dropout_extension():
    """The compiled GELU + dropout kernels (``forward``, ``backward``), built once per machine.

    Raises:
        ConfigError: the kernel cannot be built here; the message names the cause and the
            fallback (``model.fused_ffn: false``).
    """
    return _build("gelu_dropout", "GELU-dropout", "model.fused_ffn: false")
