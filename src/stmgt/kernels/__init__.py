"""Optional compiled kernels, built on first use with the C++ compiler torch uses for extensions.

Each kernel has a plain-PyTorch implementation that it is tested against; nothing requires a
kernel. :func:`selective_scan_extension` builds ``selective_scan.cpp`` (the Mamba recurrence,
forward and backward, fused per sequence) with ``torch.utils.cpp_extension.load``: it needs
``g++`` (or the compiler in ``$CXX``) and ``ninja`` and takes about a minute once; the library
is cached under ``$TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``) under a name
that hashes the source, the flags and this CPU's instruction-set flags, so a changed source or a
different machine never loads a stale build.
"""

from __future__ import annotations

import hashlib
import platform
import sys
from functools import lru_cache
from pathlib import Path

from stmgt.errors import ConfigError

_SOURCE = Path(__file__).with_name("selective_scan.cpp")
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp-simd"]


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def selective_scan_extension():
    """The compiled selective-scan module (``forward``, ``backward``), built once per machine.

    Raises:
        ConfigError: the kernel cannot be built here (no compiler, no ninja, a build error); the
            message names the cause and the fallback (``model.scan: chunked``).
    """
    import torch
    from torch.utils import cpp_extension

    src = _SOURCE.read_bytes()
    key = hashlib.sha256(src + " ".join(_FLAGS).encode() + _cpu_flags().encode()
                         + torch.__version__.encode()).hexdigest()[:12]
    name = f"stmgt_selective_scan_{key}"
    try:  # a private helper of torch: only used to say that a build is coming
        built = any(Path(cpp_extension._get_build_directory(name, verbose=False)).glob(f"{name}*.so"))
    except Exception:
        built = False
    if not built:
        print("stmgt: compiling the CPU selective-scan kernel (once per machine, about a minute)",
              file=sys.stderr, flush=True)
    try:
        return cpp_extension.load(name=name, sources=[str(_SOURCE)], extra_cflags=_FLAGS, verbose=False)
    except Exception as e:  # compiler missing, ninja missing, build failure
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"the compiled selective scan could not be built ({reason[:200]}); install g++ and "
                          "ninja, or use model.scan: chunked (plain PyTorch, same results)") from None
