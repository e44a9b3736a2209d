"""The selective scan as a recurrence with a hand-written backward pass (the chunk-1 scan).

:class:`SelectiveScanFn` keeps only the inputs and the state every :data:`SCAN_SEGMENT` steps and
recomputes a segment's states in the backward pass, so training memory is
``O(B' Di N (T / SCAN_SEGMENT + SCAN_SEGMENT))`` instead of four states per step, and time is
linear in ``T``. :func:`~stmgt.nn.layers.selective_scan.chunked.selective_scan_chunked` runs it
when its chunk is 1 (the automatic chunk on CPU).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Time steps per segment of :class:`SelectiveScanFn` (the scan with chunk 1): the states of one
#: segment, ``[SCAN_SEGMENT, B', Di, N]``, are materialised at a time, and the state at each segment
#: boundary is kept for the backward pass. Measured (one thread, ``B' = 64, Di = 192, N = 16``,
#: ``T = 768``): forward and backward 1.9 s with 16, 1.7 s with 32, 2.3 s with 64.
SCAN_SEGMENT = 32


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


class SelectiveScanFn(torch.autograd.Function):
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
