"""Which scan runs: ``scan="auto"`` and the other names a :class:`~stmgt.nn.layers.mamba.Mamba` accepts."""

from __future__ import annotations

import torch
from torch import Tensor

from stmgt.errors import ConfigError
from stmgt.nn.layers.selective_scan.chunked import selective_scan_chunked
from stmgt.nn.layers.selective_scan.compiled import compiled_scan_available, selective_scan_compiled
from stmgt.nn.layers.selective_scan.external import (
    require_mamba_ssm,
    require_mambapy,
    selective_scan_cuda,
    selective_scan_mambapy,
)
from stmgt.nn.layers.selective_scan.reference import selective_scan_sequential

SCANS = ("auto", "compiled", "chunked", "sequential", "mambapy", "cuda")


def selective_scan_auto(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                        h0: Tensor | None = None, return_state: bool = False, chunk: int | None = None,
                        checkpoint: bool = False):
    """The default scan: :func:`selective_scan_compiled` for CPU tensors when the kernel builds here
    (and no ``chunk`` is forced), else :func:`selective_scan_chunked`. Same arguments and results."""
    if u.device.type == "cpu" and chunk is None and compiled_scan_available():
        return selective_scan_compiled(u, delta, A, B, C, D, h0=h0, return_state=return_state)
    return selective_scan_chunked(u, delta, A, B, C, D, h0=h0, return_state=return_state, chunk=chunk,
                                  checkpoint=checkpoint)


def get_scan(name: str):
    """The scan function called ``name`` (one of :data:`SCANS`); ConfigError when it is unknown or
    its package is not installed."""
    if name == "auto":
        return selective_scan_auto
    if name == "chunked":
        return selective_scan_chunked
    if name == "sequential":
        return selective_scan_sequential
    if name == "compiled":
        from stmgt.kernels import selective_scan_extension

        selective_scan_extension()  # build now: a missing compiler is a configuration error
        return selective_scan_compiled
    if name == "mambapy":
        require_mambapy()
        return selective_scan_mambapy
    if name == "cuda":
        require_mamba_ssm()
        if not torch.cuda.is_available():
            raise ConfigError("scan='cuda' needs a CUDA device, and none is available; use scan='chunked'")
        return selective_scan_cuda
    raise ConfigError(f"unknown Mamba scan {name!r}; choose one of {', '.join(SCANS)}")
