"""Selective scans of other packages: ``mambapy``'s parallel scan and ``mamba-ssm``'s CUDA kernel."""

from __future__ import annotations

import torch
from torch import Tensor

from stmgt.errors import ConfigError
from stmgt.nn.layers.selective_scan.chunked import selective_scan_chunked
from stmgt.nn.layers.selective_scan.reference import finish_scan


def selective_scan_mambapy(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                           h0: Tensor | None = None, return_state: bool = False):
    """Selective scan by ``mambapy``'s parallel scan (``pip install mambapy``).

    Same arguments and results as :func:`~.reference.selective_scan_sequential`. Materialises every state,
    ``[B', T, Di, N]``; an initial state enters through the first step's input.
    """
    pscan = require_mambapy()
    deltaA = torch.exp(delta.unsqueeze(-1) * A)  # [B', T, Di, N]
    BX = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # [B', T, Di, N]
    if h0 is not None and u.shape[1] > 0:
        BX = torch.cat([BX[:, :1] + deltaA[:, :1] * h0.unsqueeze(1), BX[:, 1:]], 1)
    hs = pscan(deltaA, BX)  # [B', T, Di, N]
    y = torch.einsum("btdn,btn->btd", hs, C)
    h = hs[:, -1] if u.shape[1] > 0 else (u.new_zeros(u.shape[0], u.shape[2], A.shape[1]) if h0 is None else h0)
    return finish_scan(y, h, u, D, return_state)


def selective_scan_cuda(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                        h0: Tensor | None = None, return_state: bool = False):
    """Selective scan by ``mamba-ssm``'s fused CUDA kernel ``selective_scan_fn`` (CUDA tensors only).

    Same arguments and results as :func:`~.reference.selective_scan_sequential`. The kernel always starts
    from a zero state, so with an initial state ``h0`` (continuing a stream) this falls back to
    :func:`selective_scan_chunked`.
    """
    if h0 is not None:
        return selective_scan_chunked(u, delta, A, B, C, D, h0=h0, return_state=return_state)
    fn = require_mamba_ssm()
    if not u.is_cuda:
        raise ConfigError("scan='cuda' needs tensors on a CUDA device: move the model with .cuda() "
                          "or use scan='chunked'")
    out = fn(u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.contiguous(),
             B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
             None if D is None else D.contiguous(), return_last_state=return_state)
    if return_state:
        y, h = out
        return y.transpose(1, 2), h
    return out.transpose(1, 2)


def require_mambapy():
    try:
        from mambapy.pscan import pscan
    except ImportError:
        raise ConfigError("scan='mambapy' needs the mambapy package: pip install mambapy "
                          "(or pip install 'stmgt[mamba]'), or use scan='chunked'") from None
    return pscan


def require_mamba_ssm():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        raise ConfigError("scan='cuda' needs mamba-ssm on a CUDA machine: pip install mamba-ssm "
                          "(built for your CUDA toolkit), or use scan='chunked'") from None
    return selective_scan_fn
