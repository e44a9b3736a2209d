"""Mamba: a selective state-space layer in plain PyTorch, with streaming.

Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
arXiv:2312.00752 (2023). Parameter names follow the reference ``mamba_simple.py``
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so
weights of ``mamba-ssm`` and ``mambapy`` layers load directly.

The selective scan, for every channel ``d`` and state ``n`` (``u`` input, ``delta > 0`` step size,
``A < 0``, input-dependent ``B_t``, ``C_t``)::

    h_t = exp(delta_t A) * h_{t-1} + delta_t B_t u_t,        y_t = C_t . h_t + D u_t

has five implementations that agree (tested in ``tests/nn/layers/test_mamba.py``):

* :func:`selective_scan_sequential`: the reference, one loop step per time step;
* :func:`selective_scan_chunked` (default where the compiled kernel is not built): closed form
  inside chunks of ``L`` steps from cumulative sums ``S`` of ``delta * A``, the state carried from
  chunk to chunk. Only pairs
  ``s < t`` are formed, so only ``S_t - S_s <= 0`` is exponentiated (no overflow at any ``L``);
  in float32 the difference of cumulative sums loses about ``eps * |S|``, so the error grows
  with ``L`` (measured 2.4e-6 relative at ``L = 16``, 2.2e-7 at ``L = 1``). Speed: the closed
  form does about ``(L + 1) / 2`` times the loop's ``exp`` work in ``T / L`` steps instead of
  ``T``; on CPU that never paid in measurements, so the automatic chunk there is 1, on CUDA it
  is chosen by :func:`auto_chunk`. With ``L = 1`` the scan is the recurrence itself, run by
  :class:`_SelectiveScanFn`, an autograd function with a hand-written backward: it keeps only
  the inputs and the state every :data:`SCAN_SEGMENT` steps and recomputes a segment's states
  in the backward pass, so training memory is ``O(B' Di N (T / SCAN_SEGMENT + SCAN_SEGMENT))``
  instead of four states per step, and time is linear in ``T``;
* ``"compiled"``: :func:`selective_scan_compiled`, a C++ kernel (:mod:`stmgt.kernels`, built on
  first use) that runs the recurrence and its adjoint per sequence with the state in cache,
  7x faster than the chunk-1 scan on CPU; ``"auto"`` (the default) uses it for CPU tensors where
  it builds and the chunked scan otherwise;
* ``"mambapy"``: the parallel (Blelloch) scan of the ``mambapy`` package, if installed; it
  materialises every state, ``[B', T, Di, N]``;
* ``"cuda"``: ``selective_scan_fn`` of ``mamba-ssm`` (CUDA only), if installed.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint as _checkpoint

from stmgt.errors import ConfigError

SCANS = ("auto", "compiled", "chunked", "sequential", "mambapy", "cuda")

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
#: Time steps per segment of :class:`_SelectiveScanFn` (the scan with chunk 1): the states of one
#: segment, ``[SCAN_SEGMENT, B', Di, N]``, are materialised at a time, and the state at each segment
#: boundary is kept for the backward pass. Measured (one thread, ``B' = 64, Di = 192, N = 16``,
#: ``T = 768``): forward and backward 1.9 s with 16, 1.7 s with 32, 2.3 s with 64.
SCAN_SEGMENT = 32


class MambaState(NamedTuple):
    """Recurrent state of one :class:`Mamba` layer for ``B'`` independent sequences.

    * ``conv`` ``[B', d_inner, d_conv - 1]``: the last ``d_conv - 1`` inputs of the causal convolution;
    * ``ssm`` ``[B', d_inner, d_state]``: the state ``h`` of the selective scan.
    """

    conv: Tensor
    ssm: Tensor


# ---------------------------------------------------------------------------------------- scans
def _finish(y: Tensor, h: Tensor, u: Tensor, D: Tensor | None, return_state: bool):
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
    return _finish(y, h, u, D, return_state)


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


def _segment_states(delta: Tensor, du: Tensor, B: Tensor, A: Tensor, h: Tensor, dA: Tensor, H: Tensor) -> None:
    """Decays and states of one segment of ``S`` steps, written into the buffers ``dA`` and ``H``.

    ``delta, du [S, B', Di]`` (``du = delta * u``), ``B [S, B', N]`` (time first, so that each step is
    contiguous), ``A [Di, N]``, ``h [B', Di, N]`` the state before the segment; ``dA, H [S, B', Di, N]``
    receive ``dA_i = exp(delta_i A)`` and the states ``h_i = dA_i * h_{i-1} + du_i B_i``, one in-place
    multiply-add per step.
    """
    torch.mul(delta.unsqueeze(-1), A, out=dA).exp_()  # [S, B', Di, N]
    torch.mul(du.unsqueeze(-1), B.unsqueeze(2), out=H)  # [S, B', Di, N] input of each step
    H[0].addcmul_(dA[0], h)
    for i in range(1, H.shape[0]):
        H[i].addcmul_(dA[i], H[i - 1])


class _SelectiveScanFn(torch.autograd.Function):
    """The selective scan without the ``D`` skip, with a hand-written backward pass.

    ``u, delta [B', T, Di]``, ``A [Di, N]``, ``B, C [B', T, N]``, ``h0 [B', Di, N]`` or None (zeros)
    -> ``y [B', T, Di]``, ``h_T [B', Di, N]``, where ``dA_t = exp(delta_t A)``,
    ``h_t = dA_t * h_{t-1} + delta_t u_t B_t`` and ``y_t = sum_n h_t C_t``.

    The sequence is processed in segments of :data:`SCAN_SEGMENT` steps: ``dA`` and the inputs
    ``delta u B`` of a segment are formed at once (``[S, B', Di, N]``, in buffers reused from segment
    to segment), the recurrence is one in-place multiply-add per step, ``y`` one batched product per
    segment. Only the inputs and the state at each segment start (``[T / S, B', Di, N]``) are saved;
    the backward pass recomputes a segment's states from its start and runs the adjoint recurrence
    ``gh_t = gy_t C_t + dA_{t+1} gh_{t+1}`` (``gh_T`` seeded by the gradient of ``h_T``) backwards,
    from which every gradient of the segment follows in a few vectorised operations. Not twice
    differentiable.
    """

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                h0: Tensor | None) -> tuple[Tensor, Tensor]:
        Bp, T, Di = u.shape
        N, S = A.shape[1], min(SCAN_SEGMENT, T)
        dT, BT, CT = (x.transpose(0, 1).contiguous() for x in (delta, B, C))  # [T, B', .] time first
        duT = dT * u.transpose(0, 1)  # [T, B', Di]
        h = u.new_zeros(Bp, Di, N) if h0 is None else h0
        starts = u.new_empty((T + S - 1) // S, Bp, Di, N)  # [T/S, B', Di, N] state before each segment
        dA, H = u.new_empty(S, Bp, Di, N), u.new_empty(S, Bp, Di, N)  # segment buffers
        yT = u.new_empty(T, Bp, Di)
        for k, t0 in enumerate(range(0, T, S)):
            sl, n = slice(t0, t0 + S), min(S, T - t0)
            starts[k] = h  # a copy: h may be a view of H, which the segment overwrites
            _segment_states(dT[sl], duT[sl], BT[sl], A, starts[k], dA[:n], H[:n])
            torch.bmm(H[:n].view(n * Bp, Di, N), CT[sl].view(n * Bp, N, 1),
                      out=yT[sl].view(n * Bp, Di, 1))  # y_t = sum_n h_t C_t
            h = H[n - 1]
        ctx.save_for_backward(u, delta, A, B, C, starts)
        ctx.h0_dtype = None if h0 is None else h0.dtype
        return yT.transpose(0, 1).contiguous(), h.clone()  # [B', T, Di], [B', Di, N] not a view of H

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor, ghT: Tensor):
        u, delta, A, B, C, starts = ctx.saved_tensors
        need_u, need_delta, need_A, need_B, need_C, need_h0 = ctx.needs_input_grad
        Bp, T, Di = u.shape
        N, S = A.shape[1], min(SCAN_SEGMENT, T)
        uT, dT, BT, CT, gyT = (x.transpose(0, 1).contiguous() for x in (u, delta, B, C, gy))  # [T, B', .]
        duT = dT * uT  # [T, B', Di]
        guT = torch.empty_like(uT) if need_u else None  # [T, B', Di]
        gdT = torch.empty_like(dT) if need_delta else None  # [T, B', Di]
        gBT = torch.empty_like(BT) if need_B else None  # [T, B', N]
        gCT = torch.empty_like(CT) if need_C else None  # [T, B', N]
        gA = torch.zeros_like(A) if need_A else None  # [Di, N]
        dA, H, G = (u.new_empty(S, Bp, Di, N) for _ in range(3))  # segment buffers
        carry = ghT  # [B', Di, N] gradient reaching the segment's last state from later steps
        for k in reversed(range(starts.shape[0])):
            t0 = k * S
            sl, n = slice(t0, t0 + S), min(S, T - t0)
            dA_, H_, G_ = dA[:n], H[:n], G[:n]
            _segment_states(dT[sl], duT[sl], BT[sl], A, starts[k], dA_, H_)
            if need_C:  # gC_t = sum_d gy_t h_t
                torch.bmm(gyT[sl].view(n * Bp, 1, Di), H_.view(n * Bp, Di, N), out=gCT[sl].view(n * Bp, 1, N))
            torch.mul(gyT[sl].unsqueeze(-1), CT[sl].unsqueeze(2), out=G_)  # [n, B', Di, N] gy_t C_t
            G_[-1] += carry
            for i in range(n - 2, -1, -1):  # gh_t = gy_t C_t + dA_{t+1} gh_{t+1}
                G_[i].addcmul_(dA_[i + 1], G_[i + 1])
            carry = dA_[0] * G_[0]  # [B', Di, N] gradient of the state before the segment
            if need_u or need_delta:
                GB = torch.bmm(G_.view(n * Bp, Di, N), BT[sl].view(n * Bp, N, 1)).view(n, Bp, Di)  # sum_n gh_t B_t
                if need_u:
                    torch.mul(GB, dT[sl], out=guT[sl])
            if need_B:  # gB_t = sum_d gh_t delta_t u_t
                torch.bmm(duT[sl].view(n * Bp, 1, Di), G_.view(n * Bp, Di, N), out=gBT[sl].view(n * Bp, 1, N))
            if need_delta or need_A:
                X = dA_.mul_(G_)  # [n, B', Di, N] g(dA_t) * dA_t = gh_t * h_{t-1} * dA_t, in dA's buffer
                X[1:].mul_(H_[:-1])
                X[0].mul_(starts[k])
                if need_A:  # gA = sum_{b,t} g(dA_t) dA_t delta_t
                    gA += torch.mul(X, dT[sl].unsqueeze(-1), out=H_).sum((0, 1))
                if need_delta:  # g_delta_t = sum_n g(dA_t) dA_t A + u_t sum_n gh_t B_t
                    torch.addcmul(torch.mul(X, A, out=H_).sum(-1), GB, uT[sl], out=gdT[sl])

        def back(xT):  # [T, B', .] -> [B', T, .]
            return None if xT is None else xT.transpose(0, 1)

        g_h0 = carry.to(ctx.h0_dtype) if need_h0 else None
        return back(guT), back(gdT), gA, back(gBT), back(gCT), g_h0


def selective_scan_chunked(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                           h0: Tensor | None = None, return_state: bool = False, chunk: int | None = None,
                           checkpoint: bool = False):
    """Chunked selective scan: closed form inside chunks of ``chunk`` steps, state carried between them.

    Same arguments and results as :func:`selective_scan_sequential`, plus:

    Args:
        chunk: steps per chunk (the last chunk may be shorter); default :func:`auto_chunk`, which
            picks 1 on CPU and, on CUDA, bounds the largest temporary to :data:`CHUNK_ELEMENTS`.
            Memory per chunk is ``O(B' * chunk^2 * Di * N)``; the arithmetic is about
            ``(chunk + 1) / 2`` times the sequential scan's, in ``T / chunk`` vectorised steps instead
            of ``T``. With ``chunk = 1`` (the CPU default) the recurrence runs in
            :class:`_SelectiveScanFn`, whose hand-written backward keeps only the state every
            :data:`SCAN_SEGMENT` steps and recomputes the rest: training memory
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
        y, h = _SelectiveScanFn.apply(u, delta, A, B, C, h0)
        return _finish(y, h, u, D, return_state)
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
    return _finish(y, h, u, D, return_state)


class _CompiledScanFn(torch.autograd.Function):
    """The scan without the ``D`` skip by the compiled CPU kernel (:mod:`stmgt.kernels`); same
    contract as :class:`_SelectiveScanFn`. Saves only the inputs; the backward pass recomputes the
    states inside the kernel. Not twice differentiable."""

    @staticmethod
    def forward(ctx, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor,
                h0: Tensor | None) -> tuple[Tensor, Tensor]:
        from stmgt.kernels import selective_scan_extension

        u, delta, A, B, C = (x.contiguous() for x in (u, delta, A, B, C))
        h0c = u.new_empty(0) if h0 is None else h0.to(u.dtype).contiguous()
        y, hT = selective_scan_extension().forward(u, delta, A, B, C, h0c)
        ctx.save_for_backward(u, delta, A, B, C, h0c)
        ctx.h0_dtype = None if h0 is None else h0.dtype
        return y, hT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy: Tensor, ghT: Tensor):
        from stmgt.kernels import selective_scan_extension

        u, delta, A, B, C, h0c = ctx.saved_tensors
        gu, gd, gA, gB, gC, gh0 = selective_scan_extension().backward(
            u, delta, A, B, C, h0c, gy.to(u.dtype).contiguous(), ghT.to(u.dtype).contiguous())
        return gu, gd, gA, gB, gC, (None if ctx.h0_dtype is None else gh0.to(ctx.h0_dtype))


def selective_scan_compiled(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                            h0: Tensor | None = None, return_state: bool = False):
    """Selective scan by the compiled CPU kernel (built on first use, see :mod:`stmgt.kernels`).

    Same arguments and results as :func:`selective_scan_sequential`. Each sequence's state stays
    in cache for the whole scan, so no state-sized tensor is written per step: measured (one
    thread, ``B' = 6624, T = 12, Di = 128, N = 16``, the Los-loop STMamba shape) forward and backward
    in 0.52 s against 3.9 s for :func:`selective_scan_chunked` (machine shared with two training
    runs; float32 error against the float64 reference 6e-7 relative). CPU tensors in float32 or
    float64; other tensors fall back to :func:`selective_scan_chunked`.
    """
    if u.device.type != "cpu" or u.dtype not in (torch.float32, torch.float64) or u.shape[1] == 0:
        return selective_scan_chunked(u, delta, A, B, C, D, h0=h0, return_state=return_state)
    y, h = _CompiledScanFn.apply(u, delta, A, B, C, h0)
    return _finish(y, h, u, D, return_state)


_COMPILED_OK: bool | None = None  # whether the compiled kernel could be built (None: not tried yet)


def compiled_scan_available() -> bool:
    """Whether the compiled CPU kernel builds here; tried once per process, a failure warned once."""
    global _COMPILED_OK
    if _COMPILED_OK is None:
        from stmgt.kernels import selective_scan_extension

        try:
            selective_scan_extension()
            _COMPILED_OK = True
        except ConfigError as e:
            warnings.warn(f"{e}; using the plain-PyTorch scan", stacklevel=2)
            _COMPILED_OK = False
    return _COMPILED_OK


def selective_scan_auto(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                        h0: Tensor | None = None, return_state: bool = False, chunk: int | None = None,
                        checkpoint: bool = False):
    """The default scan: :func:`selective_scan_compiled` for CPU tensors when the kernel builds here
    (and no ``chunk`` is forced), else :func:`selective_scan_chunked`. Same arguments and results."""
    if u.device.type == "cpu" and chunk is None and compiled_scan_available():
        return selective_scan_compiled(u, delta, A, B, C, D, h0=h0, return_state=return_state)
    return selective_scan_chunked(u, delta, A, B, C, D, h0=h0, return_state=return_state, chunk=chunk,
                                  checkpoint=checkpoint)


def selective_scan_mambapy(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                           h0: Tensor | None = None, return_state: bool = False):
    """Selective scan by ``mambapy``'s parallel scan (``pip install mambapy``).

    Same arguments and results as :func:`selective_scan_sequential`. Materialises every state,
    ``[B', T, Di, N]``; an initial state enters through the first step's input.
    """
    pscan = _import_mambapy()
    deltaA = torch.exp(delta.unsqueeze(-1) * A)  # [B', T, Di, N]
    BX = (delta * u).unsqueeze(-1) * B.unsqueeze(2)  # [B', T, Di, N]
    if h0 is not None and u.shape[1] > 0:
        BX = torch.cat([BX[:, :1] + deltaA[:, :1] * h0.unsqueeze(1), BX[:, 1:]], 1)
    hs = pscan(deltaA, BX)  # [B', T, Di, N]
    y = torch.einsum("btdn,btn->btd", hs, C)
    h = hs[:, -1] if u.shape[1] > 0 else (u.new_zeros(u.shape[0], u.shape[2], A.shape[1]) if h0 is None else h0)
    return _finish(y, h, u, D, return_state)


def selective_scan_cuda(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                        h0: Tensor | None = None, return_state: bool = False):
    """Selective scan by ``mamba-ssm``'s fused CUDA kernel ``selective_scan_fn`` (CUDA tensors only).

    Same arguments and results as :func:`selective_scan_sequential`. The kernel always starts
    from a zero state, so with an initial state ``h0`` (continuing a stream) this falls back to
    :func:`selective_scan_chunked`.
    """
    if h0 is not None:
        return selective_scan_chunked(u, delta, A, B, C, D, h0=h0, return_state=return_state)
    fn = _import_mamba_ssm()
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


def _import_mambapy():
    try:
        from mambapy.pscan import pscan
    except ImportError:
        raise ConfigError("scan='mambapy' needs the mambapy package: pip install mambapy "
                          "(or pip install 'stmgt[mamba]'), or use scan='chunked'") from None
    return pscan


def _import_mamba_ssm():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        raise ConfigError("scan='cuda' needs mamba-ssm on a CUDA machine: pip install mamba-ssm "
                          "(built for your CUDA toolkit), or use scan='chunked'") from None
    return selective_scan_fn


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
        _import_mambapy()
        return selective_scan_mambapy
    if name == "cuda":
        _import_mamba_ssm()
        if not torch.cuda.is_available():
            raise ConfigError("scan='cuda' needs a CUDA device, and none is available; use scan='chunked'")
        return selective_scan_cuda
    raise ConfigError(f"unknown Mamba scan {name!r}; choose one of {', '.join(SCANS)}")


# ---------------------------------------------------------------------------------------- layer
class Mamba(nn.Module):
    """The Mamba layer (selective SSM block) of Gu and Dao, arXiv:2312.00752, Figure 3.

    ``x -> in_proj -> (x, z)``; ``x -> causal depthwise conv1d -> SiLU -> selective scan`` with
    input-dependent ``delta = softplus(dt_proj(.))``, ``B``, ``C`` from ``x_proj``;
    ``y = scan(x) * SiLU(z) -> out_proj``. Initialisation as the reference: ``A = -exp(A_log)``
    with S4D-real ``A_log = log(1..d_state)``, ``D = 1``, and the ``dt_proj`` bias the inverse
    softplus of step sizes drawn log-uniformly in ``[dt_min, dt_max]``.

    Args:
        d_model: input and output features ``D``.
        d_state: SSM state size ``N`` per channel (default 16).
        d_conv: causal convolution width (default 4).
        expand: ``d_inner = expand * d_model`` (default 2).
        dt_rank: rank of the step-size projection; ``"auto"`` (default) is ``ceil(d_model / 16)``.
        scan: ``"auto"`` (default: ``"compiled"`` on CPU where the kernel builds, else ``"chunked"``),
            ``"compiled"``, ``"chunked"``, ``"sequential"`` (reference loop), ``"mambapy"``
            (``pip install mambapy``) or ``"cuda"`` (``mamba-ssm``, CUDA only).
        dt_min, dt_max: range of the initial step sizes (default 1e-3, 1e-1).
        dt_init_floor: smallest initial step size (default 1e-4).
        chunk: chunk length of the chunked scan (default: automatic, see :func:`auto_chunk`).
        checkpoint: recompute scan chunks in the backward pass to save memory (default False).
        bias: bias of ``in_proj`` / ``out_proj`` (default False); conv_bias: of the convolution (True).

    Shapes:
        ``forward``: ``x [B', T, D] -> [B', T, D]`` (and the final :class:`MambaState` with
        ``return_state=True``); ``step``: ``x_t [B', D] -> [B', D]``. Causal: output ``t``
        depends on inputs ``<= t`` only.
    """

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", scan: str = "auto", dt_min: float = 1e-3,
                 dt_max: float = 1e-1, dt_init_floor: float = 1e-4, chunk: int | None = None,
                 checkpoint: bool = False, bias: bool = False, conv_bias: bool = True):
        super().__init__()
        if d_conv < 1 or d_state < 1 or expand < 1 or d_model < 1:
            raise ConfigError(f"Mamba sizes must be positive, got d_model={d_model} d_state={d_state}"
                              f" d_conv={d_conv} expand={expand}")
        if dt_rank == "auto":
            dt_rank = math.ceil(d_model / 16)
        if not isinstance(dt_rank, int) or dt_rank < 1:
            raise ConfigError(f"Mamba dt_rank must be 'auto' or a positive int, got {dt_rank!r}")
        if not 0 < dt_min <= dt_max:
            raise ConfigError(f"Mamba needs 0 < dt_min <= dt_max, got {dt_min} and {dt_max}")
        self._scan = get_scan(scan)
        self.scan, self.chunk, self.checkpoint = scan, chunk, checkpoint
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = di = expand * d_model
        self.dt_rank = dt_rank
        self.in_proj = nn.Linear(d_model, 2 * di, bias=bias)
        self.conv1d = nn.Conv1d(di, di, d_conv, groups=di, bias=conv_bias)
        self.x_proj = nn.Linear(di, dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, di, bias=True)
        self.A_log = nn.Parameter(torch.empty(di, d_state))
        self.D = nn.Parameter(torch.empty(di))
        self.out_proj = nn.Linear(di, d_model, bias=bias)
        self.A_log._no_weight_decay = True
        self.D._no_weight_decay = True
        self.dt_min, self.dt_max, self.dt_init_floor = dt_min, dt_max, dt_init_floor
        self.reset_ssm_parameters()

    def reset_ssm_parameters(self) -> None:
        """Reference initialisation of ``dt_proj``, ``A_log`` and ``D`` (the linear layers keep
        PyTorch's default initialisation, as in ``mamba_simple.py``)."""
        std = self.dt_rank ** -0.5
        with torch.no_grad():
            nn.init.uniform_(self.dt_proj.weight, -std, std)
            lo, hi = math.log(self.dt_min), math.log(self.dt_max)
            dt = torch.exp(torch.rand(self.d_inner) * (hi - lo) + lo).clamp(min=self.dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
            a = torch.arange(1, self.d_state + 1, dtype=torch.float32)
            self.A_log.copy_(torch.log(a).expand(self.d_inner, -1))
            self.D.fill_(1.0)

    # ------------------------------------------------------------------ state
    def init_state(self, batch_size: int, device=None, dtype=None) -> MambaState:
        """Zero state of ``batch_size`` sequences: what ``forward`` starts from when given none."""
        p = self.A_log
        kw = {"device": device or p.device, "dtype": dtype or p.dtype}
        return MambaState(torch.zeros(batch_size, self.d_inner, self.d_conv - 1, **kw),
                          torch.zeros(batch_size, self.d_inner, self.d_state, **kw))

    # ------------------------------------------------------------------ forward
    def _conv(self, xs: Tensor) -> Tensor:
        """Depthwise convolution of ``xs [B', Di, k + T]`` (``k = d_conv - 1`` steps of history first)
        -> ``[B', Di, T]``: ``sum_j w[:, j] * xs[:, :, t + j]``, what ``self.conv1d`` computes, written
        as ``d_conv`` multiply-adds because PyTorch's grouped ``conv1d`` is very slow on CPU for small
        inputs."""
        w = self.conv1d.weight[:, 0]  # [Di, d_conv]
        T = xs.shape[2] - self.d_conv + 1
        y = xs[:, :, :T] * w[:, :1]
        for j in range(1, self.d_conv):
            y = y + xs[:, :, j:j + T] * w[:, j:j + 1]
        return y if self.conv1d.bias is None else y + self.conv1d.bias[:, None]

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x [..., Di]`` (after conv + SiLU) -> ``delta [..., Di]``, ``B, C [..., N]``."""
        dt, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        return F.softplus(self.dt_proj(dt)), B, C

    def forward(self, x: Tensor, state: MambaState | None = None, return_state: bool = False):
        """``x [B', T, D] -> y [B', T, D]``; continue from ``state`` (zeros when None); with
        ``return_state`` also return the state after the last step, from which a later call goes on."""
        Bp, T, _ = x.shape
        xs, z = self.in_proj(x).chunk(2, dim=-1)  # [B', T, Di] each
        xs = xs.transpose(1, 2)  # [B', Di, T] channels first for the convolution
        k = self.d_conv - 1
        if state is None:
            xs = F.pad(xs, (k, 0))  # [B', Di, k + T] zero history
        else:
            xs = torch.cat([state.conv.to(xs.dtype), xs], dim=2)  # [B', Di, k + T]
        conv_state = xs[:, :, xs.shape[2] - k:]  # [B', Di, k] last k inputs, for the next call
        xs = F.silu(self._conv(xs)).transpose(1, 2)  # [B', T, Di] causal conv output
        delta, B, C = self._ssm_inputs(xs)
        A = -torch.exp(self.A_log)  # [Di, N]
        kw = {}
        if self._scan in (selective_scan_chunked, selective_scan_auto):
            kw = {"chunk": self.chunk, "checkpoint": self.checkpoint}
        y, h = self._scan(xs, delta, A, B, C, self.D, h0=None if state is None else state.ssm,
                          return_state=True, **kw)
        y = self.out_proj(y * F.silu(z))  # [B', T, D]
        return (y, MambaState(conv_state, h)) if return_state else y

    def step(self, x_t: Tensor, state: MambaState) -> tuple[Tensor, MambaState]:
        """One time step: ``x_t [B', D]`` and the state -> ``y_t [B', D]`` and the new state.
        Repeating it over ``T`` steps from :meth:`init_state` gives ``forward`` on the sequence."""
        xs, z = self.in_proj(x_t).chunk(2, dim=-1)  # [B', Di] each
        window = torch.cat([state.conv, xs.unsqueeze(-1)], dim=2)  # [B', Di, d_conv]
        xs = F.silu((window * self.conv1d.weight.squeeze(1)).sum(-1)
                    + (0 if self.conv1d.bias is None else self.conv1d.bias))  # [B', Di]
        delta, B, C = self._ssm_inputs(xs)  # [B', Di], [B', N], [B', N]
        A = -torch.exp(self.A_log)
        dt = delta.unsqueeze(-1)  # [B', Di, 1]
        h = torch.exp(dt * A) * state.ssm + (dt * xs.unsqueeze(-1)) * B.unsqueeze(1)  # [B', Di, N]
        y = torch.einsum("bdn,bn->bd", h, C) + self.D * xs
        y = self.out_proj(y * F.silu(z))
        return y, MambaState(window[:, :, 1:], h)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, d_conv={self.d_conv}, expand={self.expand},"
                f" dt_rank={self.dt_rank}, scan={self.scan!r}")
