"""Spatial branch of STMGT: GATv2 over the nodes of every time step."""

from __future__ import annotations

from torch import Tensor, nn

from stmgt.nn.layers.dropout import FastDropout
from stmgt.nn.layers.gat import GraphAttention


class SpatialBranch(nn.Module):
    """``LayerNorm(x + Dropout(GATv2(x)))`` applied to each (sample, time step) graph.

    Args:
        hidden: feature size ``D`` (default 96), divisible by ``heads``.
        heads: attention heads (default 4), concatenated.
        dropout: dropout on attention coefficients and on the branch output (default 0.2).
        drop_edge: DropEdge probability during training (default 0.05).
        v2: GATv2 (default) or GAT.
        fused: run GATv2's edge operations in the compiled CPU kernels (default True; see
            :class:`~stmgt.nn.layers.gat.GraphAttention`; not used with ``edge_dim``).
        edge_dim: edge attribute size of the attention, or None (default): no edge features.
            ``edge_dim=1`` reads the graph's edge weights.

    Shapes: ``x [B, T, N, D]``, ``edge_index [2, E]``, ``edge_weight [E]`` (or ``[E, edge_dim]``;
    None: unit weights with ``edge_dim``, must be None without) -> ``[B, T, N, D]``; with
    ``return_attention=True`` also ``(edge_index_with_loops [2, E'], alpha [B*T, E', heads])``.
    """

    def __init__(self, hidden: int = 96, heads: int = 4, dropout: float = 0.2, drop_edge: float = 0.05,
                 v2: bool = True, fused: bool = True, edge_dim: int | None = None):
        super().__init__()
        self.gat = GraphAttention(hidden, hidden // heads, heads, concat=True, dropout=dropout,
                                  drop_edge=drop_edge, v2=v2, fused=fused, edge_dim=edge_dim)
        self.drop = FastDropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None,
                return_attention: bool = False):
        B, T, N, D = x.shape
        flat = x.reshape(B * T, N, D)  # [B*T, N, D]: time steps become independent graphs
        h = self.gat(flat, edge_index, edge_weight, return_attention=return_attention)
        if return_attention:
            h, att = h
        out = self.norm(flat + self.drop(h)).view(B, T, N, D)  # [B, T, N, D]
        return (out, att) if return_attention else out
