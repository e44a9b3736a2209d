"""Temporal branch of STMGT: a Transformer encoder layer over each node's own sequence."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from stmgt.nn.layers.dropout import fast_dropout
from stmgt.nn.layers.gelu_dropout import GeluDropout
from stmgt.nn.layers.positional_encoding import PositionalEncoding


class TemporalBranch(nn.Module):
    """Post-norm Transformer layer over time: positions, self-attention, GELU feed-forward.

    ``x = LN(x + MHA(x)); x = LN(x + FFN(x))`` with ``FFN = Linear(D, 4D) GELU Dropout Linear(4D, D)``
    on sinusoidally position-encoded sequences (Vaswani et al., NeurIPS 2017), as in the original
    STMGT design (see ``docs/design.md``). Attention runs through ``scaled_dot_product_attention``;
    the parameters are laid out as in ``nn.MultiheadAttention`` (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``) and the outputs equal it (``tests/nn/blocks/test_temporal_branch.py``).

    Args:
        hidden: feature size ``D`` (default 96).
        heads: attention heads (default 4).
        dropout: attention and feed-forward dropout (default 0.2).
        recompute_ffn: in training, keep only the feed-forward's input and recompute its hidden
            ``[B*N, T, 4D]`` activations in the backward pass (default False): the same numbers (the
            dropout's random state is replayed) for a second ``Linear(D, 4D)`` and GELU, and three
            ``[B*N, T, 4D]`` tensors fewer held per block (0.5 GB at 207 roads, batch 32, bf16).
        fused_ffn: the feed-forward's GELU and dropout in one compiled CPU pass
            (:class:`~stmgt.nn.layers.gelu_dropout.GeluDropout`; default True; False: ``nn.GELU`` and
            :class:`~stmgt.nn.layers.dropout.FastDropout`). The same operation with other random masks.

    Shapes: ``[B, T, N, D] -> [B, T, N, D]``.
    """

    def __init__(self, hidden: int = 96, heads: int = 4, dropout: float = 0.2, recompute_ffn: bool = False,
                 fused_ffn: bool = True):
        super().__init__()
        self.heads, self.dropout, self.recompute_ffn = heads, dropout, recompute_ffn
        self.pos = PositionalEncoding(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        # four entries, as nn.Sequential(Linear, GELU, Dropout, Linear) numbers its weights
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 4 * hidden), GeluDropout(dropout, fused=fused_ffn), nn.Identity(),
            nn.Linear(4 * hidden, hidden)
        )
        self.norm1 = nn.LayerNorm(hidden)
        self.norm2 = nn.LayerNorm(hidden)

    def attend(self, x: Tensor) -> Tensor:
        """Multi-head self-attention of ``[B', T, D]`` with ``nn.MultiheadAttention``'s weights."""
        Bp, T, D = x.shape
        H = self.heads
        a = self.attention
        qkv = F.linear(x, a.in_proj_weight, a.in_proj_bias)  # [B', T, 3D]
        q, k, v = qkv.view(Bp, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each [B', H, T, D/H]
        if self.training and self.dropout > 0:
            # explicit attention so that the probabilities get the cheap dropout (the CPU SDPA
            # kernel falls back to a slow path with Bernoulli draws when dropout is on)
            att = torch.softmax((q * (q.shape[-1] ** -0.5)) @ k.transpose(-1, -2), dim=-1)  # [B', H, T, T]
            o = fast_dropout(att, self.dropout) @ v  # [B', H, T, D/H]
        else:
            o = F.scaled_dot_product_attention(q, k, v)  # [B', H, T, D/H]
        return a.out_proj(o.transpose(1, 2).reshape(Bp, T, D))

    def forward(self, x: Tensor) -> Tensor:
        B, T, N, D = x.shape
        h = self.pos(x.transpose(1, 2).reshape(B * N, T, D))  # [B*N, T, D]: one sequence per node
        h = self.norm1(h + self.attend(h))
        if self.recompute_ffn and self.training and torch.is_grad_enabled():
            f = checkpoint(self.ffn, h, use_reentrant=False)  # [B*N, T, D]; hidden recomputed in backward
        else:
            f = self.ffn(h)  # [B*N, T, D]
        h = self.norm2(h + f)
        return h.view(B, N, T, D).transpose(1, 2)  # [B, T, N, D]
