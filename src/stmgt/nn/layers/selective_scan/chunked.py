"""The chunked selective scan: closed form inside chunks of ``L`` steps, the state carried between them."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint as _checkpoint

from stmgt.errors import ConfigError
from stmgt.nn.layers.selective_scan.recurrence import SelectiveScanFn
from stmgt.nn.layers.selective_scan.reference import finish_scan

#: Elements of the largest temporary of one chunk of :func:`selective_scan_chunked`
#: (``B' * L(L-1)/2 * Di * N``); the automatic chunk length on CUDA keeps below it (2**23 floats =
#: 32 MiB: about as long to stream through GPU memory as the launch overhead of the loop's kernels,
#: a modelled trade-off, not yet measured on a GPU).
CHUNK_ELEMENTS = 2**23
#: Longest automatic chunk on CUDA. The float32 error of the closed form grows with the chunk
#: (``exp`` of a difference of cumulative sums loses about ``eps * |S|``); see the tests.
MAX_CHUNK = 16
#: Automatic chunk on CPU. Measured on CPU, the closed form (``(L+1)/2`` times the arithmetic of
#: the loop, mostly ``exp``) never beat chunk 1, i.e. one vectorised recurrence step per time step.
CPU_CHUNK = 1


def auto_chunk(batch: int, d_inner: int, d_state: int, length: int, device: torch.device | str = "cpu",
               max_elements: int = CHUNK_ELEMENTS) -> int:
    """Chunk length ``L`` of :func:`selective_scan_chunked` when none is given.

    On CUDA: the largest ``L <= MAX_CHUNK`` whose temporaries ``batch * L(L-1)/2 * d_inner * d_state``
    stay below ``max_elements``. On CPU: :data:`CPU_CHUNK`. Always between 1 and ``length``.
    """
    if torch.device(device).type == "cpu":
        return max(1, min(CPU_CHUNK, length))
    pairs = max_elements / max(1, batch * d_inner * d_state)
    L = int((1 + math.sqrt(1 + 8 * pairs)) / 2)  # largest L with L(L-1)/2 <= pairs
    return max(1, min(L, MAX_CHUNK, length))


_PAIRS_CACHE: dict[tuple[int, str], tuple[Tensor, Tensor]] = {}


def _strict_pairs(L: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Pairs ``(t, s)`` with ``s < t < L``: two index vectors of length ``L(L-1)/2``."""
    key = (L, str(device))
    if key not in _PAIRS_CACHE:
        ts = torch.tril_indices(L, L, offset=-1, device=device)
        _PAIRS_CACHE[key] = (ts[0].contiguous(), ts[1].contiguous())
    return _PAIRS_CACHE[key]


def _scan_chunk(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                h0: Tensor) -> tuple[Tensor, Tensor]:
    """Closed form of the scan over one chunk of ``L`` steps, without the ``D`` skip.

    ``u, delta [B', L, Di]``, ``B, C [B', L, N]``, ``h0 [B', Di, N]``
    -> ``y [B', L, Di]``, ``h_L [B', Di, N]``.

    With ``S_t = sum_{r<=t} delta_r A`` (inclusive cumulative sum inside the chunk) and
    ``b_s = delta_s u_s B_s``: ``h_t = exp(S_t) h0 + b_t + sum_{s<t} exp(S_t - S_s) b_s``.
    Only the ``L(L-1)/2`` pairs ``s < t`` are formed (the mask is applied by never forming the
    others), so every exponent is ``S_t - S_s <= 0`` or ``S_t <= 0``: no overflow, whatever ``L``.
    """
    L = u.shape[1]
    S = delta.unsqueeze(-1) * A  # [B', L, Di, N]
    if L > 1:
        S = torch.cumsum(S, dim=1)  # log-decay since the chunk start
    b = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # [B', L, Di, N] input of each step
    h = torch.addcmul(b, torch.exp(S), h0.unsqueeze(1))  # [B', L, Di, N] carried state + own input
    if L > 1:
        it, is_ = _strict_pairs(L, u.device)  # [P] each, P = L(L-1)/2
        decay = torch.exp(S.index_select(1, it) - S.index_select(1, is_))  # [B', P, Di, N] exp(S_t - S_s)
        h = h.index_add(1, it, decay * b.index_select(1, is_))  # [B', L, Di, N] + sum over s < t
    y = torch.einsum("bldn,bln->bld", h, C)  # [B', L, Di]
    return y, h[:, -1]


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                           h0: Tensor | None = None, return_state: bool = False, chunk: int | None = None,
                           checkpoint: bool = False):
    """Chunked selective scan: closed form inside chunks of ``chunk`` steps, state carried between them.

    Same arguments and results as :func:`~.reference.selective_scan_sequential`, plus:

    Args:
        chunk: steps per chunk (the last chunk may be shorter); default :func:`auto_chunk`, which
            picks 1 on CPU and, on CUDA, bounds the largest temporary to :data:`CHUNK_ELEMENTS`.
            Memory per chunk is ``O(B' * chunk^2 * Di * N)``; the arithmetic is about
            ``(chunk + 1) / 2`` times the sequential scan's, in ``T / chunk`` vectorised steps instead
            of ``T``. With ``chunk = 1`` (the CPU default) the recurrence runs in
            :class:`~.recurrence.SelectiveScanFn`, whose hand-written backward keeps only the state every
            :data:`~.recurrence.SCAN_SEGMENT` steps and recomputes the rest: training memory
            ``O(B' * Di * N * (T / SCAN_SEGMENT + SCAN_SEGMENT))`` besides the ``[B', T, Di]`` inputs,
            time linear in ``T`` (measured with one thread, ``B' = 64, Di = 192, N = 16``: forward and
            backward 0.17 s at ``T = 96`` and 1.7 s at ``T = 768``, against 0.24 s and 11 s for a loop
            of autograd steps, which kept four states per step).
        checkpoint: when gradients are recorded, keep only each chunk's inputs and carried state and
            recompute the chunk in the backward pass (``torch.utils.checkpoint``): training memory of
            the scan drops from ``O(B' * T * chunk * Di * N)`` to ``O(B' * T * Di * N / chunk)``.
            No effect with ``chunk = 1``, which always recomputes.
    """
    Bp, T, Di = u.shape
    L = chunk if chunk is not None else auto_chunk(Bp, Di, A.shape[1], T, u.device)
    if L < 1:
        raise ConfigError(f"selective scan chunk must be at least 1, got {chunk}")
    if L == 1 and T > 0:  # the recurrence itself, with a hand-written backward pass
        y, h = SelectiveScanFn.apply(u, delta, A, B, C, h0)
        return finish_scan(y, h, u, D, return_state)
    h = u.new_zeros(Bp, Di, A.shape[1]) if h0 is None else h0
    use_ckpt = checkpoint and torch.is_grad_enabled()
    ys = []
    for t0 in range(0, T, L):
        args = (u[:, t0:t0 + L], delta[:, t0:t0 + L], A, B[:, t0:t0 + L], C[:, t0:t0 + L], h)
        if use_ckpt:
            y, h = _checkpoint(_scan_chunk, *args, use_reentrant=False)
        else:
            y, h = _scan_chunk(*args)
        ys.append(y)
    y = torch.cat(ys, 1) if ys else u.new_zeros(Bp, 0, Di)  # [B', T, Di]
    return finish_scan(y, h, u, D, return_state)
