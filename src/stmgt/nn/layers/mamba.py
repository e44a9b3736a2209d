"""Mamba: a selective state-space layer in plain PyTorch, with streaming.

Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
arXiv:2312.00752 (2023). Parameter names follow the reference ``mamba_simple.py``
(``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``, ``out_proj``), so
weights of ``mamba-ssm`` and ``mambapy`` layers load directly. The selective scan at its core has
several implementations that agree, chosen by the ``scan`` argument: see
:mod:`stmgt.nn.layers.selective_scan`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stmgt.errors import ConfigError
from stmgt.nn.layers.selective_scan.chunked import selective_scan_chunked
from stmgt.nn.layers.selective_scan.dispatch import get_scan, selective_scan_auto


class MambaState(NamedTuple):
    """Recurrent state of one :class:`Mamba` layer for ``B'`` independent sequences.

    * ``conv`` ``[B', d_inner, d_conv - 1]``: the last ``d_conv - 1`` inputs of the causal convolution;
    * ``ssm`` ``[B', d_inner, d_state]``: the state ``h`` of the selective scan.
    """

    conv: Tensor
    ssm: Tensor


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
        chunk: chunk length of the chunked scan (default: automatic, see
            :func:`~stmgt.nn.layers.selective_scan.chunked.auto_chunk`).
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
