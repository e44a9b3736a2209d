"""The reference selective scan, one loop step per time step, and what every scan ends with."""

from __future__ import annotations

import torch
from torch import Tensor


def finish_scan(y: Tensor, h: Tensor, u: Tensor, D: Tensor | None, return_state: bool):
    """Add the skip ``D u`` to the scan output ``y [B', T, Di]``; return ``y``, or ``(y, h_T)``."""
    if D is not None:
        y = y + u * D
    return (y, h) if return_state else y


def selective_scan_sequential(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                              D: Tensor | None = None, h0: Tensor | None = None, return_state: bool = False):
    """Reference selective scan: one step per loop iteration.

    Args:
        u: ``[B', T, Di]`` input; delta: ``[B', T, Di]`` positive step sizes; A: ``[Di, N]``;
        B, C: ``[B', T, N]``; D: ``[Di]`` skip, or None; h0: ``[B', Di, N]`` initial state (zeros
        when None); return_state: also return the final state.

    Returns:
        ``y [B', T, Di]``, and ``h_T [B', Di, N]`` with ``return_state=True``.
    """
    Bp, T, Di = u.shape
    h = u.new_zeros(Bp, Di, A.shape[1]) if h0 is None else h0
    ys = []
    for t in range(T):
        dt = delta[:, t, :, None]  # [B', Di, 1]
        h = torch.exp(dt * A) * h + (dt * u[:, t, :, None]) * B[:, t, None, :]  # [B', Di, N]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
    y = torch.stack(ys, 1) if ys else u.new_zeros(Bp, 0, Di)  # [B', T, Di]
    return finish_scan(y, h, u, D, return_state)
